// The `pattern` of Split / Replace components: {"String": literal} or {"Regex": pcre}. Literal
// patterns are matched with a plain substring search, regexes with PCRE2.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"

namespace exq::tokenizer {

class Pattern {
 public:
  static Pattern from_json(const detail::Json& v, const std::string& path);
  static Pattern literal(std::string text);

  // fn(begin, end) for each non-overlapping match, left to right. An empty literal never
  // matches.
  template <typename Fn>
  void for_each_match(std::string_view s, Fn&& fn) const {
    if (regex_) {
      regex_->for_each_match(s, fn);
      return;
    }
    if (literal_.empty()) return;
    size_t pos = 0;
    while ((pos = s.find(literal_, pos)) != std::string_view::npos) {
      fn(pos, pos + literal_.size());
      pos += literal_.size();
    }
  }

  // s with every match replaced by `content`.
  std::string replace_all(std::string_view s, std::string_view content) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
};

}  // namespace exq::tokenizer
