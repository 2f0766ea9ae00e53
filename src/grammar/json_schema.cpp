// JSON Schema -> GBNF. Every schema node becomes a rule; values are written without
// surrounding whitespace, and containers put the bounded `ws` rule after each token.
//
// Supported: type (and lists of types), enum, const, properties, required,
// additionalProperties, unevaluatedProperties, items, prefixItems (and draft-2019 list items
// with additionalItems), unevaluatedItems, minItems, maxItems, minLength, maxLength, minimum,
// maximum, exclusiveMinimum, exclusiveMaximum (numbers, or draft-4 booleans), format (date,
// time, date-time, uuid; the others are ignored: format is an annotation in 2020-12), anyOf,
// oneOf (only when its alternatives provably exclude each other), allOf (merged into one
// schema), $ref to "#" or any "#/json/pointer" (recursion allowed), uniqueItems false,
// patternProperties {}, minProperties / maxProperties where the listed properties already
// satisfy them. Ignored: title, description, default, examples, $schema, $id, $comment,
// $defs, definitions, deprecated, readOnly, writeOnly, content*, and unknown keywords (all
// annotations in 2020-12). Refused with an error: see keyword_kind in json_schema_util.cpp.
//
// Deliberate narrowings (sound: the grammar accepts a subset of the valid texts):
// - properties come in the schema's order; with properties and no additionalProperties, no
//   other keys; extra keys (additionalProperties true / a schema) follow the listed ones and
//   never spell a listed name (written without escapes while they could);
// - numbers have at most 16 integral digits, 16 fraction digits and a 2-digit exponent;
//   bounded numbers have no exponent, no "-0" and are exact only at integer bounds (see
//   number_range_gbnf);
// - keywords of one type without `type` (e.g. properties) emit only that type;
// - \u escapes in strings must form valid code points (no lone surrogates);
// - maxLength / maxItems above kMaxRepeat are lowered to it;
// - format date / date-time: days checked per month and leap year; time: no leap second;
// - enum / const values are emitted as their JSON text (numbers as nlohmann writes them, keys
//   in the given order), with whitespace allowed only between tokens.
#include "grammar/json_schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "core/error.h"
#include "grammar/json_schema_util.h"

namespace exq::grammar {
namespace {

using schema::Json;
using schema::join;

const std::string kQuote = R"("\"")";
constexpr int kMaxNesting = 200;

struct Primitive {
  const char* name;
  const char* body;
  std::vector<const char*> uses;
};

// At most two newlines and 20 spaces or tabs between tokens: enough for pretty-printed JSON,
// and a model cannot loop on whitespace.
const Primitive kPrimitives[] = {
    {"ws", R"(( " " | "\n" "\n"? [ \t]{0,20} )?)", {}},
    {"value", "object | array | string | number | boolean | null",
     {"object", "array", "string", "number", "boolean", "null"}},
    {"object", R"("{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}")",
     {"ws", "string", "value"}},
    {"array", R"("[" ws ( value ws ( "," ws value ws )* )? "]")", {"ws", "value"}},
    {"string", R"("\"" char* "\"")", {"char"}},
    {"char", R"([^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" uescape ))", {"uescape"}},
    // A \u escape is a code point, or a surrogate pair: a lone surrogate is not valid text.
    {"uescape", R"([0-9a-cA-Ce-fE-F] hex{3} | [dD] [0-7] hex{2} | [dD] [89abAB] hex{2} "\\u" [dD] [c-fC-F] hex{2})",
     {"hex"}},
    {"hex", "[0-9a-fA-F]", {}},
    {"integer", R"("-"? ( "0" | [1-9] [0-9]{0,15} ))", {}},
    {"number", R"("-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] ( "+" | "-" )? [0-9]{1,2} )?)", {}},
    {"boolean", R"("true" | "false")", {}},
    {"null", R"("null")", {}},
    // RFC 3339 full-date with the days of each month; February 29th only in leap years.
    {"date",
     R"([0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | )"
     R"(( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | )"
     R"("02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) ) | leap-year "-02-29")",
     {"leap-year"}},
    {"leap-year",
     R"([0-9]{2} ( "0" [48] | [2468] [048] | [13579] [26] ) | ( "0" [048] | [2468] [048] | [13579] [26] ) "00")", {}},
    // RFC 3339 full-time (the offset is required); no leap second.
    {"time",
     R"(( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? )"
     R"(( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))",
     {}},
    {"date-time", R"(date "T" time)", {"date", "time"}},
    {"uuid", R"(hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12})", {"hex"}},
};

// Length range of each enforced format, to check it against minLength / maxLength.
struct FormatLength {
  const char* name;
  uint64_t min, max;
};
const FormatLength kFormats[] = {{"date", 10, 10}, {"time", 9, 24}, {"date-time", 20, 35}, {"uuid", 36, 36}};

std::string sanitize(const std::string& hint) {
  std::string out;
  for (char c : hint) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (ok) {
      out += c;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  if (out.size() > 40) out.resize(40);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "r" : out;
}

class Converter {
 public:
  explicit Converter(const Json& root) : root_(root) {
    names_.insert("root");
    for (const Primitive& p : kPrimitives) names_.insert(p.name);
  }

  std::string run() {
    const std::string top = ref_rule(Json("#"), "", "top");
    // Nothing after the value: a model that wants to go on would pad with whitespace.
    std::string out = fmt::format("root ::= {}\n", top);
    use("ws");
    for (const auto& [name, body] : rules_) out += fmt::format("{} ::= {}\n", name, body);
    for (const Primitive& p : kPrimitives)
      if (used_.count(p.name)) out += fmt::format("{} ::= {}\n", p.name, p.body);
    return out;
  }

 private:
  const Json& root_;
  std::vector<std::pair<std::string, std::string>> rules_;  // name, body, in creation order
  std::map<std::string, size_t> index_;                    // name -> position in rules_
  std::map<std::string, std::string> by_body_;             // shares rules with equal bodies
  std::set<std::string> names_;
  std::set<std::string> used_;                             // primitives to emit
  std::map<std::string, std::string> ref_rules_;           // $ref target pointer -> rule
  std::map<std::string, int> open_refs_;                   // targets being converted -> depth_
  int depth_ = 0;    // objects and arrays entered on the current path
  int nesting_ = 0;  // schema nodes being converted on the current path

  std::string use(const std::string& name) {
    if (!used_.insert(name).second) return name;
    for (const Primitive& p : kPrimitives)
      if (name == p.name)
        for (const char* u : p.uses) use(u);
    return name;
  }

  std::string reserve(const std::string& hint) {
    const std::string base = sanitize(hint);
    std::string name = base;
    for (int i = 2; names_.count(name); ++i) name = fmt::format("{}-{}", base, i);
    names_.insert(name);
    index_[name] = rules_.size();
    rules_.emplace_back(name, "");
    return name;
  }

  void define(const std::string& name, const std::string& body) { rules_[index_.at(name)].second = body; }

  // A rule name for `body`: the body itself when it is one name, else a new or shared rule.
  std::string rule(const std::string& hint, const std::string& body) {
    if (names_.count(body)) return body;
    if (auto it = by_body_.find(body); it != by_body_.end()) return it->second;
    const std::string name = reserve(hint);
    define(name, body);
    by_body_[body] = name;
    return name;
  }

  std::string visit(const Json& s, const std::string& ptr, const std::string& hint) {
    return rule(hint, body(s, ptr, hint));
  }

  std::string ref_rule(const Json& ref, const std::string& ptr, const std::string& hint) {
    std::string target;
    const Json& s = schema::resolve_ref(root_, ref, ptr, &target);
    if (auto it = ref_rules_.find(target); it != ref_rules_.end()) {
      if (auto open = open_refs_.find(target); open != open_refs_.end() && open->second == depth_)
        schema::fail(ptr, fmt::format("$ref '{}' refers back to itself outside any object or array (left "
                                      "recursion): not supported",
                                      ref.get<std::string>()));
      return it->second;
    }
    const size_t slash = target.rfind('/');
    const std::string name = reserve(target.empty() ? hint : target.substr(slash + 1));
    ref_rules_[target] = name;
    open_refs_[target] = depth_;
    define(name, body(s, target, name));
    open_refs_.erase(target);
    return name;
  }

  std::string body(const Json& raw, const std::string& ptr, const std::string& hint) {
    struct Nest {  // bounds the recursion on deeply nested schemas
      int& n;
      explicit Nest(int& count, const std::string& p) : n(count) {
        if (++n > kMaxNesting) schema::fail(p, fmt::format("schemas nested deeper than {} levels", kMaxNesting));
      }
      ~Nest() { --n; }
    } nest(nesting_, ptr);
    if (raw.is_boolean()) {
      if (!raw.get<bool>()) schema::fail(ptr, "the schema 'false' matches nothing");
      return use("value");
    }
    if (!raw.is_object()) schema::fail(ptr, "a schema must be an object or a boolean");
    schema::check_keywords(raw, ptr);
    Json storage;
    const Json& s = schema::normalized(raw, ptr, storage);
    if (s.contains("enum") || s.contains("const")) return enum_body(s, ptr);
    if (s.contains("allOf") || (s.contains("$ref") && schema::has_validation_keywords(s, {"$ref"}))) {
      const Json merged = schema::flatten(s, root_, ptr);
      if (merged == Json(false)) schema::fail(ptr, "the subschemas of 'allOf' (or '$ref') exclude each other");
      return body(merged, ptr, hint);
    }
    if (auto it = s.find("$ref"); it != s.end()) return ref_rule(*it, ptr, hint);
    if (s.contains("anyOf") || s.contains("oneOf")) return alternatives(s, ptr, hint);
    return typed_body(s, ptr, hint);
  }

  std::string enum_body(const Json& s, const std::string& ptr) {
    Json values = s.contains("enum") ? s["enum"] : Json::array({s["const"]});
    if (!values.is_array()) schema::fail(ptr, "'enum' must be a list");
    std::vector<std::string> alts, scalars;
    std::set<std::string> seen;
    const Json rest = schema::without(s, "enum");  // the values must satisfy the rest too
    for (const Json& v : values) {
      if (!schema::validate(v, rest, root_)) continue;
      const std::string text = v.is_structured() ? value_gbnf(v, ptr) : v.dump();
      if (seen.insert(text).second) (v.is_structured() ? alts : scalars).push_back(text);
    }
    if (alts.empty() && scalars.empty())
      schema::fail(ptr, "no 'enum' / 'const' value satisfies the rest of the schema");
    // Many alternatives with a common start would keep the matcher busy: factor them.
    if (scalars.size() > 16) {
      alts.push_back(schema::literal_trie(scalars, ptr, [&](const std::string& b) { return rule("enum", b); }));
    } else {
      for (const std::string& t : scalars) alts.push_back(schema::gbnf_literal(t, ptr));
    }
    return join(alts, " | ");
  }

  // One JSON value as written, whitespace allowed between the tokens of objects and arrays.
  std::string value_gbnf(const Json& v, const std::string& ptr) {
    if (!v.is_object() && !v.is_array()) return schema::gbnf_literal(v.dump(), ptr);
    std::vector<std::string> parts;
    for (const auto& [key, value] : v.items()) {
      std::string part = v.is_object() ? schema::gbnf_literal(Json(key).dump(), ptr) + R"( ws ":" ws )" : "";
      parts.push_back(part + value_gbnf(value, ptr) + " ws");
    }
    const std::string open = v.is_object() ? R"("{" ws)" : R"("[" ws)";
    const std::string close = v.is_object() ? R"("}")" : R"("]")";
    return open + " " + (parts.empty() ? "" : join(parts, R"( "," ws )") + " ") + close;
  }

  std::string alternatives(const Json& s, const std::string& ptr, const std::string& hint) {
    if (s.contains("anyOf") && s.contains("oneOf")) schema::fail(ptr, "'anyOf' together with 'oneOf' is not supported");
    const char* key = s.contains("anyOf") ? "anyOf" : "oneOf";
    const Json& alts = s[key];
    const std::string aptr = schema::child(ptr, key);
    if (!alts.is_array() || alts.empty())
      schema::fail(ptr, fmt::format("'{}' must be a non-empty list of schemas", key));
    // Each alternative with the sibling keywords (they apply to every one).
    const Json siblings = schema::without(s, key);
    const bool merge_siblings = schema::has_validation_keywords(siblings, {});
    std::vector<Json> emitted;
    for (size_t i = 0; i < alts.size(); ++i)
      emitted.push_back(merge_siblings ? schema::merge(siblings, alts[i], root_, schema::child(aptr, std::to_string(i)))
                                       : alts[i]);
    if (std::string(key) == "oneOf") {
      // Emitted as alternatives, which is right only if no text emitted for one alternative
      // is valid under another.
      for (size_t i = 0; i < alts.size(); ++i)
        for (size_t j = 0; j < alts.size(); ++j)
          if (i != j && !schema::excludes(emitted[i], alts[j], root_))
            schema::fail(ptr, fmt::format("'oneOf' alternatives {} and {} may both match one instance; only "
                                          "mutually exclusive alternatives are supported (use 'anyOf')",
                                          i, j));
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < alts.size(); ++i) {
      if (emitted[i] == Json(false)) continue;  // this alternative matches nothing
      const std::string name = visit(emitted[i], schema::child(aptr, std::to_string(i)), hint);
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
    if (names.empty()) schema::fail(ptr, fmt::format("no alternative of '{}' can match", key));
    return join(names, " | ");
  }

  std::string typed_body(const Json& s, const std::string& ptr, const std::string& hint) {
    auto types = schema::declared_types(s, ptr);
    if (types.empty()) {
      types = schema::inferred_types(s);
      if (types.size() == 6) return use("value");
    }
    if (types.count("number")) types.erase("integer");
    std::vector<std::string> parts;
    for (const char* t : {"object", "array", "string", "number", "integer", "boolean", "null"}) {
      if (!types.count(t)) continue;
      const std::string name = t;
      std::string b;
      if (name == "object") {
        b = object_body(s, ptr, hint);
      } else if (name == "array") {
        b = array_body(s, ptr, hint);
      } else if (name == "string") {
        b = string_body(s, ptr);
      } else if (name == "number" || name == "integer") {
        b = number_body(s, ptr, name == "integer");
      } else {
        b = use(name);
      }
      parts.push_back(types.size() == 1 ? b : rule(hint + "-" + name, b));
    }
    return join(parts, " | ");
  }

  std::string number_body(const Json& s, const std::string& ptr, bool integer) {
    const schema::NumberBounds b = schema::number_bounds(s, ptr);
    if (!b.any()) return use(integer ? "integer" : "number");
    if (integer) {
      const auto range = schema::integer_interval(b);
      if (!range) schema::fail(ptr, "no integer lies within 'minimum' / 'maximum'");
      return schema::int_range_gbnf(range->first, range->second);
    }
    std::string out = schema::number_range_gbnf(b);
    if (out.empty()) {
      const long double lo = std::max(b.minimum.value_or(-HUGE_VALL), b.exclusive_minimum.value_or(-HUGE_VALL));
      const long double hi = std::min(b.maximum.value_or(HUGE_VALL), b.exclusive_maximum.value_or(HUGE_VALL));
      const bool closed = !b.exclusive_minimum && !b.exclusive_maximum;
      if (lo < hi || (lo == hi && closed))
        schema::fail(ptr, "the bounds leave no integer and no whole interval between two integers (not supported)");
      schema::fail(ptr, "no number lies within 'minimum' / 'maximum'");
    }
    return out;
  }

  // [lo, hi] from min/max keywords; hi lowered to kMaxRepeat (fewer texts stay valid).
  std::pair<uint64_t, std::optional<uint64_t>> counts(const Json& s, const char* min_key, const char* max_key,
                                                      const std::string& ptr) {
    const uint64_t lo = schema::read_count(s, min_key, ptr).value_or(0);
    auto hi = schema::read_count(s, max_key, ptr);
    if (hi && lo > *hi) schema::fail(ptr, fmt::format("'{}' is above '{}': nothing can match", min_key, max_key));
    if (lo > schema::kMaxRepeat)
      schema::fail(ptr, fmt::format("'{}' above {} is not supported", min_key, schema::kMaxRepeat));
    if (hi && *hi > schema::kMaxRepeat) hi = schema::kMaxRepeat;
    return {lo, hi};
  }

  std::string string_body(const Json& s, const std::string& ptr) {
    const auto [lo, hi] = counts(s, "minLength", "maxLength", ptr);
    if (auto it = s.find("format"); it != s.end()) {
      if (!it->is_string()) schema::fail(ptr, "'format' must be a string");
      for (const FormatLength& f : kFormats) {
        if (*it != f.name) continue;
        if (lo > f.min || (hi && *hi < f.max))
          schema::fail(ptr, fmt::format("'format': '{}' with 'minLength' / 'maxLength' that cut into its lengths "
                                        "is not supported",
                                        f.name));
        return kQuote + " " + use(f.name) + " " + kQuote;
      }
    }
    if (lo == 0 && !hi) return use("string");
    const std::string chars = schema::repeat(use("char"), lo, hi);
    return kQuote + " " + (chars.empty() ? "" : chars + " ") + kQuote;
  }

  std::string array_body(const Json& s, const std::string& ptr, const std::string& hint) {
    // Plain variables, not a structured binding: the lambdas below capture them (clang < 16
    // refuses to capture bindings).
    const auto bounds = counts(s, "minItems", "maxItems", ptr);
    const uint64_t lo = bounds.first;
    std::optional<uint64_t> hi = bounds.second;
    const Json prefix = s.value("prefixItems", Json::array());
    if (!prefix.is_array()) schema::fail(ptr, "'prefixItems' must be a list of schemas");
    std::optional<Json> items;
    if (s.contains("items")) {
      items = s["items"];
    } else if (s.contains("unevaluatedItems") && s["unevaluatedItems"] != Json(true)) {
      items = s["unevaluatedItems"];
    }
    size_t k = prefix.size();
    for (size_t i = 0; i < prefix.size(); ++i)
      if (prefix[i] == Json(false)) k = i;  // nothing fits there: the array ends before
    if (k < prefix.size() || (items && *items == Json(false))) hi = std::min<uint64_t>(hi.value_or(k), k);
    if (hi && lo > *hi) schema::fail(ptr, "no array length satisfies 'minItems', 'maxItems' and the item schemas");
    ++depth_;
    std::vector<std::string> elems;
    for (size_t i = 0; i < k && (!hi || i < *hi); ++i)
      elems.push_back(visit(prefix[i], schema::child(schema::child(ptr, "prefixItems"), std::to_string(i)),
                            fmt::format("{}-{}", hint, i)));
    std::string item;
    if (!hi || *hi > k) item = items ? visit(*items, schema::child(ptr, "items"), hint + "-item") : use("value");
    --depth_;
    if (hi && *hi == 0) return R"("[" ws "]")";
    auto elem = [&](size_t i) { return (i < k ? elems[i] : item) + " ws"; };
    // Elements from index i on, after the first: i < lo are required.
    std::function<std::string(size_t)> tail = [&](size_t i) -> std::string {
      if (hi && i >= *hi) return "";
      if (i >= k) {
        const std::string part = R"(( "," ws )" + elem(i) + " )";
        const uint64_t need = lo > i ? lo - i : 0;
        const std::string a = schema::repeat(part, need, need);
        const std::string b = schema::repeat(part, 0, hi ? std::optional<uint64_t>(*hi - i - need) : std::nullopt);
        return a.empty() || b.empty() ? a + b : a + " " + b;
      }
      const std::string rest = tail(i + 1);
      const std::string part = R"("," ws )" + elem(i) + (rest.empty() ? "" : " " + rest);
      return i < lo ? part : "( " + part + " )?";
    };
    const std::string rest = tail(1);
    const std::string seq = elem(0) + (rest.empty() ? "" : " " + rest);
    return R"("[" ws )" + (lo == 0 ? "( " + seq + " )?" : seq) + R"( "]")";
  }

  // A quoted object key that is none of `names`: it follows the names' characters while it
  // can (unescaped there, so no escape can spell a name) and ends or leaves them elsewhere.
  std::string key_excluding(const std::vector<std::string>& names, const std::string& ptr, const std::string& hint) {
    struct Node {
      bool terminal = false;
      std::map<uint32_t, size_t> next;
    };
    std::vector<Node> trie(1);
    for (const std::string& n : names) {
      size_t at = 0;
      bool spelled = true;
      for (uint32_t cp : schema::code_points(n, ptr)) {
        if (cp < 0x20 || cp == '"' || cp == '\\') {
          spelled = false;  // needs an escape, which keys never use here
          break;
        }
        if (!trie[at].next.count(cp)) {
          trie[at].next[cp] = trie.size();
          trie.emplace_back();
        }
        at = trie[at].next[cp];
      }
      if (spelled) trie[at].terminal = true;
    }
    std::vector<std::string> rule_names;
    for (size_t i = 0; i < trie.size(); ++i) rule_names.push_back(reserve(hint + "-key"));
    for (size_t i = 0; i < trie.size(); ++i) {
      std::vector<std::string> alts;
      if (!trie[i].terminal) alts.push_back(kQuote);
      std::string others = R"([^"\\\x00-\x1F)";
      for (const auto& [cp, j] : trie[i].next) {
        alts.push_back(fmt::format("[{}] {}", schema::class_char(cp), rule_names[j]));
        others += schema::class_char(cp);
      }
      alts.push_back(others + "] " + use("char") + "* " + kQuote);
      define(rule_names[i], join(alts, " | "));
    }
    return kQuote + " " + rule_names[0];
  }

  std::string object_body(const Json& s, const std::string& ptr, const std::string& hint);
};

std::string Converter::object_body(const Json& s, const std::string& ptr, const std::string& hint) {
  const Json props = s.value("properties", Json::object());
  if (!props.is_object()) schema::fail(ptr, "'properties' must be an object");
  const Json required = s.value("required", Json::array());
  if (!required.is_array()) schema::fail(ptr, "'required' must be a list of names");
  std::set<std::string> req;
  for (const Json& r : required) {
    if (!r.is_string()) schema::fail(ptr, "'required' must be a list of names");
    const std::string name = r.get<std::string>();
    if (!props.contains(name))
      schema::fail(ptr, fmt::format("required property '{}' is not listed in 'properties' (not supported)", name));
    if (props[name] == Json(false)) schema::fail(ptr, fmt::format("required property '{}' can never be valid", name));
    req.insert(name);
  }
  // Extra keys: per additionalProperties; without it, only when no properties are listed.
  std::optional<Json> extra;
  if (s.contains("additionalProperties")) {
    if (s["additionalProperties"] != Json(false)) extra = s["additionalProperties"];
  } else if (props.empty()) {
    extra = s.value("unevaluatedProperties", Json(true));
    if (*extra == Json(false)) extra.reset();
  }
  std::vector<std::string> listed, all_names;
  for (const auto& [name, sub] : props.items()) {
    all_names.push_back(name);
    if (sub != Json(false)) listed.push_back(name);
  }
  if (auto m = schema::read_count(s, "minProperties", ptr); m && *m > req.size())
    schema::fail(ptr, "'minProperties' above the number of required properties is not supported");
  if (auto m = schema::read_count(s, "maxProperties", ptr); m && (extra || listed.size() > *m))
    schema::fail(ptr, "'maxProperties' below the number of possible properties is not supported");
  if (all_names.empty() && extra && *extra == Json(true)) return use("object");

  ++depth_;
  std::vector<std::string> kv;
  for (const std::string& name : listed) {
    const std::string pp = schema::child(schema::child(ptr, "properties"), name);
    const std::string value = visit(props[name], pp, hint + "-" + name);
    kv.push_back(rule(hint + "-" + name + "-kv",
                      schema::gbnf_literal(Json(name).dump(), ptr) + R"( ws ":" ws )" + value + " ws"));
  }
  std::string extra_kv;
  if (extra) {
    const std::string value = *extra == Json(true)
                                  ? use("value")
                                  : visit(*extra, schema::child(ptr, "additionalProperties"), hint + "-extra");
    const std::string key = all_names.empty() ? use("string") : key_excluding(all_names, ptr, hint);
    extra_kv = rule(hint + "-extra-kv", key + R"( ws ":" ws )" + value + " ws");
  }
  --depth_;

  const size_t n = listed.size();
  size_t first_required = n;
  for (size_t i = 0; i < n && first_required == n; ++i)
    if (req.count(listed[i])) first_required = i;
  // tails[j]: the properties from j on (and the extras), each after a comma.
  std::vector<std::string> tails(n + 1);
  if (extra) tails[n] = rule(hint + "-extras", R"(( "," ws )" + extra_kv + " )*");
  for (size_t j = n; j-- > 1;) {
    const std::string item = R"("," ws )" + kv[j];
    std::string b = req.count(listed[j]) ? item : "( " + item + " )?";
    if (!tails[j + 1].empty()) b += " " + tails[j + 1];
    tails[j] = rule(hint + "-tail", b);
  }
  auto after = [&](size_t j) { return tails[j].empty() ? "" : " " + tails[j]; };
  std::vector<std::string> starts;
  for (size_t f = 0; f < n && f <= first_required; ++f) starts.push_back(kv[f] + after(f + 1));
  if (first_required == n && extra) starts.push_back(extra_kv + after(n));
  if (starts.empty()) return R"("{" ws "}")";
  const std::string content = join(starts, " | ");
  std::string inner = content;
  if (first_required == n) {
    inner = "( " + content + " )?";
  } else if (starts.size() > 1) {
    inner = "( " + content + " )";
  }
  return R"("{" ws )" + inner + R"( "}")";
}

}  // namespace

std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema) {
  try {
    return Converter(schema).run();
  } catch (const nlohmann::json::exception& e) {
    schema::fail("", e.what());
  }
}

std::string json_schema_to_gbnf(const nlohmann::json& schema) {
  nlohmann::ordered_json ordered;
  try {
    ordered = nlohmann::ordered_json::parse(schema.dump());
  } catch (const nlohmann::json::exception& e) {
    schema::fail("", e.what());
  }
  return json_schema_to_gbnf(ordered);
}

std::string json_object_gbnf() { return json_schema_to_gbnf(nlohmann::ordered_json{{"type", "object"}}); }

}  // namespace exq::grammar
