// JSON Schema -> GBNF: the grammar of each schema feature, driven through GrammarMatcher over
// valid texts (compact and pretty-printed) and invalid ones. Random-walk soundness checks and
// the refusals are in json_schema_sound_test.cpp.
#include "grammar/json_schema.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "grammar/grammar.h"

namespace exq::grammar {
namespace {

using Ordered = nlohmann::ordered_json;

std::shared_ptr<const Grammar> compile(const std::string& schema) {
  return Grammar::parse(json_schema_to_gbnf(Ordered::parse(schema)));
}

bool matches(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.accept(text) && m.complete();
}

// Each text, and (when it is JSON) its 2-space pretty-printed form, is accepted.
void expect_valid(const std::shared_ptr<const Grammar>& g, std::initializer_list<std::string> texts) {
  for (const std::string& t : texts) {
    EXPECT_TRUE(matches(g, t)) << t;
    const Ordered parsed = Ordered::parse(t, nullptr, false);
    if (!parsed.is_discarded()) {
      EXPECT_TRUE(matches(g, parsed.dump(2))) << parsed.dump(2);
    }
  }
}

void expect_invalid(const std::shared_ptr<const Grammar>& g, std::initializer_list<std::string> texts) {
  for (const std::string& t : texts) EXPECT_FALSE(matches(g, t)) << t;
}

TEST(JsonSchemaTest, RequiredAndOptionalProperties) {
  auto g = compile(R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                       "email": {"type": "string"}}, "required": ["name", "email"]})");
  expect_valid(g, {R"({"name":"Ann","email":"a@b.c"})", R"({"name":"Ann","age":31,"email":"a@b.c"})",
                   R"({ "name" : "Ann" , "age" : -2 , "email" : "" })"});
  expect_invalid(g, {R"({"name":"Ann"})", R"({"email":"a@b.c"})", R"({"name":"Ann","age":"31","email":"x"})",
                     R"({"name":"Ann","email":"x","extra":1})", R"({"name":"Ann","email":"x",})", "{}", "[]",
                     R"({"name":"Ann","email":"x"} x)", R"("name")", R"({"name":"Ann","name":"Bo","email":"x"})"});
  // Keys come in the schema's order.
  expect_invalid(g, {R"({"email":"a@b.c","name":"Ann"})"});
}

TEST(JsonSchemaTest, AllOptionalProperties) {
  auto g = compile(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"},
                       "c": {"type": "null"}}})");
  expect_valid(g, {"{}", R"({"a":1})", R"({"b":true})", R"({"c":null})", R"({"a":1,"c":null})",
                   R"({"b":false,"c":null})", R"({"a":1,"b":true,"c":null})"});
  expect_invalid(g, {R"({"a":1,"a":2})", R"({"d":1})", R"({,"a":1})", R"({"a":1,})", R"({"c":null,"a":1})"});
}

TEST(JsonSchemaTest, PropertyOrder) {
  const char* schema = R"({"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}},
                           "required": ["z", "a"]})";
  auto ordered = compile(schema);
  expect_valid(ordered, {R"({"z":1,"a":2})"});
  expect_invalid(ordered, {R"({"a":2,"z":1})"});
  // nlohmann::json sorts keys, so that overload emits them alphabetically.
  auto sorted = Grammar::parse(json_schema_to_gbnf(nlohmann::json::parse(schema)));
  expect_valid(sorted, {R"({"a":2,"z":1})"});
  expect_invalid(sorted, {R"({"z":1,"a":2})"});
}

TEST(JsonSchemaTest, AdditionalProperties) {
  const std::string props = R"("type": "object", "properties": {"id": {"type": "integer"}, "idx": {"type": "string"}},
                               "required": ["id"])";
  auto closed = compile("{" + props + R"(, "additionalProperties": false})");
  expect_valid(closed, {R"({"id":1})", R"({"id":1,"idx":"x"})"});
  expect_invalid(closed, {R"({"id":1,"other":2})", R"({"id":1,"idx":"x","i":3})"});
  auto absent = compile("{" + props + "}");  // only the listed properties are emitted
  expect_invalid(absent, {R"({"id":1,"other":2})"});

  auto open = compile("{" + props + R"(, "additionalProperties": true})");
  expect_valid(open, {R"({"id":1,"other":[1,{"x":null}]})", R"({"id":1,"idx":"x","i":3,"idxy":"s","":0})",
                      R"({"id":1,"Id":true,"d":1,"ix":2})"});
  // An extra key never spells a listed one, so no duplicate key can override a checked value.
  expect_invalid(open, {R"({"id":1,"id":"str"})", R"({"id":1,"idx":"x","idx":3})", R"({"id":1,"i\u0064":"x"})",
                        R"({"other":1,"id":2})"});
  // Nor does it use escapes while it could still become one (a narrowing, not a rule of JSON).
  expect_invalid(open, {R"({"id":1,"\u0041":1})"});

  auto typed = compile("{" + props + R"(, "additionalProperties": {"type": "number", "minimum": 0}})");
  expect_valid(typed, {R"({"id":1,"x":2.5,"y":0})"});
  expect_invalid(typed, {R"({"id":1,"x":-1})", R"({"id":1,"x":"2"})"});
}

TEST(JsonSchemaTest, ObjectWithoutProperties) {
  auto any = compile(R"({"type": "object"})");
  expect_valid(any, {"{}", R"({"a":1,"b":{"c":[true,null,"x",-1.5e3]}})", R"({"a":1,"a":2})"});
  expect_invalid(any, {"[]", "1", R"("x")", "{", R"({"a"})", R"({"a":})", R"({'a':1})"});
  auto ints = compile(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  expect_valid(ints, {"{}", R"({"a":1,"b":-2})"});
  expect_invalid(ints, {R"({"a":1.5})", R"({"a":"1"})"});
  auto no_a = compile(R"({"type": "object", "properties": {"a": false}, "additionalProperties": true})");
  expect_valid(no_a, {"{}", R"({"b":1,"ab":2})"});
  expect_invalid(no_a, {R"({"a":1})", R"({"b":1,"a":2})"});
  auto empty = compile(R"({"type": "object", "additionalProperties": false})");
  expect_valid(empty, {"{}", "{ }"});
  expect_invalid(empty, {R"({"a":1})"});
}

TEST(JsonSchemaTest, JsonObjectMode) {
  auto g = Grammar::parse(json_object_gbnf());
  expect_valid(g, {"{}", R"({"a":[1,2,{"b":null}],"c":"\u00e9\n","d":-0.5e-7,"e":true})", R"({"nested":{"x":{}}})"});
  expect_invalid(g, {"[]", "1", "\"s\"", "null", " {}", R"({"a":01})", R"({"a":1.})", R"({"a":"\x"})",
                     "{\"a\":\"tab\there\"}", R"({"a":tru})", R"({"a":"\ud800"})"});
}

TEST(JsonSchemaTest, Types) {
  expect_valid(compile(R"({"type": "string"})"), {R"("")", R"("a b")", R"("\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00")",
                                                 "\"\xC3\xA9\xF0\x9F\x98\x80\""});
  expect_invalid(compile(R"({"type": "string"})"), {"1", "\"a", "\"\x01\"", R"("\u12")", R"("\uDE00")",
                                                   R"("\uD83D")", R"("\uD83D\u0041")"});
  auto num = compile(R"({"type": "number"})");
  expect_valid(num, {"0", "-0", "1.5", "-12.25e+10", "3E-5", "1e05", "123456789"});
  expect_invalid(num, {"01", ".5", "1.", "+1", "1e", "--1", "0x10", "NaN", "1e100", "12345678901234567"});
  auto integer = compile(R"({"type": "integer"})");
  expect_valid(integer, {"0", "-7", "9999999999999999"});
  expect_invalid(integer, {"1.0", "1e3", "00", "-", "99999999999999999"});
  expect_valid(compile(R"({"type": "boolean"})"), {"true", "false"});
  expect_invalid(compile(R"({"type": "boolean"})"), {"True", "0", "null"});
  expect_valid(compile(R"({"type": "null"})"), {"null"});
  expect_invalid(compile(R"({"type": "null"})"), {"nul", "false"});
  auto list = compile(R"({"type": ["string", "null"], "maxLength": 2})");
  expect_valid(list, {"null", R"("ab")"});
  expect_invalid(list, {R"("abc")", "1"});
  auto num_int = compile(R"({"type": ["integer", "number"], "minimum": 1})");
  expect_valid(num_int, {"1", "2.5"});
  expect_invalid(num_int, {"0.5", "-3"});
  for (const char* any : {"{}", "true", R"({"title": "x", "description": "y", "default": 1, "x-custom": 2})"})
    expect_valid(compile(any), {"1", "null", R"({"a":[]})", R"("s")", "[1,\"a\"]"});
}

TEST(JsonSchemaTest, InferredTypes) {
  // Keywords of one type without `type` emit that type only (a subset of the valid texts).
  expect_valid(compile(R"({"properties": {"a": {"type": "integer"}}})"), {R"({"a":1})", "{}"});
  expect_invalid(compile(R"({"properties": {"a": {"type": "integer"}}})"), {"1", R"({"a":"x"})"});
  expect_valid(compile(R"({"maxLength": 1})"), {R"("a")"});
  expect_invalid(compile(R"({"maxLength": 1})"), {R"("ab")", "1"});
  expect_valid(compile(R"({"minimum": 3})"), {"3", "4.5"});
  expect_invalid(compile(R"({"minimum": 3})"), {"2", R"("a")"});
}

TEST(JsonSchemaTest, StringLength) {
  auto g = compile(R"({"type": "string", "minLength": 2, "maxLength": 4})");
  // Lengths count characters: an escape, a two-byte letter and a surrogate pair are one each.
  expect_valid(g, {R"("ab")", R"("abcd")", R"("\n\t")", "\"\xC3\xA9\xC3\xA9\"", R"("\uD83D\uDE00x")"});
  expect_invalid(g, {R"("a")", R"("abcde")", R"("")", R"("\n")", R"("\uD83D\uDE00")"});
  expect_valid(compile(R"({"type": "string", "maxLength": 0})"), {R"("")"});
  expect_invalid(compile(R"({"type": "string", "maxLength": 0})"), {R"("a")"});
  expect_valid(compile(R"({"type": "string", "minLength": 3})"), {R"("abc")", R"("abcdefghijklmnop")"});
  expect_invalid(compile(R"({"type": "string", "minLength": 3})"), {R"("ab")"});
  auto exact = compile(R"({"type": "string", "minLength": 3, "maxLength": 3})");
  expect_valid(exact, {R"("abc")"});
  expect_invalid(exact, {R"("ab")", R"("abcd")"});
}

TEST(JsonSchemaTest, Formats) {
  auto date = compile(R"({"type": "string", "format": "date"})");
  expect_valid(date, {R"("2024-01-31")", R"("2024-02-29")", R"("2000-02-29")", R"("1999-12-01")", R"("2023-04-30")",
                      R"("0000-02-29")"});
  expect_invalid(date, {R"("2023-02-29")", R"("1900-02-29")", R"("2024-04-31")", R"("2024-13-01")", R"("2024-00-10")",
                        R"("2024-01-00")", R"("2024-1-01")", R"("24-01-01")", R"("2024-01-01T")"});
  auto time = compile(R"({"type": "string", "format": "time"})");
  expect_valid(time, {R"("23:59:59Z")", R"("00:00:00.5+05:30")", R"("12:30:00.123456789-08:00")"});
  expect_invalid(time, {R"("24:00:00Z")", R"("12:60:00Z")", R"("12:00:60Z")", R"("12:00:00")", R"("12:00Z")"});
  auto date_time = compile(R"({"type": "string", "format": "date-time"})");
  expect_valid(date_time, {R"("2024-06-01T08:15:00Z")", R"("2024-06-01T08:15:00.250+02:00")"});
  expect_invalid(date_time, {R"("2024-06-01 08:15:00Z")", R"("2024-06-01T08:15Z")", R"("2024-06-01")"});
  auto uuid = compile(R"({"type": "string", "format": "uuid"})");
  expect_valid(uuid, {R"("123e4567-e89b-12d3-A456-426614174000")"});
  expect_invalid(uuid, {R"("123e4567e89b12d3a456426614174000")", R"("123e4567-e89b-12d3-a456-42661417400g")"});
  // Enum values must have the format too.
  auto listed = compile(R"({"type": "string", "format": "date", "enum": ["2024-02-29", "2023-02-29", "soon"]})");
  expect_valid(listed, {R"("2024-02-29")"});
  expect_invalid(listed, {R"("2023-02-29")", R"("soon")"});
  // Other formats are annotations: any string.
  expect_valid(compile(R"({"type": "string", "format": "email"})"), {R"("not an email")"});
  // A length range that the format's lengths already meet.
  expect_valid(compile(R"({"type": "string", "format": "uuid", "maxLength": 40})"),
               {R"("123e4567-e89b-12d3-a456-426614174000")"});
}

TEST(JsonSchemaTest, IntegerRange) {
  auto g = compile(R"({"type": "integer", "minimum": 0, "maximum": 100})");
  expect_valid(g, {"0", "7", "10", "99", "100"});
  expect_invalid(g, {"-1", "101", "007", "00", "-0", "1000", "7.0", "1e2", ""});
  // Every integer of a window against bounds of several shapes.
  const struct {
    const char* schema;
    int64_t lo, hi;
  } cases[] = {
      {R"({"type": "integer", "minimum": -123, "maximum": 456})", -123, 456},
      {R"({"type": "integer", "exclusiveMinimum": -20, "exclusiveMaximum": 1000})", -19, 999},
      {R"({"type": "integer", "minimum": 5})", 5, INT64_MAX},
      {R"({"type": "integer", "maximum": -5})", INT64_MIN, -5},
      {R"({"type": "integer", "minimum": 1.5, "maximum": 99.9})", 2, 99},
      {R"({"type": "integer", "minimum": 7, "maximum": 7})", 7, 7},
      {R"({"type": "integer", "minimum": -1099, "maximum": -1000})", -1099, -1000},
      {R"({"type": "integer", "minimum": 109, "maximum": 1200})", 109, 1200},
      {R"({"type": "integer", "minimum": 0, "exclusiveMinimum": 3, "maximum": 20, "exclusiveMaximum": 50})", 4, 20},
      {R"({"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 10})", 1, 10},  // draft 4
  };
  for (const auto& c : cases) {
    auto r = compile(c.schema);
    for (int64_t v = -1300; v <= 1300; ++v)
      EXPECT_EQ(matches(r, std::to_string(v)), v >= c.lo && v <= c.hi) << c.schema << " " << v;
  }
  auto big = compile(R"({"type": "integer", "minimum": 1000000007, "maximum": 9000000000000})");
  expect_valid(big, {"1000000007", "5555555555", "9000000000000"});
  expect_invalid(big, {"1000000006", "9000000000001", "10000000000000", "999999999"});
}

TEST(JsonSchemaTest, NumberRange) {
  const struct {
    const char* schema;
    double lo, hi;
    bool lo_open, hi_open;
  } cases[] = {
      {R"({"type": "number", "minimum": 0, "maximum": 1})", 0, 1, false, false},
      {R"({"type": "number", "exclusiveMinimum": -2, "exclusiveMaximum": 3})", -2, 3, true, true},
      {R"({"type": "number", "minimum": -10.5, "maximum": 20})", -10.5, 20, false, false},
      {R"({"type": "number", "minimum": 0})", 0, 1e300, false, false},
  };
  const char* texts[] = {"-11", "-10.5", "-10", "-9.99", "-2.5", "-2", "-1.999", "-1", "-0.5", "-0.001", "0", "0.0",
                         "0.25", "0.999", "1", "1.0", "1.5", "2.999", "3", "3.0", "3.001", "19.5", "20", "20.0001",
                         "1234.5678"};
  for (const auto& c : cases) {
    auto g = compile(c.schema);
    for (const char* t : texts) {
      const double v = std::stod(t);
      const bool valid = (c.lo_open ? v > c.lo : v >= c.lo) && (c.hi_open ? v < c.hi : v <= c.hi);
      if (!valid) {
        EXPECT_FALSE(matches(g, t)) << c.schema << " " << t;  // soundness
      }
    }
  }
  auto unit = compile(R"({"type": "number", "minimum": 0, "maximum": 1})");
  expect_valid(unit, {"0", "0.5", "0.001", "1", "1.0", "0.0", "0.50"});
  expect_invalid(unit, {"-0.5", "1.01", "2", "1.5e-1", "-0", "00.5"});
  auto open = compile(R"({"type": "number", "exclusiveMinimum": -2, "exclusiveMaximum": 3})");
  expect_valid(open, {"-1.99", "-1", "0", "2.999", "2"});
  expect_invalid(open, {"-2", "-2.0", "3", "3.00", "3.0001"});
}

TEST(JsonSchemaTest, Arrays) {
  auto g = compile(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3})");
  expect_valid(g, {"[1]", "[1,2]", "[1, 2, 3]", "[ 1 ]"});
  expect_invalid(g, {"[]", "[1,2,3,4]", R"([1,"2"])", "[1,]", "[,1]", "[1 2]"});
  auto any = compile(R"({"type": "array"})");
  expect_valid(any, {"[]", R"([1,"a",null,[],{}])"});
  auto tuple = compile(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                           "items": false})");
  expect_valid(tuple, {"[]", R"(["a"])", R"(["a",1])"});
  expect_invalid(tuple, {R"(["a",1,2])", R"([1])", R"(["a","b"])"});
  auto tuple_rest = compile(R"({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "boolean"},
                                "minItems": 3})");
  expect_valid(tuple_rest, {R"(["a",true,false])", R"(["a",true,false,true])"});
  expect_invalid(tuple_rest, {R"(["a",true])", R"([true,true,true])"});
  // Draft 2019's list-valued items with additionalItems.
  auto old = compile(R"({"type": "array", "items": [{"type": "null"}], "additionalItems": {"type": "integer"}})");
  expect_valid(old, {"[]", "[null]", "[null,1,2]"});
  expect_invalid(old, {"[1]", "[null,null]"});
  auto nested =
      compile(R"({"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}})");
  expect_valid(nested, {"[[],[1],[1,2]]"});
  expect_invalid(nested, {"[[1,2,3]]"});
}

TEST(JsonSchemaTest, EnumAndConst) {
  auto g = compile(R"({"enum": ["red", "green", 3, null, {"k": [1, "\u00e9"]}, true]})");
  expect_valid(g, {R"("red")", R"("green")", "3", "null", R"({"k":[1,"é"]})", "true"});
  expect_invalid(g, {R"("blue")", R"("Red")", "4", "false", R"({"k":[1]})", R"("red" )" "x"});
  auto filtered = compile(R"({"type": "string", "enum": ["a", 1, "bb"], "maxLength": 1})");
  expect_valid(filtered, {R"("a")"});
  expect_invalid(filtered, {"1", R"("bb")"});
  auto c = compile(R"({"const": "fixed\n\"q\""})");
  expect_valid(c, {R"("fixed\n\"q\"")"});
  expect_invalid(c, {R"("fixed")"});
  // Thousands of values with common prefixes (factored, so the matcher stays deterministic).
  Ordered many = {{"enum", Ordered::array()}};
  for (int i = 0; i < 12000; ++i) many["enum"].push_back(fmt::format("v{}", i));
  auto big = Grammar::parse(json_schema_to_gbnf(many));
  expect_valid(big, {R"("v0")", R"("v11999")", R"("v1199")", R"("v5")"});
  expect_invalid(big, {R"("v12000")", R"("v")", R"("v05")", R"("w1")"});
  auto both = compile(R"({"enum": [1, 2, 3], "const": 2})");
  expect_valid(both, {"2"});
  expect_invalid(both, {"1", "3"});
}

TEST(JsonSchemaTest, AnyOfAndOneOf) {
  auto nullable = compile(R"({"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}], "default": null})");
  expect_valid(nullable, {"null", R"("abc")"});
  expect_invalid(nullable, {R"("abcd")", "1"});
  auto overlap = compile(R"({"anyOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]})");
  expect_valid(overlap, {"-5", "10.5"});
  expect_invalid(overlap, {"9.5"});
  auto one = compile(R"({"oneOf": [{"type": "string"}, {"type": "integer"}, {"const": 1.5}]})");
  expect_valid(one, {R"("x")", "7", "1.5"});
  expect_invalid(one, {"2.5", "null"});
  // A discriminated union: each alternative requires its own const tag.
  auto tagged = compile(R"({"oneOf": [
      {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
       "required": ["kind", "r"]},
      {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
       "required": ["kind"]}]})");
  expect_valid(tagged, {R"({"kind":"circle","r":1})", R"({"kind":"square"})", R"({"kind":"square","side":2})"});
  expect_invalid(tagged, {R"({"kind":"circle"})", R"({"kind":"square","r":1})", R"({"kind":"triangle"})"});
  // Siblings apply to every alternative.
  auto shared = compile(R"({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                            "anyOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
                                      {"properties": {"b": {"type": "string"}}, "required": ["b"]}]})");
  expect_valid(shared, {R"({"id":1,"a":"x"})", R"({"id":2,"b":"y"})"});
  expect_invalid(shared, {R"({"a":"x"})", R"({"id":1})"});
}

TEST(JsonSchemaTest, AllOf) {
  auto g = compile(R"({"allOf": [
      {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}, "required": ["a"]},
      {"properties": {"a": {"maximum": 10}, "b": {"type": "string"}}, "required": ["b"]}]})");
  expect_valid(g, {R"({"a":0,"b":""})", R"({"a":10,"b":"x"})"});
  expect_invalid(g, {R"({"a":11,"b":"x"})", R"({"a":1})", R"({"b":"x"})", R"({"a":-1,"b":"x"})"});
  auto closed = compile(R"({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}},
                                        "additionalProperties": false},
                                       {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}]})");
  expect_valid(closed, {R"({"a":1})", "{}"});
  expect_invalid(closed, {R"({"a":1,"b":2})"});  // b is not allowed by the first subschema
  auto single = compile(R"({"allOf": [{"$ref": "#/$defs/s"}], "$defs": {"s": {"type": "string", "maxLength": 1}}})");
  expect_valid(single, {R"("a")"});
  expect_invalid(single, {R"("ab")"});
  auto types = compile(R"({"allOf": [{"type": ["integer", "string"]}, {"type": "number", "maximum": 5}]})");
  expect_valid(types, {"5", "-3"});
  expect_invalid(types, {"6", "2.5", R"("a")"});
}

TEST(JsonSchemaTest, UnevaluatedProperties) {
  // Inside an allOf entry it sees only that entry's properties...
  auto inner = compile(R"({"allOf": [{"properties": {"a": {}}, "unevaluatedProperties": false},
                                     {"properties": {"b": {}}}]})");
  expect_valid(inner, {R"({"a":1})", "{}"});
  expect_invalid(inner, {R"({"b":1})", R"({"a":1,"b":2})"});
  // ...beside allOf / anyOf it sees theirs.
  auto outer = compile(R"({"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}],
                           "unevaluatedProperties": false})");
  expect_valid(outer, {R"({"a":1,"b":2})", R"({"b":2})"});
  expect_invalid(outer, {R"({"c":1})", R"({"a":1,"c":1})"});
  auto alts = compile(R"({"type": "object", "unevaluatedProperties": false,
                          "anyOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                    {"properties": {"b": {"type": "string"}}, "required": ["b"]}]})");
  expect_valid(alts, {R"({"a":1})", R"({"b":"x"})"});
  expect_invalid(alts, {R"({"a":1,"c":2})", "{}"});
  auto extras = compile(R"({"type": "object", "unevaluatedProperties": {"type": "integer"}})");
  expect_valid(extras, {R"({"x":1,"y":2})"});
  expect_invalid(extras, {R"({"x":"1"})"});
}

TEST(JsonSchemaTest, References) {
  auto g = compile(R"({"$defs": {"pos": {"type": "integer", "minimum": 1}},
                       "definitions": {"name": {"type": "string", "minLength": 1}},
                       "type": "object",
                       "properties": {"n": {"$ref": "#/$defs/pos"}, "s": {"$ref": "#/definitions/name"},
                                                        "m": {"$ref": "#/properties/n"}}})");
  expect_valid(g, {R"({"n":1,"s":"x","m":3})"});
  expect_invalid(g, {R"({"n":0})", R"({"s":""})", R"({"m":-1})"});
  auto tree = compile(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
      "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["v"], "additionalProperties": false}}})");
  expect_valid(tree, {R"({"v":1})", R"({"v":1,"kids":[{"v":2,"kids":[{"v":3}]},{"v":4,"kids":[]}]})"});
  expect_invalid(tree, {R"({"v":1,"kids":[{"kids":[]}]})", R"({"v":1,"kids":[{"v":"2"}]})"});
  auto self = compile(R"({"type": ["array", "integer"], "items": {"$ref": "#"}})");
  expect_valid(self, {"1", "[]", "[1,[2,[3]],[]]"});
  expect_invalid(self, {"[1,\"a\"]"});
  auto siblings = compile(R"({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2})");
  expect_valid(siblings, {R"("ab")"});
  expect_invalid(siblings, {R"("abc")", "1"});
  auto escaped = compile(R"({"$defs": {"a/b c": {"type": "null"}}, "$ref": "#/$defs/a~1b%20c"})");
  expect_valid(escaped, {"null"});
}

TEST(JsonSchemaTest, WhitespaceIsBounded) {
  auto g = compile(R"({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}})");
  expect_valid(g, {"{\n\t\"a\": [\n\t\t1,\n\t\t2\n\t]\n}", "{ \"a\" : [ 1 , 2 ] }", "{\n\n  \"a\": []\n}"});
  const std::string spaces20(20, ' '), spaces21(21, ' ');
  EXPECT_TRUE(matches(g, "{\n" + spaces20 + "\"a\":[]}"));
  EXPECT_FALSE(matches(g, "{\n" + spaces21 + "\"a\":[]}"));
  expect_invalid(g, {"{  \"a\":[]}", "{\n\n\n\"a\":[]}", "{\r\n\"a\":[]}", " {}"});
  // Nothing after the value: the grammar ends with it, so generation stops there.
  EXPECT_TRUE(matches(g, "{}"));
  EXPECT_FALSE(matches(g, "{}\n"));
  EXPECT_FALSE(matches(g, "{} "));
}

}  // namespace
}  // namespace exq::grammar
