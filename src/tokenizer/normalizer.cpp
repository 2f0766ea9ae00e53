#include "tokenizer/normalizer.h"

#include <vector>

#include "core/error.h"
#include "tokenizer/pattern.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;

namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> items) : items_(std::move(items)) {}
  std::string normalize(std::string s) const override {
    for (const auto& n : items_) s = n->normalize(std::move(s));
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string s) const override { return s.empty() ? s : prefix_ + s; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string s) const override { return pattern_.replace_all(s, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t j = b;
        if (!is_unicode_whitespace(utf8_next(s, j))) break;
        b = j;
      }
    }
    if (right_) {
      while (e > b) {
        size_t k = e - 1;
        while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t j = k;
        if (!is_unicode_whitespace(utf8_next(s, j))) break;
        e = k;
      }
    }
    return s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

// Exact for NFC-stable text (nearly all real text); anything else is refused rather than
// silently tokenized differently from HF.
class NfcNormalizer final : public Normalizer {
 public:
  std::string normalize(std::string s) const override {
    if (!nfc_stable(s))
      throw Error("normalizer NFC: the text contains combining or decomposable characters, "
                  "whose NFC composition is not supported");
    return s;
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& v, const std::string& path, int depth) {
  if (depth > detail::kMaxComponentDepth) detail::json_fail(path, "Sequence nesting too deep");
  const std::string type = detail::json_string(detail::json_field(v, "type", path), json_path(path, "type"));
  if (type == "Sequence") {
    const std::string ip = json_path(path, "normalizers");
    const Json& items = detail::json_field(v, "normalizers", path);
    detail::json_expect_array(items, ip);
    std::vector<std::unique_ptr<Normalizer>> list;
    for (size_t i = 0; i < items.size(); ++i)
      list.push_back(make_normalizer(items[i], json_path(ip, i), depth + 1));
    return std::make_unique<SequenceNormalizer>(std::move(list));
  }
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(
        detail::json_string(detail::json_field(v, "prepend", path), json_path(path, "prepend")));
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(
        Pattern::from_json(detail::json_field(v, "pattern", path), json_path(path, "pattern")),
        detail::json_string(detail::json_field(v, "content", path), json_path(path, "content")));
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(detail::json_bool_or(v, "strip_left", path, true),
                                             detail::json_bool_or(v, "strip_right", path, true));
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  detail::json_fail(json_path(path, "type"), fmt::format("normalizer type '{}' is not supported", type));
}

}  // namespace exq::tokenizer
