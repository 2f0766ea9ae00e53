#include "quant/cuda/engine_plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/allocator.h"
#include "core/error.h"

namespace exq::quant::cuda {

std::string format_gb(size_t bytes) {
  return fmt::format("{:.2f} GB", static_cast<double>(bytes) / static_cast<double>(1ull << 30));
}

size_t gptq_scratch_estimate(int64_t out, int64_t in) {
  const auto o = static_cast<size_t>(out), i = static_cast<size_t>(in);
  const auto r = [](size_t bytes) { return exq::cuda::CachingAllocator::round_size(bytes); };
  return 2 * r(i * o * 4) + r(i * o * 2) + r(i * o) + r(97 * o * 4) + r(128 * o * 4) +
         r(i * i * 4) + (size_t{64} << 20);
}

VramPlan plan_vram(const ModuleFootprint& f, int64_t rows, size_t budget, int64_t max_slots) {
  EXQ_CHECK(rows > 0, "no calibration rows");
  const size_t slot = f.slot_bytes();
  const size_t base = std::max(f.phase_reference(), f.phase_test());
  const size_t need = std::max(base, f.phase_gptq_min()) + slot;
  if (need > budget)
    throw Error(fmt::format(
        "VRAM budget of {} is too small for this module: it needs at least {} (weights {}, "
        "Hessians {}, GPTQ results {}, buffers {}, one calibration row {})",
        format_gb(budget), format_gb(need), format_gb(f.weights + f.upload),
        format_gb(f.hessians + f.prepared), format_gb(f.candidates),
        format_gb(f.scratch + f.outputs), format_gb(slot)));
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
