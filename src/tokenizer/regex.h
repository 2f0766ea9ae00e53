// A compiled PCRE2 regex (UTF + UCP, JIT when available) for pre-tokenizer splits and Replace
// components. Immutable after construction and safe to share between threads: match scratch
// space is per thread. Subjects must be valid UTF-8 (callers validate once up front).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace exq::tokenizer {

class Regex {
 public:
  // Throws exq::Error with PCRE2's message and offset when the pattern does not compile.
  explicit Regex(const std::string& pattern);

  // First match at or after `start` as [begin, end) byte offsets. A failed match (e.g. the
  // backtracking limit) throws exq::Error rather than being treated as "no match".
  std::optional<std::pair<size_t, size_t>> find(std::string_view subject, size_t start) const;

  // Calls fn(begin, end) for each successive non-overlapping match. An empty match does not
  // repeat: the search resumes one character later.
  template <typename Fn>
  void for_each_match(std::string_view subject, Fn&& fn) const {
    size_t pos = 0;
    while (pos <= subject.size()) {
      auto m = find(subject, pos);
      if (!m) break;
      fn(m->first, m->second);
      pos = m->second > m->first ? m->second : next_char(subject, m->second);
    }
  }

  const std::string& pattern() const { return pattern_; }

 private:
  static size_t next_char(std::string_view s, size_t pos);
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

}  // namespace exq::tokenizer
