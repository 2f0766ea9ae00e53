#include "runtime/draft_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "core/error.h"

namespace exq::runtime {

DraftModel::Guess DraftModel::greedy(std::span<const float> logits) {
  Guess g;
  float best = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (g.id < 0 || logits[i] > best) {
      best = logits[i];
      g.id = static_cast<int32_t>(i);
    }
  }
  if (g.id < 0 || !std::isfinite(best)) return Guess{g.id, 0.0f};  // nothing usable: no guess
  double sum = 0.0;
  for (const float v : logits)
    if (!std::isnan(v)) sum += std::exp(static_cast<double>(v) - best);
  g.p = static_cast<float>(1.0 / sum);
  return g;
}

std::vector<int32_t> DraftModel::propose(std::span<const int32_t> context, int limit, float p_min) {
  const auto t0 = std::chrono::steady_clock::now();
  struct AddTime {
    double& to;
    std::chrono::steady_clock::time_point t0;
    ~AddTime() { to += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  } add_time{seconds_, t0};
  const auto n = static_cast<int64_t>(context.size());
  // The guesses but the last run after the context.
  const int64_t room = max_context() - n + 1;
  const auto want = static_cast<int64_t>(std::min<int64_t>(limit, room));
  if (want <= 0 || n == 0) return {};

  // Keep what the draft model holds of the context; the last token always runs again (its
  // logits give the first guess).
  const auto common = static_cast<int64_t>(
      std::mismatch(held_.begin(), held_.end(), context.begin(), context.end()).first - held_.begin());
  const int64_t keep = std::min(common, n - 1);
  truncate(keep);
  held_.assign(context.begin(), context.begin() + keep);
  // A failed run leaves the draft model's context unknown: the next call starts it afresh.
  auto run_held = [&](std::span<const int32_t> tokens) {
    try {
      const Guess g = run(tokens);
      held_.insert(held_.end(), tokens.begin(), tokens.end());
      tokens_run_ += static_cast<int64_t>(tokens.size());
      return g;
    } catch (...) {
      held_.clear();
      throw;
    }
  };
  Guess g = run_held(context.subspan(static_cast<size_t>(keep)));
  std::vector<int32_t> out;
  for (;;) {
    if (g.id < 0 || g.id >= model_vocab_ || !(g.p >= p_min)) break;
    out.push_back(g.id);
    if (static_cast<int64_t>(out.size()) == want) break;
    const int32_t t = g.id;
    g = run_held(std::span<const int32_t>(&t, 1));
  }
  return out;
}

StepDraftModel::StepDraftModel(StepFunction& step, int64_t model_vocab) : DraftModel(model_vocab), step_(step) {
  step_.reset();
}

namespace {

std::optional<std::string> piece(const tokenizer::Tokenizer& tok, int32_t id) {
  try {
    return tok.id_to_token(id);
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace

void check_draft_tokenizer(const tokenizer::Tokenizer& model, const tokenizer::Tokenizer& draft,
                           const std::string& where) {
  const ErrorContext ctx{.file = where};
  if (model.vocab_size() != draft.vocab_size())
    throw Error(fmt::format("the draft model's tokenizer has {} ids, the model's {}: a draft model must use the "
                            "model's tokenizer",
                            draft.vocab_size(), model.vocab_size()),
                ctx);
  for (int32_t id = 0; id < model.vocab_size(); ++id) {
    const std::optional<std::string> a = piece(model, id), b = piece(draft, id);
    if (a != b || model.is_special(id) != draft.is_special(id))
      throw Error(fmt::format("the draft model's tokenizer differs from the model's at id {} ('{}' against '{}'): "
                              "a draft model must use the model's tokenizer",
                              id, b.value_or("<none>"), a.value_or("<none>")),
                  ctx);
  }
}

}  // namespace exq::runtime
