// Concurrent generations through the Batcher against a fake several-sequence model whose next
// token is a hash of the sequence's whole history: each thread gets exactly the tokens of a
// serial run, the model is never entered by two threads at once, and single tokens of different
// generations share passes.
#include "runtime/batch.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "core/error.h"

namespace exq::runtime {
namespace {

constexpr int kVocab = 64;

class FakeSequences : public SequenceModel {
 public:
  FakeSequences(int sequences, int64_t max_context, int max_batch, int sleep_us = 0)
      : history_(static_cast<size_t>(sequences)), max_context_(max_context), max_batch_(max_batch),
        sleep_us_(sleep_us) {}
  int sequences() const override { return static_cast<int>(history_.size()); }
  int max_batch() const override { return max_batch_; }
  int64_t max_context() const override { return max_context_; }
  int64_t vocab() const override { return kVocab; }
  void truncate(int seq, int64_t n) override {
    Guard g(*this);
    history_.at(static_cast<size_t>(seq)).resize(static_cast<size_t>(n));
  }
  std::span<const float> forward(int seq, std::span<const int32_t> tokens, bool all) override {
    Guard g(*this);
    auto& h = history_.at(static_cast<size_t>(seq));
    logits_.clear();
    for (int32_t t : tokens) {
      h.push_back(t);
      if (all) append_row(h);
    }
    if (!all) append_row(h);
    return logits_;
  }
  std::span<const float> decode(std::span<const int> seqs, std::span<const int32_t> tokens) override {
    Guard g(*this);
    EXPECT_LE(static_cast<int>(seqs.size()), max_batch_);
    max_rows = std::max(max_rows, static_cast<int>(seqs.size()));
    logits_.clear();
    for (size_t r = 0; r < seqs.size(); ++r) {
      auto& h = history_.at(static_cast<size_t>(seqs[r]));
      h.push_back(tokens[r]);
      append_row(h);
    }
    if (sleep_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    return logits_;
  }

  std::atomic<int> overlaps{0};  // calls that found another call inside
  int max_rows = 0;

 private:
  struct Guard {
    explicit Guard(FakeSequences& f) : f(f) {
      if (f.inside_.exchange(true)) ++f.overlaps;
    }
    ~Guard() { f.inside_ = false; }
    FakeSequences& f;
  };
  // The argmax is a hash of the whole history: any mixed-up row or position changes it.
  void append_row(const std::vector<int32_t>& h) {
    uint64_t x = 1469598103934665603ull;
    for (int32_t t : h) x = (x ^ static_cast<uint64_t>(t)) * 1099511628211ull;
    const size_t base = logits_.size();
    logits_.resize(base + kVocab, 0.0f);
    logits_[base + (x >> 7) % kVocab] = 5.0f;
  }

  std::vector<std::vector<int32_t>> history_;
  int64_t max_context_;
  int max_batch_, sleep_us_;
  std::vector<float> logits_;
  std::atomic<bool> inside_{false};
};

GenerateOptions greedy(int64_t n) {
  GenerateOptions o;
  o.max_new_tokens = n;
  o.sampler.temperature = 0.0f;
  return o;
}

std::vector<int32_t> prompt_of(int i) {
  std::vector<int32_t> p;
  for (int k = 0; k <= i % 4; ++k) p.push_back((i * 13 + k * 5) % kVocab);
  return p;
}

// The ids each prompt gets alone, one generation after another.
std::vector<std::vector<int32_t>> serial(int n, int64_t tokens) {
  FakeSequences model(1, 256, 1);
  Batcher b(model);
  const std::unique_ptr<StepFunction> step = b.step(0);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    step->reset();
    out.push_back(generate(*step, nullptr, prompt_of(i), greedy(tokens)).ids);
  }
  return out;
}

TEST(Batcher, ConcurrentGenerationsMatchSerialAndShareSteps) {
  constexpr int kThreads = 6;
  constexpr int64_t kTokens = 40;
  const auto want = serial(kThreads, kTokens);
  // Batches of 4: six generations need at least two passes a step.
  FakeSequences model(kThreads, 256, 4, /*sleep_us=*/200);
  Batcher b(model);
  std::vector<std::unique_ptr<StepFunction>> steps;
  for (int i = 0; i < kThreads; ++i) steps.push_back(b.step(i));
  std::vector<std::vector<int32_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      b.enter();
      got[static_cast<size_t>(i)] = generate(*steps[static_cast<size_t>(i)], nullptr, prompt_of(i), greedy(kTokens)).ids;
      b.leave();
    });
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)]) << i;
  EXPECT_EQ(model.overlaps.load(), 0);
  const Batcher::Stats st = b.stats();
  // Every generation's first token comes from its prompt's pass, the other 39 from decodes; a
  // one-token prompt is a decode row itself.
  int64_t rows = 0;
  for (int i = 0; i < kThreads; ++i) rows += kTokens - 1 + (prompt_of(i).size() == 1 ? 1 : 0);
  EXPECT_EQ(st.rows, rows);
  EXPECT_EQ(model.max_rows, 4);
  EXPECT_LT(st.passes, st.rows / 2) << "passes " << st.passes;
  std::printf("  %lld rows in %lld passes\n", static_cast<long long>(st.rows), static_cast<long long>(st.passes));
}

// A generation that stops early lets the others go on without waiting for it.
TEST(Batcher, UnevenLengthsAndContextLimits) {
  FakeSequences model(3, 12, 8);
  Batcher b(model, std::chrono::microseconds(500));
  std::vector<std::unique_ptr<StepFunction>> steps;
  for (int i = 0; i < 3; ++i) steps.push_back(b.step(i));
  const int64_t lengths[] = {2, 30, 9};  // the second is cut by its context of 12
  std::vector<GenerateResult> got(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      b.enter();
      got[static_cast<size_t>(i)] = generate(*steps[static_cast<size_t>(i)], nullptr, prompt_of(i), greedy(lengths[i]));
      b.leave();
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(got[0].ids.size(), 2u);
  EXPECT_EQ(got[1].stop, StopReason::ContextFull);
  // The last id is sampled from the full context's logits, not run.
  EXPECT_EQ(static_cast<int64_t>(got[1].ids.size()) + static_cast<int64_t>(prompt_of(1).size()), 13);
  EXPECT_EQ(got[2].ids.size(), 9u);
  EXPECT_EQ(model.overlaps.load(), 0);
  // A step past its context is refused before it reaches the model.
  const std::vector<int32_t> one = {1};
  EXPECT_THROW(steps[1]->forward(one), Error);
  EXPECT_EQ(steps[1]->position(), 12);
  steps[1]->truncate(3);
  EXPECT_EQ(steps[1]->position(), 3);
  EXPECT_NO_THROW(steps[1]->forward(one));
}

}  // namespace
}  // namespace exq::runtime
