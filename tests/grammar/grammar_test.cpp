// GBNF parsing and matching: terminals, UTF-8 split across bytes, repetition, a JSON
// grammar, matcher state semantics and every error message.
#include "grammar/grammar.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace exq::grammar {
namespace {

std::shared_ptr<const Grammar> parse(const std::string& text) { return Grammar::parse(text); }

bool matches(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.accept(text) && m.complete();
}

// Message of the exq::Error that parsing text throws ("" when it does not throw).
std::string parse_error(const std::string& text, std::string_view root = "root") {
  try {
    Grammar::parse(text, root);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

constexpr const char* kJsonGrammar = R"gbnf(
# JSON, close to llama.cpp's json.gbnf but accepting any value at the top level.
root    ::= ws value
value   ::= ( object | array | string | number | "true" | "false" | "null" ) ws
object  ::= "{" ws ( member ( "," ws member )* )? "}"
member  ::= string ws ":" ws value
array   ::= "[" ws ( value ( "," ws value )* )? "]"
string  ::= "\"" (
              [^"\\\x00-\x1F] |
              "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )   # escapes
            )* "\""
number  ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws      ::= [ \t\n\r]*
)gbnf";

TEST(GrammarTest, Literal) {
  auto g = parse("root ::= \"abc\"\n");
  EXPECT_TRUE(matches(g, "abc"));
  EXPECT_FALSE(matches(g, "ab"));
  EXPECT_FALSE(matches(g, "abd"));
  EXPECT_FALSE(matches(g, "abcd"));
  EXPECT_FALSE(matches(g, ""));
  GrammarMatcher m(g);
  EXPECT_TRUE(m.accept("ab"));
  EXPECT_FALSE(m.complete());
  EXPECT_TRUE(m.can_continue());
  EXPECT_FALSE(m.accept_byte('x'));
  EXPECT_TRUE(m.accept_byte('c'));
  EXPECT_TRUE(m.complete());
  EXPECT_FALSE(m.can_continue());
  EXPECT_FALSE(m.accept_byte('c'));
}

TEST(GrammarTest, LiteralEscapes) {
  auto g = parse(R"(root ::= "a\n\t\r\\\"\[\]\x41\u00e9\U0001F600")");
  EXPECT_TRUE(matches(g, "a\n\t\r\\\"[]A\xC3\xA9\xF0\x9F\x98\x80"));
  EXPECT_FALSE(matches(g, "a\n\t\r\\\"[]A\xC3\xA9"));
}

TEST(GrammarTest, CharacterClasses) {
  auto g = parse("root ::= [a-cx-z0]\n");
  for (const char* ok : {"a", "b", "c", "x", "z", "0"}) EXPECT_TRUE(matches(g, ok)) << ok;
  for (const char* bad : {"d", "w", "1", "A", "ab", ""}) EXPECT_FALSE(matches(g, bad)) << bad;

  auto neg = parse("root ::= [^a-c\\n]\n");
  EXPECT_TRUE(matches(neg, "d"));
  EXPECT_TRUE(matches(neg, "\xC3\xA9"));
  EXPECT_FALSE(matches(neg, "b"));
  EXPECT_FALSE(matches(neg, "\n"));

  // Escapes in classes; '-' first or last is literal.
  auto esc = parse(R"(root ::= [\]\[\x41-\x43] [-a] [a-])");
  EXPECT_TRUE(matches(esc, "]-a"));
  EXPECT_TRUE(matches(esc, "[a-"));
  EXPECT_TRUE(matches(esc, "Baa"));
  EXPECT_FALSE(matches(esc, "Dab"));
  EXPECT_FALSE(matches(esc, "Abb"));
}

TEST(GrammarTest, AnyCharacter) {
  auto g = parse("root ::= . \"!\"\n");
  EXPECT_TRUE(matches(g, "a!"));
  EXPECT_TRUE(matches(g, "\xC3\xA9!"));
  EXPECT_TRUE(matches(g, "\xF0\x9F\x98\x80!"));
  EXPECT_FALSE(matches(g, "ab!"));
  EXPECT_FALSE(matches(g, "!"));
}

TEST(GrammarTest, MultiByteSplitAcrossBytes) {
  auto g = parse("root ::= \"caf\" [é] \"!\"\n");
  GrammarMatcher m(g);
  ASSERT_TRUE(m.accept("caf"));
  EXPECT_FALSE(m.accept_byte(0xC4));  // U+0100..U+013F: none allowed
  ASSERT_TRUE(m.accept_byte(0xC3));   // U+00C0..U+00FF: é is among them
  EXPECT_FALSE(m.complete());
  EXPECT_TRUE(m.can_continue());
  EXPECT_FALSE(m.accept_byte(0xA8));  // è
  EXPECT_FALSE(m.accept_byte('!'));   // not a continuation byte
  ASSERT_TRUE(m.accept_byte(0xA9));
  ASSERT_TRUE(m.accept_byte('!'));
  EXPECT_TRUE(m.complete());

  // A 4-byte emoji, with a class that covers only part of a 3-byte prefix's range.
  auto emoji = parse("root ::= [\\U0001F600-\\U0001F64F]+\n");
  GrammarMatcher e(emoji);
  ASSERT_TRUE(e.accept("\xF0\x9F"));
  EXPECT_FALSE(e.accept_byte(0x9A));  // U+1F680.. is outside
  ASSERT_TRUE(e.accept_byte(0x99));   // U+1F640..U+1F67F overlaps
  EXPECT_FALSE(e.accept_byte(0x90));  // U+1F650 is outside
  ASSERT_TRUE(e.accept_byte(0x8F));   // U+1F64F
  EXPECT_TRUE(e.complete());
  EXPECT_TRUE(e.accept("\xF0\x9F\x98\x80"));  // 😀
  EXPECT_TRUE(e.complete());
  EXPECT_FALSE(e.accepts("\xF0\x9F\x9A\x80"));  // 🚀
  EXPECT_FALSE(e.accepts("a"));
}

TEST(GrammarTest, InvalidUtf8Refused) {
  auto g = parse("root ::= .*\n");
  GrammarMatcher m(g);
  EXPECT_FALSE(m.accepts("\x80"));              // stray continuation byte
  EXPECT_FALSE(m.accepts("\xC0\x80"));          // overlong lead
  EXPECT_FALSE(m.accepts("\xC1\xBF"));          // overlong lead
  EXPECT_FALSE(m.accepts("\xE0\x80\x80"));      // overlong 3-byte
  EXPECT_FALSE(m.accepts("\xF0\x80\x80\x80"));  // overlong 4-byte
  EXPECT_FALSE(m.accepts("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(m.accepts("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(m.accepts("\xF5"));
  EXPECT_FALSE(m.accepts("\xFF"));
  EXPECT_FALSE(
      m.accepts("\xC3"
                "A"));                         // lead without continuation
  EXPECT_TRUE(m.accepts("\xED\x9F\xBF"));      // U+D7FF, just below the surrogates
  EXPECT_TRUE(m.accepts("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  // A failed byte leaves the partial character as it was.
  ASSERT_TRUE(m.accept_byte(0xE2));
  EXPECT_FALSE(m.accept_byte('x'));
  EXPECT_TRUE(m.accept("\x82\xAC"));  // €
  EXPECT_TRUE(m.complete());
}

TEST(GrammarTest, RepetitionBounds) {
  auto g = parse("root ::= \"a\"{2,4}\n");
  EXPECT_FALSE(matches(g, "a"));
  EXPECT_TRUE(matches(g, "aa"));
  EXPECT_TRUE(matches(g, "aaa"));
  EXPECT_TRUE(matches(g, "aaaa"));
  EXPECT_FALSE(matches(g, "aaaaa"));
  GrammarMatcher m(g);
  ASSERT_TRUE(m.accept("aaaa"));
  EXPECT_FALSE(m.can_continue());

  auto exact = parse("root ::= (\"ab\"){3}\n");
  EXPECT_TRUE(matches(exact, "ababab"));
  EXPECT_FALSE(matches(exact, "abab"));
  EXPECT_FALSE(matches(exact, "abababab"));

  auto at_least = parse("root ::= [0-9]{2,}\n");
  EXPECT_FALSE(matches(at_least, "1"));
  EXPECT_TRUE(matches(at_least, "12"));
  EXPECT_TRUE(matches(at_least, std::string(500, '7')));

  // A multi-character literal repeats as a whole.
  auto lit = parse("root ::= \"ab\"{0,2} \"c\"? \"d\"+ \"e\"*\n");
  EXPECT_TRUE(matches(lit, "d"));
  EXPECT_TRUE(matches(lit, "ababcddeee"));
  EXPECT_FALSE(matches(lit, "abababd"));
  EXPECT_FALSE(matches(lit, "ad"));
  EXPECT_FALSE(matches(lit, "cc d"));
  EXPECT_FALSE(matches(lit, "abc"));

  auto big = parse("root ::= [a-z]{0,10000} \"!\"\n");
  EXPECT_TRUE(matches(big, std::string(10000, 'q') + "!"));
  EXPECT_FALSE(matches(big, std::string(10001, 'q') + "!"));

  auto zero = parse("root ::= \"x\" \"y\"{0} \"z\"{0,0}\n");
  EXPECT_TRUE(matches(zero, "x"));
  EXPECT_FALSE(matches(zero, "xy"));
}

TEST(GrammarTest, AlternativesGroupsAndEmpty) {
  auto g = parse(
      "root ::= greeting (\" \" (\"big\" | \"small\" (\"-\" [0-9])?))* \"!\"\n"
      "greeting ::= \"hi\" | \"hello\" | \n"
      "unused ::= \"u\" |  # an empty last alternative before the next rule\n"
      "  \n"
      "other ::= \"o\"\n");
  EXPECT_TRUE(matches(g, "hi!"));
  EXPECT_TRUE(matches(g, "hello big small!"));
  EXPECT_TRUE(matches(g, "hi small-3 big!"));
  EXPECT_TRUE(matches(g, "!"));  // empty alternative of greeting
  EXPECT_TRUE(matches(g, " big!"));
  EXPECT_FALSE(matches(g, "hey!"));
  EXPECT_FALSE(matches(g, "hi small-!"));
  EXPECT_FALSE(matches(g, "hi big"));
}

TEST(GrammarTest, CommentsAndLineBreaks) {
  auto g = parse(
      "# leading comment\n"
      "\n"
      "root ::=   # newline allowed after ::=\n"
      "  item ( \",\"   # and inside groups\n"
      "    item\n"
      "  )*\n"
      "item ::= \"a\" |   # and after |\n"
      "  \"b\"\n"
      "   # trailing comment\n");
  EXPECT_TRUE(matches(g, "a"));
  EXPECT_TRUE(matches(g, "a,b,a"));
  EXPECT_FALSE(matches(g, "a,"));
  EXPECT_FALSE(matches(g, "c"));

  auto crlf = parse("root ::= \"a\" |\r\n  \"b\" x\r\nx ::= \"c\" # note\r\n");
  EXPECT_TRUE(matches(crlf, "a"));
  EXPECT_TRUE(matches(crlf, "bc"));
  EXPECT_FALSE(matches(crlf, "b"));
}

TEST(GrammarTest, CustomRootName) {
  auto g = Grammar::parse("start ::= \"s\" other\nother ::= \"o\"\n", "start");
  EXPECT_TRUE(matches(g, "so"));
  EXPECT_NE(parse_error("start ::= \"s\"\n"), "");
}

TEST(GrammarTest, JsonGrammarAcceptsDocuments) {
  auto g = parse(kJsonGrammar);
  for (const char* doc : {
           R"({"a": 1, "b": [true, false, null], "c": {"d": "e\n\u00e9"}})",
           R"([])",
           R"({})",
           R"(  [1, -2.5e10, 0, 3.25E-2, "x"]  )",
           "{\n  \"name\": \"caf\xC3\xA9 \xF0\x9F\x98\x80\",\n  \"tags\": [\"a\", \"b\"],\n"
           "  \"nested\": {\"deep\": [[[{}]]]}\n}\n",
           R"("just a string")",
           R"(12345)",
       }) {
    EXPECT_TRUE(matches(g, doc)) << doc;
  }
}

TEST(GrammarTest, JsonGrammarRefusesBrokenDocuments) {
  auto g = parse(kJsonGrammar);
  for (const char* doc : {
           R"({"a": 1,})",          // trailing comma
           R"([1, 2,])",            // trailing comma
           R"({"a": 1)",            // unclosed brace
           R"({"a" 1})",            // missing colon
           R"({a: 1})",             // unquoted key
           R"([01])",               // leading zero
           R"("tab	inside")",  // raw control character
           R"("bad \q escape")",
           R"({"a": tru})",
           R"({} {})",
       }) {
    EXPECT_FALSE(matches(g, doc)) << doc;
  }
  // The unclosed document is a refused *completion*, not a refused prefix.
  GrammarMatcher m(g);
  EXPECT_TRUE(m.accept(R"({"a": 1)"));
  EXPECT_FALSE(m.complete());
  EXPECT_TRUE(m.can_continue());
  EXPECT_TRUE(m.accepts("}"));
  EXPECT_TRUE(m.accepts(", \"b\": 2}"));
  EXPECT_FALSE(m.accepts(R"(,})"));
}

TEST(GrammarTest, CompleteAndCanContinue) {
  auto g = parse("root ::= \"a\" \"b\"?\n");
  GrammarMatcher m(g);
  EXPECT_FALSE(m.complete());
  EXPECT_TRUE(m.can_continue());
  ASSERT_TRUE(m.accept("a"));
  EXPECT_TRUE(m.complete());
  EXPECT_TRUE(m.can_continue());
  ASSERT_TRUE(m.accept("b"));
  EXPECT_TRUE(m.complete());
  EXPECT_FALSE(m.can_continue());

  auto empty = parse("root ::= \n");
  GrammarMatcher e(empty);
  EXPECT_TRUE(e.complete());
  EXPECT_FALSE(e.can_continue());
  EXPECT_FALSE(e.accept_byte('a'));
}

TEST(GrammarTest, AcceptsDoesNotChangeStateAndAcceptIsAllOrNothing) {
  auto g = parse("root ::= \"abc\" | \"abd\"\n");
  GrammarMatcher m(g);
  EXPECT_TRUE(m.accepts("ab"));
  EXPECT_TRUE(m.accepts("abc"));
  EXPECT_FALSE(m.accepts("abx"));
  EXPECT_FALSE(m.complete());
  EXPECT_TRUE(m.accepts("abd"));  // still at the start
  EXPECT_FALSE(m.accept("abx"));  // refused as a whole: nothing consumed
  EXPECT_TRUE(m.accept("abd"));
  EXPECT_TRUE(m.complete());
}

TEST(GrammarTest, CopiesAreIndependent) {
  auto g = parse("root ::= [a-z]* \"!\"\n");
  GrammarMatcher a(g);
  ASSERT_TRUE(a.accept("ab"));
  GrammarMatcher b = a;
  ASSERT_TRUE(b.accept("c!"));
  EXPECT_TRUE(b.complete());
  EXPECT_FALSE(a.complete());
  EXPECT_TRUE(a.accept("!"));
  EXPECT_TRUE(a.complete());

  // A copy made mid-character carries the partial character.
  auto u = parse("root ::= [a-zé]* \"!\"\n");
  GrammarMatcher d(u);
  ASSERT_TRUE(d.accept_byte(0xC3));
  GrammarMatcher e = d;
  EXPECT_FALSE(e.complete());
  ASSERT_TRUE(e.accept_byte(0xA9));
  EXPECT_FALSE(d.accepts("!"));
  EXPECT_TRUE(d.accepts("\xA9!"));
  EXPECT_TRUE(e.accepts("!"));
}

TEST(GrammarTest, SameStateInsideAString) {
  auto g = parse(kJsonGrammar);
  GrammarMatcher a(g);
  ASSERT_TRUE(a.accept(R"({"k": "ab)"));
  GrammarMatcher b = a;
  ASSERT_TRUE(b.accept("cd ef"));
  EXPECT_TRUE(b.same_state(a));  // more string characters: the same set of parses
  ASSERT_TRUE(b.accept_byte(0xC3));
  EXPECT_FALSE(b.same_state(a));  // a partial character pending
  ASSERT_TRUE(b.accept_byte(0xA9));
  EXPECT_TRUE(b.same_state(a));
  ASSERT_TRUE(b.accept("\""));
  EXPECT_FALSE(b.same_state(a));  // closed the string
  EXPECT_FALSE(b.accepts("x"));
  EXPECT_TRUE(a.accepts("x"));
}

TEST(GrammarTest, AmbiguousGrammarsStayBounded) {
  // x* inside x*, and two identical alternatives: the duplicate stacks must merge.
  auto g = parse("root ::= (\"x\"* | \"x\")* \"y\"\n");
  GrammarMatcher m(g);
  ASSERT_TRUE(m.accept(std::string(5000, 'x')));
  EXPECT_TRUE(m.accept("y"));
  EXPECT_TRUE(m.complete());

  // 60 nullable rules in a row, each with two empty derivations: 2^60 paths, one stack.
  std::string text = "root ::=";
  for (int i = 0; i < 60; ++i) text += " e";
  text += " \"z\"\ne ::= \"\" | \"\"\n";
  EXPECT_TRUE(matches(parse(text), "z"));

  // An optional inside a star is a tail-only cycle: allowed and finite.
  EXPECT_TRUE(matches(parse("root ::= (\"a\"?)* \"b\"\n"), "aaab"));
}

TEST(GrammarTest, ExponentialStacksAreRefusedNotExhausting) {
  // After n x's every string of n y/z choices is still possible: 2^n distinct stacks.
  auto g = parse("root ::= a\na ::= \"x\" a \"y\" | \"x\" a \"z\" | \"\"\n");
  GrammarMatcher m(g);
  EXPECT_TRUE(m.accept("xxxxxxxx"));
  EXPECT_THROW(m.accept(std::string(20, 'x')), Error);
  EXPECT_TRUE(m.accept("yzyzyzyz"));
  EXPECT_TRUE(m.complete());
}

TEST(GrammarTest, RulesThatCannotFinishAreDropped) {
  // b never ends, so "a" must be refused: accepting it would lead to a dead end.
  auto g = parse("root ::= \"a\" b | \"c\"\nb ::= \"x\" b\n");
  GrammarMatcher m(g);
  EXPECT_FALSE(m.accepts("a"));
  EXPECT_TRUE(m.accepts("c"));
  auto empty_class = parse("root ::= \"a\" [^\\x00-\\U0010FFFF] | \"b\"\n");
  EXPECT_FALSE(GrammarMatcher(empty_class).accepts("a"));
  EXPECT_TRUE(matches(empty_class, "b"));
}

TEST(GrammarErrorTest, SyntaxErrorsHaveLineAndColumn) {
  EXPECT_EQ(parse_error("root ::= \"a\"\nitem ::= [a-\n"),
            "grammar: line 2, column 10: unterminated character class");
  EXPECT_EQ(parse_error("root ::= \"abc\n"),
            "grammar: line 1, column 10: unterminated string literal");
  EXPECT_EQ(parse_error("root \"a\"\n"),
            "grammar: line 1, column 6: expecting '::=' after rule name 'root', got '\"'");
  EXPECT_EQ(parse_error("root ::= (\"a\" | \"b\"\n\n"),
            "grammar: line 3, column 1: expecting ')' to close the group opened at line 1, "
            "column 10, got end of text");
  EXPECT_EQ(parse_error("root ::= * \"a\"\n"),
            "grammar: line 1, column 10: '*' must follow an element to repeat");
  EXPECT_EQ(parse_error("root ::= \"a\" )\n"),
            "grammar: line 1, column 14: unexpected ')' in the definition of rule 'root'");
  EXPECT_EQ(parse_error("root ::= \"\\q\"\n"), "grammar: line 1, column 11: unknown escape '\\q'");
  EXPECT_EQ(parse_error("root ::= \"\\x4\"\n"),
            "grammar: line 1, column 14: expecting 2 hex digits, got '\"'");
  EXPECT_EQ(parse_error("root ::= [z-a]\n"),
            "grammar: line 1, column 11: character range U+007A-U+0061 ends before it starts");
  EXPECT_EQ(parse_error("root ::= \"a\"{3,2}\n"),
            "grammar: line 1, column 13: repetition {3,2} has its maximum below its minimum");
  EXPECT_EQ(parse_error("root ::= \"a\"{3,x}\n"),
            "grammar: line 1, column 16: expecting '}' to close the repetition, got 'x'");
  EXPECT_EQ(parse_error("root ::= \"a\" b ::= \"c\"\n"),
            "grammar: line 1, column 14: unexpected '::=' after 'b' (a rule definition must "
            "start on a new line)");
  EXPECT_EQ(parse_error("root ::= \"a\"\nroot ::= \"b\"\n"),
            "grammar: line 2, column 1: rule 'root' is defined twice (first definition at line 1, "
            "column 1)");
  EXPECT_EQ(parse_error("root ::= \"\\uD800\"\n"),
            "grammar: line 1, column 11: surrogate U+D800 in a string literal can never match");
  EXPECT_EQ(parse_error("root ::= \"\\U00110000\"\n"),
            "grammar: line 1, column 11: code point 0x110000 is above U+10FFFF");
  EXPECT_EQ(parse_error("root ::= \"\xC3\"\n"),
            "grammar: line 1, column 11: invalid UTF-8 in grammar text");
  // Columns count code points: "é" is one column.
  EXPECT_EQ(parse_error("root ::= \"é\" ]\n"),
            "grammar: line 1, column 14: unexpected ']' in the definition of rule 'root'");
  // A top-level sequence ends at the newline: a leading | on the next line is an error.
  EXPECT_EQ(parse_error("root ::= \"a\"\n  | \"b\"\n"),
            "grammar: line 2, column 3: expecting a rule name, got '|'");
}

TEST(GrammarErrorTest, UndefinedRule) {
  EXPECT_EQ(parse_error("root ::= \"a\" item\n"),
            "grammar: line 1, column 14: undefined rule 'item'");
  EXPECT_EQ(parse_error("root ::= ok\nok ::= \"a\" (\"b\" | missing)*\n"),
            "grammar: line 2, column 19: undefined rule 'missing'");
}

TEST(GrammarErrorTest, MissingRoot) {
  EXPECT_EQ(parse_error("item ::= \"a\"\n"),
            "grammar: missing root rule 'root' (no rule of that name is defined)");
  EXPECT_EQ(parse_error(""), "grammar: missing root rule 'root' (no rule of that name is defined)");
  EXPECT_EQ(parse_error("root ::= \"a\"\n", "start"),
            "grammar: missing root rule 'start' (no rule of that name is defined)");
}

TEST(GrammarErrorTest, LeftRecursion) {
  EXPECT_EQ(parse_error("root ::= root \"a\" | \"b\"\n"),
            "grammar: line 1, column 1: left recursion: rule 'root' can reach itself without "
            "consuming any text (root -> root)");
  EXPECT_EQ(parse_error("root ::= \"x\" | a\na ::= b \"y\" | \"z\"\nb ::= c\nc ::= a \"w\"\n"),
            "grammar: line 2, column 1: left recursion: rule 'a' can reach itself without "
            "consuming any text (a -> b -> c -> a)");
  // Through a nullable prefix, and through a generated group rule.
  const std::string nullable =
      parse_error("root ::= \"x\"? opt root \"y\" | \"z\"\nopt ::= \"o\" |\n");
  EXPECT_NE(nullable.find("grammar: line 1, column 1: left recursion: rule 'root'"),
            std::string::npos)
      << nullable;
  const std::string group = parse_error("root ::= (\"a\" | root \"b\")\n");
  EXPECT_NE(group.find("grammar: line 1, column 1: left recursion: rule 'root'"), std::string::npos)
      << group;
  // Recursion after a terminal is fine.
  EXPECT_TRUE(matches(parse("root ::= \"(\" root \")\" | \"\"\n"), "((()))"));
}

TEST(GrammarErrorTest, HostileGrammarsAreBounded) {
  EXPECT_EQ(parse_error("root ::= \"a\"{0,10001}\n"),
            "grammar: line 1, column 13: repetition bound 10001 is larger than the limit 10000");
  EXPECT_EQ(
      parse_error("root ::= \"a\"{99999999999999999999}\n"),
      "grammar: line 1, column 13: repetition bound 4294967294 is larger than the limit 10000");
  const std::string deep =
      "root ::= " + std::string(100000, '(') + "\"a\"" + std::string(100000, ')') + "\n";
  EXPECT_EQ(parse_error(deep), "grammar: line 1, column 266: groups nested deeper than 256 levels");
  // Nested repetitions multiply only through rules, so the grammar stays small...
  EXPECT_TRUE(matches(parse("root ::= ((\"a\"{0,10}){0,10}){0,10} \"b\"\n"), "aaab"));
  // ...but three nested {0,100} have a million ways to skip ahead: refused, not exhausting.
  EXPECT_NE(
      parse_error("root ::= ((\"a\"{0,100}){0,100}){0,100} \"b\"\n").find("too many parse stacks"),
      std::string::npos);
  // ...while many large repetitions hit the symbol limit.
  std::string wide = "root ::=";
  for (int i = 0; i < 200; ++i) wide += " \"a\"{10000}";
  const std::string wide_error = parse_error(wide + "\n");
  EXPECT_NE(wide_error.find("grammar too large (more than 1048576 symbols"), std::string::npos)
      << wide_error;
  EXPECT_EQ(parse_error("root ::= []\n"),
            "grammar: line 1, column 1: root rule 'root' cannot match any text (each alternative "
            "needs an empty class or a rule that never ends)");
}

}  // namespace
}  // namespace exq::grammar
