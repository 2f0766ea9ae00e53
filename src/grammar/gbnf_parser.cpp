// GBNF text -> RawGrammar: rules of alternatives of symbols (terminals are code point sets).
// Groups become generated rules and repetitions are rewritten into generated rules, so the
// compiler and matcher only see plain sequences of terminals and rule references.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "core/utf8.h"
#include "grammar/grammar_internal.h"

namespace exq::grammar {

std::string line_column(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < offset; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      column = 1;
    } else if ((c & 0xC0) != 0x80) {  // count code points, not bytes
      ++column;
    }
  }
  return fmt::format("line {}, column {}", line, column);
}

std::string grammar_location(std::string_view text, size_t offset) {
  return "grammar: " + line_column(text, offset) + ": ";
}

namespace {

constexpr uint32_t kUnbounded = 0xFFFFFFFFu;

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Sorts and merges ranges, complements them when negated, and drops surrogates (they have no
// valid UTF-8 encoding, so no generated text can contain them).
std::vector<CharRange> normalize(std::vector<CharRange> in, bool negated) {
  std::sort(in.begin(), in.end(), [](CharRange a, CharRange b) { return a.lo < b.lo; });
  std::vector<CharRange> merged;
  for (const CharRange& r : in) {
    if (!merged.empty() && r.lo <= merged.back().hi + 1) {
      merged.back().hi = std::max(merged.back().hi, r.hi);
    } else {
      merged.push_back(r);
    }
  }
  if (negated) {
    std::vector<CharRange> comp;
    uint32_t next = 0;
    for (const CharRange& r : merged) {
      if (r.lo > next) comp.push_back({next, r.lo - 1});
      next = r.hi + 1;
    }
    if (next <= kMaxCodePoint) comp.push_back({next, kMaxCodePoint});
    merged = std::move(comp);
  }
  std::vector<CharRange> out;
  for (const CharRange& r : merged) {
    if (r.hi < 0xD800 || r.lo > 0xDFFF) {
      out.push_back(r);
      continue;
    }
    if (r.lo < 0xD800) out.push_back({r.lo, 0xD7FF});
    if (r.hi > 0xDFFF) out.push_back({0xE000, r.hi});
  }
  return out;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  RawGrammar run() {
    skip_space(true);
    while (pos_ < text_.size()) {
      parse_rule();
      skip_space(true);
    }
    return std::move(g_);
  }

 private:
  [[noreturn]] void fail(size_t offset, const std::string& message) const {
    throw Error(grammar_location(text_, offset) + message);
  }

  char peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }
  bool at_end() const { return pos_ >= text_.size(); }

  std::string describe(size_t offset) const {
    if (offset >= text_.size()) return "end of text";
    const auto c = static_cast<unsigned char>(text_[offset]);
    if (c == '\n' || c == '\r') return "end of line";
    if (c >= 0x20 && c < 0x7F) return fmt::format("'{}'", static_cast<char>(c));
    return fmt::format("byte 0x{:02X}", c);
  }

  // Spaces, tabs and # comments; newlines too when newline_ok (after ::= and |, in groups).
  void skip_space(bool newline_ok) {
    while (!at_end()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t') {
        ++pos_;
      } else if (c == '#') {
        while (!at_end() && text_[pos_] != '\n' && text_[pos_] != '\r') ++pos_;
      } else if ((c == '\n' || c == '\r') && newline_ok) {
        ++pos_;
      } else {
        break;
      }
    }
  }

  std::string_view parse_name() {
    const size_t start = pos_;
    while (!at_end() && is_name_char(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }

  uint32_t rule_id(std::string_view name) {
    auto [it, inserted] =
        rule_ids_.emplace(std::string(name), static_cast<uint32_t>(g_.rules.size()));
    if (inserted) {
      RawRule r;
      r.name = std::string(name);
      g_.rules.push_back(std::move(r));
    }
    return it->second;
  }

  // A rule for a group or repetition (named lazily: a {0,n} makes n of them).
  uint32_t new_rule(uint32_t parent) {
    RawRule r;
    r.parent = parent;
    r.generated = true;
    r.defined = true;
    r.def_offset = g_.rules[parent].def_offset;
    g_.rules.push_back(std::move(r));
    return static_cast<uint32_t>(g_.rules.size() - 1);
  }

  void add_symbol(std::vector<Symbol>& seq, Symbol s) {
    if (++symbols_ > kMaxSymbols) {
      fail(pos_, fmt::format("grammar too large (more than {} symbols after expanding repetitions)",
                             kMaxSymbols));
    }
    seq.push_back(s);
  }

  uint32_t add_charset(std::vector<CharRange> ranges) {
    g_.charsets.push_back(std::move(ranges));
    return static_cast<uint32_t>(g_.charsets.size() - 1);
  }

  uint32_t single_char(uint32_t cp) {
    auto it = single_chars_.find(cp);
    if (it != single_chars_.end()) return it->second;
    const uint32_t id = add_charset({{cp, cp}});
    single_chars_.emplace(cp, id);
    return id;
  }

  void parse_rule() {
    const size_t start = pos_;
    const std::string_view name = parse_name();
    if (name.empty()) fail(pos_, fmt::format("expecting a rule name, got {}", describe(pos_)));
    skip_space(false);
    if (text_.substr(pos_, 3) != "::=") {
      fail(pos_, fmt::format("expecting '::=' after rule name '{}', got {}", name, describe(pos_)));
    }
    pos_ += 3;
    skip_space(true);
    const uint32_t id = rule_id(name);
    if (g_.rules[id].defined) {
      fail(start, fmt::format("rule '{}' is defined twice (first definition at {})", name,
                              line_column(text_, g_.rules[id].def_offset)));
    }
    g_.rules[id].defined = true;
    g_.rules[id].def_offset = start;
    auto alts = parse_alternates(id, false, 0);
    g_.rules[id].alts = std::move(alts);
    if (!at_end() && text_[pos_] != '\n' && text_[pos_] != '\r') {
      fail(pos_, fmt::format("unexpected {} in the definition of rule '{}'", describe(pos_), name));
    }
  }

  std::vector<std::vector<Symbol>> parse_alternates(uint32_t rule, bool nested, int depth) {
    std::vector<std::vector<Symbol>> alts;
    alts.push_back(parse_sequence(rule, nested, depth));
    while (peek() == '|') {
      ++pos_;
      if (!nested && empty_alternative_ends_rule()) {
        alts.emplace_back();
        break;
      }
      skip_space(true);
      alts.push_back(parse_sequence(rule, nested, depth));
    }
    return alts;
  }

  // After a top-level '|': whether only a line break and the next rule's `name ::=` follow
  // (`a ::= "x" |` then a new rule: the last alternative is empty). Leaves pos_ at the line
  // break when so, else where it was.
  bool empty_alternative_ends_rule() {
    const size_t start = pos_;
    skip_space(false);
    const size_t line_end = pos_;
    if (at_end()) return true;
    if (peek() != '\n' && peek() != '\r') {
      pos_ = start;
      return false;
    }
    skip_space(true);
    bool rule_follows = !parse_name().empty();
    if (rule_follows) {
      skip_space(false);
      rule_follows = text_.substr(pos_, 3) == "::=";
    }
    pos_ = rule_follows ? line_end : start;
    return rule_follows;
  }

  std::vector<Symbol> parse_sequence(uint32_t rule, bool nested, int depth) {
    std::vector<Symbol> seq;
    size_t last = std::string::npos;  // where the last element's symbols start in seq
    while (!at_end()) {
      const char c = text_[pos_];
      const size_t here = pos_;
      if (c == '"') {
        last = seq.size();
        parse_literal(seq);
      } else if (c == '[') {
        last = seq.size();
        add_symbol(seq, {false, parse_class()});
      } else if (c == '.') {
        ++pos_;
        last = seq.size();
        if (any_charset_ == kUnbounded) any_charset_ = add_charset(normalize({}, true));
        add_symbol(seq, {false, any_charset_});
      } else if (is_name_char(c)) {
        const std::string_view name = parse_name();
        const size_t after = pos_;
        skip_space(false);
        if (text_.substr(pos_, 3) == "::=") {
          fail(here, fmt::format("unexpected '::=' after '{}' (a rule definition must start on a "
                                 "new line)",
                                 name));
        }
        pos_ = after;
        const uint32_t id = rule_id(name);
        if (!g_.rules[id].referenced) {
          g_.rules[id].referenced = true;
          g_.rules[id].ref_offset = here;
        }
        last = seq.size();
        add_symbol(seq, {true, id});
      } else if (c == '(') {
        if (depth + 1 > kMaxNesting) {
          fail(here, fmt::format("groups nested deeper than {} levels", kMaxNesting));
        }
        ++pos_;
        skip_space(true);
        auto alts = parse_alternates(rule, true, depth + 1);
        if (peek() != ')') {
          fail(pos_, fmt::format("expecting ')' to close the group opened at {}, got {}",
                                 line_column(text_, here), describe(pos_)));
        }
        ++pos_;
        const uint32_t id = new_rule(rule);
        g_.rules[id].alts = std::move(alts);
        last = seq.size();
        add_symbol(seq, {true, id});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last == std::string::npos) {
          fail(here, fmt::format("'{}' must follow an element to repeat", c));
        }
        uint32_t min = 0;
        uint32_t max = kUnbounded;
        ++pos_;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') parse_bounds(here, nested, min, max);
        apply_repetition(rule, seq, last, min, max);
      } else {
        break;
      }
      skip_space(nested);
    }
    return seq;
  }

  uint32_t parse_int(bool nested) {
    skip_space(nested);
    if (peek() < '0' || peek() > '9')
      fail(pos_, fmt::format("expecting a number, got {}", describe(pos_)));
    uint64_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      value = std::min<uint64_t>(value * 10 + static_cast<uint64_t>(peek() - '0'), 0xFFFFFFFEu);
      ++pos_;
    }
    skip_space(nested);
    return static_cast<uint32_t>(value);
  }

  // {m}, {m,}, {m,n}; pos_ is just past '{'.
  void parse_bounds(size_t brace, bool nested, uint32_t& min, uint32_t& max) {
    min = parse_int(nested);
    max = min;
    if (peek() == ',') {
      ++pos_;
      skip_space(nested);
      max = peek() >= '0' && peek() <= '9' ? parse_int(nested) : kUnbounded;
    }
    if (peek() != '}')
      fail(pos_, fmt::format("expecting '}}' to close the repetition, got {}", describe(pos_)));
    ++pos_;
    const uint32_t biggest = max == kUnbounded ? min : std::max(min, max);
    if (biggest > kMaxRepetition) {
      fail(brace,
           fmt::format("repetition bound {} is larger than the limit {}", biggest, kMaxRepetition));
    }
    if (max < min)
      fail(brace, fmt::format("repetition {{{},{}}} has its maximum below its minimum", min, max));
  }

  // Replaces seq[last..] (the element) by min copies of it and then either a star rule
  // (R ::= X R | "") or a chain of max-min nested optionals (O_k ::= X O_k-1 | ""), which
  // stays linear in max-min.
  void apply_repetition(uint32_t rule, std::vector<Symbol>& seq, size_t last, uint32_t min,
                        uint32_t max) {
    Symbol item;
    if (seq.size() - last == 1) {
      item = seq[last];
    } else {
      const uint32_t id = new_rule(rule);
      g_.rules[id].alts.emplace_back(seq.begin() + static_cast<std::ptrdiff_t>(last), seq.end());
      item = {true, id};
    }
    seq.resize(last);
    for (uint32_t i = 0; i < min; ++i) add_symbol(seq, item);
    if (max == kUnbounded) {
      const uint32_t id = new_rule(rule);
      std::vector<Symbol> loop;
      add_symbol(loop, item);
      add_symbol(loop, {true, id});
      g_.rules[id].alts = {std::move(loop), {}};
      add_symbol(seq, {true, id});
    } else if (max > min) {
      uint32_t prev = kUnbounded;
      for (uint32_t k = 0; k < max - min; ++k) {
        const uint32_t id = new_rule(rule);
        std::vector<Symbol> one;
        add_symbol(one, item);
        if (prev != kUnbounded) add_symbol(one, {true, prev});
        g_.rules[id].alts = {std::move(one), {}};
        prev = id;
      }
      add_symbol(seq, {true, prev});
    }
  }

  uint32_t parse_hex(int digits) {
    uint32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      const int h = hex_value(peek());
      if (h < 0) fail(pos_, fmt::format("expecting {} hex digits, got {}", digits, describe(pos_)));
      value = (value << 4) | static_cast<uint32_t>(h);
      ++pos_;
    }
    return value;
  }

  // One character of a literal or class: an escape or a UTF-8 encoded code point.
  uint32_t parse_char() {
    const size_t start = pos_;
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c == '\\') {
      ++pos_;
      if (at_end()) fail(start, "escape '\\' at end of text");
      const char e = text_[pos_++];
      uint32_t cp = 0;
      switch (e) {
        case 'n':
          return '\n';
        case 'r':
          return '\r';
        case 't':
          return '\t';
        case '\\':
          return '\\';
        case '"':
          return '"';
        case '[':
          return '[';
        case ']':
          return ']';
        case 'x':
          cp = parse_hex(2);
          break;
        case 'u':
          cp = parse_hex(4);
          break;
        case 'U':
          cp = parse_hex(8);
          break;
        default:
          if (e > 0x20 && e < 0x7F) fail(start, fmt::format("unknown escape '\\{}'", e));
          fail(start, fmt::format("unknown escape: '\\' followed by {}", describe(start + 1)));
      }
      if (cp > kMaxCodePoint) fail(start, fmt::format("code point 0x{:X} is above U+10FFFF", cp));
      return cp;
    }
    char32_t cp = 0;
    const int len = utf8_decode(text_, pos_, cp);
    if (len == 0) fail(start, "invalid UTF-8 in grammar text");
    pos_ += static_cast<size_t>(len);
    return cp;
  }

  void parse_literal(std::vector<Symbol>& seq) {
    const size_t start = pos_++;
    while (true) {
      if (at_end() || peek() == '\n' || peek() == '\r') fail(start, "unterminated string literal");
      if (peek() == '"') break;
      const size_t here = pos_;
      const uint32_t cp = parse_char();
      if (cp >= 0xD800 && cp <= 0xDFFF) {
        fail(here, fmt::format("surrogate U+{:04X} in a string literal can never match", cp));
      }
      add_symbol(seq, {false, single_char(cp)});
    }
    ++pos_;
  }

  uint32_t parse_class() {
    const size_t start = pos_++;
    bool negated = false;
    if (peek() == '^') {
      negated = true;
      ++pos_;
    }
    std::vector<CharRange> ranges;
    while (true) {
      if (at_end() || peek() == '\n' || peek() == '\r') fail(start, "unterminated character class");
      if (peek() == ']') break;
      const size_t here = pos_;
      const uint32_t lo = parse_char();
      uint32_t hi = lo;
      if (peek() == '-' && peek(1) != ']' && pos_ + 1 < text_.size()) {
        ++pos_;
        if (peek() == '\n' || peek() == '\r') fail(start, "unterminated character class");
        hi = parse_char();
        if (hi < lo) {
          fail(here,
               fmt::format("character range U+{:04X}-U+{:04X} ends before it starts", lo, hi));
        }
      }
      ranges.push_back({lo, hi});
    }
    ++pos_;
    return add_charset(normalize(std::move(ranges), negated));
  }

  std::string_view text_;
  size_t pos_ = 0;
  RawGrammar g_;
  std::unordered_map<std::string, uint32_t> rule_ids_;
  std::unordered_map<uint32_t, uint32_t> single_chars_;  // code point -> charset id
  uint32_t any_charset_ = kUnbounded;
  size_t symbols_ = 0;
};

}  // namespace

RawGrammar parse_gbnf(std::string_view text) { return Parser(text).run(); }

std::string raw_rule_name(const RawGrammar& raw, uint32_t rule) {
  const RawRule& r = raw.rules[rule];
  if (!r.generated) return r.name;
  return fmt::format("{}/{}", raw.rules[r.parent].name, rule);
}

}  // namespace exq::grammar
