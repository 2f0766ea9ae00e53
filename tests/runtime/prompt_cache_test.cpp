// PromptCache over a fake model whose next token is a hash of its whole context: a generation
// that keeps a prefix gives a fresh context's tokens only if the kept prefix is really the
// prompt's; the calls show which tokens ran.
#include "runtime/prompt_cache.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"

namespace exq::runtime {
namespace {

constexpr int kVocab = 50;

class HashModel : public StepFunction {
 public:
  explicit HashModel(int64_t max_context = 64) : max_context_(max_context), logits_(kVocab) {}
  std::span<const float> forward(std::span<const int32_t> tokens) override {
    calls.emplace_back(tokens.begin(), tokens.end());
    context.insert(context.end(), tokens.begin(), tokens.end());
    if (position() > max_context_) throw Error("fake: context overflow");
    uint32_t h = 2166136261u;
    for (int32_t t : context) h = (h ^ static_cast<uint32_t>(t)) * 16777619u;
    std::fill(logits_.begin(), logits_.end(), 0.0f);
    logits_[h % kVocab] = 5.0f;
    return logits_;
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
  int64_t max_context_;
  std::vector<float> logits_;
};

GenerateOptions greedy(int64_t max_new) {
  GenerateOptions o;
  o.max_new_tokens = max_new;
  o.sampler.temperature = 0.0f;
  return o;
}

PromptCache::Run runner(HashModel& m) {
  return [&m](std::span<const int32_t> p, const GenerateOptions& o) { return generate(m, nullptr, p, o); };
}

// What a fresh context generates.
std::vector<int32_t> fresh_ids(std::span<const int32_t> prompt, int64_t max_new) {
  HashModel m;
  return generate(m, nullptr, prompt, greedy(max_new)).ids;
}

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(PromptCache, CommonPrefix) {
  const std::vector<int32_t> a = {1, 2, 3, 4}, b = {1, 2, 9}, c = {1, 2, 3, 4, 5};
  EXPECT_EQ(common_prefix(a, b), 2);
  EXPECT_EQ(common_prefix(a, c), 4);
  EXPECT_EQ(common_prefix(c, a), 4);
  EXPECT_EQ(common_prefix(a, {}), 0);
}

TEST(PromptCache, NextTurnRunsOnlyWhatFollowsTheContext) {
  HashModel m;
  PromptCache cache;
  const std::vector<int32_t> p1 = {1, 2, 3, 4, 5};
  const GenerateResult r1 = cache.generate(m, p1, greedy(4), true, runner(m));
  ASSERT_EQ(r1.ids.size(), 4u);
  EXPECT_EQ(r1.cached_tokens, 0);
  // The last id was sampled, never run: the context holds the prompt and the first three.
  const std::vector<int32_t> held = cat(p1, {r1.ids[0], r1.ids[1], r1.ids[2]});
  EXPECT_EQ(m.context, held);
  EXPECT_EQ(std::vector<int32_t>(cache.tokens().begin(), cache.tokens().end()), held);

  const std::vector<int32_t> p2 = cat(cat(p1, r1.ids), {9, 10});
  m.calls.clear();
  const GenerateResult r2 = cache.generate(m, p2, greedy(6), true, runner(m));
  EXPECT_EQ(r2.cached_tokens, 8);
  EXPECT_EQ(r2.prompt_tokens, 11);
  ASSERT_FALSE(m.calls.empty());
  EXPECT_EQ(m.calls[0], (std::vector<int32_t>{r1.ids[3], 9, 10}));
  EXPECT_EQ(r2.ids, fresh_ids(p2, 6));
}

TEST(PromptCache, SamePromptRunsItsLastTokenAndADivergingOneTruncates) {
  HashModel m;
  PromptCache cache;
  const std::vector<int32_t> p = {4, 8, 15, 16, 23, 42};
  const GenerateResult r1 = cache.generate(m, p, greedy(3), true, runner(m));
  m.calls.clear();
  const GenerateResult r2 = cache.generate(m, p, greedy(3), true, runner(m));
  EXPECT_EQ(r2.cached_tokens, 5);
  EXPECT_EQ(m.calls[0], std::vector<int32_t>{42});
  EXPECT_EQ(r2.ids, r1.ids);

  const std::vector<int32_t> q = {4, 8, 7, 7};
  m.calls.clear();
  const GenerateResult r3 = cache.generate(m, q, greedy(5), true, runner(m));
  EXPECT_EQ(r3.cached_tokens, 2);
  EXPECT_EQ(m.calls[0], (std::vector<int32_t>{7, 7}));
  EXPECT_EQ(r3.ids, fresh_ids(q, 5));
}

TEST(PromptCache, WithoutReuseTheWholePromptRuns) {
  HashModel m;
  PromptCache cache;
  const std::vector<int32_t> p = {3, 1, 4, 1, 5};
  cache.generate(m, p, greedy(2), true, runner(m));
  m.calls.clear();
  const GenerateResult r = cache.generate(m, p, greedy(2), false, runner(m));
  EXPECT_EQ(r.cached_tokens, 0);
  EXPECT_EQ(m.calls[0], p);
}

TEST(PromptCache, NoTokensAskedKeepsOnlyThePrefix) {
  HashModel m;
  PromptCache cache;
  const std::vector<int32_t> p = {3, 1, 4, 1, 5};
  cache.generate(m, p, greedy(2), true, runner(m));
  const std::vector<int32_t> q = {3, 1, 4, 9};
  EXPECT_TRUE(cache.generate(m, q, greedy(0), true, runner(m)).ids.empty());
  EXPECT_EQ(m.context, (std::vector<int32_t>{3, 1, 4}));
  EXPECT_EQ(cache.tokens().size(), 3u);
  const GenerateResult r = cache.generate(m, q, greedy(3), true, runner(m));
  EXPECT_EQ(r.cached_tokens, 3);
  EXPECT_EQ(r.ids, fresh_ids(q, 3));
}

TEST(PromptCache, AFailedRunOrAContextUsedElsewhereKeepsNothing) {
  HashModel m(12);
  PromptCache cache;
  const std::vector<int32_t> p = {5, 6, 7, 8};
  cache.generate(m, p, greedy(3), true, runner(m));
  // Someone else ran the context: what the cache recorded is no longer what it holds.
  const int32_t extra = 11;
  m.forward(std::span<const int32_t>(&extra, 1));
  m.calls.clear();
  GenerateResult r = cache.generate(m, p, greedy(3), true, runner(m));
  EXPECT_EQ(r.cached_tokens, 0);
  EXPECT_EQ(m.calls[0], p);

  // A run that throws (here a prompt over the context) leaves an empty context and cache.
  const std::vector<int32_t> long_prompt(20, 1);
  EXPECT_THROW(cache.generate(m, long_prompt, greedy(3), true, runner(m)), Error);
  EXPECT_EQ(m.position(), 0);
  EXPECT_TRUE(cache.tokens().empty());
  m.calls.clear();
  r = cache.generate(m, p, greedy(3), true, runner(m));
  EXPECT_EQ(r.cached_tokens, 0);
  EXPECT_EQ(m.calls[0], p);
  EXPECT_EQ(r.ids, fresh_ids(p, 3));
}

TEST(PromptCache, GenerateChecksTheCachedCount) {
  HashModel m;
  const std::vector<int32_t> p = {1, 2, 3};
  GenerateOptions o = greedy(2);
  o.cached_prompt_tokens = 3;  // the last prompt token must run
  EXPECT_THROW(generate(m, nullptr, p, o), Error);
  o.cached_prompt_tokens = 2;  // but the context is empty
  EXPECT_THROW(generate(m, nullptr, p, o), Error);
  m.forward(std::span<const int32_t>(p.data(), 2));
  const GenerateResult r = generate(m, nullptr, p, o);
  EXPECT_EQ(r.cached_tokens, 2);
  EXPECT_EQ(r.ids, fresh_ids(p, 2));
}

}  // namespace
}  // namespace exq::runtime
