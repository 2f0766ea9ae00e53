#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <array>
#include <vector>

#include "core/error.h"
#include "tokenizer/pattern.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;

namespace {

// GPT-2's pre-tokenization regex, as HF's ByteLevel uses it.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const Json& v, const std::string& path) {
  const std::string s = detail::json_string(v, path);
  if (s == "Removed") return Behavior::kRemoved;
  if (s == "Isolated") return Behavior::kIsolated;
  if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::kMergedWithNext;
  if (s == "Contiguous") return Behavior::kContiguous;
  detail::json_fail(path, fmt::format("unknown split behavior '{}'", s));
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// Turns a covering list of (span, is_match) into the pieces HF keeps for `behavior`, then
// emits the non-empty ones.
void emit_split(std::string_view text, bool at_start, std::vector<Span>& spans, Behavior behavior,
                PieceSink sink) {
  std::vector<Span> out;
  switch (behavior) {
    case Behavior::kIsolated:
    case Behavior::kRemoved:
      out = spans;
      break;
    case Behavior::kContiguous: {
      bool prev = false;
      for (const Span& s : spans) {
        if (!out.empty() && s.is_match == prev) out.back().end = s.end;
        else out.push_back({s.begin, s.end, false});
        prev = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool prev = false;
      for (const Span& s : spans) {
        if (s.is_match && !prev && !out.empty()) out.back().end = s.end;
        else out.push_back({s.begin, s.end, false});
        prev = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !prev && !out.empty()) out.back().begin = it->begin;
        else out.push_back({it->begin, it->end, false});
        prev = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  const bool drop_matches = behavior == Behavior::kRemoved;
  for (const Span& s : out) {
    if (s.end <= s.begin || (drop_matches && s.is_match)) continue;
    sink(text.substr(s.begin, s.end - s.begin), at_start && s.begin == 0);
  }
}

// Covering spans of `text` from the pattern's matches (HF's Pattern::find_matches).
template <typename MatchFn>
std::vector<Span> covering_spans(std::string_view text, bool invert, MatchFn&& for_each_match) {
  std::vector<Span> spans;
  size_t prev = 0;
  for_each_match(text, [&](size_t b, size_t e) {
    if (b > prev) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  });
  if (prev < text.size()) spans.push_back({prev, text.size(), invert});
  return spans;
}

class SequencePre final : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> items) : items_(std::move(items)) {}
  void split(std::string_view text, bool at_start, PieceSink sink) const override { run(0, text, at_start, sink); }

 private:
  void run(size_t i, std::string_view text, bool at_start, PieceSink sink) const {
    if (i == items_.size()) return sink(text, at_start);
    items_[i]->split(text, at_start, [&](std::string_view t, bool a) { run(i + 1, t, a, sink); });
  }
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

class SplitPre final : public PreTokenizer {
 public:
  SplitPre(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void split(std::string_view text, bool at_start, PieceSink sink) const override {
    auto spans = covering_spans(text, invert_, [&](std::string_view t, auto&& fn) { pattern_.for_each_match(t, fn); });
    emit_split(text, at_start, spans, behavior_, sink);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

// Isolated splits on one regex: matches and the gaps between them, streamed without a vector.
class RegexIsolatePre : public PreTokenizer {
 public:
  explicit RegexIsolatePre(const std::string& pattern) : regex_(pattern) {}
  void split(std::string_view text, bool at_start, PieceSink sink) const override {
    size_t prev = 0;
    regex_.for_each_match(text, [&](size_t b, size_t e) {
      if (b > prev) sink(text.substr(prev, b - prev), at_start && prev == 0);
      if (e > b) sink(text.substr(b, e - b), at_start && b == 0);
      prev = e;
    });
    if (prev < text.size()) sink(text.substr(prev), at_start && prev == 0);
  }

 private:
  Regex regex_;
};

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), regex_(kGpt2Pattern) {
    const auto& map = byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      const std::string u = utf8_encode(map[b]);  // 1 or 2 bytes: every mapped char is < U+0800
      mapped_[b] = {{u[0], u.size() > 1 ? u[1] : '\0'}, static_cast<uint8_t>(u.size())};
    }
  }
  void split(std::string_view text, bool at_start, PieceSink sink) const override {
    std::string prefixed;
    if (add_prefix_space_ && !text.starts_with(' ')) {
      prefixed.reserve(text.size() + 1);
      prefixed += ' ';
      prefixed.append(text);
      text = prefixed;
    }
    std::string mapped;
    auto emit = [&](std::string_view piece, bool a) {
      mapped.resize(piece.size() * 2);
      size_t n = 0;
      for (char c : piece) {
        const Mapped& m = mapped_[static_cast<unsigned char>(c)];
        mapped[n] = m.bytes[0];
        mapped[n + 1] = m.bytes[1];
        n += m.len;
      }
      sink(std::string_view(mapped.data(), n), a);
    };
    if (use_regex_) regex_.split(text, at_start, emit);
    else if (!text.empty()) emit(text, at_start);
  }

 private:
  bool add_prefix_space_, use_regex_;
  RegexIsolatePre regex_;
  struct Mapped {
    char bytes[2];
    uint8_t len;
  };
  std::array<Mapped, 256> mapped_;
};

class MetaspacePre final : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePre(char32_t replacement, Prepend prepend, bool split)
      : replacement_(utf8_encode(replacement)), prepend_(prepend), split_(split) {}
  void split(std::string_view text, bool at_start, PieceSink sink) const override {
    std::string s;
    if (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && at_start))
      if (!text.starts_with(' ') && !text.starts_with(replacement_)) s = replacement_;
    for (char c : text) {
      if (c == ' ') s += replacement_;
      else s += c;
    }
    if (!split_) {
      if (!s.empty()) sink(s, at_start);
      return;
    }
    auto spans = covering_spans(s, false, [&](std::string_view t, auto&& fn) {
      for (size_t p = t.find(replacement_); p != std::string_view::npos; p = t.find(replacement_, p + replacement_.size()))
        fn(p, p + replacement_.size());
    });
    emit_split(s, at_start, spans, Behavior::kMergedWithNext, sink);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

MetaspacePre::Prepend parse_prepend_scheme(const Json& v, const std::string& path) {
  if (const Json* scheme = detail::json_opt(v, "prepend_scheme", path)) {
    const std::string where = json_path(path, "prepend_scheme");
    const std::string s = detail::json_string(*scheme, where);
    if (s == "always") return MetaspacePre::Prepend::kAlways;
    if (s == "first") return MetaspacePre::Prepend::kFirst;
    if (s == "never") return MetaspacePre::Prepend::kNever;
    detail::json_fail(where, fmt::format("unknown prepend_scheme '{}'", s));
  }
  // Files older than prepend_scheme carry add_prefix_space instead.
  return detail::json_bool_or(v, "add_prefix_space", path, true) ? MetaspacePre::Prepend::kAlways
                                                                  : MetaspacePre::Prepend::kNever;
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& v, const std::string& path, int depth) {
  if (depth > detail::kMaxComponentDepth) detail::json_fail(path, "Sequence nesting too deep");
  const std::string type = detail::json_string(detail::json_field(v, "type", path), json_path(path, "type"));
  if (type == "Sequence") {
    const std::string ip = json_path(path, "pretokenizers");
    const Json& items = detail::json_field(v, "pretokenizers", path);
    detail::json_expect_array(items, ip);
    std::vector<std::unique_ptr<PreTokenizer>> list;
    for (size_t i = 0; i < items.size(); ++i)
      list.push_back(make_pre_tokenizer(items[i], json_path(ip, i), depth + 1));
    return std::make_unique<SequencePre>(std::move(list));
  }
  if (type == "Split")
    return std::make_unique<SplitPre>(
        Pattern::from_json(detail::json_field(v, "pattern", path), json_path(path, "pattern")),
        parse_behavior(detail::json_field(v, "behavior", path), json_path(path, "behavior")),
        detail::json_bool_or(v, "invert", path, false));
  if (type == "Digits")
    return std::make_unique<RegexIsolatePre>(
        detail::json_bool_or(v, "individual_digits", path, false) ? R"(\p{N})" : R"(\p{N}+)");
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPre>(detail::json_bool_or(v, "add_prefix_space", path, true),
                                          detail::json_bool_or(v, "use_regex", path, true));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePre>(
        detail::json_char(detail::json_field(v, "replacement", path), json_path(path, "replacement")),
        parse_prepend_scheme(v, path), detail::json_bool_or(v, "split", path, true));
  if (type == "Whitespace")
    return std::make_unique<SplitPre>(Pattern::from_json(Json{{"Regex", R"(\w+|[^\w\s]+)"}}, path),
                                      Behavior::kRemoved, true);
  if (type == "WhitespaceSplit")
    return std::make_unique<SplitPre>(Pattern::from_json(Json{{"Regex", R"(\s+)"}}, path),
                                      Behavior::kRemoved, false);
  detail::json_fail(json_path(path, "type"), fmt::format("pre-tokenizer type '{}' is not supported", type));
}

}  // namespace exq::tokenizer
