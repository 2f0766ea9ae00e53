#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {
namespace {

bool is_word_char(std::string_view ch) {
  static const Regex word(R"(^[\p{Alphabetic}\p{N}_])");
  return word.find(ch, 0).has_value();
}

// Start of the run of whitespace that ends s (s.size() when s does not end in whitespace).
size_t trailing_space_start(std::string_view s) {
  size_t start = s.size();
  while (start > 0) {
    size_t b = start - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    size_t i = b;
    if (!is_unicode_whitespace(utf8_next(s, i))) break;
    start = b;
  }
  return start;
}

size_t leading_space_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!is_unicode_whitespace(utf8_next(s, j))) break;
    i = j;
  }
  return i;
}

}  // namespace

bool ends_with_word_char(std::string_view s) {
  if (s.empty()) return false;
  size_t b = s.size() - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  return is_word_char(s.substr(b));
}

bool starts_with_word_char(std::string_view s) {
  if (s.empty()) return false;
  const auto n = static_cast<size_t>(utf8_seq_len(static_cast<unsigned char>(s[0])));
  return is_word_char(s.substr(0, std::min(n, s.size())));
}

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, std::vector<std::string> patterns)
    : tokens_(std::move(tokens)) {
  nodes_.emplace_back();
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& p = patterns[t];
    if (p.empty()) continue;  // HF ignores empty contents
    first_byte_[static_cast<unsigned char>(p[0])] = true;
    int32_t node = 0;
    for (char c : p) {
      const auto b = static_cast<unsigned char>(c);
      int32_t next = child(node, b);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        auto& ch = nodes_[static_cast<size_t>(node)].children;
        ch.insert(std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t{-1})),
                  std::make_pair(b, next));
        nodes_.emplace_back();
      }
      node = next;
    }
    // The first token with a given content wins.
    if (nodes_[static_cast<size_t>(node)].token < 0) nodes_[static_cast<size_t>(node)].token = static_cast<int32_t>(t);
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
  const auto& ch = nodes_[static_cast<size_t>(node)].children;
  auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t{-1}));
  return it != ch.end() && it->first == b ? it->second : -1;
}

std::pair<int32_t, size_t> AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[static_cast<size_t>(node)].token >= 0) best = {nodes_[static_cast<size_t>(node)].token, i + 1 - pos};
  }
  return best;
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> out;
  size_t done = 0, pos = 0;
  while (pos < text.size() && !tokens_.empty()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [t, len] = longest_at(text, pos);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[static_cast<size_t>(t)];
    size_t start = pos, stop = pos + len;
    pos = stop;
    if (tok.single_word && ((start > 0 && ends_with_word_char(text.substr(0, start))) ||
                            (stop < text.size() && starts_with_word_char(text.substr(stop)))))
      continue;
    if (tok.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), done);
    if (tok.rstrip) stop += leading_space_len(text.substr(stop));
    if (start > done) out.push_back({done, start, -1});
    out.push_back({start, stop, tok.id});
    done = pos = stop;
  }
  if (done < text.size()) out.push_back({done, text.size(), -1});
  return out;
}

}  // namespace exq::tokenizer
