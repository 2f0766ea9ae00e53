// Keyword tables, GBNF text writers, number ranges and small JSON helpers for the JSON Schema
// converter.
#include "grammar/json_schema_util.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>

#include "core/error.h"
#include "core/utf8.h"

namespace exq::grammar::schema {

void fail(const std::string& pointer, const std::string& what) {
  throw Error(fmt::format("json schema: {}: {}", pointer.empty() ? "(root)" : pointer, what));
}

std::string child(const std::string& pointer, std::string_view token) {
  std::string out = pointer + "/";
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// Keywords that only annotate are ignored; so are unknown keywords, as JSON Schema 2020-12
// says (they are annotations there too). `format` is an annotation in 2020-12 as well: the
// converter enforces date, time, date-time and uuid, and ignores the other formats.
KeywordKind keyword_kind(const std::string& key) {
  static const std::map<std::string, KeywordKind, std::less<>> kTable = [] {
    std::map<std::string, KeywordKind, std::less<>> t;
    for (const char* k : {"type", "enum", "const", "properties", "required", "additionalProperties",
                          "unevaluatedProperties", "patternProperties", "minProperties", "maxProperties",
                          "items", "prefixItems", "additionalItems", "unevaluatedItems", "minItems",
                          "maxItems", "uniqueItems", "minLength", "maxLength", "format", "minimum",
                          "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf",
                          "$ref"})
      t[k] = KeywordKind::kSupported;
    // These change which instances are valid in ways a grammar here cannot follow.
    for (const char* k : {"not", "if", "propertyNames", "dependentRequired", "dependentSchemas",
                          "dependencies", "multipleOf", "contains", "minContains", "maxContains",
                          "pattern", "$dynamicRef", "$recursiveRef"})
      t[k] = KeywordKind::kRefused;
    return t;
  }();
  auto it = kTable.find(key);
  return it == kTable.end() ? KeywordKind::kAnnotation : it->second;
}

void check_keywords(const Json& schema, const std::string& pointer) {
  if (!schema.is_object()) return;
  for (const auto& [key, value] : schema.items()) {
    if (keyword_kind(key) == KeywordKind::kRefused) fail(pointer, fmt::format("'{}' is not supported", key));
    if (key == "uniqueItems" && !value.is_boolean()) fail(pointer, "'uniqueItems' must be a boolean");
    if (key == "uniqueItems" && value.get<bool>()) fail(pointer, "'uniqueItems': true is not supported");
    if (key == "patternProperties" && !(value.is_object() && value.empty()))
      fail(pointer, "'patternProperties' is not supported");
  }
}

bool has_validation_keywords(const Json& schema, const std::set<std::string>& except) {
  if (!schema.is_object()) return false;
  for (const auto& [key, value] : schema.items())
    if (keyword_kind(key) != KeywordKind::kAnnotation && !except.count(key)) return true;
  return false;
}

Json normalize(const Json& schema, const std::string& pointer) {
  if (!schema.is_object()) return schema;
  Json out = schema;
  for (const auto& [flag, bound] : {std::pair{"exclusiveMinimum", "minimum"}, {"exclusiveMaximum", "maximum"}}) {
    auto it = out.find(flag);
    if (it == out.end() || !it->is_boolean()) continue;
    if (it->get<bool>()) {
      if (!out.contains(bound)) fail(pointer, fmt::format("'{}': true needs '{}'", flag, bound));
      out[flag] = out[bound];
      out.erase(bound);
    } else {
      out.erase(flag);
    }
  }
  if (auto it = out.find("items"); it != out.end() && it->is_array()) {
    if (out.contains("prefixItems")) fail(pointer, "'items' as a list together with 'prefixItems'");
    out["prefixItems"] = *it;
    if (out.contains("additionalItems")) {
      out["items"] = out["additionalItems"];
    } else {
      out.erase("items");
    }
  }
  out.erase("additionalItems");  // without a list-valued items it does nothing
  return out;
}

const Json& normalized(const Json& schema, const std::string& pointer, Json& storage) {
  if (!schema.is_object()) return schema;
  const bool old_form = schema.contains("additionalItems") ||
                        (schema.contains("items") && schema["items"].is_array()) ||
                        (schema.contains("exclusiveMinimum") && schema["exclusiveMinimum"].is_boolean()) ||
                        (schema.contains("exclusiveMaximum") && schema["exclusiveMaximum"].is_boolean());
  if (!old_form) return schema;
  storage = normalize(schema, pointer);
  return storage;
}

Json without(const Json& schema, const std::string& key) {
  Json out = Json::object();
  for (const auto& [k, v] : schema.items())
    if (k != key) out[k] = v;
  return out;
}

std::vector<uint32_t> code_points(std::string_view s, const std::string& pointer) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) fail(pointer, "invalid UTF-8 in a string");
    uint32_t cp = len == 1 ? b : b & (0x7f >> len);
    for (int k = 1; k < len; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c >> 6) != 2) fail(pointer, "invalid UTF-8 in a string");
      cp = (cp << 6) | (c & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      fail(pointer, "invalid UTF-8 in a string");
    out.push_back(cp);
    i += len;
  }
  return out;
}

namespace {

std::string escape_code_point(uint32_t cp) {
  if (cp < 0x80) return fmt::format("\\x{:02X}", cp);
  if (cp <= 0xffff) return fmt::format("\\u{:04X}", cp);
  return fmt::format("\\U{:08X}", cp);
}

bool is_alnum(uint32_t cp) {
  return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
}

}  // namespace

// Printable ASCII stays raw (quote and backslash escaped); the rest as \x / \u escapes, so
// the grammar text is plain ASCII.
std::string gbnf_literal(std::string_view bytes, const std::string& pointer) {
  std::string out = "\"";
  for (uint32_t cp : code_points(bytes, pointer)) {
    if (cp == '"' || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp >= 0x20 && cp < 0x7f) {
      out += static_cast<char>(cp);
    } else {
      out += escape_code_point(cp);
    }
  }
  return out + "\"";
}

std::string class_char(uint32_t cp) {
  return is_alnum(cp) ? std::string(1, static_cast<char>(cp)) : escape_code_point(cp);
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string literal_trie(const std::vector<std::string>& texts, const std::string& pointer,
                         const std::function<std::string(const std::string& body)>& make_rule) {
  struct Node {
    bool end = false;
    std::map<uint32_t, size_t> next;
  };
  std::vector<Node> trie(1);
  for (const std::string& t : texts) {
    size_t at = 0;
    for (uint32_t cp : code_points(t, pointer)) {
      if (!trie[at].next.count(cp)) {
        trie[at].next[cp] = trie.size();
        trie.emplace_back();
      }
      at = trie[at].next[cp];
    }
    trie[at].end = true;
  }
  // The texts from `node` on: a literal run while there is one way on, then a branch rule.
  std::function<std::string(size_t)> from = [&](size_t node) -> std::string {
    std::string run;
    while (!trie[node].end && trie[node].next.size() == 1) {
      run += utf8_encode(trie[node].next.begin()->first);
      node = trie[node].next.begin()->second;
    }
    std::string out = run.empty() ? "" : gbnf_literal(run, pointer);
    if (trie[node].next.empty()) return out;
    std::vector<std::string> alts;
    for (const auto& [cp, child] : trie[node].next) {
      const std::string rest = from(child);
      alts.push_back(gbnf_literal(utf8_encode(cp), pointer) + (rest.empty() ? "" : " " + rest));
    }
    std::string branch = make_rule(join(alts, " | "));
    if (trie[node].end) branch += "?";
    return out.empty() ? branch : out + " " + branch;
  };
  return from(0);
}

std::string repeat(const std::string& item, uint64_t lo, std::optional<uint64_t> hi) {
  if (hi && *hi == 0) return "";
  if (hi && *hi == lo) return lo == 1 ? item : fmt::format("{}{{{}}}", item, lo);
  if (!hi) return lo == 0 ? item + "*" : lo == 1 ? item + "+" : fmt::format("{}{{{},}}", item, lo);
  if (lo == 0 && *hi == 1) return item + "?";
  return fmt::format("{}{{{},{}}}", item, lo, *hi);
}

namespace {

std::string group(const std::vector<std::string>& alts) {
  return alts.size() == 1 ? alts[0] : "( " + join(alts, " | ") + " )";
}

std::string any_digits(size_t n) { return n == 0 ? "" : n == 1 ? " [0-9]" : fmt::format(" [0-9]{{{}}}", n); }

std::string digit_class(char a, char b) { return a == b ? fmt::format("\"{}\"", a) : fmt::format("[{}-{}]", a, b); }

// Digit strings of equal length from x to y (x <= y), leading zeros allowed.
std::string same_length(const std::string& x, const std::string& y) {
  size_t p = 0;
  while (p < x.size() && x[p] == y[p]) ++p;
  std::string head = p ? fmt::format("\"{}\"", x.substr(0, p)) : "";
  if (p == x.size()) return head;
  const size_t n = x.size() - p;
  const char x0 = x[p], y0 = y[p];
  const std::string xr = x.substr(p + 1), yr = y.substr(p + 1);
  const bool x_zeros = xr.find_first_not_of('0') == std::string::npos;
  const bool y_nines = yr.find_first_not_of('9') == std::string::npos;
  std::vector<std::string> alts;
  if (!x_zeros) alts.push_back(fmt::format("\"{}\" ", x0) + same_length(xr, std::string(n - 1, '9')));
  const char lo = x_zeros ? x0 : static_cast<char>(x0 + 1);
  const char hi = y_nines ? y0 : static_cast<char>(y0 - 1);
  if (lo <= hi) alts.push_back(digit_class(lo, hi) + any_digits(n - 1));
  if (!y_nines) alts.push_back(fmt::format("\"{}\" ", y0) + same_length(std::string(n - 1, '0'), yr));
  return (head.empty() ? "" : head + " ") + group(alts);
}

// Canonical non-negative integers in [a, b].
std::string non_negative_range(int64_t a, int64_t b) {
  std::vector<std::string> alts;
  int64_t low = 1;  // smallest number with `len` digits (0 for one digit)
  for (size_t len = 1; len <= static_cast<size_t>(kMaxDigits); ++len, low *= 10) {
    const int64_t high = low * 10 - 1;
    const int64_t first = std::max(a, len == 1 ? int64_t{0} : low), last = std::min(b, high);
    if (first <= last) alts.push_back(same_length(std::to_string(first), std::to_string(last)));
  }
  return group(alts);
}

int64_t clamp_to_int(long double x) {
  const auto cap = static_cast<long double>(kIntCap) + 2;
  return static_cast<int64_t>(std::clamp(x, -cap, cap));
}

}  // namespace

std::string int_range_gbnf(int64_t lo, int64_t hi) {
  std::vector<std::string> alts;
  if (lo < 0) alts.push_back("\"-\" " + non_negative_range(hi < 0 ? -hi : 1, -lo));
  if (hi >= 0) alts.push_back(non_negative_range(std::max<int64_t>(lo, 0), hi));
  return group(alts);
}

NumberBounds number_bounds(const Json& schema, const std::string& pointer) {
  NumberBounds b;
  auto read = [&](const char* key, std::optional<long double>& out) {
    auto it = schema.find(key);
    if (it == schema.end()) return;
    if (!it->is_number()) fail(pointer, fmt::format("'{}' must be a number", key));
    out = it->get<long double>();
  };
  read("minimum", b.minimum);
  read("exclusiveMinimum", b.exclusive_minimum);
  read("maximum", b.maximum);
  read("exclusiveMaximum", b.exclusive_maximum);
  return b;
}

// Exclusive bounds keep off by one ulp of a double where integers are spaced 2 apart
// (|E| >= 2^53), so that validators that compare doubles agree.
std::optional<std::pair<int64_t, int64_t>> integer_interval(const NumberBounds& b) {
  constexpr long double kExact = 9007199254740992.0L;  // 2^53
  int64_t lo = -kIntCap, hi = kIntCap;
  if (b.minimum) lo = std::max(lo, clamp_to_int(std::ceil(*b.minimum)));
  if (b.exclusive_minimum) {
    const long double e = *b.exclusive_minimum;
    lo = std::max(lo, clamp_to_int(std::floor(e)) + (std::fabs(e) >= kExact ? 2 : 1));
  }
  if (b.maximum) hi = std::min(hi, clamp_to_int(std::floor(*b.maximum)));
  if (b.exclusive_maximum) {
    const long double e = *b.exclusive_maximum;
    hi = std::min(hi, clamp_to_int(std::ceil(e)) - (std::fabs(e) >= kExact ? 2 : 1));
  }
  if (lo > hi) return std::nullopt;
  return std::pair{lo, hi};
}

namespace {

// "." and up to `digits` fraction digits, not all zeros.
std::string nonzero_fraction(int digits) {
  std::string tail = "[1-9]";
  for (int d = 2; d <= digits; ++d) tail = fmt::format("( [1-9] [0-9]{{0,{}}} | \"0\" {} )", d - 1, tail);
  return "\".\" " + tail;
}

}  // namespace

// Bounded numbers are written without an exponent, as an integer I (optionally "I.000") with
// I within the bounds, or as "I.F" with F not all zeros: such a number lies strictly between
// two integers k and k + 1, and is emitted only when that whole open interval lies within
// the bounds (k >= ceil(lower) and k + 1 <= floor(upper), whether the bound is exclusive or
// not). Sound; it misses only non-integers in the two partial intervals at fractional bounds.
// Near an exclusive (integer) bound E the fraction has at most 15 significant digits in all,
// so the text and E are distinct doubles too: validators that compare doubles agree.
std::string number_range_gbnf(const NumberBounds& b) {
  int fraction_digits = kMaxDigits;
  for (const auto& e : {b.exclusive_minimum, b.exclusive_maximum}) {
    if (!e) continue;
    const auto whole = std::to_string(clamp_to_int(std::floor(std::fabs(*e)))).size();
    fraction_digits = std::min(fraction_digits, 15 - static_cast<int>(whole));
  }
  std::vector<std::string> alts;
  if (auto ints = integer_interval(b))
    alts.push_back(int_range_gbnf(ints->first, ints->second) + R"( ( "." "0"{1,15} )?)");
  if (fraction_digits < 1) return join(alts, " | ");
  const std::string fraction = nonzero_fraction(fraction_digits);
  int64_t k_lo = -kIntCap - 1, k_hi = kIntCap;
  for (const auto& lower : {b.minimum, b.exclusive_minimum})
    if (lower) k_lo = std::max(k_lo, clamp_to_int(std::ceil(*lower)));
  for (const auto& upper : {b.maximum, b.exclusive_maximum})
    if (upper) k_hi = std::min(k_hi, clamp_to_int(std::floor(*upper)) - 1);
  if (std::max<int64_t>(k_lo, 0) <= k_hi)
    alts.push_back(int_range_gbnf(std::max<int64_t>(k_lo, 0), k_hi) + " " + fraction);
  // k < 0: the number is "-n.F" with n = -k - 1.
  const int64_t n_lo = std::max<int64_t>(0, -k_hi - 1), n_hi = -k_lo - 1;
  if (k_lo <= -1 && n_lo <= n_hi) alts.push_back("\"-\" " + int_range_gbnf(n_lo, n_hi) + " " + fraction);
  return join(alts, " | ");
}

namespace {

// The number written by s[at, at + n) when all are digits, else -1.
int digits_at(const std::string& s, size_t at, size_t n) {
  if (at + n > s.size()) return -1;
  int v = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

bool is_date(const std::string& s) {
  const int y = digits_at(s, 0, 4), m = digits_at(s, 5, 2), d = digits_at(s, 8, 2);
  if (s.size() != 10 || s[4] != '-' || s[7] != '-' || y < 0 || m < 1 || m > 12 || d < 1) return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  const int days[] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return d <= days[m - 1];
}

bool is_hh_mm(const std::string& s, size_t at) {
  const int h = digits_at(s, at, 2), m = digits_at(s, at + 3, 2);
  return h >= 0 && h <= 23 && s.size() > at + 2 && s[at + 2] == ':' && m >= 0 && m <= 59;
}

bool is_time(const std::string& s) {
  const int sec = digits_at(s, 6, 2);
  if (!is_hh_mm(s, 0) || s.size() < 9 || s[5] != ':' || sec < 0 || sec > 59) return false;
  size_t at = 8;
  if (s[at] == '.') {
    size_t n = 0;
    while (at + 1 + n < s.size() && s[at + 1 + n] >= '0' && s[at + 1 + n] <= '9') ++n;
    if (n < 1 || n > 9) return false;
    at += 1 + n;
  }
  if (s.size() == at + 1) return s[at] == 'Z';
  return s.size() == at + 6 && (s[at] == '+' || s[at] == '-') && is_hh_mm(s, at + 1);
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-') || (!dash && !std::isxdigit(static_cast<unsigned char>(s[i])))) return false;
  }
  return true;
}

}  // namespace

bool format_matches(const std::string& format, const std::string& s) {
  if (format == "date") return is_date(s);
  if (format == "time") return is_time(s);
  if (format == "date-time") return s.size() > 11 && s[10] == 'T' && is_date(s.substr(0, 10)) && is_time(s.substr(11));
  if (format == "uuid") return is_uuid(s);
  return true;
}

bool is_integral(const Json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

bool json_equal(const Json& a, const Json& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_number_integer() && b.is_number_integer()) {
      if (a.is_number_unsigned() != b.is_number_unsigned()) {
        const Json& s = a.is_number_unsigned() ? b : a;
        const Json& u = a.is_number_unsigned() ? a : b;
        return s.get<int64_t>() >= 0 && static_cast<uint64_t>(s.get<int64_t>()) == u.get<uint64_t>();
      }
      return a == b;
    }
    return a.get<long double>() == b.get<long double>();
  }
  if (a.type() != b.type()) return false;
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (const auto& [key, value] : a.items()) {
      auto it = b.find(key);
      if (it == b.end() || !json_equal(value, *it)) return false;
    }
    return true;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!json_equal(a[i], b[i])) return false;
    return true;
  }
  return a == b;
}

std::string instance_type(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  if (v.is_object()) return "object";
  return is_integral(v) ? "integer" : "number";
}

std::set<std::string> declared_types(const Json& schema, const std::string& pointer) {
  static const std::set<std::string> kNames = {"null", "boolean", "integer", "number", "string", "array", "object"};
  auto it = schema.find("type");
  if (it == schema.end()) return {};
  std::set<std::string> out;
  const Json list = it->is_array() ? *it : Json::array({*it});
  for (const Json& t : list) {
    if (!t.is_string() || !kNames.count(t.get<std::string>()) || out.count(t.get<std::string>()))
      fail(pointer, fmt::format("'type' must be a type name or a list of distinct ones, not {}", it->dump()));
    out.insert(t.get<std::string>());
  }
  if (out.empty()) fail(pointer, "'type' is an empty list: nothing can match");
  return out;
}

std::set<std::string> inferred_types(const Json& schema) {
  static const std::map<std::string, std::string> kOwner = {
      {"properties", "object"},   {"required", "object"},          {"additionalProperties", "object"},
      {"minProperties", "object"}, {"maxProperties", "object"},     {"unevaluatedProperties", "object"},
      {"patternProperties", "object"}, {"items", "array"},          {"prefixItems", "array"},
      {"unevaluatedItems", "array"}, {"minItems", "array"},         {"maxItems", "array"},
      {"uniqueItems", "array"},   {"minLength", "string"},         {"maxLength", "string"},
      {"format", "string"},       {"minimum", "number"},           {"maximum", "number"},
      {"exclusiveMinimum", "number"}, {"exclusiveMaximum", "number"}};
  std::set<std::string> out;
  if (schema.is_object())
    for (const auto& [key, value] : schema.items())
      if (auto it = kOwner.find(key); it != kOwner.end()) out.insert(it->second);
  if (out.empty()) out = {"null", "boolean", "number", "string", "array", "object"};
  return out;
}

const Json& resolve_ref(const Json& root, const Json& ref, const std::string& pointer,
                        std::string* target_pointer) {
  if (!ref.is_string()) fail(pointer, "'$ref' must be a string");
  const std::string text = ref.get<std::string>();
  if (text.empty() || text[0] != '#')
    fail(pointer, fmt::format("$ref '{}': only references within the schema ('#...') are supported", text));
  std::string fragment;  // the URI fragment, percent-decoded
  for (size_t i = 1; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      fragment += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      fragment += text[i];
    }
  }
  if (!fragment.empty() && fragment[0] != '/')
    fail(pointer, fmt::format("$ref '{}': anchors are not supported, only JSON pointers", text));
  try {
    const Json::json_pointer target(fragment);
    if (root.contains(target)) {
      if (target_pointer) *target_pointer = fragment;
      return root.at(target);
    }
  } catch (const nlohmann::json::exception&) {
  }
  fail(pointer, fmt::format("$ref '{}' does not name a schema in this document", text));
}

}  // namespace exq::grammar::schema
