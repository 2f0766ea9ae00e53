// tokenizer.json / tokenizer_config.json / special_tokens_map.json from GGUF tokenizer
// metadata: gpt2-style byte-level BPE (the pre-tokenizer per tokenizer.ggml.pre is the one the
// Hugging Face tokenizer of that model family uses), or a SentencePiece BPE vocabulary
// ("llama": Llama 2, Mistral, Mixtral) as transformers' LlamaTokenizerFast holds it.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "io/gguf_import.h"

namespace exq::io {
using nlohmann::ordered_json;

namespace {

// llama.cpp token types (tokenizer.ggml.token_type).
enum TokenType : int64_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

Error tok_error(const GgufFile& g, const std::string& msg) {
  return Error(msg, ErrorContext{.file = g.path().string()});
}

ordered_json byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

ordered_json split_regex(const char* pattern) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", pattern}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

struct Pipeline {
  ordered_json normalizer = nullptr;
  ordered_json pre_tokenizer;
  ordered_json post_processor;
  ordered_json decoder;
  bool ignore_merges = false;
};

Pipeline pipeline_for(const GgufFile& g, const std::string& pre) {
  Pipeline p;
  if (pre == "smollm") {
    p.pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(false, true, true)}}};
    p.post_processor = byte_level(true, false, true);
    p.decoder = byte_level(true, true, true);
  } else if (pre == "gpt2") {
    p.pre_tokenizer = byte_level(false, true, true);
    p.post_processor = byte_level(true, false, true);
    p.decoder = byte_level(true, true, true);
  } else if (pre == "llama-bpe") {
    p.pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers", {split_regex(kLlama3Regex), byte_level(false, true, false)}}};
    p.post_processor = byte_level(true, false, true);
    p.decoder = byte_level(true, true, true);
    p.ignore_merges = true;
  } else if (pre == "qwen2") {
    p.normalizer = {{"type", "NFC"}};
    p.pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers", {split_regex(kQwen2Regex), byte_level(false, false, false)}}};
    p.post_processor = byte_level(false, false, false);
    p.decoder = byte_level(false, false, false);
  } else {
    throw tok_error(g,
                    fmt::format("unsupported tokenizer.ggml.pre '{}' (import-gguf handles smollm, "
                                "llama-bpe, qwen2, gpt2)",
                                pre));
  }
  return p;
}

// SentencePiece's Llama setup as transformers converts it: "▁" before the text and for every
// space, no pre-tokenizer, bytes of unknown characters as <0xNN> pieces.
Pipeline sentencepiece_pipeline() {
  Pipeline p;
  p.normalizer = {{"type", "Sequence"},
                  {"normalizers",
                   {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  p.pre_tokenizer = nullptr;
  p.post_processor = nullptr;
  p.decoder = {{"type", "Sequence"},
               {"decoders",
                {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                 {{"type", "ByteFallback"}},
                 {{"type", "Fuse"}},
                 {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  return p;
}

struct Vocab {
  bool sentencepiece = false;  // tokenizer.ggml.model "llama"
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::vector<double> scores;  // sentencepiece: each piece's score (merge priority)
};

Vocab read_vocab(const GgufFile& g) {
  const std::string model = g.get_string("tokenizer.ggml.model");
  if (model != "gpt2" && model != "llama")
    throw tok_error(g,
                    fmt::format("unsupported tokenizer.ggml.model '{}' (import-gguf handles gpt2 "
                                "byte-level BPE and llama SentencePiece BPE)",
                                model));
  Vocab v;
  v.sentencepiece = model == "llama";
  try {
    v.tokens = g.at("tokenizer.ggml.tokens").as_strings();
    if (const GgufValue* t = g.find("tokenizer.ggml.token_type")) v.types = t->as_ints();
    if (v.sentencepiece) v.scores = g.at("tokenizer.ggml.scores").as_doubles();
  } catch (const Error& e) {
    throw e.with_file(g.path().string());
  }
  if (v.sentencepiece && v.scores.size() != v.tokens.size())
    throw tok_error(g, fmt::format("tokenizer.ggml.scores has {} entries for {} tokens", v.scores.size(),
                                   v.tokens.size()));
  if (v.types.empty()) v.types.assign(v.tokens.size(), kNormal);
  if (v.types.size() != v.tokens.size())
    throw tok_error(g, fmt::format("tokenizer.ggml.token_type has {} entries for {} tokens",
                                   v.types.size(), v.tokens.size()));
  return v;
}

// Token text for an id key (bos/eos/...), or null when the key is absent.
ordered_json token_text(const GgufFile& g, const Vocab& v, const char* which) {
  const std::string key = fmt::format("tokenizer.ggml.{}_token_id", which);
  if (!g.find(key)) return nullptr;
  const int64_t id = g.get_int(key);
  if (id < 0 || id >= static_cast<int64_t>(v.tokens.size()))
    throw tok_error(
        g, fmt::format("{} {} is outside the vocabulary of {} tokens", key, id, v.tokens.size()));
  return v.tokens[static_cast<size_t>(id)];
}

// GGUF key stem for an HF special-token name.
const char* gguf_token_key(const std::string& hf) {
  return hf == "unk" ? "unknown" : hf == "pad" ? "padding" : hf == "bos" ? "bos" : "eos";
}

bool is_added(int64_t type) { return type == kControl || type == kUserDefined; }

// Code point boundaries of UTF-8 text (byte offsets, the end included).
std::vector<size_t> char_bounds(const std::string& s) {
  std::vector<size_t> b;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) b.push_back(i);
  b.push_back(s.size());
  return b;
}

// transformers' merges of a SentencePiece BPE vocabulary: every split of a piece into two
// pieces, ranked by the whole piece's score (then the longer left part, the longer right part;
// ties keep vocabulary order, a piece's splits ordered by their parts' ids). SentencePiece
// merges by the same scores, so the encodings agree.
std::vector<std::string> sentencepiece_merges(const Vocab& v) {
  std::unordered_map<std::string_view, int64_t> id;
  for (size_t i = 0; i < v.tokens.size(); ++i) id.emplace(v.tokens[i], static_cast<int64_t>(i));
  struct Merge {
    double score;
    size_t left_chars, right_chars;
    int64_t left_id, right_id;
    std::string text;
  };
  std::vector<Merge> merges;
  std::vector<Merge> local;
  for (const std::string& piece : v.tokens) {
    local.clear();
    const std::vector<size_t> b = char_bounds(piece);
    const size_t chars = b.size() - 1;
    for (size_t k = 1; k < chars; ++k) {
      const std::string_view l(piece.data(), b[k]), r(piece.data() + b[k], piece.size() - b[k]);
      const auto li = id.find(l), ri = id.find(r);
      if (li == id.end() || ri == id.end()) continue;
      local.push_back({v.scores[static_cast<size_t>(id.at(piece))], k, chars - k, li->second, ri->second,
                       std::string(l) + " " + std::string(r)});
    }
    std::stable_sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return std::pair(a.left_id, a.right_id) < std::pair(b.left_id, b.right_id);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tuple(a.score, a.left_chars, a.right_chars) > std::tuple(b.score, b.left_chars, b.right_chars);
  });
  std::vector<std::string> out;
  out.reserve(merges.size());
  for (Merge& m : merges) out.push_back(std::move(m.text));
  return out;
}

}  // namespace

ordered_json hf_tokenizer_from_gguf(const GgufFile& g) {
  const Vocab v = read_vocab(g);
  const Pipeline p =
      v.sentencepiece ? sentencepiece_pipeline() : pipeline_for(g, g.get_string_or("tokenizer.ggml.pre", "default"));
  std::vector<std::string> merges;
  try {
    if (v.sentencepiece) merges = sentencepiece_merges(v);
    else if (const GgufValue* m = g.find("tokenizer.ggml.merges")) merges = m->as_strings();
  } catch (const Error& e) {
    throw e.with_file(g.path().string());
  }

  ordered_json added = ordered_json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (!is_added(v.types[i])) continue;
    added.push_back({{"id", i},
                     {"content", v.tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  // ordered_json's operator[] searches linearly; append to the underlying vector instead
  // (quadratic for 10^5 tokens otherwise), skipping repeated strings like HF's dict would.
  ordered_json vocab = ordered_json::object();
  auto& entries = vocab.get_ref<ordered_json::object_t&>();
  entries.reserve(v.tokens.size());
  std::unordered_set<std::string_view> seen;
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (seen.insert(v.tokens[i]).second) entries.emplace_back(v.tokens[i], i);

  for (const std::string& m : merges)
    if (m.find(' ') == std::string::npos || m.find(' ') != m.rfind(' '))
      throw tok_error(g, fmt::format("merge '{}' is not two tokens separated by one space", m));

  ordered_json model = {{"type", "BPE"},
                        {"dropout", nullptr},
                        {"unk_token", v.sentencepiece ? token_text(g, v, "unknown") : nullptr},
                        {"continuing_subword_prefix", nullptr},
                        {"end_of_word_suffix", nullptr},
                        {"fuse_unk", v.sentencepiece},
                        {"byte_fallback", v.sentencepiece},
                        {"ignore_merges", p.ignore_merges}};
  model["vocab"] = std::move(vocab);
  model["merges"] = merges;

  ordered_json post = p.post_processor;
  // llama.cpp adds BOS for SentencePiece vocabularies unless the file says otherwise.
  if (g.get_bool_or("tokenizer.ggml.add_bos_token", v.sentencepiece)) {
    // HF adds BOS through a TemplateProcessing step after the byte-level one.
    const ordered_json bos = token_text(g, v, "bos");
    if (bos.is_null())
      throw tok_error(g, "tokenizer.ggml.add_bos_token is set but there is no bos token");
    const int64_t bos_id = g.get_int("tokenizer.ggml.bos_token_id");
    auto special = [&](int type_id) {
      return ordered_json{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}};
    };
    auto seq = [](const char* id, int type_id) {
      return ordered_json{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
    };
    ordered_json tp = {
        {"type", "TemplateProcessing"},
        {"single", {special(0), seq("A", 0)}},
        {"pair", {special(0), seq("A", 0), special(1), seq("B", 1)}},
        {"special_tokens",
         {{bos.get<std::string>(), {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
    post = post.is_null() ? std::move(tp) : ordered_json{{"type", "Sequence"}, {"processors", {std::move(post), std::move(tp)}}};
  }

  ordered_json t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = std::move(added);
  t["normalizer"] = p.normalizer;
  t["pre_tokenizer"] = p.pre_tokenizer;
  t["post_processor"] = std::move(post);
  t["decoder"] = p.decoder;
  t["model"] = std::move(model);
  return t;
}

ordered_json hf_tokenizer_config_from_gguf(const GgufFile& g) {
  const Vocab v = read_vocab(g);
  ordered_json c;
  c["add_bos_token"] = g.get_bool_or("tokenizer.ggml.add_bos_token", v.sentencepiece);
  c["add_prefix_space"] = false;
  for (const char* k : {"bos", "eos", "pad", "unk"})
    if (ordered_json s = token_text(g, v, gguf_token_key(k)); !s.is_null())
      c[fmt::format("{}_token", k)] = s;
  c["clean_up_tokenization_spaces"] = false;
  const std::string arch = g.get_string_or("general.architecture", "llama");
  if (g.find(arch + ".context_length")) c["model_max_length"] = g.get_int(arch + ".context_length");
  c["tokenizer_class"] = v.sentencepiece ? "LlamaTokenizer" : "GPT2Tokenizer";
  if (g.find("tokenizer.chat_template"))
    c["chat_template"] = g.get_string("tokenizer.chat_template");
  return c;
}

ordered_json hf_special_tokens_map_from_gguf(const GgufFile& g) {
  const Vocab v = read_vocab(g);
  ordered_json c = ordered_json::object();
  for (const char* k : {"bos", "eos", "pad", "unk"})
    if (ordered_json s = token_text(g, v, gguf_token_key(k)); !s.is_null())
      c[fmt::format("{}_token", k)] = s;
  return c;
}

}  // namespace exq::io
