// Property checks of the grammar matcher: random sentences derived from a compiled grammar are
// accepted byte by byte, and on mutated JSON documents the JSON grammar agrees with
// nlohmann::json::accept (an independent JSON parser).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>

#include "core/utf8.h"
#include "grammar/grammar.h"
#include "grammar/grammar_internal.h"

namespace exq::grammar {
namespace {

constexpr const char* kJsonGrammar = R"gbnf(
root    ::= ws value
value   ::= ( object | array | string | number | "true" | "false" | "null" ) ws
object  ::= "{" ws ( member ( "," ws member )* )? "}"
member  ::= string ws ":" ws value
array   ::= "[" ws ( value ( "," ws value )* )? "]"
string  ::= "\"" ( [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number  ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws      ::= [ \t\n\r]*
)gbnf";


// A random sentence: random alternatives, random code points (often a range's ends). Null
// when the derivation grows past the limits (recursive grammars may not stop on their own).
std::optional<std::string> random_sentence(const CompiledGrammar& g, std::mt19937& rng) {
  auto pick_alt = [&](uint32_t rule) {
    const uint32_t count = g.alt_offsets[rule + 1] - g.alt_offsets[rule];
    return g.alt_starts[g.alt_offsets[rule] + rng() % count];
  };
  std::string out;
  std::vector<uint32_t> todo{pick_alt(g.root)};  // positions still to derive, next at back
  for (int steps = 0; !todo.empty(); ++steps) {
    if (steps > 20000 || out.size() > 4000) return std::nullopt;
    const uint32_t p = todo.back();
    todo.pop_back();
    const uint32_t e = g.elems[p];
    if (elem_is_end(e)) continue;
    todo.push_back(p + 1);
    if (elem_is_ref(e)) {
      todo.push_back(pick_alt(e & kElemPayload));
      continue;
    }
    const Terminal& t = g.terminals[e];
    const CharRange r = g.ranges[t.range_begin + rng() % t.range_count];
    const uint32_t mode = rng() % 4;
    utf8_append(out, mode == 0 ? r.lo : mode == 1 ? r.hi : r.lo + rng() % (r.hi - r.lo + 1));
  }
  return out;
}

TEST(GrammarPropertyTest, RandomSentencesAreAccepted) {
  const char* grammars[] = {
      kJsonGrammar,
      "root ::= greeting (\" \" (\"big\" | \"small\" (\"-\" [0-9])?))* \"!\"\n"
      "greeting ::= \"hi\" | \"hello\" | \n",
      "root ::= (\"x\"* | \"x\")* \"y\"\n",
      "root ::= (\"a\"?)* [b-d]{2,4} .\n",
      "root ::= [\\u0100-\\u07FF\\u0800-\\uFFFF\\U00010000-\\U0010FFFF]{1,8} [^a-z]\n",
      "root ::= \"(\" root \")\" | [0-9]{0,3}\n",
      "root ::= item (\",\" item)*\nitem ::= [a-z]+ \"=\" ([0-9]+ | \"'\" [^']* \"'\")\n",
  };
  std::mt19937 rng(1234);
  for (const char* text : grammars) {
    SCOPED_TRACE(text);
    auto grammar = Grammar::parse(text);
    int checked = 0;
    for (int attempt = 0; attempt < 2000 && checked < 200; ++attempt) {
      const std::optional<std::string> sentence = random_sentence(grammar->compiled(), rng);
      if (!sentence) continue;
      ++checked;
      GrammarMatcher m(grammar);
      for (size_t i = 0; i < sentence->size(); ++i) {
        // Between characters the text is either whole or can go on.
        if ((static_cast<uint8_t>((*sentence)[i]) & 0xC0) != 0x80) {
          ASSERT_TRUE(m.complete() || m.can_continue());
        }
        ASSERT_TRUE(m.accept_byte(static_cast<uint8_t>((*sentence)[i])))
            << "byte " << i << " of '" << *sentence << "'";
      }
      ASSERT_TRUE(m.complete()) << *sentence;
    }
    EXPECT_GE(checked, 50);
  }
}

// JSON syntax check by nlohmann; a number too large for a double is still valid syntax.
bool json_syntax_ok(const std::string& doc) {
  try {
    const nlohmann::json parsed = nlohmann::json::parse(doc);
    return !parsed.is_discarded();
  } catch (const nlohmann::json::out_of_range&) {
    return true;
  } catch (const nlohmann::json::parse_error&) {
    return false;
  }
}

TEST(GrammarPropertyTest, JsonGrammarAgreesWithNlohmannOnMutations) {
  auto grammar = Grammar::parse(kJsonGrammar);
  const std::string docs[] = {
      R"({"a": 1, "b": [true, false, null], "c": {"d": "e\n"}})",
      R"([1, -2.5e10, 0, 3.25E-2, "x", {"k": []}])",
      "{\"name\": \"caf\xC3\xA9\", \"n\": -0.5, \"deep\": [[{\"x\": [1]}]]}",
      R"("s\"t\\r")",
      R"(  -12.75e+3  )",
  };
  // Bytes that shift JSON structure; no hex digits, so a mutation never makes a \uXXXX
  // surrogate escape (nlohmann refuses unpaired surrogates, the grammar does not check them).
  const std::string alphabet = "{}[],:\" \n\t.-+eE019tfnl\\/xz\x01\xC3\xA9";
  std::mt19937 rng(99);
  int accepted = 0;
  int refused = 0;
  for (const std::string& base : docs) {
    ASSERT_TRUE(json_syntax_ok(base)) << base;
    for (int i = 0; i < 3000; ++i) {
      std::string doc = base;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < edits && !doc.empty(); ++k) {
        const size_t at = rng() % doc.size();
        const char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 3) {
          case 0:
            doc.erase(at, 1);
            break;
          case 1:
            doc.insert(doc.begin() + static_cast<std::ptrdiff_t>(at), c);
            break;
          default:
            doc[at] = c;
            break;
        }
      }
      const bool expected = json_syntax_ok(doc);
      GrammarMatcher m(grammar);
      const bool got = m.accept(doc) && m.complete();
      ASSERT_EQ(got, expected) << doc;
      ++(got ? accepted : refused);
    }
  }
  // Both outcomes must be well represented for the comparison to mean something.
  EXPECT_GT(accepted, 500);
  EXPECT_GT(refused, 5000);
}

}  // namespace
}  // namespace exq::grammar
