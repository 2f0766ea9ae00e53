// Token generation loop: prefill the prompt, then sample and decode one token at a time until
// an end-of-sequence id, the token limit or a full context. The model and the detokenizer are
// interfaces so the loop can be tested with a deterministic fake (see model_step.h for the
// real LlamaModel + Tokenizer adapters).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "grammar/grammar.h"
#include "runtime/draft.h"
#include "runtime/logprobs.h"
#include "runtime/sampler.h"
#include "runtime/token_constraint.h"

namespace exq::runtime {

// The model behind a KV cache: forward() appends tokens to the context and returns the logits
// of the last one ([vocab], valid until the next call).
class StepFunction {
 public:
  virtual ~StepFunction() = default;
  virtual std::span<const float> forward(std::span<const int32_t> tokens) = 0;
  virtual int64_t position() const = 0;     // tokens already in the context
  virtual int64_t max_context() const = 0;  // capacity of the context
  virtual void reset() = 0;
  virtual void truncate(int64_t n) = 0;  // keeps the first n <= position() tokens
  // forward() that returns the logits of every token: [T * vocab], row t after token t (valid
  // until the next call). The default runs the tokens one at a time.
  virtual std::span<const float> forward_all(std::span<const int32_t> tokens);

 private:
  std::vector<float> all_logits_;  // the default forward_all's rows
};

// Incremental detokenizer: push() returns the text that became final with this id.
class TextDecoder {
 public:
  virtual ~TextDecoder() = default;
  virtual std::string push(int32_t id) = 0;
  virtual std::string finish() = 0;  // whatever is still held back
  virtual void reset() = 0;
};

// Holds back an incomplete UTF-8 sequence at the end of a byte stream, so every piece handed
// on is whole characters. A sequence left incomplete at the end becomes U+FFFD.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string finish();

 private:
  std::string pending_;
};

// Length of the longest prefix of `s` that does not end inside a multi-byte character.
size_t utf8_complete_prefix(std::string_view s);

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  std::vector<int32_t> eos_token_ids;  // any of them stops generation (and is kept in ids)
  SamplerConfig sampler;
  // The prompt's first n tokens are already the model's context (position() == n, left by an
  // earlier generation: PromptCache); only the rest runs. At most prompt size - 1: the last
  // prompt token runs for its logits.
  int64_t cached_prompt_tokens = 0;
  // Speculative decoding by prompt lookup (draft.h): with draft.max_tokens > 0, a step whose
  // context ends in an n-gram seen earlier runs the sampled token and the guessed ones in one
  // pass and keeps the guesses the sampler confirms. Every token is still drawn from the model's
  // own distribution with one random number, in order, so the tokens are those a generation
  // without drafts gives (up to the rounding of a several-token pass).
  DraftOptions draft;
  // Tokens the answer is expected to repeat (OpenAI's predicted outputs: a file being edited);
  // with drafts on, they are looked up first.
  std::vector<int32_t> prediction;
  // >= 0: every sampled token's log-probability (logprobs.h) with this many alternatives, in
  // result.logprobs and, as each is drawn (before its text streams), through on_logprob.
  int logprobs = -1;
  std::function<void(const TokenLogprob&)> on_logprob;
  // With logprobs >= 0: the prompt's tokens 1.. scored as well (result.prompt_logprobs), which
  // runs the whole prompt (cached_prompt_tokens must be 0). With max_new_tokens 0 only that.
  bool prompt_logprobs = false;
  // Constrained generation: every token keeps the text a prefix of a sentence of `grammar`
  // (an eos id only once it is whole); generation ends when nothing may follow. A draw the
  // grammar refuses is drawn again from the allowed tokens (with a second random number), as
  // llama.cpp does. Needs grammar_vocab (the tokenizer's bytes of every id).
  std::shared_ptr<const grammar::Grammar> grammar;
  std::shared_ptr<const TokenVocab> grammar_vocab;
};

enum class StopReason { Eos, MaxTokens, ContextFull, Callback, Grammar };
// "eos", "max_tokens", "context_full", "callback", "grammar"
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int32_t> ids;  // generated ids, including an eos id that stopped generation
  std::string text;          // decoded text of the non-eos ids
  StopReason stop = StopReason::MaxTokens;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // of prompt_tokens, already in the context (not run again)
  int64_t generated_tokens = 0;
  int64_t decode_steps = 0;  // forward calls after the prefill (single tokens or a draft's check)
  int64_t draft_tokens = 0;           // guesses checked (speculative decoding)
  int64_t accepted_draft_tokens = 0;  // of them, the tokens the model produced (kept)
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  uint64_t seed = 0;
  std::vector<TokenLogprob> logprobs;         // one per ids entry (options.logprobs >= 0)
  std::vector<TokenLogprob> prompt_logprobs;  // entry i: prompt token i + 1 (options.prompt_logprobs)

  double prefill_tokens_per_s() const;  // prompt tokens that ran (cached ones excluded)
  double decode_tokens_per_s() const;  // tokens sampled after the first, per decode second
};

// Receives text as it becomes final (whole UTF-8 characters); returning false stops.
using TextCallback = std::function<bool(std::string_view)>;

// The part of `prompt` a generation runs: all of it but options.cached_prompt_tokens, checked
// against a context at `position` of `max_context` (the checks of generate(), which throws).
std::span<const int32_t> prompt_to_run(std::span<const int32_t> prompt, const GenerateOptions& options,
                                       int64_t position, int64_t max_context);

// What both generation loops (generate, generate_cuda) do with each sampled token: keep it in
// result.ids, stream its text, and tell whether generation ends with it.
class GenerationOutput {
 public:
  GenerationOutput(GenerateResult& result, TextDecoder* decoder, const GenerateOptions& options,
                   const TextCallback& on_text);
  // Records the log-probability of `id` drawn from raw logits `row`, when options.logprobs >= 0
  // (call before add(id)).
  void score(std::span<const float> row, int32_t id);
  void record(TokenLogprob lp);  // a log-probability computed elsewhere (the GPU)
  bool scoring() const { return options_.logprobs >= 0; }
  // The grammar's state (options.grammar), or null.
  const TokenConstraint* constraint() const { return constraint_ ? &*constraint_ : nullptr; }
  // Records a sampled id; true when generation stops with it (eos, callback, the grammar's end
  // or max tokens, result.stop set).
  bool add(int32_t id);
  // Guesses a pass may check after the next token, given the context's state: what
  // max_new_tokens and the context leave after the pass's sampled token.
  int draft_room(int64_t position, int64_t max_context) const;
  // The text still held back (not after a callback stop); sets result.generated_tokens.
  void finish();
  void count_draft(int64_t drafted, int64_t accepted);  // result.draft_tokens, accepted_draft_tokens

 private:
  void emit(std::string piece);

  GenerateResult& result_;
  TextDecoder* decoder_;
  const GenerateOptions& options_;
  const TextCallback& on_text_;
  Utf8Stream utf8_;
  bool stopped_by_callback_ = false;
  std::optional<TokenConstraint> constraint_;
};

// Throws exq::Error when a logit bias id or the grammar's vocabulary does not fit `vocab`.
void check_vocab_settings(const GenerateOptions& options, int64_t vocab);

// Sampler::sample under the grammar of `out` (if any): a draw the grammar refuses is drawn
// again from the allowed tokens. `generated_from`: where the generated tokens of `history` begin.
int32_t constrained_sample(Sampler& sampler, std::span<const float> logits, std::span<const int32_t> history,
                           size_t generated_from, const GenerationOutput& out);

// One speculative pass ran the sampled token and `draft` after it (1 + draft.size() tokens);
// sample_row(i) draws the token that follows row i of its logits. check_draft draws row after
// row while the token drawn equals the draft's, adding each to `out` and `history`, and counts
// the guesses in the result and the drafter.
struct DraftCheck {
  int32_t next = -1;     // the last token drawn, to run next (unless stopped)
  int64_t keep = 0;      // of the pass's tokens, how many the context keeps (truncate the rest)
  int64_t accepted = 0;  // draft tokens confirmed
  bool stopped = false;  // `out` ended generation
};
DraftCheck check_draft(std::span<const int32_t> draft, Drafter& drafter, GenerationOutput& out,
                       std::vector<int32_t>& history, const std::function<int32_t(size_t)>& sample_row);

// With options.prompt_logprobs: runs all of `rest` (the whole prompt) but its last token
// through `model` in chunks, scoring tokens 1.. into result.prompt_logprobs, and returns that
// last token, still to run. Otherwise returns `rest`.
std::span<const int32_t> score_prompt(StepFunction& model, std::span<const int32_t> rest,
                                      const GenerateOptions& options, GenerateResult& result);

// Runs one generation from an empty or continued context (or one holding the prompt's first
// options.cached_prompt_tokens). `decoder` may be null (no text). Throws exq::Error for an
// empty prompt, one that does not fit the context, or a cached count the context does not hold.
GenerateResult generate(StepFunction& model, TextDecoder* decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const TextCallback& on_text = {});

}  // namespace exq::runtime
