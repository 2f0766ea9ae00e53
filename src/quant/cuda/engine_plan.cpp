#include "quant/cuda/engine_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <utility>

#include "backend/cuda/allocator.h"
#include "core/error.h"
#include "quant/cuda/gptq_batch.h"

namespace exq::quant::cuda {

std::string format_gb(size_t bytes) {
  return fmt::format("{:.2f} GB", static_cast<double>(bytes) * 1e-9);  // as --vram-budget reads it
}

size_t gptq_scratch_estimate(int64_t out, int64_t in) {
  const auto o = static_cast<size_t>(out), i = static_cast<size_t>(in);
  const auto r = [](size_t bytes) { return exq::cuda::CachingAllocator::round_size(bytes); };
  const size_t v1 = 2 * r(i * o * 4) + r(i * o * 2) + r(i * o) + r(97 * o * 4) +
                    r(128 * o * 4) + r(128 * 3 * o * 4) + r(128 * 3 * i * 4) + r(i * i * 4);
  // v2 (the default) needs a super-block stack and one option's buffers at least.
  return std::max(v1, gptq_batch_min_bytes(out, in, true)) + (size_t{64} << 20);
}

namespace {

Error too_small(const ModuleFootprint& f, size_t budget, size_t need, const std::string& more) {
  return Error(fmt::format(
      "VRAM budget of {} is too small for this module: it needs at least {} (weights {}, "
      "Hessians {}, GPTQ results {}, buffers {}, one calibration row {}){}",
      format_gb(budget), format_gb(need), format_gb(f.weights + f.upload),
      format_gb(f.hessians + f.prepared), format_gb(f.candidates),
      format_gb(f.scratch + f.outputs), format_gb(f.slot_bytes()), more));
}

VramPlan plan_host_candidates(const ModuleFootprint& f, int64_t rows, size_t budget,
                              int64_t max_slots, size_t device_need) {
  const size_t slot = f.slot_bytes();
  const size_t base = std::max(f.phase_reference(), f.phase_test_host());
  const size_t need = std::max(base, f.phase_gptq_host()) + slot;
  if (need > budget)
    throw too_small(f, budget, device_need,
                    fmt::format(", or {} with the GPTQ results kept in host memory",
                                format_gb(need)));
  VramPlan plan;
  plan.host_candidates = true;
  const bool capped = max_slots > 0 && max_slots < rows;
  const size_t all_rows = slot * static_cast<size_t>(rows);
  if (!capped && std::max(base, f.phase_gptq_host()) + all_rows <= budget) {
    plan.slots = rows;
    plan.resident = true;
  } else {
    const auto fit = static_cast<int64_t>((budget - base) / slot);
    plan.slots = std::clamp<int64_t>(fit, 1, std::min(capped ? max_slots : rows,
                                                      kHostCandidateSlots));
  }
  const size_t rows_bytes = slot * static_cast<size_t>(plan.slots);
  const size_t fixed = f.persistent + f.kept + f.scratch + f.outputs + rows_bytes;
  plan.cache_slots = std::min(static_cast<int64_t>((budget - fixed) / f.candidate_max),
                              std::max(f.candidate_count, f.linears));
  const size_t test = fixed + static_cast<size_t>(plan.cache_slots) * f.candidate_max;
  plan.estimate = std::max({f.phase_reference() + rows_bytes, test,
                            f.phase_gptq_host() + (plan.resident ? rows_bytes : 0)});
  return plan;
}

}  // namespace

std::vector<std::vector<size_t>> table_chunks(const std::vector<std::vector<size_t>>& pick,
                                              int64_t cache_slots) {
  std::vector<size_t> order(pick.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return pick[a] < pick[b]; });
  std::vector<std::vector<size_t>> chunks;
  std::set<std::pair<size_t, size_t>> held;
  for (size_t i : order) {
    EXQ_CHECK(static_cast<int64_t>(pick[i].size()) <= cache_slots,
              "candidate cache of {} slots cannot hold the {} linears of one table row",
              cache_slots, pick[i].size());
    std::set<std::pair<size_t, size_t>> next = held;
    for (size_t c = 0; c < pick[i].size(); ++c) next.emplace(c, pick[i][c]);
    if (chunks.empty() || static_cast<int64_t>(next.size()) > cache_slots) {
      chunks.emplace_back();
      next.clear();
      for (size_t c = 0; c < pick[i].size(); ++c) next.emplace(c, pick[i][c]);
    }
    chunks.back().push_back(i);
    held = std::move(next);
  }
  return chunks;
}

VramPlan plan_vram(const ModuleFootprint& f, int64_t rows, size_t budget, int64_t max_slots,
                   bool force_host_candidates) {
  EXQ_CHECK(rows > 0, "no calibration rows");
  const size_t slot = f.slot_bytes();
  const size_t base = std::max(f.phase_reference(), f.phase_test());
  const size_t need = std::max(base, f.phase_gptq_min()) + slot;
  if (f.candidate_max > 0 && (need > budget || force_host_candidates))
    return plan_host_candidates(f, rows, budget, max_slots, need);
  if (need > budget) throw too_small(f, budget, need, "");
  VramPlan plan;
  const size_t all_rows = slot * static_cast<size_t>(rows);
  const size_t peak_all = std::max(base, f.phase_gptq()) + all_rows;
  const bool capped = max_slots > 0 && max_slots < rows;
  if (peak_all <= budget && !capped) {
    plan.slots = rows;
    plan.resident = true;
    plan.estimate = peak_all;
    return plan;
  }
  // Streaming: the states are freed during GPTQ, so only the forward phases bound the slots.
  const auto fit = static_cast<int64_t>((budget - base) / slot);
  plan.slots = std::clamp<int64_t>(fit, 1, capped ? max_slots : rows);
  plan.estimate = std::max(base + slot * static_cast<size_t>(plan.slots), f.phase_gptq());
  return plan;
}

}  // namespace exq::quant::cuda
