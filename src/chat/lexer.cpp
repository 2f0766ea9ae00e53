#include "chat/lexer.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "chat/text.h"
#include "core/error.h"

namespace exq::chat {

std::string location(int line, int col) {
  return fmt::format("chat template line {}, column {}", line, col);
}

namespace {

enum class TagKind { Var, Block, Comment };

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Jinja: newlines are \n, \r\n or \r, all become \n; one trailing newline is dropped.
std::string normalize_newlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out += s[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit_text(pos_, src_.substr(pos_));
        break;
      }
      lex_tag(tag);
    }
    Token eof;
    eof.kind = TokenKind::Eof;
    std::tie(eof.line, eof.col) = where(src_.size());
    out_.push_back(std::move(eof));
    return std::move(out_);
  }

 private:
  std::pair<int, int> where(size_t pos) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), pos);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());
    return {static_cast<int>(line), static_cast<int>(pos - line_starts_[line - 1] + 1)};
  }

  [[noreturn]] void fail(size_t pos, const std::string& msg) const {
    const auto [line, col] = where(pos);
    throw Error(location(line, col) + ": " + msg);
  }

  bool at(size_t pos, std::string_view s) const { return src_.compare(pos, s.size(), s) == 0; }

  size_t find_tag(size_t from) const {
    for (size_t p = src_.find('{', from); p != std::string::npos; p = src_.find('{', p + 1)) {
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#'))
        return p;
    }
    return std::string::npos;
  }

  size_t skip_space(size_t pos) const {
    while (pos < src_.size()) {
      size_t next = pos;
      if (!is_py_space(decode_utf8(src_, next))) break;
      pos = next;
    }
    return pos;
  }

  void emit_text(size_t pos, std::string text) {
    if (text.empty()) return;
    Token t;
    t.kind = TokenKind::Text;
    t.text = std::move(text);
    std::tie(t.line, t.col) = where(pos);
    out_.push_back(std::move(t));
  }

  void emit(TokenKind kind, size_t pos, std::string text = {}) {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    std::tie(t.line, t.col) = where(pos);
    out_.push_back(std::move(t));
  }

  // Text before a tag, with '-' (strip all whitespace) or lstrip_blocks applied.
  void emit_text_before(size_t text_pos, std::string text, char sign, TagKind kind) {
    if (sign == '-') {
      text = py_strip(text, false, true);
    } else if (sign != '+' && kind != TagKind::Var) {
      const size_t nl = text.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && text.size() > l_pos &&
          py_strip(std::string_view(text).substr(l_pos), true, false).empty())
        text.resize(l_pos);
    }
    emit_text(text_pos, std::move(text));
  }

  // After a block or comment end: '-' eats all whitespace, '+' nothing, else one newline.
  size_t after_end(size_t pos, char sign, bool trim_newline) {
    if (sign == '-') pos = skip_space(pos);
    else if (sign != '+' && trim_newline && pos < src_.size() && src_[pos] == '\n') ++pos;
    line_starting_ = pos > 0 && src_[pos - 1] == '\n';
    return pos;
  }

  void lex_tag(size_t tag) {
    const char c = src_[tag + 1];
    const TagKind kind = c == '{' ? TagKind::Var : c == '%' ? TagKind::Block : TagKind::Comment;
    size_t content = tag + 2;
    char sign = 0;
    if (content < src_.size() && (src_[content] == '-' || src_[content] == '+')) sign = src_[content++];
    std::string text = src_.substr(pos_, tag - pos_);
    const size_t text_pos = pos_;

    if (kind == TagKind::Block && lex_raw(text_pos, text, tag, content, sign)) return;
    emit_text_before(text_pos, std::move(text), sign, kind);
    if (kind == TagKind::Comment) {
      if (content >= src_.size()) {  // jinja2 quirk: "{#" closing the input is dropped silently
        pos_ = src_.size();
        return;
      }
      const size_t end = src_.find("#}", content);
      if (end == std::string::npos) fail(tag, "missing end of comment tag");
      char end_sign = 0;
      if (end > content && (src_[end - 1] == '-' || src_[end - 1] == '+')) end_sign = src_[end - 1];
      pos_ = after_end(end + 2, end_sign, true);
      return;
    }
    emit(kind == TagKind::Var ? TokenKind::VarBegin : TokenKind::BlockBegin, tag);
    lex_inside(tag, content, kind);
  }

  // {% raw %}...{% endraw %}: the body is text, untouched. Returns false if not a raw tag.
  bool lex_raw(size_t text_pos, std::string& text, size_t tag, size_t content, char sign) {
    size_t p = skip_space(content);
    if (!at(p, "raw")) return false;
    p = skip_space(p + 3);
    size_t body;
    if (at(p, "-%}")) body = skip_space(p + 3);
    else if (at(p, "%}")) body = p + 2;
    else return false;
    emit_text_before(text_pos, std::move(text), sign, TagKind::Block);
    line_starting_ = body > 0 && src_[body - 1] == '\n';
    for (size_t q = src_.find("{%", body); q != std::string::npos; q = src_.find("{%", q + 1)) {
      size_t r = q + 2;
      char end_sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) end_sign = src_[r++];
      r = skip_space(r);
      if (!at(r, "endraw")) continue;
      r = skip_space(r + 6);
      char close_sign = 0;
      if (at(r, "-%}") || at(r, "+%}")) close_sign = src_[r++];
      if (!at(r, "%}")) continue;
      emit_text_before(body, src_.substr(body, q - body), end_sign, TagKind::Block);
      pos_ = after_end(r + 2, close_sign, true);
      return true;
    }
    fail(tag, "missing end of raw directive");
  }

  void lex_inside(size_t tag, size_t pos, TagKind kind) {
    std::vector<char> balance;
    while (true) {
      pos = skip_space(pos);
      if (pos >= src_.size())
        fail(tag, kind == TagKind::Var ? "unexpected end of template, expected '}}'"
                                       : "unexpected end of template, expected '%}'");
      if (balance.empty()) {
        if (kind == TagKind::Block) {
          char sign = 0;
          size_t p = pos;
          if (at(p, "-%}") || at(p, "+%}")) sign = src_[p++];
          if (at(p, "%}")) {
            emit(TokenKind::BlockEnd, pos);
            pos_ = after_end(p + 2, sign, true);
            return;
          }
        } else {
          const bool minus = at(pos, "-}}");
          if (minus || at(pos, "}}")) {
            emit(TokenKind::VarEnd, pos);
            pos_ = after_end(pos + (minus ? 3 : 2), minus ? '-' : 0, false);
            return;
          }
        }
      }
      pos = lex_token(pos, balance);
    }
  }

  // (\d+_)*\d+ starting at pos; returns the end, or pos when there is no digit.
  size_t digits_end(size_t pos) const {
    size_t p = pos;
    while (p < src_.size() && is_digit(src_[p])) {
      while (p < src_.size() && is_digit(src_[p])) ++p;
      if (p + 1 < src_.size() && src_[p] == '_' && is_digit(src_[p + 1])) ++p;
    }
    return p;
  }

  size_t lex_number(size_t pos) {
    const size_t int_end = digits_end(pos);
    size_t end = int_end;
    bool is_float = false;
    if (pos == 0 || src_[pos - 1] != '.') {
      if (end + 1 < src_.size() && src_[end] == '.' && is_digit(src_[end + 1])) {
        end = digits_end(end + 1);
        is_float = true;
      }
      if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
        size_t e = end + 1;
        if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
        if (e < src_.size() && is_digit(src_[e])) {
          end = digits_end(e);
          is_float = true;
        }
      }
    }
    std::string digits;
    int base = 10;
    if (!is_float && src_[pos] == '0' && pos + 1 < src_.size() &&
        std::string_view("bBoOxX").find(src_[pos + 1]) != std::string_view::npos) {
      const char b = static_cast<char>(src_[pos + 1] | 0x20);
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      end = pos + 2;
      while (end < src_.size() && (src_[end] == '_' || (hex_value(src_[end]) >= 0 &&
                                                        hex_value(src_[end]) < base)))
        ++end;
      for (size_t i = pos + 2; i < end; ++i)
        if (src_[i] != '_') digits += src_[i];
      if (digits.empty()) fail(pos, "invalid integer literal");
    } else {
      if (!is_float && src_[pos] == '0') {  // like Python, a decimal integer has no leading 0
        end = pos + 1;
        while (end < src_.size() && (src_[end] == '0' || (src_[end] == '_' && end + 1 < src_.size() &&
                                                          src_[end + 1] == '0')))
          ++end;
      }
      for (size_t i = pos; i < end; ++i)
        if (src_[i] != '_') digits += src_[i];
    }
    Token t;
    std::tie(t.line, t.col) = where(pos);
    t.text = src_.substr(pos, end - pos);
    if (is_float) {
      t.kind = TokenKind::Float;
      const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), t.float_value);
      if (r.ec == std::errc::result_out_of_range)
        t.float_value = digits.find_first_of("-") != std::string::npos ? 0.0 : HUGE_VAL;
      else if (r.ec != std::errc()) fail(pos, "invalid float literal");
    } else {
      t.kind = TokenKind::Int;
      const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), t.int_value, base);
      if (r.ec != std::errc() || r.ptr != digits.data() + digits.size())
        fail(pos, fmt::format("integer literal '{}' does not fit in 64 bits", t.text));
    }
    out_.push_back(std::move(t));
    return end;
  }

  size_t lex_string(size_t pos) {
    const char quote = src_[pos];
    size_t p = pos + 1;
    std::string value;
    while (true) {
      if (p >= src_.size()) fail(pos, fmt::format("unexpected char '{}' (unterminated string)", quote));
      const char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) fail(pos, "unterminated string");
      p = unescape(p, value);
    }
    Token t;
    t.kind = TokenKind::String;
    t.text = std::move(value);
    std::tie(t.line, t.col) = where(pos);
    out_.push_back(std::move(t));
    return p + 1;
  }

  // Python "unicode-escape" for the escape at src_[p] == '\\'; returns the position after it.
  size_t unescape(size_t p, std::string& value) {
    const char e = src_[p + 1];
    auto hex = [&](int n) {
      char32_t cp = 0;
      for (int i = 0; i < n; ++i) {
        const size_t q = p + 2 + i;
        const int h = q < src_.size() ? hex_value(src_[q]) : -1;
        if (h < 0) fail(p, fmt::format("truncated \\{} escape in string", e));
        cp = cp * 16 + static_cast<char32_t>(h);
      }
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        fail(p, fmt::format("invalid \\{} escape in string", e));
      append_utf8(value, cp);
      return p + 2 + n;
    };
    switch (e) {
      case '\n': return p + 2;
      case '\\': value += '\\'; return p + 2;
      case '\'': value += '\''; return p + 2;
      case '"': value += '"'; return p + 2;
      case 'a': value += '\a'; return p + 2;
      case 'b': value += '\b'; return p + 2;
      case 'f': value += '\f'; return p + 2;
      case 'n': value += '\n'; return p + 2;
      case 'r': value += '\r'; return p + 2;
      case 't': value += '\t'; return p + 2;
      case 'v': value += '\v'; return p + 2;
      case 'x': return hex(2);
      case 'u': return hex(4);
      case 'U': return hex(8);
      case 'N': fail(p, "\\N{...} escapes are not supported");
      default: break;
    }
    if (e >= '0' && e <= '7') {
      char32_t cp = 0;
      size_t q = p + 1;
      for (int i = 0; i < 3 && q < src_.size() && src_[q] >= '0' && src_[q] <= '7'; ++i, ++q)
        cp = cp * 8 + static_cast<char32_t>(src_[q] - '0');
      append_utf8(value, cp);
      return q;
    }
    value += '\\';  // unknown escapes stay as written
    return p + 1;
  }

  size_t lex_token(size_t pos, std::vector<char>& balance) {
    const char c = src_[pos];
    if (is_digit(c)) return lex_number(pos);
    if (is_name_start(c)) {
      size_t end = pos;
      while (end < src_.size() && is_name_char(src_[end])) ++end;
      emit(TokenKind::Name, pos, src_.substr(pos, end - pos));
      return end;
    }
    if (c == '\'' || c == '"') return lex_string(pos);
    static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (std::string_view op : kTwo) {
      if (at(pos, op)) {
        emit(TokenKind::Op, pos, std::string(op));
        return pos + 2;
      }
    }
    if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
      size_t next = pos;
      std::string ch;
      append_utf8(ch, decode_utf8(src_, next));
      fail(pos, fmt::format("unexpected char {}", py_repr_string(ch)));
    }
    if (c == '(' || c == '[' || c == '{') {
      balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) fail(pos, fmt::format("unexpected '{}'", c));
      if (balance.back() != c)
        fail(pos, fmt::format("unexpected '{}', expected '{}'", c, balance.back()));
      balance.pop_back();
    }
    emit(TokenKind::Op, pos, std::string(1, c));
    return pos + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
  size_t pos_ = 0;
  bool line_starting_ = true;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(source).run(); }

}  // namespace exq::chat
