// Splits a Jinja template into tokens the way jinja2's lexer does with Hugging Face's settings
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False): text runs with the
// whitespace control of '-' / '+' markers already applied, and the tokens inside {{ }} / {% %}.
// Comments and {% raw %} markers never reach the parser.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace exq::chat {

enum class TokenKind : uint8_t {
  Text,        // template data between tags (text holds it)
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,        // identifier or keyword
  String,      // string literal, escapes resolved
  Int,
  Float,
  Op,          // operator or punctuation, text holds it ("==", "(", "|", ...)
  Eof,
};

struct Token {
  TokenKind kind = TokenKind::Eof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0.0;
  int line = 1;  // 1-based, after newline normalization
  int col = 1;   // 1-based byte column
};

// Throws exq::Error "chat template line L, column C: ..." on lexical errors.
std::vector<Token> tokenize(std::string_view source);

// "line L, column C" prefix used by every template error.
std::string location(int line, int col);

}  // namespace exq::chat
