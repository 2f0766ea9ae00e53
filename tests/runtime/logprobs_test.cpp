// Log-probabilities: token_logprob against a direct computation, the generation loop's records
// (one per sampled id, from the logits it was drawn from, before its text streams), and on
// SmolLM2 against a full forward's log-softmax and against the perplexity's NLL.
#include "runtime/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/llama.h"
#include "runtime/generator.h"
#include "runtime/model_step.h"
#include "runtime/perplexity.h"
#include "test_support.h"

namespace exq::runtime {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(TokenLogprob, LogSoftmaxAndTheLikeliestFirst) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -INFINITY, 0.5f, 2.0f};
  double sum = 0.0;
  for (const float v : logits) sum += std::exp(static_cast<double>(v));
  const double lse = std::log(sum);
  const TokenLogprob r = token_logprob(logits, 4, 3);
  EXPECT_EQ(r.id, 4);
  EXPECT_NEAR(r.logprob, 0.5 - lse, 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].first, 1);  // a tie goes to the lower id
  EXPECT_EQ(r.top[1].first, 2);
  EXPECT_EQ(r.top[2].first, 5);
  EXPECT_NEAR(r.top[0].second, 3.0 - lse, 1e-6);
  EXPECT_NEAR(r.top[2].second, 2.0 - lse, 1e-6);
  EXPECT_EQ(token_logprob(logits, 3, 0).logprob, -INFINITY);
  EXPECT_TRUE(token_logprob(logits, 0, 0).top.empty());
  EXPECT_EQ(token_logprob(logits, 0, 6).top.back().first, 3);  // all of them, -inf last

  std::vector<float> bad = logits;
  bad[2] = NAN;
  EXPECT_EQ(error_of([&] { token_logprob(bad, 0, 1); }), "logprobs: logit of token 2 is nan");
  EXPECT_EQ(error_of([&] { token_logprob(logits, 6, 1); }), "logprobs: token id 6 is outside the vocabulary of 6");
  EXPECT_EQ(error_of([&] { token_logprob(logits, 0, 21); }), "logprobs: 21 alternatives asked, at most 20");
}

// Logits that differ at every step; the greedy pick moves around.
class WavyModel : public StepFunction {
 public:
  std::span<const float> forward(std::span<const int32_t> tokens) override {
    pos_ += static_cast<int64_t>(tokens.size());
    for (size_t i = 0; i < logits_.size(); ++i)
      logits_[i] = static_cast<float>(3.0 * std::sin(0.7 * static_cast<double>(pos_) * static_cast<double>(i + 1)));
    return logits_;
  }
  int64_t position() const override { return pos_; }
  int64_t max_context() const override { return 100; }
  void reset() override { pos_ = 0; }
  void truncate(int64_t n) override { pos_ = n; }

 private:
  int64_t pos_ = 0;
  std::vector<float> logits_ = std::vector<float>(12);
};

class Letters : public TextDecoder {
 public:
  std::string push(int32_t id) override { return std::string(1, static_cast<char>('a' + id)); }
  std::string finish() override { return {}; }
  void reset() override {}
};

TEST(GenerateLogprobs, OnePerSampledTokenFromItsLogitsBeforeItsText) {
  GenerateOptions o;
  o.max_new_tokens = 6;
  o.sampler.temperature = 0.8f;
  o.sampler.seed = 3;
  o.logprobs = 2;
  std::string text_at_each;  // the text streamed when each logprob arrived
  std::string streamed;
  o.on_logprob = [&](const TokenLogprob&) { text_at_each += std::to_string(streamed.size()); };
  WavyModel model;
  Letters letters;
  const std::vector<int32_t> prompt = {1, 2, 3};
  const GenerateResult r = generate(model, &letters, prompt, o, [&](std::string_view p) {
    streamed += p;
    return true;
  });
  ASSERT_EQ(r.logprobs.size(), r.ids.size());
  EXPECT_EQ(text_at_each, "012345");
  WavyModel replay;  // the logits each id was drawn from: after the prompt, then one token each
  for (size_t i = 0; i < r.ids.size(); ++i) {
    const std::span<const float> row =
        i == 0 ? replay.forward(prompt) : replay.forward(std::span<const int32_t>(&r.ids[i - 1], 1));
    const TokenLogprob want = token_logprob(row, r.ids[i], 2);
    EXPECT_EQ(r.logprobs[i].id, r.ids[i]);
    EXPECT_FLOAT_EQ(r.logprobs[i].logprob, want.logprob) << i;
    EXPECT_EQ(r.logprobs[i].top, want.top) << i;
  }
  EXPECT_TRUE(r.prompt_logprobs.empty());

  o.logprobs = -1;
  EXPECT_TRUE(generate(model, &letters, prompt, o).logprobs.empty());
  o.logprobs = 21;
  EXPECT_EQ(error_of([&] { generate(model, &letters, prompt, o); }), "at most 20 alternatives per token's logprobs, got 21");
  o.logprobs = 1;
  o.prompt_logprobs = true;
  o.cached_prompt_tokens = 2;
  model.reset();
  model.forward(std::span<const int32_t>(prompt).first(2));
  EXPECT_EQ(error_of([&] { generate(model, &letters, prompt, o); }),
            "scoring the prompt needs all of it to run, but 2 tokens are cached");
}

TEST(GenerateLogprobs, RealModelMatchesAFullForwardAndThePerplexity) {
  EXQ_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  auto model = model::LlamaModel::load(test::test_model());
  // A prompt the answer copies from, so drafts are kept below.
  const std::string text =
      "Say it again.\nSaid: the old lighthouse keeper counted the ships that passed every night.\n"
      "Again: the old lighthouse keeper";
  const std::vector<int32_t> prompt = tok.encode(text, true);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampler.temperature = 0.0f;
  o.logprobs = 5;
  o.prompt_logprobs = true;
  const GenerateResult r = generate_text(model, tok, prompt, o);
  ASSERT_EQ(r.ids.size(), 12u);
  ASSERT_EQ(r.logprobs.size(), r.ids.size());
  ASSERT_EQ(r.prompt_logprobs.size(), prompt.size() - 1);

  // One forward over prompt + answer gives every position's logits.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r.ids.begin(), r.ids.end());
  model::KvCache cache = model.make_cache(static_cast<int64_t>(all.size()));
  const Tensor logits = model.forward(all, cache, true);
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  const std::span<const float> rows = logits.span<const float>();
  double worst = 0.0;
  for (size_t t = 0; t + 1 < all.size(); ++t) {
    const TokenLogprob want = token_logprob(rows.subspan(t * vocab, vocab), all[t + 1], 5);
    const TokenLogprob& got = t + 1 < prompt.size() ? r.prompt_logprobs[t] : r.logprobs[t + 1 - prompt.size()];
    EXPECT_EQ(got.id, all[t + 1]);
    worst = std::max(worst, std::fabs(static_cast<double>(got.logprob - want.logprob)));
    ASSERT_EQ(got.top.size(), 5u);
    EXPECT_EQ(got.top[0].first, want.top[0].first) << t;
    if (t + 1 >= prompt.size()) {
      EXPECT_EQ(got.top[0].first, got.id);  // greedy: the likeliest
    }
  }
  EXPECT_LT(worst, 1e-4);

  // The prompt's logprobs sum to minus its perplexity NLL.
  const PerplexityResult p = perplexity(model, {prompt});
  double sum = 0.0;
  for (const TokenLogprob& lp : r.prompt_logprobs) sum += lp.logprob;
  EXPECT_NEAR(-sum / static_cast<double>(p.tokens), p.nll, 1e-5 * p.nll);

  // Drafts give the same tokens and the same logprobs, up to a pass's rounding.
  o.draft.max_tokens = 6;
  o.prompt_logprobs = false;
  const GenerateResult spec = generate_text(model, tok, prompt, o);
  ASSERT_EQ(spec.ids, r.ids);
  ASSERT_GT(spec.accepted_draft_tokens, 0);
  ASSERT_EQ(spec.logprobs.size(), r.logprobs.size());
  for (size_t i = 0; i < r.logprobs.size(); ++i) EXPECT_NEAR(spec.logprobs[i].logprob, r.logprobs[i].logprob, 1e-4) << i;

  // Only the prompt's logprobs, with no answer.
  o.max_new_tokens = 0;
  o.draft.max_tokens = 0;
  o.prompt_logprobs = true;
  const GenerateResult only = generate_text(model, tok, prompt, o);
  EXPECT_TRUE(only.ids.empty());
  ASSERT_EQ(only.prompt_logprobs.size(), prompt.size() - 1);
  EXPECT_FLOAT_EQ(only.prompt_logprobs.back().logprob, r.prompt_logprobs.back().logprob);
}

}  // namespace
}  // namespace exq::runtime
