// Syntax errors name the template line and column; runtime errors name the line of the
// expression; runaway templates hit the render limits instead of hanging or exhausting memory.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "chat/template.h"
#include "core/error.h"

namespace exq::chat {
namespace {

// Returns the message of the exq::Error that fn throws ("" and a test failure if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exq::Error thrown";
  return "";
}

std::string parse_error(const std::string& src) {
  return error_of([&] { Template t(src); });
}

std::string render_error(const std::string& src, const Limits& limits = {}) {
  return error_of([&] { Template(src, limits).render(nlohmann::json::object()); });
}

TEST(ChatErrors, UnclosedBlockNamesItsLine) {
  const std::string msg = parse_error("a\n{% if x %}\nb");
  EXPECT_NE(msg.find("line 2, column 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unclosed 'if'"), std::string::npos) << msg;
  const std::string mismatched = parse_error("{% for x in y %}\n  {% if x %}{% endfor %}");
  EXPECT_NE(mismatched.find("line 2, column 16: unexpected 'endfor' tag"), std::string::npos) << mismatched;
  EXPECT_NE(mismatched.find("'if' block opened at line 2, column 3"), std::string::npos) << mismatched;
}

TEST(ChatErrors, UnknownFilterNamesLineAndColumn) {
  const std::string msg = parse_error("{{ x }}\n\n  {{ x|frobnicate }}");
  EXPECT_NE(msg.find("line 3, column 8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown filter 'frobnicate'"), std::string::npos) << msg;
  EXPECT_NE(parse_error("{{ x is frob }}").find("unknown test 'frob'"), std::string::npos);
}

TEST(ChatErrors, BadTokenNamesLineAndColumn) {
  const std::string msg = parse_error("{{ x }}\n{{ 1 $ 2 }}");
  EXPECT_NE(msg.find("line 2, column 6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected char '$'"), std::string::npos) << msg;
}

TEST(ChatErrors, OtherSyntaxErrors) {
  EXPECT_NE(parse_error("ab\n{{ x").find("line 2"), std::string::npos);
  EXPECT_NE(parse_error("{{ 'abc }}").find("unterminated string"), std::string::npos);
  EXPECT_NE(parse_error("{% foo %}").find("unknown tag 'foo'"), std::string::npos);
  EXPECT_NE(parse_error("{% include 'x' %}").find("unsupported tag 'include'"), std::string::npos);
  EXPECT_NE(parse_error("x\n{% endfor %}").find("line 2"), std::string::npos);
  EXPECT_NE(parse_error("{{ (1 }}").find("line 1"), std::string::npos);
  EXPECT_NE(parse_error("{{ 1 + }}").find("expected"), std::string::npos);
  EXPECT_NE(parse_error("{# open").find("comment"), std::string::npos);
  EXPECT_NE(parse_error("{{ 07 }}").find("expected end of print statement"), std::string::npos);
  EXPECT_NE(parse_error("{% break %}").find("outside of a loop"), std::string::npos);
  EXPECT_NE(parse_error("{% for x in y recursive %}{% endfor %}").find("recursive"), std::string::npos);
  EXPECT_NE(parse_error("{{ 99999999999999999999 }}").find("64 bits"), std::string::npos);
  EXPECT_NE(parse_error("{{ f(*a) }}").find("not supported"), std::string::npos);
}

TEST(ChatErrors, RuntimeErrorsNameTheExpressionLine) {
  std::string msg = render_error("\n\n{{ 1 + 'a' }}");
  EXPECT_NE(msg.find("line 3, column 6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported operand type(s) for +: 'int' and 'str'"), std::string::npos) << msg;
  msg = render_error("{{ a.b }}");
  EXPECT_NE(msg.find("'a' is undefined"), std::string::npos) << msg;
  msg = render_error("{% for x in 5 %}{% endfor %}");
  EXPECT_NE(msg.find("'int' object is not iterable"), std::string::npos) << msg;
  EXPECT_NE(render_error("{{ 1 // 0 }}").find("by zero"), std::string::npos);
  EXPECT_NE(render_error("{{ 'a' < 1 }}").find("not supported between"), std::string::npos);
  EXPECT_NE(render_error("{{ [1]|tojson }}{{ nope|tojson }}").find("not JSON serializable"), std::string::npos);
  EXPECT_NE(render_error("{% set a, b = [1] %}").find("not enough values to unpack"), std::string::npos);
  EXPECT_NE(render_error("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
  EXPECT_NE(render_error("{{ 'abc'[::0] }}").find("slice step cannot be zero"), std::string::npos);
  EXPECT_NE(render_error("{{ 'x'.nosuch() }}").find("has no attribute 'nosuch'"), std::string::npos);
  EXPECT_NE(render_error("{{ [1]|tojson(indent=nope) }}").find("'nope' is undefined"), std::string::npos);

}

TEST(ChatErrors, UnknownFilterInsideIfFailsOnlyWhenEvaluated) {
  // As in jinja2: {% if %} bodies and inline ifs may name filters the renderer lacks.
  EXPECT_EQ(Template("{% if false %}{{ x|nosuch }}{% endif %}ok").render(nlohmann::json::object()), "ok");
  EXPECT_EQ(Template("{{ 'a' if true else x|nosuch }}").render(nlohmann::json::object()), "a");
  EXPECT_EQ(Template("{% if false %}{{ a is nosuch }}{% endif %}ok").render(nlohmann::json::object()), "ok");
  const std::string msg = render_error("{% if true %}\n{{ x|nosuch }}{% endif %}");
  EXPECT_NE(msg.find("line 2, column 6: unknown filter 'nosuch'"), std::string::npos) << msg;
  // A loop body is not conditional, even inside an if.
  EXPECT_NE(parse_error("{% if false %}{% for a in b %}{{ a|nosuch }}{% endfor %}{% endif %}").find("unknown filter"),
            std::string::npos);
}

TEST(ChatErrors, RaiseExceptionPassesTheMessageThrough) {
  try {
    Template("{{ raise_exception('Roles must alternate') }}").render(nlohmann::json::object());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "Roles must alternate");
  }
}

TEST(ChatErrors, RenderContextMustBeAnObject) {
  EXPECT_THROW(Template("x").render(nlohmann::json::array()), Error);
}

TEST(ChatLimits, StepLimitStopsRunawayLoops) {
  Limits lim;
  lim.max_steps = 100000;
  const std::string msg =
      render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", lim);
  EXPECT_NE(msg.find("steps"), std::string::npos) << msg;
  EXPECT_NE(render_error("{{ range(1000000)|length }}").find("range too big"), std::string::npos);
}

TEST(ChatLimits, OutputAndValueSizesAreCapped) {
  Limits lim;
  lim.max_output_bytes = 1 << 20;
  EXPECT_NE(render_error("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", lim).find("byte limit"),
            std::string::npos);
  EXPECT_NE(render_error("{{ 'x' * 100000000000 }}", lim).find("byte limit"), std::string::npos);
  EXPECT_NE(render_error("{% set s = 'x' * 100000 %}{{ [s] * 1000 }}", lim).find("byte limit"), std::string::npos);
  EXPECT_NE(render_error("{% set s = 'x' * 100000 %}{{ ([s] * 1000)|tojson }}", lim).find("byte limit"),
            std::string::npos);
}

TEST(ChatLimits, MacroRecursionIsBounded) {
  const std::string msg = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(msg.find("nested deeper"), std::string::npos) << msg;
}

TEST(ChatLimits, DeepRecursionStopsBeforeTheStackDoes) {
  // Macro levels that each nest ~100 expressions: the render depth limit, not the stack, ends it.
  Limits lim;
  lim.max_call_depth = 100000;
  std::string deep = "n";
  for (int i = 0; i < 100; ++i) deep += " + 0";
  const std::string msg =
      render_error("{% macro f(n) %}{% if true %}{{ f(" + deep + " + 1) }}{% endif %}{% endmacro %}{{ f(0) }}", lim);
  EXPECT_NE(msg.find("nested deeper than"), std::string::npos) << msg;
}

TEST(ChatLimits, DeepNestingIsASyntaxError) {
  EXPECT_NE(parse_error("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested too deeply"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_NE(parse_error(chain + " }}").find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_NE(parse_error(ifs).find("nested too deeply"), std::string::npos);
  EXPECT_NE(parse_error("{{ " + std::string(5000, '-') + "1 }}").find("nested too deeply"), std::string::npos);
}

TEST(ChatLimits, DeepValuesAreRejected) {
  EXPECT_NE(render_error("{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% set ns.v = [ns.v] %}{% endfor %}")
                .find("nested deeper"),
            std::string::npos);
}

TEST(ChatLimits, NamespacesCannotFormCycles) {
  EXPECT_NE(render_error("{% set ns = namespace(a=1) %}{% set ns.me = ns %}").find("namespace"), std::string::npos);
  EXPECT_NE(render_error("{% set ns = namespace(a=1) %}{% set ns.l = [1, {'x': ns}] %}").find("namespace"),
            std::string::npos);
}

}  // namespace
}  // namespace exq::chat
