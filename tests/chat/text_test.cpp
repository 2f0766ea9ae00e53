// Python str and float semantics the renderer relies on (values checked against CPython 3.11).
#include "chat/text.h"

#include <gtest/gtest.h>

#include "chat/json_dump.h"
#include "chat/value.h"

namespace exq::chat {
namespace {

TEST(PyFloatRepr, MatchesPython) {
  const std::pair<double, const char*> cases[] = {
      {1.0, "1.0"},          {0.1, "0.1"},
      {1e-5, "1e-05"},       {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {-0.0, "-0.0"},        {1e22, "1e+22"},
      {0.0001, "0.0001"},    {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {100.0, "100.0"},      {1234.5678, "1234.5678"},
      {2.5e-7, "2.5e-07"},   {9999999999999998.0, "9999999999999998.0"},
  };
  for (const auto& [d, want] : cases) EXPECT_EQ(py_float_repr(d), want) << want;
}

TEST(PyStr, StripUsesPythonWhitespace) {
  EXPECT_EQ(py_strip("\t a\xc2\xa0" "b \xe3\x80\x80\n", true, true), "a\xc2\xa0" "b");
  EXPECT_EQ(py_strip("xxaxx", true, false, std::string("x")), "axx");
  EXPECT_EQ(py_strip("\xc3\xa9" "a\xc3\xa9", true, true, std::string("\xc3\xa9")), "a");
}

TEST(PyStr, SplitLikePython) {
  EXPECT_EQ(py_split(" a\xe2\x80\xa8" "b\xc2\xa0" "c ", std::nullopt, -1),
            (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(py_split("a  b  c", std::nullopt, 1), (std::vector<std::string>{"a", "b  c"}));
  EXPECT_EQ(py_split("a,b,", std::string(","), -1), (std::vector<std::string>{"a", "b", ""}));
  EXPECT_EQ(py_rsplit("a b  c", std::nullopt, 1), (std::vector<std::string>{"a b", "c"}));
  EXPECT_EQ(py_split("", std::nullopt, -1), std::vector<std::string>{});
}

TEST(PyStr, CaseMappingBeyondAscii) {
  EXPECT_EQ(py_upper("\xc3\x89t\xc3\xa9 \xc3\xbf \xc3\x9f"), "\xc3\x89T\xc3\x89 \xc5\xb8 SS");  // Été ÿ ß
  // ÀÉÎ ΣΑΣ ПРИВЕТ -> àéî σας привет (final sigma)
  EXPECT_EQ(py_lower("\xc3\x80\xc3\x89\xc3\x8e \xce\xa3\xce\x91\xce\xa3 \xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2"),
            "\xc3\xa0\xc3\xa9\xc3\xae \xcf\x83\xce\xb1\xcf\x82 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
  EXPECT_EQ(py_capitalize("\xc3\x9f" "a"), "Ssa");
  EXPECT_EQ(jinja_title("\xc3\xa9" "cole \xc3\xa9t\xc3\xa9"), "\xc3\x89" "cole \xc3\x89t\xc3\xa9");
  EXPECT_EQ(py_lower("\xc4\xb9\xc4\xbd"), "\xc4\xba\xc4\xbe");  // ĹĽ -> ĺľ
}

TEST(PyStr, ReprEscapesLikePython) {
  EXPECT_EQ(py_repr_string("tab\there\x01\x7f\xc2\xa0\xc3\xa9\xe2\x80\x8b\xf0\x9f\x98\x80'\""),
            "'tab\\there\\x01\\x7f\\xa0\xc3\xa9\\u200b\xf0\x9f\x98\x80\\'\"'");
  EXPECT_EQ(py_repr_string("it's"), "\"it's\"");
}

TEST(Utf8, InvalidBytesRoundTrip) {
  const std::string bad = "a\xff\xc3(\xe2\x82";
  std::string out;
  for (size_t pos = 0; pos < bad.size();) append_utf8(out, decode_utf8(bad, pos));
  EXPECT_EQ(out, bad);
  EXPECT_EQ(utf8_length(bad), 6u);
}

TEST(JsonDump, MatchesPythonJsonDumps) {
  Limits lim;
  Budget budget(lim);
  const Value v = from_json(nlohmann::ordered_json::parse(
      R"({"z": [1, 2.0, -0.5, 1e100], "a": "\u00e9\u0001\t\"\\/", "n": null, "t": true, "e": {}, "l": []})"));
  EXPECT_EQ(json_dumps(v, {}, budget),
            R"({"z": [1, 2.0, -0.5, 1e+100], "a": "é\u0001\t\"\\/", "n": null, "t": true, "e": {}, "l": []})");
  JsonDumpOptions o;
  o.indent = "  ";
  o.sort_keys = true;
  EXPECT_EQ(json_dumps(v, o, budget),
            "{\n  \"a\": \"é\\u0001\\t\\\"\\\\/\",\n  \"e\": {},\n  \"l\": [],\n  \"n\": null,\n"
            "  \"t\": true,\n  \"z\": [\n    1,\n    2.0,\n    -0.5,\n    1e+100\n  ]\n}");
  JsonDumpOptions ascii;
  ascii.ensure_ascii = true;
  EXPECT_EQ(json_dumps(Value("\xc3\xa9\xf0\x9f\x98\x80\x7f"), ascii, budget), R"("\u00e9\ud83d\ude00\u007f")");
}

}  // namespace
}  // namespace exq::chat
