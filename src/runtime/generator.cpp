#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

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
  }
  return "unknown";
}

double GenerateResult::prefill_tokens_per_s() const {
  return prefill_seconds > 0.0 ? static_cast<double>(prompt_tokens - cached_tokens) / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_s() const {
  return decode_seconds > 0.0 ? static_cast<double>(decode_steps) / decode_seconds : 0.0;
}

std::span<const int32_t> prompt_to_run(std::span<const int32_t> prompt, const GenerateOptions& options,
                                       int64_t position, int64_t max_context) {
  EXQ_CHECK(!prompt.empty(), "the prompt is empty: nothing to generate from");
  EXQ_CHECK(options.max_new_tokens >= 0, "max tokens must be >= 0, got {}", options.max_new_tokens);
  const int64_t cached = options.cached_prompt_tokens;
  EXQ_CHECK(cached >= 0 && cached < static_cast<int64_t>(prompt.size()),
            "{} cached prompt tokens for a prompt of {}: at most the prompt's size - 1", cached,
            prompt.size());
  EXQ_CHECK(cached == 0 || position == cached,
            "{} cached prompt tokens, but the model's context holds {} tokens", cached, position);
  const std::span<const int32_t> rest = prompt.subspan(static_cast<size_t>(cached));
  const int64_t room = max_context - position;
  EXQ_CHECK(static_cast<int64_t>(rest.size()) <= room,
            "the prompt has {} tokens to run but the context has room for {} (context length {})",
            rest.size(), room, max_context);
  return rest;
}

GenerateResult generate(StepFunction& model, TextDecoder* decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const TextCallback& on_text) {
  const std::span<const int32_t> rest = prompt_to_run(prompt, options, model.position(), model.max_context());

  GenerateResult result;
  Sampler sampler(options.sampler);
  result.seed = sampler.seed();
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.cached_tokens = options.cached_prompt_tokens;
  if (options.max_new_tokens == 0) return result;
  if (decoder) decoder->reset();

  std::vector<int32_t> history(prompt.begin(), prompt.end());  // for the repetition penalty
  Utf8Stream utf8;
  bool stopped_by_callback = false;
  auto emit = [&](std::string piece) {
    piece = utf8.push(piece);
    if (piece.empty()) return;
    result.text += piece;
    if (on_text && !on_text(piece)) stopped_by_callback = true;
  };

  auto t0 = Clock::now();
  std::span<const float> logits = model.forward(rest);
  int32_t next = sampler.sample(logits, history);
  result.prefill_seconds = seconds_since(t0);

  t0 = Clock::now();
  for (;;) {
    result.ids.push_back(next);
    history.push_back(next);
    const bool is_eos = std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), next) !=
                        options.eos_token_ids.end();
    if (is_eos) {
      result.stop = StopReason::Eos;
      break;
    }
    if (decoder) emit(decoder->push(next));
    if (stopped_by_callback) {
      result.stop = StopReason::Callback;
      break;
    }
    if (static_cast<int64_t>(result.ids.size()) >= options.max_new_tokens) {
      result.stop = StopReason::MaxTokens;
      break;
    }
    if (model.position() >= model.max_context()) {
      result.stop = StopReason::ContextFull;
      break;
    }
    logits = model.forward(std::span<const int32_t>(&next, 1));
    ++result.decode_steps;
    next = sampler.sample(logits, history);
  }
  result.decode_seconds = result.decode_steps > 0 ? seconds_since(t0) : 0.0;
  if (decoder && !stopped_by_callback) emit(decoder->finish());
  if (!stopped_by_callback) {
    const std::string tail = utf8.finish();
    if (!tail.empty()) {
      result.text += tail;
      if (on_text) on_text(tail);
    }
  }
  result.generated_tokens = static_cast<int64_t>(result.ids.size());
  return result;
}

}  // namespace exq::runtime
