#include "tokenizer/decoder.h"

#include "core/error.h"
#include "tokenizer/pattern.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;

namespace {

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> items) : items_(std::move(items)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : items_) d->decode_chain(tokens);
  }
  void decode_chain_raw(std::vector<std::string>& tokens) const override {
    for (const auto& d : items_) d->decode_chain_raw(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> items_;
};

// Maps byte-level characters back to bytes; a token with any character outside the map keeps
// its own UTF-8 bytes (added tokens such as "<|im_end|>" pass through this way).
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    decode_chain_raw(tokens);
    tokens[0] = utf8_lossy(tokens[0]);
  }
  void decode_chain_raw(std::vector<std::string>& tokens) const override {
    std::string bytes, tok_bytes;
    for (const std::string& t : tokens) {
      tok_bytes.clear();
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        const int b = unicode_to_byte(utf8_next(t, i));
        if (b < 0) ok = false;
        else tok_bytes += static_cast<char>(b);
      }
      bytes += ok ? tok_bytes : t;
    }
    tokens.assign(1, std::move(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool strip_first)
      : replacement_(utf8_encode(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, replacement_.size(), replacement_) == 0) {
          // HF drops every replacement character of the first token.
          if (!(i == 0 && strip_first_)) out += ' ';
          p += replacement_.size();
        } else {
          out += t[p++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// Runs of <0xNN> tokens become the bytes they name; an invalid UTF-8 run becomes one U+FFFD
// per byte, as in HF.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override { chain(tokens, true); }
  void decode_chain_raw(std::vector<std::string>& tokens) const override { chain(tokens, false); }

 private:
  static void chain(std::vector<std::string>& tokens, bool repair) {
    std::vector<std::string> out;
    std::string run;
    size_t run_len = 0;
    auto flush = [&]() {
      if (run_len == 0) return;
      if (!repair || utf8_is_valid(run)) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run_len; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_len = 0;
    };
    for (std::string& t : tokens) {
      if (const int b = byte_token(t); b >= 0) {
        run += static_cast<char>(b);
        ++run_len;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens = std::move(out);
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int byte_token(const std::string& t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
      for (size_t i = 0; i < t.size();) {
        const size_t at = i;
        chars.emplace_back(at, utf8_next(t, i));
      }
      size_t b = 0, e = chars.size();
      while (b < start_ && b < e && chars[b].second == content_) ++b;
      for (size_t k = 0; k < stop_ && e > b && chars[e - 1].second == content_; ++k) --e;
      const size_t bb = b < chars.size() ? chars[b].first : t.size();
      const size_t eb = e < chars.size() ? chars[e].first : t.size();
      t = t.substr(bb, eb - bb);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = pattern_.replace_all(t, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Classic BPE end-of-word suffix: the suffix becomes a space, except on the last token.
class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(Pattern::literal(std::move(suffix))) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = suffix_.replace_all(tokens[i], i + 1 == tokens.size() ? "" : " ");
  }

 private:
  Pattern suffix_;
};

size_t json_count(const Json& v, std::string_view key, const std::string& path) {
  const std::string where = json_path(path, key);
  const int64_t n = detail::json_int(detail::json_field(v, key, path), where);
  if (n < 0 || n > (1 << 20)) detail::json_fail(where, fmt::format("count {} out of range", n));
  return static_cast<size_t>(n);
}

bool metaspace_strips_first(const Json& v, const std::string& path) {
  if (const Json* scheme = detail::json_opt(v, "prepend_scheme", path)) {
    const std::string where = json_path(path, "prepend_scheme");
    const std::string s = detail::json_string(*scheme, where);
    if (s != "always" && s != "first" && s != "never")
      detail::json_fail(where, fmt::format("unknown prepend_scheme '{}'", s));
    return s != "never";
  }
  return detail::json_bool_or(v, "add_prefix_space", path, true);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& v, const std::string& path, int depth) {
  if (depth > detail::kMaxComponentDepth) detail::json_fail(path, "Sequence nesting too deep");
  const std::string type = detail::json_string(detail::json_field(v, "type", path), json_path(path, "type"));
  if (type == "Sequence") {
    const std::string ip = json_path(path, "decoders");
    const Json& items = detail::json_field(v, "decoders", path);
    detail::json_expect_array(items, ip);
    std::vector<std::unique_ptr<Decoder>> list;
    for (size_t i = 0; i < items.size(); ++i) list.push_back(make_decoder(items[i], json_path(ip, i), depth + 1));
    return std::make_unique<SequenceDecoder>(std::move(list));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace")
    return std::make_unique<MetaspaceDecoder>(
        detail::json_char(detail::json_field(v, "replacement", path), json_path(path, "replacement")),
        metaspace_strips_first(v, path));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(
        detail::json_char(detail::json_field(v, "content", path), json_path(path, "content")),
        json_count(v, "start", path), json_count(v, "stop", path));
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(
        Pattern::from_json(detail::json_field(v, "pattern", path), json_path(path, "pattern")),
        detail::json_string(detail::json_field(v, "content", path), json_path(path, "content")));
  if (type == "BPEDecoder")
    return std::make_unique<BpeSuffixDecoder>(detail::json_string_or(v, "suffix", path, "</w>"));
  detail::json_fail(json_path(path, "type"), fmt::format("decoder type '{}' is not supported", type));
}

}  // namespace exq::tokenizer
