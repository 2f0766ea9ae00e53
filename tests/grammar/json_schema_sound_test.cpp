// JSON Schema -> GBNF: soundness (random texts the grammar accepts are JSON that satisfies
// the schema, checked by hand-written predicates) and every refusal's error message.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/json_schema_util.h"

namespace exq::grammar {
namespace {

using Ordered = nlohmann::ordered_json;

// Texts the grammar accepts, by a random walk over the bytes the matcher allows; structural
// bytes are preferred half of the time so that strings and numbers end.
std::vector<std::string> sample(const std::shared_ptr<const Grammar>& g, size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string alphabet = "\n\t\xC3\xA9\xF0\x9F\x98\x80";  // and a two- and a four-byte character
  for (char c = 0x20; c < 0x7F; ++c) alphabet += c;
  const std::string closing = "}]\",:";
  std::vector<std::string> out;
  for (size_t attempt = 0; attempt < count * 20 && out.size() < count; ++attempt) {
    GrammarMatcher m(g);
    std::string text;
    for (int step = 0; step < 400; ++step) {
      if (m.complete() && rng() % 3 == 0) break;
      std::vector<char> allowed, closers;
      for (char c : alphabet) {
        if (!m.accepts(std::string(1, c))) continue;
        allowed.push_back(c);
        if (closing.find(c) != std::string::npos) closers.push_back(c);
      }
      if (allowed.empty()) break;
      const auto& pool = !closers.empty() && rng() % 2 ? closers : allowed;
      const char c = pool[rng() % pool.size()];
      EXPECT_TRUE(m.accept_byte(static_cast<uint8_t>(c)));
      text += c;
    }
    if (m.complete()) out.push_back(text);
  }
  return out;
}

// Every sampled text parses as JSON, satisfies `check`, and the converter's own validator agrees.
void expect_sound(const std::string& schema_text, const std::function<bool(const nlohmann::json&)>& check,
                  size_t count = 150) {
  const Ordered schema = Ordered::parse(schema_text);
  auto g = Grammar::parse(json_schema_to_gbnf(schema));
  const auto texts = sample(g, count, 1234);
  EXPECT_GE(texts.size(), count / 2) << schema_text;
  for (const std::string& t : texts) {
    nlohmann::json v;
    ASSERT_NO_THROW(v = nlohmann::json::parse(t)) << t;
    EXPECT_TRUE(check(v)) << schema_text << "\n" << t;
    EXPECT_TRUE(schema::validate(Ordered::parse(t), schema, schema)) << t;
  }
}

size_t characters(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

TEST(JsonSchemaSoundTest, Object) {
  expect_sound(R"({"type": "object", "properties": {
      "id": {"type": "integer", "minimum": -5, "maximum": 120},
      "name": {"type": "string", "minLength": 1, "maxLength": 3},
      "kind": {"enum": ["a", 2, null]},
      "tags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2}},
      "required": ["id", "tags"], "additionalProperties": {"type": "number", "exclusiveMinimum": 0}})",
               [](const nlohmann::json& v) {
                 if (!v.is_object() || !v.contains("id") || !v.contains("tags")) return false;
                 for (const auto& [k, x] : v.items()) {
                   if (k == "id" && !(x.is_number_integer() && x.get<int64_t>() >= -5 && x.get<int64_t>() <= 120))
                     return false;
                   if (k == "name" && !(x.is_string() && characters(x.get<std::string>()) >= 1 &&
                                        characters(x.get<std::string>()) <= 3))
                     return false;
                   if (k == "kind" && !(x == "a" || x == 2 || x.is_null())) return false;
                   if (k == "tags" && !(x.is_array() && x.size() >= 1 && x.size() <= 2 && x[0].is_boolean() &&
                                        x.back().is_boolean()))
                     return false;
                   if (k != "id" && k != "name" && k != "kind" && k != "tags" &&
                       !(x.is_number() && x.get<double>() > 0))
                     return false;
                 }
                 return true;
               });
}

TEST(JsonSchemaSoundTest, NumberRange) {
  expect_sound(R"({"type": "number", "minimum": -10.5, "exclusiveMaximum": 20})", [](const nlohmann::json& v) {
    return v.is_number() && v.get<double>() >= -10.5 && v.get<double>() < 20;
  }, 300);
  expect_sound(R"({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1})", [](const nlohmann::json& v) {
    return v.is_number() && v.get<double>() > 0 && v.get<double>() < 1;
  }, 300);
  expect_sound(R"({"type": "integer", "minimum": -1000, "exclusiveMaximum": 1000})", [](const nlohmann::json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= -1000 && v.get<int64_t>() < 1000;
  }, 300);
}

TEST(JsonSchemaSoundTest, TaggedUnionAndRecursion) {
  expect_sound(R"({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                     "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                     "required": ["v"]}},
                   "oneOf": [{"type": "object", "properties": {"t": {"const": "leaf"}}, "required": ["t"]},
                             {"type": "object",
                              "properties": {"t": {"const": "tree"}, "root": {"$ref": "#/$defs/node"}},
                              "required": ["t", "root"]}]})",
               [](const nlohmann::json& v) {
                 std::function<bool(const nlohmann::json&)> node = [&](const nlohmann::json& n) {
                   if (!n.is_object() || !n.contains("v") || !n["v"].is_number_integer()) return false;
                   if (!n.contains("kids")) return n.size() == 1;
                   if (!n["kids"].is_array() || n["kids"].size() > 2 || n.size() != 2) return false;
                   for (const auto& k : n["kids"])
                     if (!node(k)) return false;
                   return true;
                 };
                 if (v == nlohmann::json{{"t", "leaf"}}) return true;
                 return v.is_object() && v.size() == 2 && v.value("t", "") == "tree" && node(v["root"]);
               });
}

TEST(JsonSchemaSoundTest, StringsAndFormats) {
  expect_sound(R"({"type": "array", "prefixItems": [{"type": "string", "format": "date"},
                   {"type": "string", "maxLength": 2}], "items": false, "minItems": 2})",
               [](const nlohmann::json& v) {
                 if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_string()) return false;
                 const std::string d = v[0];
                 const int y = std::stoi(d.substr(0, 4)), m = std::stoi(d.substr(5, 2));
                 const int day = std::stoi(d.substr(8, 2));
                 const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                 const int days[] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
                 return d.size() == 10 && m >= 1 && m <= 12 && day >= 1 && day <= days[m - 1] &&
                        characters(v[1].get<std::string>()) <= 2;
               });
}

TEST(JsonSchemaSoundTest, JsonObjectMode) {
  auto g = Grammar::parse(json_object_gbnf());
  for (const std::string& t : sample(g, 150, 99)) {
    nlohmann::json v;
    ASSERT_NO_THROW(v = nlohmann::json::parse(t)) << t;
    EXPECT_TRUE(v.is_object()) << t;
  }
}

std::string error_of(const std::string& schema) {
  try {
    json_schema_to_gbnf(Ordered::parse(schema));
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(JsonSchemaSoundTest, Refusals) {
  const struct {
    const char* schema;
    const char* message;
  } cases[] = {
      {R"({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}})",
       "json schema: /properties/a: 'pattern' is not supported"},
      {R"({"not": {"type": "null"}})", "json schema: (root): 'not' is not supported"},
      {R"({"if": {}, "then": {}})", "(root): 'if' is not supported"},
      {R"({"type": "integer", "multipleOf": 2})", "'multipleOf' is not supported"},
      {R"({"type": "array", "items": {"uniqueItems": true}})", "/items: 'uniqueItems': true is not supported"},
      {R"({"type": "array", "contains": {"type": "null"}})", "'contains' is not supported"},
      {R"({"patternProperties": {"^a": {}}})", "'patternProperties' is not supported"},
      {R"({"propertyNames": {"maxLength": 3}})", "'propertyNames' is not supported"},
      {R"({"dependentRequired": {"a": ["b"]}})", "'dependentRequired' is not supported"},
      {R"({"properties": {"a": {}}, "minProperties": 1})", "'minProperties' above the number of required"},
      {R"({"properties": {"a": {}, "b": {}}, "maxProperties": 1})", "'maxProperties' below"},
      {R"({"oneOf": [{"type": "integer"}, {"type": "number"}]})", "'oneOf' alternatives 0 and 1 may both match"},
      {R"({"anyOf": [{}], "oneOf": [{}]})", "'anyOf' together with 'oneOf'"},
      // Alone, each alternative lacks the other's required key; with the siblings' properties
      // {"x":1,"y":2} matches both.
      {R"({"properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "oneOf": [
          {"type": "object", "properties": {"x": {"const": 1}}, "required": ["x"]},
          {"type": "object", "properties": {"y": {"const": 2}}, "required": ["y"]}]})",
       "'oneOf' alternatives 0 and 1 may both match"},
      {R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})", "required property 'b' is not listed"},
      {R"({"type": "object", "properties": {"a": false}, "required": ["a"]})",
       "required property 'a' can never be valid"},
      {"false", "json schema: (root): the schema 'false' matches nothing"},
      {"[]", "a schema must be an object or a boolean"},
      {R"({"properties": {"a": 3}})", "json schema: /properties/a: a schema must be an object or a boolean"},
      {R"({"type": "text"})", "'type' must be a type name or a list of distinct ones"},
      {R"({"type": []})", "'type' is an empty list"},
      {R"({"type": "string", "minLength": -1})", "'minLength' must be a non-negative integer"},
      {R"({"type": "string", "maxLength": "5"})", "'maxLength' must be a non-negative integer"},
      {R"({"type": "string", "minLength": 5, "maxLength": 4})", "'minLength' is above 'maxLength'"},
      {R"({"type": "string", "minLength": 100000})", "'minLength' above 4096 is not supported"},
      {R"({"type": "string", "format": "date", "maxLength": 5})", "'format': 'date' with 'minLength' / 'maxLength'"},
      {R"({"type": "array", "minItems": 3, "maxItems": 2})", "'minItems' is above 'maxItems'"},
      {R"({"type": "array", "prefixItems": [{}], "items": false, "minItems": 2})", "no array length satisfies"},
      {R"({"type": "integer", "minimum": 5, "maximum": 4})", "no integer lies within"},
      {R"({"type": "integer", "minimum": 2.5, "maximum": 2.9})", "no integer lies within"},
      {R"({"type": "number", "minimum": "0"})", "'minimum' must be a number"},
      {R"({"type": "number", "minimum": 3, "exclusiveMaximum": 3})", "no number lies within"},
      {R"({"type": "number", "minimum": 0.25, "maximum": 0.75})", "no whole interval between two integers"},
      {R"({"type": "integer", "exclusiveMinimum": true})", "'exclusiveMinimum': true needs 'minimum'"},
      {R"({"enum": "a"})", "'enum' must be a list"},
      {R"({"type": "string", "enum": [1, 2]})", "no 'enum' / 'const' value satisfies"},
      {R"({"allOf": [{"type": "string"}, {"type": "integer"}]})", "the subschemas of 'allOf' (or '$ref') exclude"},
      {R"({"allOf": []})", "'allOf' must be a non-empty list"},
      {R"({"allOf": [{"format": "date"}, {"format": "time"}]})", "allOf: the subschemas' 'format' differ"},
      {R"({"anyOf": []})", "'anyOf' must be a non-empty list"},
      {R"({"$ref": "#/$defs/missing"})", "json schema: (root): $ref '#/$defs/missing' does not name a schema"},
      {R"({"$ref": "https://example.com/s.json"})", "only references within the schema"},
      {R"({"$ref": "#anchor"})", "anchors are not supported"},
      {R"({"$ref": 5})", "'$ref' must be a string"},
      {R"({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"})",
       "json schema: /$defs/a/anyOf/0: $ref '#/$defs/a' refers back to itself outside any object or array"},
      {R"({"$defs": {"a": {"$ref": "#/$defs/a", "type": "object"}}, "$ref": "#/$defs/a"})", "nesting too deep"},
      {R"({"properties": {"a": {"$ref": "#/properties/a/items"}}})", "$ref '#/properties/a/items' does not name"},
  };
  std::string deep = "{}";
  for (int i = 0; i < 1000; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  EXPECT_NE(error_of(deep).find("schemas nested deeper than 200 levels"), std::string::npos);
  for (const auto& c : cases) {
    const std::string error = error_of(c.schema);
    EXPECT_NE(error.find(c.message), std::string::npos) << c.schema << "\n" << error;
  }
}

TEST(JsonSchemaSoundTest, NotRefused) {
  // Annotations, unknown keywords and validation keywords that change nothing here.
  for (const char* schema : {
           R"({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "title": "t", "description": "d",
               "default": 1, "examples": [1], "$comment": "c", "deprecated": true, "x-vendor": {"a": 1}})",
           R"({"type": "array", "uniqueItems": false, "items": {"readOnly": true}})",
           R"({"type": "object", "patternProperties": {}, "properties": {"a": {}}, "required": ["a"],
               "minProperties": 1, "maxProperties": 1})",
           R"({"then": {"type": "string"}, "else": {"type": "null"}})",
       })
    EXPECT_EQ(error_of(schema), "(no error)") << schema;
}

}  // namespace
}  // namespace exq::grammar
