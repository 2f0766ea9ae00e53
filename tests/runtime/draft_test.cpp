// Speculative decoding by prompt lookup: the n-gram lookup itself, then generations with drafts
// against the same generations without, over fake models whose logits depend on the whole
// context (so a wrongly kept or dropped token changes every later one): greedy and sampled,
// with a repetition penalty, stops inside a draft, limits, and a prompt cache.
#include "runtime/draft.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
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

// Next-token logits from the whole context: a strong pull towards (a + b) % kVocab of the last
// two tokens (a Fibonacci walk, which repeats, so drafts find matches) plus a context-hash
// spread that makes sampling wander off the walk. forward_all is one recorded call.
class WalkModel : public StepFunction {
 public:
  explicit WalkModel(int64_t max_context = 256, float pull = 6.0f) : max_context_(max_context), pull_(pull) {}

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
      const int32_t want = n >= 2 ? (context[n - 1] + context[n - 2]) % kVocab : 1;
      row[want] += pull_;
    }
  }

  int64_t max_context_;
  float pull_;
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

}  // namespace
}  // namespace exq::runtime
