// Added tokens (special and not) of a tokenizer.json, matched in the text before the normalizer
// and BPE run. Matching follows HF's AddedVocabulary: leftmost-longest over all contents, then
// single_word / lstrip / rstrip applied to each match. Tokens with normalized=false are matched
// on the raw text, those with normalized=true on the normalized text.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace exq::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// One piece of a split: either an added token (id >= 0) or text to tokenize (id < 0).
struct Segment {
  size_t begin = 0, end = 0;  // byte offsets into the string that was split
  int32_t id = -1;
};

// A set of added-token contents searched with a byte trie.
class AddedTokenMatcher {
 public:
  // `patterns[i]` is what to look for (the content, or its normalized form) for tokens[i].
  AddedTokenMatcher(std::vector<AddedToken> tokens, std::vector<std::string> patterns);
  AddedTokenMatcher() = default;

  bool empty() const { return tokens_.empty(); }
  // Splits `text` into added tokens and the text between them (empty text pieces omitted).
  // An empty text yields no segments.
  std::vector<Segment> split(std::string_view text) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_
  };
  int32_t child(int32_t node, unsigned char b) const;
  // Longest pattern starting at text[pos]: (token index, length), or (-1, 0).
  std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

// Rust's char::is_alphanumeric() || '_' on the last / first character of s.
bool ends_with_word_char(std::string_view s);
bool starts_with_word_char(std::string_view s);

}  // namespace exq::tokenizer
