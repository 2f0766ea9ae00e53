// How a mixture-of-experts block spends the VRAM budget in the CUDA engine (moe_run.h). The
// states of every calibration row (input and reference output) stay on the device; the experts
// run one after another, each holding its fp16 weights, its down Hessian and its GPTQ working
// memory only while it is processed. What grows with the experts is their GPTQ results (one
// fp16 copy per expert, linear and option): on the device when all of them fit, else in pinned
// host memory, brought back into a cache of `cache_groups` device buffers of one group each (a
// group: one option of one linear for every expert). Plain host arithmetic, tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace exq::quant::cuda {

// Dimensions of the block and its work.
struct MoeShape {
  int64_t rows = 0, tokens = 0, hidden = 0;
  int64_t experts = 0, per_token = 0, inter = 0;
  int64_t groups = 0;  // option groups of the three linears (0: forward only)
};

// Device bytes (allocator-rounded) of the block's parts.
struct MoeFootprint {
  size_t held = 0;          // engine bytes live before the block (rotary tables, counters)
  size_t states = 0;        // x and the reference output of every row
  size_t scratch = 0;       // norm, router, routes, per-row buffers, error sums
  size_t gate_hessian = 0;  // the shared gate / up Hessian while it is prepared, and its factor
  size_t expert = 0;        // one expert's largest phase: its reference pass or its GPTQ
  size_t candidate = 0;     // one expert's result of one linear (F16 [inter * hidden])
  size_t group = 0;         // one group of results (F16 [experts, inter * hidden])
  int64_t groups = 0;

  size_t base() const { return held + states + scratch + gate_hessian; }
  // Everything on the device: the last expert's GPTQ beside every result.
  size_t device_need() const { return base() + expert + static_cast<size_t>(groups) * group; }
  // Results in host memory: an expert's GPTQ with two results on the device (one being
  // downloaded), or the three groups a forward with one option per linear needs.
  size_t host_need() const;
};

struct MoePlan {
  bool host_candidates = false;
  int64_t cache_groups = 0;  // host_candidates: device buffers of one group
  size_t estimate = 0;       // estimated peak bytes
};

// Bytes of each part for `shape`; held: device bytes the engine holds already.
MoeFootprint moe_footprint(const MoeShape& shape, size_t held);

// Results on the device when device_need() fits the budget (and not force_host), else in host
// memory with as many cache groups as the budget leaves (at most `groups`). Throws exq::Error
// with the sizes when even host_need() does not fit (callers prefix the module's name).
MoePlan plan_moe(const MoeFootprint& f, size_t budget, bool force_host = false);

}  // namespace exq::quant::cuda
