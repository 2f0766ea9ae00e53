// Speculative decoding by prompt lookup and by a draft model: the n-gram lookup itself, the
// draft model's guesses and how it follows the context, then generations with drafts against
// the same generations without, over fake models whose logits depend on the whole context (so a
// wrongly kept or dropped token changes every later one): greedy and sampled, with a repetition
// penalty, stops inside a draft, limits, and a prompt cache.
#include "runtime/draft.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../tokenizer/tiny_tokenizers.h"
#include "core/error.h"
#include "runtime/draft_model.h"
#include "runtime/generator.h"
#include "runtime/prompt_cache.h"

namespace exq::runtime {
namespace {

DraftOptions draft_opts(int max_tokens, int ngram_min = 2, int ngram_max = 3) {
  DraftOptions o;
  o.max_tokens = max_tokens;
  o.ngram_min = ngram_min;
  o.ngram_max = ngram_max;
  return o;
}

TEST(LookupDraft, TakesWhatFollowedTheLatestEarlierOccurrence) {
  const std::vector<int32_t> ctx{1, 2, 3, 9, 9, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3};
  // "1 2 3" occurs at 0 and 5: the latest (5) is followed by 4 5 6 7.
  EXPECT_EQ(lookup_draft(ctx, draft_opts(3), 10), (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(lookup_draft(ctx, draft_opts(8), 10), (std::vector<int32_t>{4, 5, 6, 7, 1, 2, 3}));
  EXPECT_EQ(lookup_draft(ctx, draft_opts(8), 2), (std::vector<int32_t>{4, 5}));  // the caller's limit
  EXPECT_TRUE(lookup_draft(ctx, draft_opts(8), 0).empty());
  EXPECT_TRUE(lookup_draft(ctx, draft_opts(0), 10).empty());
}

TEST(LookupDraft, PrefersTheLongestSuffixAndRespectsTheMinimum) {
  // Suffix "7 8": the trigram "6 7 8" occurs once earlier (followed by 1), the bigram "7 8"
  // later (followed by 2). The longest wins.
  const std::vector<int32_t> ctx{6, 7, 8, 1, 0, 7, 8, 2, 0, 6, 7, 8};
  EXPECT_EQ(lookup_draft(ctx, draft_opts(1, 2, 3), 10), (std::vector<int32_t>{1}));
  EXPECT_EQ(lookup_draft(ctx, draft_opts(1, 2, 2), 10), (std::vector<int32_t>{2}));
  // Only the last token recurs: no draft unless unigrams are allowed.
  const std::vector<int32_t> uni{5, 3, 4, 1, 2, 5};
  EXPECT_TRUE(lookup_draft(uni, draft_opts(4, 2, 3), 10).empty());
  EXPECT_EQ(lookup_draft(uni, draft_opts(4, 1, 3), 10), (std::vector<int32_t>{3, 4, 1, 2}));
  // Nothing to look up in one token; a run of one token drafts what followed it.
  EXPECT_TRUE(lookup_draft(std::vector<int32_t>{4}, draft_opts(4, 1, 3), 10).empty());
  EXPECT_EQ(lookup_draft(std::vector<int32_t>{4, 4, 4, 4}, draft_opts(4, 2, 3), 10), (std::vector<int32_t>{4}));
}

TEST(LookupDraft, ValidatesItsSettings) {
  EXPECT_NO_THROW(draft_opts(0).validate());
  EXPECT_NO_THROW(draft_opts(64, 1, 1).validate());
  EXPECT_THROW(draft_opts(-1).validate(), Error);
  EXPECT_THROW(draft_opts(65).validate(), Error);
  EXPECT_THROW(draft_opts(4, 0, 3).validate(), Error);
  EXPECT_THROW(draft_opts(4, 3, 2).validate(), Error);
}

TEST(Drafter, WalksAlongThePredictionThenFallsBackToTheContext) {
  // The prediction has "1 2" twice; an answer that follows it must be drafted from the second
  // once it has passed the first.
  const std::vector<int32_t> pred{1, 2, 30, 31, 1, 2, 40, 41, 42};
  Drafter d(draft_opts(3), pred);
  EXPECT_TRUE(d.enabled());
  EXPECT_EQ(d.propose(std::vector<int32_t>{7, 1, 2}, 10), (std::vector<int32_t>{30, 31, 1}));
  EXPECT_EQ(d.propose(std::vector<int32_t>{7, 1, 2, 30, 31, 1, 2}, 10), (std::vector<int32_t>{40, 41, 42}));
  // Past the prediction's end nothing follows "41 42" there: the context's own history drafts.
  EXPECT_EQ(d.propose(std::vector<int32_t>{41, 42, 5, 6, 41, 42}, 10), (std::vector<int32_t>{5, 6, 41}));
  // An earlier occurrence is found again when nothing follows the last one.
  EXPECT_EQ(d.propose(std::vector<int32_t>{9, 30, 31}, 2), (std::vector<int32_t>{1, 2}));
  EXPECT_TRUE(Drafter(draft_opts(0), pred).propose(std::vector<int32_t>{1, 2}, 10).empty());
  EXPECT_THROW(Drafter(draft_opts(4, 3, 2)), Error);
}

TEST(Drafter, ProposesFewerAfterMissesAndMoreAfterHits) {
  const std::vector<int32_t> pred{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  Drafter d(draft_opts(6), pred);
  EXPECT_EQ(d.length(), 6);
  EXPECT_EQ(d.propose(std::vector<int32_t>{1, 2}, 10).size(), 6u);
  d.feedback(6, 2);
  EXPECT_EQ(d.length(), 5);
  EXPECT_EQ(d.propose(std::vector<int32_t>{1, 2}, 10), (std::vector<int32_t>{3, 4, 5, 6, 7}));
  for (int i = 0; i < 8; ++i) d.feedback(3, 0);
  EXPECT_EQ(d.length(), 1);
  EXPECT_EQ(d.propose(std::vector<int32_t>{1, 2}, 10).size(), 1u);
  d.feedback(1, 1);
  EXPECT_EQ(d.length(), 3);
  d.feedback(3, 3);
  d.feedback(5, 5);
  EXPECT_EQ(d.length(), 6);  // at most max_tokens
  d.feedback(0, 0);          // nothing proposed: no change
  EXPECT_EQ(d.length(), 6);
}

constexpr int kVocab = 24;

// Next-token logits from the whole context: a strong pull towards (mul * a + b) % kVocab of the
// last two tokens (with mul 1 a Fibonacci walk, which repeats, so drafts find matches) plus a
// context-hash spread that makes sampling wander off the walk. forward_all is one recorded call.
class WalkModel : public StepFunction {
 public:
  explicit WalkModel(int64_t max_context = 256, float pull = 6.0f, int mul = 1)
      : max_context_(max_context), pull_(pull), mul_(mul) {}

  std::span<const float> forward(std::span<const int32_t> tokens) override {
    calls.emplace_back(tokens.begin(), tokens.end());
    run(tokens, false);
    return rows_;
  }
  std::span<const float> forward_all(std::span<const int32_t> tokens) override {
    calls.emplace_back(tokens.begin(), tokens.end());
    run(tokens, true);
    return rows_;
  }
  int64_t position() const override { return static_cast<int64_t>(context.size()); }
  int64_t max_context() const override { return max_context_; }
  void reset() override { context.clear(); }
  void truncate(int64_t n) override {
    ASSERT_LE(n, position());
    context.resize(static_cast<size_t>(n));
  }

  std::vector<int32_t> context;
  std::vector<std::vector<int32_t>> calls;

 private:
  void run(std::span<const int32_t> tokens, bool all) {
    rows_.clear();
    for (int32_t t : tokens) {
      context.push_back(t);
      if (position() > max_context_) throw Error("fake: context overflow");
      if (all || rows_.empty()) rows_.resize(rows_.size() + kVocab);
      float* row = rows_.data() + rows_.size() - kVocab;
      uint32_t h = 2166136261u;
      for (int32_t c : context) h = (h ^ static_cast<uint32_t>(c)) * 16777619u;
      for (int v = 0; v < kVocab; ++v) {
        h = h * 1664525u + 1013904223u;
        row[v] = static_cast<float>(h >> 8) * (2.0f / 16777216.0f);
      }
      const size_t n = context.size();
      const int32_t want = n >= 2 ? (context[n - 1] + mul_ * context[n - 2]) % kVocab : 1;
      row[want] += pull_;
    }
  }

  int64_t max_context_;
  float pull_;
  int mul_;
  std::vector<float> rows_;
};

GenerateOptions options(int64_t max_new, float temperature, float penalty = 1.0f, int draft = 0) {
  GenerateOptions o;
  o.max_new_tokens = max_new;
  o.sampler.temperature = temperature;
  o.sampler.top_k = 0;
  o.sampler.top_p = 1.0f;
  o.sampler.min_p = 0.0f;
  o.sampler.repetition_penalty = penalty;
  o.sampler.seed = 1234;
  o.draft = draft_opts(draft);
  return o;
}

const std::vector<int32_t> kPrompt{1, 1, 2, 3, 5, 8, 13, 21, 10, 7, 17};

TEST(SpeculativeGenerate, GivesTheTokensOfAGenerationWithoutDrafts) {
  for (const float temperature : {0.0f, 0.7f, 1.5f}) {
    for (const float penalty : {1.0f, 1.2f}) {
      for (const int draft : {1, 3, 8}) {
        SCOPED_TRACE(testing::Message() << "temperature " << temperature << " penalty " << penalty << " draft "
                                        << draft);
        WalkModel plain_model, spec_model;
        const GenerateResult plain = generate(plain_model, nullptr, kPrompt, options(80, temperature, penalty));
        const GenerateResult spec = generate(spec_model, nullptr, kPrompt, options(80, temperature, penalty, draft));
        EXPECT_EQ(spec.ids, plain.ids);
        EXPECT_EQ(spec.stop, plain.stop);
        EXPECT_EQ(plain.draft_tokens, 0);
        // The context holds the prompt and every generated token but the last, as without drafts.
        EXPECT_EQ(spec_model.context, plain_model.context);
        // Drafts were checked, some kept, and each kept one saved a step.
        EXPECT_GT(spec.draft_tokens, 0);
        EXPECT_GT(spec.accepted_draft_tokens, 0);
        EXPECT_LE(spec.accepted_draft_tokens, spec.draft_tokens);
        EXPECT_EQ(spec.decode_steps + spec.accepted_draft_tokens, plain.decode_steps);
        size_t widest = 0;
        for (const auto& c : spec_model.calls) widest = std::max(widest, c.size());
        EXPECT_LE(widest, std::max<size_t>(kPrompt.size(), static_cast<size_t>(draft) + 1));
      }
    }
  }
}

TEST(SpeculativeGenerate, GreedyWalkKeepsMostDrafts) {
  WalkModel m;
  const GenerateResult r = generate(m, nullptr, kPrompt, options(120, 0.0f, 1.0f, 6));
  ASSERT_EQ(r.ids.size(), 120u);
  // Once the walk repeats (period 24 for this vocabulary... of pairs), the lookup predicts it:
  // far fewer passes than tokens.
  EXPECT_GT(r.accepted_draft_tokens, 60);
  EXPECT_LT(r.decode_steps, 60);
}

TEST(SpeculativeGenerate, StopsInsideADraftAsWithout) {
  WalkModel probe;
  const GenerateResult free_run = generate(probe, nullptr, kPrompt, options(100, 0.0f, 1.0f, 6));
  ASSERT_GT(free_run.accepted_draft_tokens, 10);
  // An eos id that first appears late in the output: generation must end exactly there.
  const int32_t eos = free_run.ids[60];
  const auto first = std::find(free_run.ids.begin(), free_run.ids.end(), eos) - free_run.ids.begin();
  for (const int draft : {0, 6}) {
    WalkModel m;
    GenerateOptions o = options(100, 0.0f, 1.0f, draft);
    o.eos_token_ids = {eos};
    const GenerateResult r = generate(m, nullptr, kPrompt, o);
    EXPECT_EQ(r.stop, StopReason::Eos);
    ASSERT_EQ(static_cast<int64_t>(r.ids.size()), first + 1) << "draft " << draft;
    EXPECT_EQ(m.position(), static_cast<int64_t>(kPrompt.size() + r.ids.size()) - 1);
  }
  // Max tokens: exactly that many, though a draft could have run past them.
  for (const int64_t max_new : {1, 2, 7, 33}) {
    WalkModel m;
    const GenerateResult r = generate(m, nullptr, kPrompt, options(max_new, 0.0f, 1.0f, 8));
    EXPECT_EQ(static_cast<int64_t>(r.ids.size()), max_new);
    EXPECT_EQ(r.stop, StopReason::MaxTokens);
    EXPECT_EQ(r.ids, std::vector<int32_t>(free_run.ids.begin(), free_run.ids.begin() + max_new));
  }
  // A full context: drafts never run past it (the fake throws on overflow).
  WalkModel small(40);
  const GenerateResult r = generate(small, nullptr, kPrompt, options(100, 0.0f, 1.0f, 8));
  EXPECT_EQ(r.stop, StopReason::ContextFull);
  EXPECT_EQ(small.position(), 40);
  EXPECT_EQ(r.ids, std::vector<int32_t>(free_run.ids.begin(), free_run.ids.begin() + r.ids.size()));
}

TEST(SpeculativeGenerate, APredictionOfTheAnswerIsDraftedFrom) {
  WalkModel probe;
  const GenerateResult want = generate(probe, nullptr, kPrompt, options(40, 0.0f));
  // The answer itself as the prediction, with a wrong stretch: all but the wrong stretch's
  // guesses are kept, and the tokens are the same.
  std::vector<int32_t> pred = want.ids;
  for (size_t i = 20; i < 24; ++i) pred[i] = (pred[i] + 5) % kVocab;
  WalkModel m;
  GenerateOptions o = options(40, 0.0f, 1.0f, 8);
  o.draft.ngram_min = 1;
  o.prediction = pred;
  const GenerateResult r = generate(m, nullptr, kPrompt, o);
  EXPECT_EQ(r.ids, want.ids);
  EXPECT_GE(r.accepted_draft_tokens, 30);
  EXPECT_LE(r.decode_steps, 10);
}

TEST(SpeculativeGenerate, PromptCacheKeepsItsContextRight) {
  WalkModel m;
  PromptCache cache;
  const PromptCache::Run run = [&m](std::span<const int32_t> p, const GenerateOptions& o) {
    return generate(m, nullptr, p, o);
  };
  const GenerateOptions o = options(30, 0.8f, 1.1f, 5);
  const GenerateResult r1 = cache.generate(m, kPrompt, o, true, run);
  std::vector<int32_t> p2 = kPrompt;
  p2.insert(p2.end(), r1.ids.begin(), r1.ids.end());
  p2.insert(p2.end(), {4, 9, 13});
  const GenerateResult r2 = cache.generate(m, p2, o, true, run);
  EXPECT_EQ(r2.cached_tokens, static_cast<int64_t>(kPrompt.size() + r1.ids.size()) - 1);
  WalkModel fresh;
  EXPECT_EQ(r2.ids, generate(fresh, nullptr, p2, options(30, 0.8f, 1.1f)).ids);
}

// ---------------------------------------------------------------- draft model

// The walk WalkModel pulls towards, continued from the last two tokens of `context`.
std::vector<int32_t> walk(std::vector<int32_t> context, size_t n, int mul = 1) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < n; ++i) {
    const size_t k = context.size();
    out.push_back((context[k - 1] + mul * context[k - 2]) % kVocab);
    context.push_back(out.back());
  }
  return out;
}

TEST(DraftModel, GreedyIsTheFirstLargestAndItsProbability) {
  const std::vector<float> row{1.0f, 3.0f, NAN, 3.0f, -2.0f};
  const DraftModel::Guess g = DraftModel::greedy(row);
  EXPECT_EQ(g.id, 1);
  const double sum = std::exp(-2.0) + 1.0 + 1.0 + std::exp(-5.0);
  EXPECT_NEAR(g.p, 1.0 / sum, 1e-6);
  EXPECT_EQ(DraftModel::greedy(std::vector<float>{NAN, NAN}).id, -1);
  EXPECT_EQ(DraftModel::greedy(std::vector<float>{0.0f, INFINITY}).p, 0.0f);  // no usable guess
}

TEST(DraftModel, GuessesTheDraftModelsGreedyWalk) {
  WalkModel draft;
  StepDraftModel dm(draft, kVocab);
  const std::vector<int32_t> got = dm.propose(kPrompt, 5, 0.0f);
  EXPECT_EQ(got, walk(kPrompt, 5));
  // The draft model ran the prompt and the guesses but the last, in two calls of one and more.
  std::vector<int32_t> held = kPrompt;
  held.insert(held.end(), got.begin(), got.end() - 1);
  EXPECT_EQ(draft.context, held);
  ASSERT_EQ(draft.calls.size(), 5u);
  EXPECT_EQ(draft.calls[0], kPrompt);
  EXPECT_EQ(dm.tokens_run(), static_cast<int64_t>(held.size()));
  EXPECT_TRUE(dm.propose(kPrompt, 0, 0.0f).empty());
  EXPECT_TRUE(dm.propose({}, 4, 0.0f).empty());
}

TEST(DraftModel, RunsOnlyWhatItDoesNotHold) {
  WalkModel draft;
  StepDraftModel dm(draft, kVocab);
  const std::vector<int32_t> g1 = dm.propose(kPrompt, 4, 0.0f);
  // The model kept two guesses and drew another token: the draft model drops its third guess and
  // runs the new token only.
  std::vector<int32_t> ctx = kPrompt;
  ctx.insert(ctx.end(), {g1[0], g1[1], static_cast<int32_t>((g1[2] + 1) % kVocab)});
  draft.calls.clear();
  const std::vector<int32_t> g2 = dm.propose(ctx, 3, 0.0f);
  EXPECT_EQ(g2, walk(ctx, 3));
  ASSERT_FALSE(draft.calls.empty());
  EXPECT_EQ(draft.calls[0], std::vector<int32_t>{ctx.back()});
  // The same context again: its last token runs again (for its logits), nothing else.
  draft.calls.clear();
  EXPECT_EQ(dm.propose(ctx, 1, 0.0f), std::vector<int32_t>{g2[0]});
  ASSERT_EQ(draft.calls.size(), 1u);
  EXPECT_EQ(draft.calls[0], std::vector<int32_t>{ctx.back()});
  // Another text altogether: all of it runs.
  const std::vector<int32_t> other{3, 4, 5, 6};
  draft.calls.clear();
  EXPECT_EQ(dm.propose(other, 2, 0.0f), walk(other, 2));
  EXPECT_EQ(draft.calls[0], other);
  EXPECT_EQ(std::vector<int32_t>(draft.context.begin(), draft.context.begin() + 4), other);
}

TEST(DraftModel, StopsAtAnUnlikelyGuessAFullContextAndTheModelsVocabulary) {
  // A weak pull: the walk's token has well below half the probability.
  WalkModel weak(256, 1.0f);
  StepDraftModel dm(weak, kVocab);
  EXPECT_TRUE(dm.propose(kPrompt, 4, 0.5f).empty());
  EXPECT_EQ(dm.propose(kPrompt, 4, 0.0f).size(), 4u);
  // A strong pull passes a high bar.
  WalkModel strong(256, 12.0f);
  StepDraftModel ds(strong, kVocab);
  EXPECT_EQ(ds.propose(kPrompt, 4, 0.99f), walk(kPrompt, 4));

  // Room for the prompt and two more tokens: three guesses (the last is never run), no overflow
  // (the fake throws on one).
  const auto n = static_cast<int64_t>(kPrompt.size());
  WalkModel small(n + 2);
  StepDraftModel dsmall(small, kVocab);
  EXPECT_EQ(dsmall.propose(kPrompt, 8, 0.0f), walk(kPrompt, 3));
  WalkModel tiny(n - 1);
  StepDraftModel dtiny(tiny, kVocab);
  EXPECT_TRUE(dtiny.propose(kPrompt, 8, 0.0f).empty());

  // The checking model has fewer ids than the draft model: guesses end at the first beyond them.
  const std::vector<int32_t> w = walk(kPrompt, 8);
  const auto beyond = std::find_if(w.begin(), w.end(), [](int32_t t) { return t >= 12; }) - w.begin();
  ASSERT_LT(beyond, 8);
  WalkModel wide;
  StepDraftModel dnarrow(wide, 12);
  EXPECT_EQ(dnarrow.propose(kPrompt, 8, 0.0f), std::vector<int32_t>(w.begin(), w.begin() + beyond));
}

TEST(DraftModel, ValidatesTheMinimumProbability) {
  DraftOptions o = draft_opts(4);
  o.p_min = 1.5f;
  EXPECT_THROW(o.validate(), Error);
  o.p_min = NAN;
  EXPECT_THROW(o.validate(), Error);
  o.p_min = 0.0f;
  EXPECT_NO_THROW(o.validate());
}

// Generations with a draft model give the tokens of generations without, whether its guesses
// are mostly right (the same walk) or mostly wrong (another walk); each kept guess saves a step.
TEST(SpeculativeGenerate, ADraftModelGivesTheTokensOfAGenerationWithout) {
  for (const int mul : {1, 3}) {
    for (const float temperature : {0.0f, 0.7f, 1.5f}) {
      SCOPED_TRACE(testing::Message() << "draft walk " << mul << " temperature " << temperature);
      WalkModel plain_model, spec_model, draft(256, 6.0f, mul);
      StepDraftModel dm(draft, kVocab);
      const GenerateResult plain = generate(plain_model, nullptr, kPrompt, options(80, temperature, 1.1f));
      GenerateOptions o = options(80, temperature, 1.1f, 6);
      o.draft.model = &dm;
      o.draft.p_min = 0.0f;
      const GenerateResult spec = generate(spec_model, nullptr, kPrompt, o);
      EXPECT_EQ(spec.ids, plain.ids);
      EXPECT_EQ(spec_model.context, plain_model.context);
      EXPECT_GT(spec.draft_tokens, 0);
      EXPECT_EQ(spec.decode_steps + spec.accepted_draft_tokens, plain.decode_steps);
      if (mul == 1 && temperature == 0.0f) {
        EXPECT_EQ(spec.accepted_draft_tokens, spec.draft_tokens);
      }
      if (mul == 3 && temperature == 0.0f) {
        EXPECT_LT(spec.accepted_draft_tokens * 4, spec.draft_tokens);
      }
      // The draft model never held more than the context and its guesses.
      EXPECT_LE(draft.position(), spec_model.position() + 6);
    }
  }
}

TEST(SpeculativeGenerate, ADraftModelFollowsAPromptCacheAndAPrediction) {
  WalkModel m, draft;
  StepDraftModel dm(draft, kVocab);
  PromptCache cache;
  const PromptCache::Run run = [&m](std::span<const int32_t> p, const GenerateOptions& o) {
    return generate(m, nullptr, p, o);
  };
  GenerateOptions o = options(30, 0.8f, 1.1f, 5);
  o.draft.model = &dm;
  const GenerateResult r1 = cache.generate(m, kPrompt, o, true, run);
  std::vector<int32_t> p2 = kPrompt;
  p2.insert(p2.end(), r1.ids.begin(), r1.ids.end());
  p2.insert(p2.end(), {4, 9, 13});
  const int64_t ran = dm.tokens_run();
  const GenerateResult r2 = cache.generate(m, p2, o, true, run);
  WalkModel fresh;
  EXPECT_EQ(r2.ids, generate(fresh, nullptr, p2, options(30, 0.8f, 1.1f)).ids);
  // The second turn's draft model ran its new tokens, not the whole conversation again.
  EXPECT_LT(dm.tokens_run() - ran, static_cast<int64_t>(p2.size()));

  // A prediction is looked up before the draft model is asked.
  WalkModel probe;
  const GenerateResult want = generate(probe, nullptr, kPrompt, options(40, 0.0f));
  WalkModel m2, wrong(256, 6.0f, 3);
  StepDraftModel dwrong(wrong, kVocab);
  GenerateOptions op = options(40, 0.0f, 1.0f, 8);
  op.draft.ngram_min = 1;
  op.draft.model = &dwrong;
  op.prediction = want.ids;
  const GenerateResult r = generate(m2, nullptr, kPrompt, op);
  EXPECT_EQ(r.ids, want.ids);
  EXPECT_GE(r.accepted_draft_tokens, 30);
}

TEST(DraftModel, RefusesATokenizerThatIsNotTheModels) {
  using tokenizer::Tokenizer;
  const auto base = tokenizer::test_json::llama_style();
  const Tokenizer a = Tokenizer::from_json_string(base.dump(), "a");
  EXPECT_NO_THROW(check_draft_tokenizer(a, Tokenizer::from_json_string(base.dump(), "b"), "draft"));

  auto renamed = base;
  auto& vocab = renamed["model"]["vocab"];
  vocab.erase("xyz");
  vocab["xzy"] = base["model"]["vocab"]["xyz"];
  try {
    check_draft_tokenizer(a, Tokenizer::from_json_string(renamed.dump(), "b"), "/models/draft");
    FAIL() << "a renamed piece passed";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(fmt::format("at id {} ('xzy' against 'xyz')", base["model"]["vocab"]["xyz"].get<int>())),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("/models/draft"), std::string::npos) << msg;
  }
  auto bigger = base;
  bigger["model"]["vocab"]["zz"] = static_cast<int>(bigger["model"]["vocab"].size());
  EXPECT_THROW(check_draft_tokenizer(a, Tokenizer::from_json_string(bigger.dump(), "b"), "draft"), Error);
}

}  // namespace
}  // namespace exq::runtime
