#include "quant/cuda/moe_plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/allocator.h"
#include "core/error.h"
#include "quant/cuda/engine_plan.h"

namespace exq::quant::cuda {
namespace {

size_t r(int64_t bytes) { return exq::cuda::CachingAllocator::round_size(static_cast<size_t>(bytes)); }

}  // namespace

size_t MoeFootprint::host_need() const {
  const size_t gptq = expert + (groups > 0 ? 2 * candidate : 0);
  return base() + std::max(gptq, static_cast<size_t>(std::min<int64_t>(groups, 3)) * group);
}

MoeFootprint moe_footprint(const MoeShape& s, size_t held) {
  const int64_t R = s.rows, T = s.tokens, H = s.hidden, E = s.experts, K = s.per_token, EI = s.inter;
  MoeFootprint f;
  f.held = held;
  f.states = 2 * r(R * T * H * 4);
  f.scratch = r(H * 4) + r(E * H * 4) + 6 * r(T * H * 4) + r(T * H * 2) + 2 * r(T * 4) + r(R * T * E * 4) +
              2 * r(T * EI * 4) + r(T * EI * 2) + 2 * r(R * T * K * 4) + r(16) +
              (size_t{64} << 20);  // error sums, identity Hessians' launch scratch, cuBLAS
  // The shared Hessian's factor stays for the whole loop; while it is prepared its sum, scaled
  // copy and two scratch matrices are live too (counted in `expert`, which never overlaps).
  const size_t hh = r(H * H * 4), eh = r(EI * EI * 4);
  f.gate_hessian = hh;
  const size_t cand = r(EI * H * 2);
  const size_t pass = 3 * cand + r(EI * H * 4) + eh;
  const size_t prepare = 5 * eh;
  const size_t gptq = eh + r(EI * H * 4) + std::max(gptq_scratch_estimate(EI, H), gptq_scratch_estimate(H, EI));
  f.expert = std::max({pass, s.groups > 0 ? std::max(prepare, gptq) : 0, s.groups > 0 ? 4 * hh : 0});
  f.candidate = cand;
  f.group = std::max(static_cast<size_t>(E) * cand, r(E * EI * H * 2));
  f.groups = s.groups;
  return f;
}

MoePlan plan_moe(const MoeFootprint& f, size_t budget, bool force_host) {
  MoePlan plan;
  if (f.groups == 0 || (!force_host && f.device_need() <= budget)) {
    const size_t need = f.groups == 0 ? f.base() + f.expert : f.device_need();
    EXQ_CHECK(need <= budget,
              "VRAM budget of {} is too small for this MoE block: it needs at least {} (calibration "
              "states {}, one expert {}, buffers {})",
              format_gb(budget), format_gb(need), format_gb(f.states), format_gb(f.expert),
              format_gb(f.held + f.scratch + f.gate_hessian));
    plan.estimate = need;
    return plan;
  }
  const size_t need = f.host_need();
  EXQ_CHECK(need <= budget,
            "VRAM budget of {} is too small for this MoE block: it needs at least {} with its GPTQ "
            "results in host memory ({} with them on the device): calibration states {}, one expert "
            "{}, one option group of every expert {}, buffers {}",
            format_gb(budget), format_gb(need), format_gb(f.device_need()), format_gb(f.states),
            format_gb(f.expert), format_gb(f.group), format_gb(f.held + f.scratch + f.gate_hessian));
  plan.host_candidates = true;
  const auto fit = static_cast<int64_t>((budget - f.base()) / f.group);
  plan.cache_groups = std::clamp<int64_t>(fit, std::min<int64_t>(f.groups, 3), f.groups);
  plan.estimate = std::max(f.host_need(), f.base() + static_cast<size_t>(plan.cache_groups) * f.group);
  return plan;
}

}  // namespace exq::quant::cuda
