#include "tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_util.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;

struct Tokenizer::Impl {
  std::string source;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::unordered_map<int32_t, AddedToken> added_by_id;
  StringIdMap added_by_content;
  AddedTokenMatcher raw_matcher;         // normalized=false tokens, on the input text
  AddedTokenMatcher normalized_matcher;  // normalized=true tokens, on normalized text
  int32_t vocab_size = 0;
  // A model piece that decodes alone to plain text with no leading space (token_bytes puts it
  // first), and that text; empty when none does.
  std::string anchor, anchor_text;

  // The decoder chain over `tokens`, joined (tokens with a space when there is no decoder);
  // `raw`: without the decoders' UTF-8 repair (decode_chain_raw).
  std::string join(std::vector<std::string> tokens, bool raw) const;
  void encode_text(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;
  void encode_normalized(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;
};

namespace {

AddedToken parse_added_token(const Json& v, const std::string& path) {
  AddedToken t;
  t.id = detail::json_token_id(detail::json_field(v, "id", path), json_path(path, "id"));
  t.content = detail::json_string(detail::json_field(v, "content", path), json_path(path, "content"));
  t.special = detail::json_bool_or(v, "special", path, false);
  t.single_word = detail::json_bool_or(v, "single_word", path, false);
  t.lstrip = detail::json_bool_or(v, "lstrip", path, false);
  t.rstrip = detail::json_bool_or(v, "rstrip", path, false);
  t.normalized = detail::json_bool_or(v, "normalized", path, !t.special);
  return t;
}

std::shared_ptr<Tokenizer::Impl> build(const Json& root) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  detail::json_expect_object(root, "(root)");
  impl->model = BpeModel::from_json(detail::json_field(root, "model", ""), "model");
  if (const Json* n = detail::json_opt(root, "normalizer", ""))
    impl->normalizer = make_normalizer(*n, "normalizer");
  if (const Json* p = detail::json_opt(root, "pre_tokenizer", ""))
    impl->pre_tokenizer = make_pre_tokenizer(*p, "pre_tokenizer");
  if (const Json* p = detail::json_opt(root, "post_processor", ""))
    impl->post_processor = make_post_processor(*p, "post_processor");
  if (const Json* d = detail::json_opt(root, "decoder", ""))
    impl->decoder = make_decoder(*d, "decoder");

  impl->vocab_size = impl->model->id_limit();
  std::vector<AddedToken> raw, normalized;
  std::vector<std::string> raw_patterns, normalized_patterns;
  if (const Json* added = detail::json_opt(root, "added_tokens", "")) {
    detail::json_expect_array(*added, "added_tokens");
    for (size_t i = 0; i < added->size(); ++i) {
      AddedToken t = parse_added_token((*added)[i], json_path("added_tokens", i));
      impl->vocab_size = std::max(impl->vocab_size, t.id + 1);
      impl->added_by_content.emplace(t.content, t.id);
      impl->added_by_id[t.id] = t;
      if (!t.normalized) {
        raw_patterns.push_back(t.content);
        raw.push_back(std::move(t));
        continue;
      }
      // Normalized tokens are searched for in their normalized form, as HF does.
      std::string pattern = t.content;
      if (impl->normalizer && !pattern.empty()) {
        try {
          pattern = impl->normalizer->normalize(pattern);
        } catch (const Error&) {
          pattern = t.content;
        }
      }
      normalized_patterns.push_back(std::move(pattern));
      normalized.push_back(std::move(t));
    }
  }
  impl->raw_matcher = AddedTokenMatcher(std::move(raw), std::move(raw_patterns));
  impl->normalized_matcher = AddedTokenMatcher(std::move(normalized), std::move(normalized_patterns));
  for (int32_t id = 0; id < impl->model->id_limit(); ++id) {
    const auto piece = impl->model->id_to_token(id);
    if (!piece || impl->added_by_id.count(id)) continue;
    std::string text = impl->join({std::string(*piece)}, /*raw=*/true);
    if (!text.empty() && (text[0] >= 'A' && text[0] <= 'z')) {
      impl->anchor = std::string(*piece);
      impl->anchor_text = std::move(text);
      break;
    }
  }
  return impl;
}

}  // namespace

Tokenizer Tokenizer::from_json_string(std::string_view json, const std::string& source) {
  try {
    Json root;
    try {
      root = Json::parse(json.begin(), json.end());
    } catch (const Json::parse_error& e) {
      throw Error(fmt::format("not valid JSON: {}", e.what()));
    }
    auto impl = build(root);
    impl->source = source;
    return Tokenizer(std::move(impl));
  } catch (const Error& e) {
    throw e.with_file(source);
  } catch (const std::exception& e) {
    // Anything else (allocation failure, a library exception) still reports as bad input.
    throw Error(fmt::format("cannot load tokenizer: {}", e.what()), ErrorContext{source});
  }
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  std::ifstream f(tokenizer_json, std::ios::binary);
  if (!f) throw Error("cannot open tokenizer file", ErrorContext{tokenizer_json.string()});
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error("cannot read tokenizer file", ErrorContext{tokenizer_json.string()});
  return from_json_string(ss.str(), tokenizer_json.string());
}

void Tokenizer::Impl::encode_normalized(std::string_view text, bool at_start, std::vector<int32_t>& ids) const {
  if (!pre_tokenizer) {
    model->tokenize(text, ids);
    return;
  }
  pre_tokenizer->split(text, at_start, [&](std::string_view piece, bool) { model->tokenize(piece, ids); });
}

void Tokenizer::Impl::encode_text(std::string_view text, bool at_start, std::vector<int32_t>& ids) const {
  std::string normalized_storage;
  if (normalizer) {
    normalized_storage = normalizer->normalize(std::string(text));
    text = normalized_storage;
  }
  if (normalized_matcher.empty()) {
    if (!text.empty()) encode_normalized(text, at_start, ids);
    return;
  }
  for (const Segment& s : normalized_matcher.split(text)) {
    if (s.id >= 0) ids.push_back(s.id);
    else encode_normalized(text.substr(s.begin, s.end - s.begin), at_start && s.begin == 0, ids);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  if (const size_t valid = utf8_valid_prefix(text); valid != text.size())
    throw Error(fmt::format("encode: the text is not valid UTF-8 (at byte {} of {})", valid, text.size()));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  try {
    if (im.raw_matcher.empty()) {
      if (!text.empty()) im.encode_text(text, true, ids);
    } else {
      for (const Segment& s : im.raw_matcher.split(text)) {
        if (s.id >= 0) ids.push_back(s.id);
        else im.encode_text(text.substr(s.begin, s.end - s.begin), s.begin == 0, ids);
      }
    }
  } catch (const Error& e) {
    throw e.with_file(im.source);
  }
  if (add_special_tokens && im.post_processor) ids = im.post_processor->process(std::move(ids));
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (auto it = im.added_by_id.find(id); it != im.added_by_id.end()) {
      if (!(skip_special_tokens && it->second.special)) tokens.push_back(it->second.content);
    } else if (auto piece = im.model->id_to_token(id)) {
      tokens.emplace_back(*piece);
    }
  }
  return utf8_lossy(im.join(std::move(tokens), /*raw=*/false));
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return it->second.content;
  if (auto piece = impl_->model->id_to_token(id)) return std::string(*piece);
  throw Error(fmt::format("token id {} is not in the vocabulary (size {})", id, impl_->vocab_size),
              ErrorContext{impl_->source});
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& im = *impl_;
  std::string piece;
  if (auto it = im.added_by_id.find(id); it != im.added_by_id.end()) {
    piece = it->second.content;
  } else if (auto p = im.model->id_to_token(id)) {
    piece = *p;
  } else {
    return {};
  }
  // Decoders treat the first token of a text apart (Metaspace's prefix space, Strip): decode
  // the piece after the anchor piece and keep what it adds.
  if (im.anchor.empty()) return im.join({piece}, /*raw=*/true);
  const std::string both = im.join({im.anchor, piece}, /*raw=*/true);
  if (both.compare(0, im.anchor_text.size(), im.anchor_text) != 0) return im.join({piece}, /*raw=*/true);
  return both.substr(im.anchor_text.size());
}

std::string Tokenizer::Impl::join(std::vector<std::string> tokens, bool raw) const {
  std::string out;
  if (decoder) {
    if (raw) {
      decoder->decode_chain_raw(tokens);
    } else {
      decoder->decode_chain(tokens);
    }
    for (const std::string& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
  }
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && it->second.special;
}

IncrementalDecoder::IncrementalDecoder(Tokenizer tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::step(int32_t id) {
  window_.push_back(id);
  const std::string text = tokenizer_.decode(window_, skip_special_tokens_);
  // Wait while the text ends in U+FFFD: the next token may complete the character.
  if (text.size() <= prefix_text_.size() || text.ends_with("\xEF\xBF\xBD")) return {};
  size_t common = prefix_text_.size();
  if (!text.starts_with(prefix_text_)) {
    // Only a decoder that rewrites earlier text gets here; return what is new after the
    // longest common prefix, backed up to a character boundary.
    common = 0;
    while (common < prefix_text_.size() && text[common] == prefix_text_[common]) ++common;
    while (common > 0 && (static_cast<unsigned char>(text[common]) & 0xC0) == 0x80) --common;
  }
  std::string fresh = text.substr(common);
  // Keep the ids that produced `fresh` as context for the next step.
  window_.erase(window_.begin(), window_.begin() + static_cast<ptrdiff_t>(prefix_ids_));
  prefix_ids_ = window_.size();
  prefix_text_ = tokenizer_.decode(window_, skip_special_tokens_);
  return fresh;
}

std::string IncrementalDecoder::flush() {
  const std::string text = tokenizer_.decode(window_, skip_special_tokens_);
  std::string rest;
  if (text.size() > prefix_text_.size() && text.starts_with(prefix_text_)) rest = text.substr(prefix_text_.size());
  reset();
  return rest;
}

void IncrementalDecoder::reset() {
  window_.clear();
  prefix_ids_ = 0;
  prefix_text_.clear();
}

}  // namespace exq::tokenizer
