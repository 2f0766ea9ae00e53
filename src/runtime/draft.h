// Draft tokens for speculative decoding. By prompt lookup: when the last n tokens of the
// context also occur earlier in it (a document being summarized, code being edited, a list
// being repeated), or in a text the caller expects the answer to repeat (OpenAI's predicted
// outputs), the tokens that followed that occurrence are the guess for what comes next, as in
// llama.cpp's lookup decoding and exllamav2's n-gram drafts. Or from a draft model
// (draft_model.h): a smaller model of the same tokenizer guesses greedily. The model then
// checks all guesses in one pass of several tokens (generator.h): each guess it would have
// produced itself saves a single-token step.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace exq::runtime {

class DraftModel;

// Guesses per step where the caller asks for drafts without a number (a request's prediction):
// a pass of 8 tokens still runs the GPU's EXL2 GEMV (up to 8 rows).
constexpr int kDefaultDraftTokens = 7;
// The most guesses a pass may check (DraftOptions::validate); a pass is then 1 + 64 tokens.
constexpr int kMaxDraftTokens = 64;

struct DraftOptions {
  int max_tokens = 0;  // guesses per step; 0: no speculative decoding
  int ngram_max = 3;   // longest suffix of the context looked up
  int ngram_min = 2;   // shortest (a match of fewer tokens drafts nothing)
  // A draft model guesses instead of the context lookup (a prediction is still looked up
  // first). Not owned: it outlives every generation given these options, and serves one at a
  // time. Its guesses end before the first it gives less than p_min probability (llama.cpp's
  // --draft-p-min).
  DraftModel* model = nullptr;
  float p_min = 0.75f;

  bool enabled() const { return max_tokens > 0; }
  // Throws exq::Error naming the setting when a value is out of range.
  void validate() const;
};

// Up to options.max_tokens (and at most `limit`) tokens that followed the latest earlier
// occurrence of the longest suffix of `context` of ngram_max down to ngram_min tokens; empty
// when no such suffix occurs earlier.
std::vector<int32_t> lookup_draft(std::span<const int32_t> context, const DraftOptions& options, int limit);

// Drafts for one generation: from `prediction` first (the first occurrence after where the last
// one was found, so an answer that follows the prediction walks along it; else the first one),
// then from the draft model when options.model is set, else from the context (lookup_draft). How many it proposes adapts as Hugging Face's assisted
// generation does: 2 more after a draft kept whole, 1 fewer (at least 1) after one that was not,
// between 1 and max_tokens, so text that repeats nothing costs passes of 2 tokens, not 8.
class Drafter {
 public:
  explicit Drafter(const DraftOptions& options, std::span<const int32_t> prediction = {});
  bool enabled() const { return options_.enabled(); }
  std::vector<int32_t> propose(std::span<const int32_t> context, int limit);
  // The outcome of the last proposal: `accepted` of `drafted` tokens kept.
  void feedback(int64_t drafted, int64_t accepted);
  int length() const { return length_; }  // tokens the next proposal may have

 private:
  DraftOptions options_;
  int length_ = 0;
  std::vector<int32_t> prediction_;
  int64_t cursor_ = -1;  // where the last match in the prediction began
};

}  // namespace exq::runtime
