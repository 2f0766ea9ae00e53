#include "runtime/batch.h"

#include <algorithm>
#include <exception>

#include "core/error.h"

namespace exq::runtime {

// ---- LlamaSequences -------------------------------------------------------------------------

LlamaSequences::LlamaSequences(model::LlamaModel& model, int sequences, int64_t max_context, int max_batch)
    : model_(model), max_batch_(max_batch) {
  EXQ_CHECK(sequences >= 1 && max_batch >= 1, "LlamaSequences: {} sequences, batches of {}", sequences,
            max_batch);
  for (int s = 0; s < sequences; ++s) caches_.push_back(model.make_cache(max_context));
}

model::KvCache& LlamaSequences::cache(int seq) {
  EXQ_CHECK(seq >= 0 && seq < sequences(), "sequence {} is outside [0, {})", seq, sequences());
  return caches_[static_cast<size_t>(seq)];
}

void LlamaSequences::truncate(int seq, int64_t n) { cache(seq).truncate(n); }

std::span<const float> LlamaSequences::forward(int seq, std::span<const int32_t> tokens, bool all) {
  logits_ = model_.forward(tokens, cache(seq), all);
  return logits_.span<const float>();
}

std::span<const float> LlamaSequences::decode(std::span<const int> seqs, std::span<const int32_t> tokens) {
  EXQ_CHECK(static_cast<int>(seqs.size()) <= max_batch_, "decode: {} sequences, at most {}", seqs.size(),
            max_batch_);
  std::vector<model::KvCache*> caches;
  for (int s : seqs) caches.push_back(&cache(s));
  logits_ = model_.forward_batch(tokens, caches);
  return logits_.span<const float>();
}

// ---- Batcher --------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

struct Batcher::Request {
  int seq = 0;
  int32_t token = 0;
  std::vector<float>* out = nullptr;  // the row's logits go here
  Clock::time_point since;
  bool done = false;
  std::exception_ptr error;
};

class Batcher::Step : public StepFunction {
 public:
  Step(Batcher& b, int seq) : b_(b), seq_(seq) {}

  std::span<const float> forward(std::span<const int32_t> tokens) override { return run(tokens, false); }
  std::span<const float> forward_all(std::span<const int32_t> tokens) override { return run(tokens, true); }
  int64_t position() const override { return pos_; }
  int64_t max_context() const override { return b_.model_.max_context(); }
  void reset() override { truncate(0); }
  void truncate(int64_t n) override {
    EXQ_CHECK(n >= 0 && n <= pos_, "truncate: {} is outside [0, {}]", n, pos_);
    b_.exclusive([&] { b_.model_.truncate(seq_, n); });
    pos_ = n;
  }

 private:
  std::span<const float> run(std::span<const int32_t> tokens, bool all) {
    const auto T = static_cast<int64_t>(tokens.size());
    EXQ_CHECK(T > 0, "forward: no tokens");
    EXQ_CHECK(pos_ + T <= max_context(), "forward: {} tokens after {} exceed the cache of {}", T, pos_,
              max_context());
    if (T == 1 && !all) {
      b_.decode_one(seq_, tokens[0], out_);
    } else {
      b_.exclusive([&] {
        const std::span<const float> l = b_.model_.forward(seq_, tokens, all);
        out_.assign(l.begin(), l.end());
      });
    }
    pos_ += T;
    return out_;
  }

  Batcher& b_;
  int seq_;
  int64_t pos_ = 0;
  std::vector<float> out_;
};

Batcher::Batcher(SequenceModel& model, std::chrono::microseconds max_wait) : model_(model), max_wait_(max_wait) {}

std::unique_ptr<StepFunction> Batcher::step(int seq) {
  EXQ_CHECK(seq >= 0 && seq < model_.sequences(), "sequence {} is outside [0, {})", seq, model_.sequences());
  exclusive([&] { model_.truncate(seq, 0); });  // the step counts from an empty cache
  return std::make_unique<Step>(*this, seq);
}

void Batcher::enter() {
  std::lock_guard<std::mutex> lock(mu_);
  ++active_;
}

void Batcher::leave() {
  std::lock_guard<std::mutex> lock(mu_);
  --active_;
  cv_.notify_all();  // a batch may have been waiting for this generation
}

Batcher::Stats Batcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

template <typename F>
void Batcher::exclusive(F&& run) {
  std::unique_lock<std::mutex> lock(mu_);
  ++exclusive_;
  cv_.notify_all();  // the batch no longer waits for this thread's token
  cv_.wait(lock, [&] { return !busy_; });
  busy_ = true;
  lock.unlock();
  std::exception_ptr error;
  try {
    run();
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  busy_ = false;
  --exclusive_;
  cv_.notify_all();
  lock.unlock();
  if (error) std::rethrow_exception(error);
}

std::span<const float> Batcher::decode_one(int seq, int32_t token, std::vector<float>& out) {
  std::unique_lock<std::mutex> lock(mu_);
  Request req{seq, token, &out, Clock::now()};
  pending_.push_back(&req);
  cv_.notify_all();
  while (!req.done) {
    if (busy_ || pending_.empty()) {
      cv_.wait(lock);
      continue;
    }
    // Every generation in flight that is not running a prompt is expected to queue a token.
    const auto expected = static_cast<size_t>(std::clamp(active_ - exclusive_, 1, model_.max_batch()));
    const Clock::time_point deadline = pending_.front()->since + max_wait_;
    if (pending_.size() >= expected || Clock::now() >= deadline)
      lead(lock);
    else
      cv_.wait_until(lock, deadline);
  }
  if (req.error) std::rethrow_exception(req.error);
  return out;
}

// Runs the first max_batch() queued tokens as one decode (the lock is released meanwhile).
void Batcher::lead(std::unique_lock<std::mutex>& lock) {
  const size_t n = std::min(pending_.size(), static_cast<size_t>(model_.max_batch()));
  std::vector<Request*> take(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  busy_ = true;
  lock.unlock();
  std::exception_ptr error;
  try {
    std::vector<int> seqs;
    std::vector<int32_t> tokens;
    for (const Request* r : take) {
      seqs.push_back(r->seq);
      tokens.push_back(r->token);
    }
    const std::span<const float> logits = model_.decode(seqs, tokens);
    const auto V = static_cast<size_t>(model_.vocab());
    EXQ_ASSERT(logits.size() == n * V);
    for (size_t r = 0; r < n; ++r) take[r]->out->assign(logits.begin() + r * V, logits.begin() + (r + 1) * V);
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  busy_ = false;
  ++stats_.passes;
  stats_.rows += static_cast<int64_t>(n);
  for (Request* r : take) {
    r->error = error;
    r->done = true;
  }
  cv_.notify_all();
}

// ---- SequencePool ---------------------------------------------------------------------------

SequencePool::SequencePool(SequenceModel& model, const tokenizer::Tokenizer& tok)
    : batcher_(model), vocab_(model.vocab()) {
  slots_.reserve(static_cast<size_t>(model.sequences()));
  for (int s = 0; s < model.sequences(); ++s) {
    Slot slot;
    slot.step = batcher_.step(s);
    slot.decoder = std::make_unique<TokenizerTextDecoder>(tok);
    slots_.push_back(std::move(slot));
  }
}

int SequencePool::acquire(std::span<const int32_t> prompt, bool reuse) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return !s.busy; }); });
  int best = -1;
  int64_t best_len = -1;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.busy) continue;
    const int64_t len = reuse ? common_prefix(s.cache.tokens(), prompt) : 0;
    if (len > best_len || (len == best_len && s.last_used < slots_[static_cast<size_t>(best)].last_used)) {
      best = static_cast<int>(i);
      best_len = len;
    }
  }
  slots_[static_cast<size_t>(best)].busy = true;
  return best;
}

void SequencePool::release(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot& s = slots_[static_cast<size_t>(slot)];
  s.busy = false;
  s.last_used = ++clock_;
  cv_.notify_all();
}

GenerateResult SequencePool::generate(std::span<const int32_t> prompt, const GenerateOptions& options, bool reuse,
                                      const TextCallback& on_text) {
  check_prompt_ids(prompt, vocab_);
  const int index = acquire(prompt, reuse);
  Slot& slot = slots_[static_cast<size_t>(index)];
  batcher_.enter();
  try {
    GenerateResult r = slot.cache.generate(*slot.step, prompt, options, reuse,
                                           [&](std::span<const int32_t> p, const GenerateOptions& o) {
                                             return runtime::generate(*slot.step, slot.decoder.get(), p, o, on_text);
                                           });
    batcher_.leave();
    release(index);
    return r;
  } catch (...) {
    batcher_.leave();
    release(index);
    throw;
  }
}

}  // namespace exq::runtime
