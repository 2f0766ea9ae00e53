// Reasoning about schemas for the converter: an exact validator (enum values must satisfy
// the rest of their schema), allOf merging, and the oneOf disjointness test.
#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "grammar/json_schema_util.h"

namespace exq::grammar::schema {
namespace {

// Deep enough for real schemas; stops $ref cycles that never reach an instance's depth.
constexpr int kMaxDepth = 64;

bool validate_at(const Json& inst, const Json& schema, const Json& root, const std::string& ptr, int depth);

bool validate_object(const Json& inst, const Json& s, const Json& root, const std::string& ptr, int depth) {
  const Json props = s.value("properties", Json::object());
  if (!props.is_object()) fail(ptr, "'properties' must be an object");
  std::optional<Json> extra;  // the schema for keys not in properties
  if (s.contains("additionalProperties")) {
    extra = s["additionalProperties"];
  } else if (auto it = s.find("unevaluatedProperties"); it != s.end() && *it != Json(true)) {
    for (const char* k : {"allOf", "anyOf", "oneOf", "$ref"})
      if (s.contains(k)) fail(ptr, fmt::format("'unevaluatedProperties' beside '{}' is not supported here", k));
    extra = *it;
  }
  for (const auto& [key, value] : inst.items()) {
    if (auto p = props.find(key); p != props.end()) {
      if (!validate_at(value, *p, root, child(child(ptr, "properties"), key), depth + 1)) return false;
    } else if (extra && !validate_at(value, *extra, root, child(ptr, "additionalProperties"), depth + 1)) {
      return false;
    }
  }
  if (auto it = s.find("required"); it != s.end()) {
    if (!it->is_array()) fail(ptr, "'required' must be a list of names");
    for (const Json& name : *it)
      if (!name.is_string() || !inst.contains(name.get<std::string>())) return false;
  }
  const uint64_t n = inst.size();
  if (auto m = read_count(s, "minProperties", ptr); m && n < *m) return false;
  if (auto m = read_count(s, "maxProperties", ptr); m && n > *m) return false;
  return true;
}

bool validate_array(const Json& inst, const Json& s, const Json& root, const std::string& ptr, int depth) {
  const Json prefix = s.value("prefixItems", Json::array());
  if (!prefix.is_array()) fail(ptr, "'prefixItems' must be a list of schemas");
  std::optional<Json> items;
  if (s.contains("items")) {
    items = s["items"];
  } else if (auto it = s.find("unevaluatedItems"); it != s.end() && *it != Json(true)) {
    for (const char* k : {"allOf", "anyOf", "oneOf", "$ref"})
      if (s.contains(k)) fail(ptr, fmt::format("'unevaluatedItems' beside '{}' is not supported here", k));
    items = *it;
  }
  for (size_t i = 0; i < inst.size(); ++i) {
    if (i < prefix.size()) {
      if (!validate_at(inst[i], prefix[i], root, child(ptr, "prefixItems"), depth + 1)) return false;
    } else if (items && !validate_at(inst[i], *items, root, child(ptr, "items"), depth + 1)) {
      return false;
    }
  }
  if (auto m = read_count(s, "minItems", ptr); m && inst.size() < *m) return false;
  if (auto m = read_count(s, "maxItems", ptr); m && inst.size() > *m) return false;
  return true;
}

bool validate_at(const Json& inst, const Json& schema, const Json& root, const std::string& ptr, int depth) {
  if (depth > kMaxDepth) fail(ptr, "schema nesting too deep (a $ref cycle?)");
  if (schema.is_boolean()) return schema.get<bool>();
  if (!schema.is_object()) fail(ptr, "a schema must be an object or a boolean");
  check_keywords(schema, ptr);
  Json storage;
  const Json& s = normalized(schema, ptr, storage);
  if (auto it = s.find("$ref"); it != s.end()) {
    std::string target;
    const Json& t = resolve_ref(root, *it, ptr, &target);
    if (!validate_at(inst, t, root, target, depth + 1)) return false;
  }
  const auto types = declared_types(s, ptr);
  if (!types.empty() && !types.count(instance_type(inst)) && !(types.count("number") && inst.is_number()))
    return false;
  if (auto it = s.find("enum"); it != s.end()) {
    if (!it->is_array()) fail(ptr, "'enum' must be a list");
    if (std::none_of(it->begin(), it->end(), [&](const Json& v) { return json_equal(v, inst); })) return false;
  }
  if (auto it = s.find("const"); it != s.end() && !json_equal(*it, inst)) return false;
  for (const char* key : {"allOf", "anyOf", "oneOf"}) {
    auto it = s.find(key);
    if (it == s.end()) continue;
    if (!it->is_array() || it->empty()) fail(ptr, fmt::format("'{}' must be a non-empty list of schemas", key));
    size_t valid = 0;
    for (size_t i = 0; i < it->size(); ++i)
      valid += validate_at(inst, (*it)[i], root, child(child(ptr, key), std::to_string(i)), depth + 1);
    const std::string k = key;
    if ((k == "allOf" && valid != it->size()) || (k == "anyOf" && valid == 0) || (k == "oneOf" && valid != 1))
      return false;
  }
  if (inst.is_string()) {
    // The converter asserts these formats, so enum values must meet them too.
    if (auto it = s.find("format"); it != s.end() && it->is_string() &&
                                    !format_matches(it->get<std::string>(), inst.get<std::string>()))
      return false;
    const uint64_t n = code_points(inst.get<std::string>(), ptr).size();
    if (auto m = read_count(s, "minLength", ptr); m && n < *m) return false;
    if (auto m = read_count(s, "maxLength", ptr); m && n > *m) return false;
  }
  if (inst.is_number()) {
    const NumberBounds b = number_bounds(s, ptr);
    const auto v = inst.get<long double>();
    if ((b.minimum && v < *b.minimum) || (b.exclusive_minimum && v <= *b.exclusive_minimum) ||
        (b.maximum && v > *b.maximum) || (b.exclusive_maximum && v >= *b.exclusive_maximum))
      return false;
  }
  if (inst.is_object()) return validate_object(inst, s, root, ptr, depth);
  if (inst.is_array()) return validate_array(inst, s, root, ptr, depth);
  return true;
}

// parent: a's unevaluated* keywords see what b evaluates (b is a's allOf / anyOf entry or $ref
// target); otherwise both are subschemas that see only themselves.
Json merge_at(const Json& a, const Json& b, const Json& root, const std::string& ptr, int depth, bool parent = false);

Json flatten_at(const Json& schema, const Json& root, const std::string& ptr, int depth) {
  if (depth > kMaxDepth) fail(ptr, "'allOf' / '$ref' nesting too deep (a $ref cycle?)");
  if (schema.is_boolean()) return schema;
  if (!schema.is_object()) fail(ptr, "a schema must be an object or a boolean");
  Json s = normalize(schema, ptr);
  if (auto it = s.find("$ref"); it != s.end()) {
    std::string target;
    const Json& t = resolve_ref(root, *it, ptr, &target);
    s.erase("$ref");
    s = merge_at(s, t, root, ptr, depth + 1, true);
    if (!s.is_object()) return s;
  }
  if (auto it = s.find("allOf"); it != s.end()) {
    if (!it->is_array() || it->empty()) fail(ptr, "'allOf' must be a non-empty list of schemas");
    const Json subs = *it;
    s.erase("allOf");
    for (size_t i = 0; i < subs.size() && s.is_object(); ++i)
      s = merge_at(s, subs[i], root, child(child(ptr, "allOf"), std::to_string(i)), depth + 1, true);
  }
  return s;
}

// A schema merged into another one's conjunction sees only its own evaluations: its
// unevaluatedProperties / unevaluatedItems become additionalProperties / items (the same
// without in-place applicators; flatten has merged its allOf and $ref already).
void close_unevaluated(Json& s, const std::string& ptr) {
  for (const auto& [uneval, plain] : {std::pair{"unevaluatedProperties", "additionalProperties"},
                                      std::pair{"unevaluatedItems", "items"}}) {
    auto it = s.find(uneval);
    if (it == s.end()) continue;
    if (*it != Json(true)) {
      if (s.contains("anyOf") || s.contains("oneOf"))
        fail(ptr, fmt::format("'{}' beside 'anyOf' / 'oneOf' in a merged subschema is not supported", uneval));
      if (!s.contains(plain)) s[plain] = *it;
    }
    s.erase(uneval);
  }
}

Json merge_types(const Json& x, const Json& y, const std::string& ptr) {
  const auto tx = declared_types(x, ptr), ty = declared_types(y, ptr);
  Json out = Json::array();
  for (const std::string& t : tx) {
    if (ty.count(t) || (t == "integer" && ty.count("number"))) {
      out.push_back(t);
    } else if (t == "number" && ty.count("integer") && !tx.count("integer")) {
      out.push_back("integer");
    }
  }
  return out;
}

// The properties of both schemas, each value meeting both sides' rule for its key.
void merge_properties(const Json& x, const Json& y, Json& out, const Json& root, const std::string& ptr, int depth) {
  const Json px = x.value("properties", Json::object()), py = y.value("properties", Json::object());
  if (!px.is_object() || !py.is_object()) fail(ptr, "'properties' must be an object");
  const Json ax = x.value("additionalProperties", Json(true)), ay = y.value("additionalProperties", Json(true));
  Json props = Json::object();
  const std::string pp = child(ptr, "properties");
  for (const auto& [k, v] : px.items())
    props[k] = merge_at(v, py.contains(k) ? py[k] : ay, root, child(pp, k), depth + 1);
  for (const auto& [k, v] : py.items())
    if (!px.contains(k)) props[k] = merge_at(ax, v, root, child(pp, k), depth + 1);
  if (x.contains("properties") || y.contains("properties")) out["properties"] = props;
  if (x.contains("additionalProperties") || y.contains("additionalProperties"))
    out["additionalProperties"] = merge_at(ax, ay, root, child(ptr, "additionalProperties"), depth + 1);
}

Json merge_at(const Json& a, const Json& b, const Json& root, const std::string& ptr, int depth, bool parent) {
  if (a.is_boolean()) return a.get<bool>() ? b : Json(false);
  if (b.is_boolean()) return b.get<bool>() ? a : Json(false);
  Json x = flatten_at(a, root, ptr, depth + 1), y = flatten_at(b, root, ptr, depth + 1);
  if (!x.is_object() || !y.is_object()) return merge_at(x, y, root, ptr, depth + 1, parent);
  if (!parent) close_unevaluated(x, ptr);
  close_unevaluated(y, ptr);
  Json out = x;
  if (x.contains("properties") || y.contains("properties") || x.contains("additionalProperties") ||
      y.contains("additionalProperties"))
    merge_properties(x, y, out, root, ptr, depth);
  const bool x_prefix = x.contains("prefixItems"), y_prefix = y.contains("prefixItems");
  if ((x_prefix && (y_prefix || y.contains("items"))) || (y_prefix && x.contains("items"))) {
    if (!x_prefix || !y_prefix || !x["prefixItems"].is_array() || !y["prefixItems"].is_array() ||
        x["prefixItems"].size() != y["prefixItems"].size())
      fail(ptr, "allOf: 'prefixItems' of different lengths (or beside another schema's 'items') cannot be merged");
    for (size_t i = 0; i < x["prefixItems"].size(); ++i)
      out["prefixItems"][i] = merge_at(x["prefixItems"][i], y["prefixItems"][i], root,
                                       child(child(ptr, "prefixItems"), std::to_string(i)), depth + 1);
  }
  static const std::set<std::string> kLower = {"minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum"};
  static const std::set<std::string> kUpper = {"maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum"};
  for (const auto& [k, vb] : y.items()) {
    if (k == "properties" || k == "additionalProperties" || (k == "prefixItems" && x_prefix)) continue;
    auto it = out.find(k);
    if (it == out.end()) {
      out[k] = vb;
      continue;
    }
    const Json va = *it;
    if (json_equal(va, vb) || keyword_kind(k) == KeywordKind::kAnnotation) continue;
    if (k == "type") {
      out[k] = merge_types(x, y, ptr);
      if (out[k].empty()) return Json(false);
    } else if (k == "enum") {
      if (!va.is_array() || !vb.is_array()) fail(ptr, "'enum' must be a list");
      Json both = Json::array();
      for (const Json& v : va)
        if (std::any_of(vb.begin(), vb.end(), [&](const Json& w) { return json_equal(v, w); })) both.push_back(v);
      if (both.empty()) return Json(false);
      out[k] = both;
    } else if (k == "const") {
      return Json(false);
    } else if (k == "required") {
      if (!va.is_array() || !vb.is_array()) fail(ptr, "'required' must be a list of names");
      for (const Json& name : vb)
        if (std::none_of(va.begin(), va.end(), [&](const Json& n) { return n == name; })) out[k].push_back(name);
    } else if (kLower.count(k) || kUpper.count(k)) {
      if (!va.is_number() || !vb.is_number()) fail(ptr, fmt::format("'{}' must be a number", k));
      const bool first = (va.get<long double>() > vb.get<long double>()) == (kLower.count(k) > 0);
      out[k] = first ? va : vb;
    } else if (k == "items" || k == "unevaluatedItems" || k == "unevaluatedProperties") {
      out[k] = merge_at(va, vb, root, child(ptr, k), depth + 1);
    } else {
      fail(ptr, fmt::format("allOf: the subschemas' '{}' differ and cannot be merged", k));
    }
  }
  return out;
}

std::set<std::string> emitted_types(const Json& g) {
  auto t = declared_types(g, "");
  return t.empty() ? inferred_types(g) : t;
}

bool types_overlap(const std::set<std::string>& a, const std::set<std::string>& b) {
  auto numeric = [](const std::string& t) { return t == "integer" || t == "number"; };
  for (const std::string& x : a)
    for (const std::string& y : b)
      if (x == y || (numeric(x) && numeric(y))) return true;
  return false;
}

// The converter's object grammar for `g` admits keys outside `properties`.
bool emits_extra_keys(const Json& g) {
  if (auto it = g.find("additionalProperties"); it != g.end()) return *it != Json(false);
  if (!g.value("properties", Json::object()).empty()) return false;
  return g.value("unevaluatedProperties", Json(true)) != Json(false);
}

bool excludes_at(const Json& g0, const Json& s0, const Json& root, int depth);

// Both `g` and `s` are objects whose own keywords (no $ref / allOf / anyOf in `g`) decide.
bool excludes_objects(const Json& g, const Json& s, const Json& root, int depth) {
  const Json gp = g.value("properties", Json::object()), sp = s.value("properties", Json::object());
  const Json greq = g.value("required", Json::array()), sreq = s.value("required", Json::array());
  if (!gp.is_object() || !sp.is_object() || !greq.is_array() || !sreq.is_array()) return false;
  for (const Json& name : greq) {
    if (!name.is_string() || !gp.contains(name.get<std::string>())) continue;
    const std::string p = name.get<std::string>();
    if (sp.contains(p)) {
      if (excludes_at(gp[p], sp[p], root, depth + 1)) return true;
    } else if (s.contains("additionalProperties") && excludes_at(gp[p], s["additionalProperties"], root, depth + 1)) {
      return true;
    }
  }
  if (emits_extra_keys(g)) return false;
  for (const Json& name : sreq)
    if (name.is_string() && gp.value(name.get<std::string>(), Json(false)) == Json(false)) return true;
  return false;
}

bool excludes_at(const Json& g0, const Json& s0, const Json& root, int depth) {
  if (depth > 16) return false;
  if (g0.is_boolean()) return !g0.get<bool>();
  if (s0.is_boolean()) return !s0.get<bool>();
  if (!g0.is_object() || !s0.is_object()) return false;
  // What the converter emits for g: allOf and $ref beside other keywords are merged first.
  Json g_storage, s_storage;
  const Json& g = normalized(g0, "", g_storage);
  if (g.contains("allOf") || (g.contains("$ref") && has_validation_keywords(g, {"$ref"})))
    return excludes_at(flatten_at(g, root, "", 0), s0, root, depth + 1);
  if (auto it = g.find("$ref"); it != g.end())
    return excludes_at(resolve_ref(root, *it, "", nullptr), s0, root, depth + 1);
  if (g.contains("enum") || g.contains("const")) {
    const Json values = g.contains("enum") ? g["enum"] : Json::array({g["const"]});
    if (!values.is_array()) return false;
    for (const Json& v : values)
      if (validate_at(v, g, root, "", 0) && validate_at(v, s0, root, "", 0)) return false;
    return true;
  }
  for (const char* key : {"anyOf", "oneOf"}) {
    auto it = g.find(key);
    if (it == g.end() || !it->is_array()) continue;
    const Json siblings = without(g, key);
    const bool merge_siblings = has_validation_keywords(siblings, {});
    for (const Json& alt : *it) {
      const Json emitted = merge_siblings ? merge_at(siblings, alt, root, "", 0, true) : alt;
      if (!excludes_at(emitted, s0, root, depth + 1)) return false;
    }
    return true;
  }
  // s is the conjunction of its keywords: excluded by any conjunct.
  const Json& s = normalized(s0, "", s_storage);
  if (auto it = s.find("$ref"); it != s.end() && excludes_at(g, resolve_ref(root, *it, "", nullptr), root, depth + 1))
    return true;
  if (auto it = s.find("allOf"); it != s.end() && it->is_array())
    for (const Json& sub : *it)
      if (excludes_at(g, sub, root, depth + 1)) return true;
  for (const char* key : {"anyOf", "oneOf"}) {
    auto it = s.find(key);
    if (it == s.end() || !it->is_array()) continue;
    if (std::all_of(it->begin(), it->end(), [&](const Json& alt) { return excludes_at(g, alt, root, depth + 1); }))
      return true;
  }
  const auto gt = emitted_types(g);
  auto st = declared_types(s, "");
  if (!st.empty() && !types_overlap(gt, st)) return true;
  for (const char* key : {"enum", "const"}) {
    auto it = s.find(key);
    if (it == s.end()) continue;
    // s admits only these values: is any of a type g emits? ("number" emits integers too)
    const Json values = std::string(key) == "enum" && it->is_array() ? *it : Json::array({*it});
    if (std::none_of(values.begin(), values.end(), [&](const Json& v) {
          const std::string t = instance_type(v);
          return gt.count(t) || (t == "integer" && gt.count("number"));
        }))
      return true;
  }
  if (gt == std::set<std::string>{"object"}) return excludes_objects(g, s, root, depth);
  return false;
}

}  // namespace

std::optional<uint64_t> read_count(const Json& schema, const char* key, const std::string& pointer) {
  auto it = schema.find(key);
  if (it == schema.end()) return std::nullopt;
  if (!is_integral(*it) || it->get<long double>() < 0)
    fail(pointer, fmt::format("'{}' must be a non-negative integer", key));
  const auto v = it->get<long double>();
  return v >= 1e18L ? uint64_t{1000000000000000000} : static_cast<uint64_t>(v);
}

bool validate(const Json& instance, const Json& schema, const Json& root) {
  return validate_at(instance, schema, root, "", 0);
}

Json merge(const Json& a, const Json& b, const Json& root, const std::string& pointer) {
  return merge_at(a, b, root, pointer, 0, true);
}

Json flatten(const Json& schema, const Json& root, const std::string& pointer) {
  return flatten_at(schema, root, pointer, 0);
}

bool excludes(const Json& emitted, const Json& other, const Json& root) {
  return excludes_at(emitted, other, root, 0);
}

}  // namespace exq::grammar::schema
