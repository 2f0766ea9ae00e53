// Speculative decoding with a draft model (exllamav2's draft model, llama.cpp's --model-draft):
// a smaller model of the same tokenizer guesses the next tokens greedily, and the model checks
// them in one pass (generator.h), keeping those it would have drawn itself. The tokens are those
// of a generation without drafts; only the number of passes changes.
//
// The draft model keeps its own KV cache. Before guessing it catches up with the context it is
// given: it keeps the longest prefix it already holds and runs the rest, so rejected guesses,
// a prompt cache's new turn or a new request cost only the tokens that differ.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"

namespace exq::runtime {

class DraftModel {
 public:
  // model_vocab: the checking model's logits per token; a guess at or above it ends the draft
  // (a draft model may have a larger, padded vocabulary).
  explicit DraftModel(int64_t model_vocab) : model_vocab_(model_vocab) {}
  virtual ~DraftModel() = default;
  DraftModel(const DraftModel&) = delete;
  DraftModel& operator=(const DraftModel&) = delete;

  // Up to `limit` greedy guesses of what follows `context` (non-empty). Ends before the first
  // guess whose probability under the draft model is below p_min, and where the draft model's
  // context would be full.
  std::vector<int32_t> propose(std::span<const int32_t> context, int limit, float p_min);

  int64_t tokens_run() const { return tokens_run_; }  // by the draft model, all calls
  double seconds() const { return seconds_; }           // wall time in propose(), all calls

  // The greedy choice from logits: the first largest (NaN skipped) and its softmax probability.
  struct Guess {
    int32_t id = -1;
    float p = 0.0f;
  };
  static Guess greedy(std::span<const float> logits);

 protected:
  // Appends `tokens` to the draft model's context and returns its greedy next token.
  virtual Guess run(std::span<const int32_t> tokens) = 0;
  virtual void truncate(int64_t n) = 0;  // keeps the first n tokens of its context
  virtual int64_t max_context() const = 0;

 private:
  int64_t model_vocab_;
  std::vector<int32_t> held_;  // the draft model's context
  int64_t tokens_run_ = 0;
  double seconds_ = 0.0;
};

// A draft model behind a StepFunction (e.g. LlamaStep on the CPU), which must outlive it. Its
// context is emptied first.
class StepDraftModel final : public DraftModel {
 public:
  StepDraftModel(StepFunction& step, int64_t model_vocab);

 protected:
  Guess run(std::span<const int32_t> tokens) override { return greedy(step_.forward(tokens)); }
  void truncate(int64_t n) override { step_.truncate(n); }
  int64_t max_context() const override { return step_.max_context(); }

 private:
  StepFunction& step_;
};

// Throws exq::Error unless `draft` tokenizes as `model` does: the same number of ids, and each
// id the same piece and special flag (the first id that differs is named). `where` names the
// draft model in the message.
void check_draft_tokenizer(const tokenizer::Tokenizer& model, const tokenizer::Tokenizer& draft,
                           const std::string& where);

}  // namespace exq::runtime
