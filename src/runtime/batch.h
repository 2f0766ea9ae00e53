// Concurrent generations on one model (exq serve --parallel): each runs the usual generation
// loop on its own KV cache ("sequence"), and the Batcher steps the single tokens of all of them
// in one pass of the model, as llama.cpp's server slots and exllamav2's dynamic generator do.
// Every weight is then read once for up to max_batch() tokens.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "model/llama.h"
#include "runtime/generator.h"
#include "runtime/model_step.h"
#include "runtime/prompt_cache.h"
#include "tokenizer/tokenizer.h"

namespace exq::runtime {

// A model with several KV caches whose single tokens can run in one pass. Not thread-safe: the
// Batcher calls it from one thread at a time.
class SequenceModel {
 public:
  virtual ~SequenceModel() = default;
  virtual int sequences() const = 0;
  virtual int max_batch() const = 0;  // rows of one decode() at most
  virtual int64_t max_context() const = 0;  // positions of each cache
  virtual int64_t vocab() const = 0;
  virtual void truncate(int seq, int64_t n) = 0;  // keeps the first n positions of seq's cache
  // Tokens of one sequence (a prompt, a draft check): logits [T, vocab] with `all`, else the
  // last token's [vocab]; valid until the next call.
  virtual std::span<const float> forward(int seq, std::span<const int32_t> tokens, bool all) = 0;
  // One token for each of distinct sequences: logits [rows, vocab], valid until the next call.
  virtual std::span<const float> decode(std::span<const int> seqs, std::span<const int32_t> tokens) = 0;
};

// LlamaModel on the CPU with `sequences` caches of max_context positions.
class LlamaSequences : public SequenceModel {
 public:
  LlamaSequences(model::LlamaModel& model, int sequences, int64_t max_context, int max_batch = 8);
  int sequences() const override { return static_cast<int>(caches_.size()); }
  int max_batch() const override { return max_batch_; }
  int64_t max_context() const override { return caches_.front().max_len(); }
  int64_t vocab() const override { return model_.config().vocab_size; }
  void truncate(int seq, int64_t n) override;
  std::span<const float> forward(int seq, std::span<const int32_t> tokens, bool all) override;
  std::span<const float> decode(std::span<const int> seqs, std::span<const int32_t> tokens) override;

 private:
  model::KvCache& cache(int seq);
  model::LlamaModel& model_;
  std::vector<model::KvCache> caches_;
  int max_batch_;
  Tensor logits_;
};

// Runs the model for concurrent generations, one per sequence: a single token waits until the
// other generations in flight have queued theirs (or until max_wait after the first of them
// queued), then one thread runs them all as one decode(); several tokens (a prompt) run alone.
class Batcher {
 public:
  explicit Batcher(SequenceModel& model, std::chrono::microseconds max_wait = std::chrono::microseconds(2000));
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // A context over sequence `seq` whose forward() goes through this batcher. Its position is
  // counted by the step itself: give each sequence to one step, and use it from one thread.
  std::unique_ptr<StepFunction> step(int seq);
  // A generation starts / ends (the batch waits for the ones in flight).
  void enter();
  void leave();
  SequenceModel& model() { return model_; }

  struct Stats {
    int64_t passes = 0;  // decode() calls
    int64_t rows = 0;    // tokens they ran
  };
  Stats stats() const;

 private:
  class Step;
  struct Request;
  std::span<const float> decode_one(int seq, int32_t token, std::vector<float>& out);
  template <typename F>
  void exclusive(F&& run);
  void lead(std::unique_lock<std::mutex>& lock);

  SequenceModel& model_;
  std::chrono::microseconds max_wait_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;   // a thread is running the model
  int active_ = 0;      // generations in flight
  int exclusive_ = 0;   // threads waiting for or running a several-token forward
  std::vector<Request*> pending_;
  Stats stats_;
};

// Generations on `sequences` contexts of one model at once (exq serve --parallel): each call
// takes a free sequence (the one whose cached context shares the longest prefix with the
// prompt, else the least recently used; it waits while all are busy), reuses its prompt cache
// as LlamaSession does, and runs runtime::generate through the Batcher. Thread-safe.
class SequencePool {
 public:
  SequencePool(SequenceModel& model, const tokenizer::Tokenizer& tok);
  GenerateResult generate(std::span<const int32_t> prompt, const GenerateOptions& options, bool reuse,
                          const TextCallback& on_text = {});
  Batcher::Stats stats() const { return batcher_.stats(); }
  int sequences() const { return static_cast<int>(slots_.size()); }

 private:
  struct Slot {
    std::unique_ptr<StepFunction> step;
    std::unique_ptr<TokenizerTextDecoder> decoder;
    PromptCache cache;
    bool busy = false;
    uint64_t last_used = 0;
  };
  int acquire(std::span<const int32_t> prompt, bool reuse);
  void release(int slot);

  Batcher batcher_;
  int64_t vocab_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  uint64_t clock_ = 0;
};

}  // namespace exq::runtime
