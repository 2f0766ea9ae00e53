// Grammar-constrained generation: the token trie's masks against a per-token check, eos only
// at a whole sentence, characters split over tokens, and the generation loop under a grammar
// (a refused draw redrawn from the allowed tokens, the grammar's end stopping generation).
#include "runtime/token_constraint.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "runtime/generator.h"

namespace exq::runtime {
namespace {

constexpr int32_t kEos = 2;

// ids 0, 1, 2 special (2: eos); "é" is C3 A9, split over ids 14 and 15; 16 is empty text.
const std::vector<std::string>& texts() {
  static const std::vector<std::string> t = {"<unk>", "<s>",  "</s>", "a", "b", "ab", "{",    "}",    "\"",
                                             ":",     " ",    "1",    "23", "x", "\xC3", "\xA9", "",    "aba"};
  return t;
}

std::shared_ptr<const TokenVocab> vocab() {
  std::vector<uint8_t> special(texts().size(), 0);
  special[0] = special[1] = special[2] = 1;
  return std::make_shared<const TokenVocab>(texts(), special);
}

TokenConstraint constraint(std::string_view gbnf) {
  const std::vector<int32_t> eos{kEos};
  return TokenConstraint(grammar::Grammar::parse(gbnf), vocab(), eos);
}

std::vector<int32_t> allowed_ids(const TokenConstraint& c) {
  const std::vector<uint8_t> mask = c.allowed();
  std::vector<int32_t> ids;
  for (size_t i = 0; i < mask.size(); ++i) {
    EXPECT_EQ(mask[i] != 0, c.allows(static_cast<int32_t>(i))) << "id " << i;
    if (mask[i]) ids.push_back(static_cast<int32_t>(i));
  }
  return ids;
}

TEST(TokenVocab, TrieHoldsEveryTextTokenOnce) {
  const auto v = vocab();
  EXPECT_EQ(v->size(), 18);
  std::vector<int32_t> ids = v->ids();
  std::sort(ids.begin(), ids.end());
  // Specials (0-2) and the empty token (16) are not in the trie.
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17}));
  // "a" -> "ab" -> "aba" share their nodes: one node per distinct prefix byte.
  EXPECT_EQ(v->nodes().size(), 1u + 15u);
}

TEST(TokenConstraint, MasksFollowTheGrammar) {
  TokenConstraint c = constraint(R"(root ::= "{" "\"" [ab]+ "\"" ":" " "? [0-9]+ "}")");
  EXPECT_EQ(allowed_ids(c), std::vector<int32_t>{6});
  c.accept(6);
  EXPECT_EQ(allowed_ids(c), std::vector<int32_t>{8});
  c.accept(8);
  EXPECT_EQ(allowed_ids(c), (std::vector<int32_t>{3, 4, 5, 17}));
  c.accept(5);
  EXPECT_EQ(allowed_ids(c), (std::vector<int32_t>{3, 4, 5, 8, 17}));
  c.accept(8);
  c.accept(9);
  EXPECT_EQ(allowed_ids(c), (std::vector<int32_t>{10, 11, 12}));
  EXPECT_THROW(c.accept(7), Error);  // refused: the state stays
  c.accept(12);
  EXPECT_EQ(allowed_ids(c), (std::vector<int32_t>{7, 11, 12}));
  EXPECT_FALSE(c.finished());
  c.accept(7);
  EXPECT_TRUE(c.finished());
  EXPECT_EQ(allowed_ids(c), std::vector<int32_t>{kEos});
}

TEST(TokenConstraint, EosOnlyWhenTheSentenceIsWhole) {
  TokenConstraint c = constraint(R"(root ::= "a" "b"*)");
  EXPECT_FALSE(c.allows(kEos));
  EXPECT_FALSE(c.allows(1));  // another special token: never
  EXPECT_FALSE(c.allows(16));  // empty text: never
  c.accept(3);
  EXPECT_TRUE(c.allows(kEos));
  EXPECT_FALSE(c.finished());  // more b may follow
  EXPECT_EQ(allowed_ids(c), (std::vector<int32_t>{kEos, 4}));
}

TEST(TokenConstraint, NoTokenAllowedIsAClearError) {
  const TokenConstraint c = constraint(R"(root ::= "q")");  // no token spells "q"
  EXPECT_FALSE(c.allows(3));
  try {
    c.allowed();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no token of the vocabulary can continue"), std::string::npos) << e.what();
  }
}

TEST(TokenConstraint, CharactersSplitOverTokens) {
  TokenConstraint c = constraint(R"(root ::= "é" "a")");
  EXPECT_EQ(allowed_ids(c), std::vector<int32_t>{14});
  EXPECT_FALSE(c.allows(15));
  c.accept(14);
  EXPECT_EQ(allowed_ids(c), std::vector<int32_t>{15});
  c.accept(15);
  EXPECT_EQ(allowed_ids(c), std::vector<int32_t>{3});
}

// Scripted logits: script[i] (10.0) then preference order `second` (5.0) at step i, others 0.
class ScriptModel : public StepFunction {
 public:
  explicit ScriptModel(std::vector<int32_t> script) : script_(std::move(script)), logits_(texts().size()) {}
  std::span<const float> forward(std::span<const int32_t> tokens) override {
    position_ += static_cast<int64_t>(tokens.size());
    std::fill(logits_.begin(), logits_.end(), 0.0f);
    logits_[static_cast<size_t>(step_ < script_.size() ? script_[step_] : 13)] = 10.0f;
    ++step_;
    return logits_;
  }
  int64_t position() const override { return position_; }
  int64_t max_context() const override { return 1000; }
  void reset() override { position_ = 0, step_ = 0; }
  void truncate(int64_t n) override { position_ = n; }

 private:
  std::vector<int32_t> script_;
  std::vector<float> logits_;
  int64_t position_ = 0;
  size_t step_ = 0;
};

GenerateOptions grammar_options(std::string_view gbnf, int64_t max_new = 50) {
  GenerateOptions o;
  o.max_new_tokens = max_new;
  o.eos_token_ids = {kEos};
  o.sampler.temperature = 0.0f;
  o.grammar = grammar::Grammar::parse(gbnf);
  o.grammar_vocab = vocab();
  return o;
}

TEST(GrammarGeneration, RefusedDrawsAreRedrawnAndTheGrammarEndStops) {
  // The model wants "ab" then "x" forever; "x" is refused, so the masked argmax gives "}", the
  // one token allowed, which ends the grammar.
  ScriptModel model({5, 13, 13});
  const std::vector<int32_t> prompt{1};
  const GenerateResult r = generate(model, nullptr, prompt, grammar_options(R"(root ::= "ab" "}")"));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{5, 7}));
  EXPECT_EQ(r.stop, StopReason::Grammar);
  // Without the grammar the same model says "abxx...".
  GenerateOptions free = grammar_options("root ::= \"a\"", 3);
  free.grammar = nullptr;
  ScriptModel again({5, 13, 13});
  EXPECT_EQ(generate(again, nullptr, prompt, free).ids, (std::vector<int32_t>{5, 13, 13}));
}

TEST(GrammarGeneration, EosWaitsForAWholeSentence) {
  // The model wants eos at once; the grammar needs "a" first, then allows eos.
  ScriptModel model({kEos, kEos});
  const std::vector<int32_t> prompt{1};
  const GenerateResult r = generate(model, nullptr, prompt, grammar_options(R"(root ::= "a" "b"*)"));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, kEos}));
  EXPECT_EQ(r.stop, StopReason::Eos);
}

TEST(GrammarGeneration, MaxTokensCanCutTheSentence) {
  ScriptModel model({4, 4, 4});
  const std::vector<int32_t> prompt{1};
  const GenerateResult r = generate(model, nullptr, prompt, grammar_options(R"(root ::= "b"+ "}")", 3));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{4, 4, 4}));
  EXPECT_EQ(r.stop, StopReason::MaxTokens);
}

TEST(GrammarGeneration, SampledTextsAlwaysFollowTheGrammar) {
  const std::string gbnf = R"(root ::= "{" "\"" [ab]+ "\"" ":" " "? [0-9]+ "}")";
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    // Random logits each step (the model's preference ignores the grammar).
    class Noise : public StepFunction {
     public:
      explicit Noise(uint64_t seed) : rng_(seed), logits_(texts().size()) {}
      std::span<const float> forward(std::span<const int32_t> tokens) override {
        position_ += static_cast<int64_t>(tokens.size());
        std::normal_distribution<float> d(0.0f, 2.0f);
        for (float& v : logits_) v = d(rng_);
        return logits_;
      }
      int64_t position() const override { return position_; }
      int64_t max_context() const override { return 1000; }
      void reset() override { position_ = 0; }
      void truncate(int64_t n) override { position_ = n; }

     private:
      std::mt19937 rng_;
      std::vector<float> logits_;
      int64_t position_ = 0;
    } model(seed);
    GenerateOptions o = grammar_options(gbnf, 200);
    o.sampler.temperature = 1.0f;
    o.sampler.top_k = 0;
    o.sampler.top_p = 1.0f;
    o.sampler.min_p = 0.0f;
    o.sampler.seed = seed;
    const std::vector<int32_t> prompt{1};
    const GenerateResult r = generate(model, nullptr, prompt, o);
    std::string text;
    for (int32_t id : r.ids) {
      if (id != kEos) text += texts()[static_cast<size_t>(id)];
    }
    grammar::GrammarMatcher m(o.grammar);
    EXPECT_TRUE(m.accept(text)) << text;
    if (r.stop == StopReason::Grammar) {
      EXPECT_TRUE(m.complete()) << text;
    }
    EXPECT_NE(r.stop, StopReason::Eos) << text;  // eos is never allowed before the end here
  }
}

}  // namespace
}  // namespace exq::runtime
