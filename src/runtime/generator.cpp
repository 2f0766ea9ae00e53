#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/thread_pool.h"

namespace exq::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Expected length of a sequence from its lead byte; 0 for a continuation or invalid byte.
int utf8_sequence_length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 0;
}

}  // namespace

size_t utf8_complete_prefix(std::string_view s) {
  // Look back at most 3 bytes for the lead byte of the last sequence.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const int len = utf8_sequence_length(c);
    if (len > static_cast<int>(back)) return n - back;  // incomplete: hold it
    return n;
  }
  return n;  // only stray continuation bytes: nothing to wait for
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  const size_t keep = utf8_complete_prefix(pending_);
  std::string out = pending_.substr(0, keep);
  pending_.erase(0, keep);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out = pending_.empty() ? std::string() : std::string("\xEF\xBF\xBD");  // U+FFFD
  pending_.clear();
  return out;
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::ContextFull: return "context_full";
    case StopReason::Callback: return "callback";
    case StopReason::Grammar: return "grammar";
  }
  return "unknown";
}

double GenerateResult::prefill_tokens_per_s() const {
  return prefill_seconds > 0.0 ? static_cast<double>(prompt_tokens - cached_tokens) / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_s() const {
  return decode_seconds > 0.0 && generated_tokens > 1 ? static_cast<double>(generated_tokens - 1) / decode_seconds
                                                      : 0.0;
}

std::span<const float> StepFunction::forward_all(std::span<const int32_t> tokens) {
  all_logits_.clear();
  for (const int32_t& t : tokens) {
    const std::span<const float> row = forward(std::span<const int32_t>(&t, 1));
    all_logits_.insert(all_logits_.end(), row.begin(), row.end());
  }
  return all_logits_;
}

GenerationOutput::GenerationOutput(GenerateResult& result, TextDecoder* decoder, const GenerateOptions& options,
                                   const TextCallback& on_text)
    : result_(result), decoder_(decoder), options_(options), on_text_(on_text) {
  if (decoder_) decoder_->reset();
  if (options.grammar) constraint_.emplace(options.grammar, options.grammar_vocab, options.eos_token_ids);
}

void GenerationOutput::emit(std::string piece) {
  piece = utf8_.push(piece);
  if (piece.empty()) return;
  result_.text += piece;
  if (on_text_ && !on_text_(piece)) stopped_by_callback_ = true;
}

bool GenerationOutput::add(int32_t id) {
  if (constraint_) constraint_->accept(id);
  result_.ids.push_back(id);
  const auto& eos = options_.eos_token_ids;
  if (std::find(eos.begin(), eos.end(), id) != eos.end()) {
    result_.stop = StopReason::Eos;
    return true;
  }
  if (decoder_) emit(decoder_->push(id));
  if (stopped_by_callback_) {
    result_.stop = StopReason::Callback;
    return true;
  }
  if (constraint_ && constraint_->finished()) {
    result_.stop = StopReason::Grammar;
    return true;
  }
  if (static_cast<int64_t>(result_.ids.size()) >= options_.max_new_tokens) {
    result_.stop = StopReason::MaxTokens;
    return true;
  }
  return false;
}

int GenerationOutput::draft_room(int64_t position, int64_t max_context) const {
  // A pass runs the next token and k guesses, and may give k + 1 new tokens.
  const int64_t tokens_left = options_.max_new_tokens - static_cast<int64_t>(result_.ids.size()) - 1;
  const int64_t context_left = max_context - position - 1;
  return static_cast<int>(std::clamp<int64_t>(std::min(tokens_left, context_left), 0, options_.draft.max_tokens));
}

void GenerationOutput::finish() {
  if (!stopped_by_callback_) {
    if (decoder_) emit(decoder_->finish());
    if (!stopped_by_callback_) {
      const std::string tail = utf8_.finish();
      if (!tail.empty()) {
        result_.text += tail;
        if (on_text_) on_text_(tail);
      }
    }
  }
  result_.generated_tokens = static_cast<int64_t>(result_.ids.size());
}

void GenerationOutput::score(std::span<const float> row, int32_t id) {
  if (scoring()) record(token_logprob(row, id, options_.logprobs));
}

void GenerationOutput::record(TokenLogprob lp) {
  result_.logprobs.push_back(std::move(lp));
  if (options_.on_logprob) options_.on_logprob(result_.logprobs.back());
}

void GenerationOutput::count_draft(int64_t drafted, int64_t accepted) {
  result_.draft_tokens += drafted;
  result_.accepted_draft_tokens += accepted;
}

void check_vocab_settings(const GenerateOptions& options, int64_t vocab) {
  options.sampler.validate(vocab);
  if (!options.grammar) return;
  EXQ_CHECK(options.grammar_vocab != nullptr, "a grammar needs the token vocabulary");
  EXQ_CHECK(options.grammar_vocab->size() == vocab, "grammar: the token vocabulary has {} ids, the model {}",
            options.grammar_vocab->size(), vocab);
}

int32_t constrained_sample(Sampler& sampler, std::span<const float> logits, std::span<const int32_t> history,
                           size_t generated_from, const GenerationOutput& out) {
  const int32_t t = sampler.sample(logits, history, generated_from);
  const TokenConstraint* c = out.constraint();
  if (!c || c->allows(t)) return t;
  return sampler.sample(logits, history, generated_from, c->allowed());
}

DraftCheck check_draft(std::span<const int32_t> draft, Drafter& drafter, GenerationOutput& out,
                       std::vector<int32_t>& history, const std::function<int32_t(size_t)>& sample_row) {
  DraftCheck c;
  for (size_t i = 0;; ++i) {
    const int32_t t = sample_row(i);
    // A mismatch or the last row: the context keeps the rows that led here. A stop: all but the
    // last token generated stay, as after a single step.
    const bool kept = i < draft.size() && t == draft[i];
    if (kept) {
      ++c.accepted;
      history.push_back(t);
      c.stopped = out.add(t);
    }
    if (!kept || c.stopped) {
      c.next = kept ? -1 : t;
      c.keep = static_cast<int64_t>(i) + 1;
      out.count_draft(static_cast<int64_t>(draft.size()), c.accepted);
      drafter.feedback(static_cast<int64_t>(draft.size()), c.accepted);
      return c;
    }
  }
}

std::span<const int32_t> prompt_to_run(std::span<const int32_t> prompt, const GenerateOptions& options,
                                       int64_t position, int64_t max_context) {
  EXQ_CHECK(!prompt.empty(), "the prompt is empty: nothing to generate from");
  EXQ_CHECK(options.max_new_tokens >= 0, "max tokens must be >= 0, got {}", options.max_new_tokens);
  const int64_t cached = options.cached_prompt_tokens;
  EXQ_CHECK(cached >= 0 && cached < static_cast<int64_t>(prompt.size()),
            "{} cached prompt tokens for a prompt of {}: at most the prompt's size - 1", cached,
            prompt.size());
  EXQ_CHECK(cached == 0 || !options.prompt_logprobs,
            "scoring the prompt needs all of it to run, but {} tokens are cached", cached);
  EXQ_CHECK(options.logprobs <= kMaxTopLogprobs, "at most {} alternatives per token's logprobs, got {}",
            kMaxTopLogprobs, options.logprobs);
  EXQ_CHECK(cached == 0 || position == cached,
            "{} cached prompt tokens, but the model's context holds {} tokens", cached, position);
  const std::span<const int32_t> rest = prompt.subspan(static_cast<size_t>(cached));
  const int64_t room = max_context - position;
  EXQ_CHECK(static_cast<int64_t>(rest.size()) <= room,
            "the prompt has {} tokens to run but the context has room for {} (context length {})",
            rest.size(), room, max_context);
  return rest;
}

std::span<const int32_t> score_prompt(StepFunction& model, std::span<const int32_t> rest,
                                      const GenerateOptions& options, GenerateResult& result) {
  if (!options.prompt_logprobs || options.logprobs < 0) return rest;
  // Chunks bound the host logits ([chunk, vocab] floats).
  constexpr size_t kChunk = 64;
  const size_t scored = rest.size() - 1;
  for (size_t b = 0; b < scored; b += kChunk) {
    const size_t n = std::min(kChunk, scored - b);
    const std::span<const float> rows = model.forward_all(rest.subspan(b, n));
    const size_t vocab = rows.size() / n;
    const size_t at = result.prompt_logprobs.size();
    result.prompt_logprobs.resize(at + n);
    parallel_for(static_cast<int64_t>(n), [&](int64_t lo, int64_t hi) {
      for (auto i = static_cast<size_t>(lo); i < static_cast<size_t>(hi); ++i)
        result.prompt_logprobs[at + i] = token_logprob(rows.subspan(i * vocab, vocab), rest[b + i + 1], options.logprobs);
    });
  }
  return rest.last(1);
}

GenerateResult generate(StepFunction& model, TextDecoder* decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const TextCallback& on_text) {
  std::span<const int32_t> rest = prompt_to_run(prompt, options, model.position(), model.max_context());
  Drafter drafter(options.draft, options.prediction);

  GenerateResult result;
  Sampler sampler(options.sampler);
  result.seed = sampler.seed();
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.cached_tokens = options.cached_prompt_tokens;
  auto t0 = Clock::now();
  rest = score_prompt(model, rest, options, result);
  if (options.max_new_tokens == 0) {
    result.prefill_seconds = seconds_since(t0);
    return result;
  }
  GenerationOutput out(result, decoder, options, on_text);
  std::vector<int32_t> history(prompt.begin(), prompt.end());  // the repetition penalty's and the drafts'

  // Draws under the grammar; presence / frequency penalties count the tokens after the prompt.
  auto draw = [&](std::span<const float> row) {
    const int32_t t = constrained_sample(sampler, row, history, prompt.size(), out);
    out.score(row, t);
    return t;
  };
  std::span<const float> logits = model.forward(rest);
  check_vocab_settings(options, static_cast<int64_t>(logits.size()));
  int32_t next = draw(logits);
  result.prefill_seconds = seconds_since(t0);

  t0 = Clock::now();
  for (;;) {
    history.push_back(next);
    if (out.add(next)) break;
    if (model.position() >= model.max_context()) {
      result.stop = StopReason::ContextFull;
      break;
    }
    const std::vector<int32_t> draft =
        drafter.enabled() ? drafter.propose(history, out.draft_room(model.position(), model.max_context()))
                          : std::vector<int32_t>();
    ++result.decode_steps;
    if (draft.empty()) {
      logits = model.forward(std::span<const int32_t>(&next, 1));
      next = draw(logits);
      continue;
    }
    std::vector<int32_t> pass{next};
    pass.insert(pass.end(), draft.begin(), draft.end());
    const int64_t base = model.position();
    const std::span<const float> rows = model.forward_all(pass);
    const size_t vocab = rows.size() / pass.size();
    const DraftCheck c = check_draft(draft, drafter, out, history,
                                     [&](size_t i) { return draw(rows.subspan(i * vocab, vocab)); });
    model.truncate(base + c.keep);
    if (c.stopped) break;
    next = c.next;
  }
  result.decode_seconds = result.decode_steps > 0 ? seconds_since(t0) : 0.0;
  out.finish();
  return result;
}

}  // namespace exq::runtime
