// How the CUDA engine spends its VRAM budget on one module. The module's device memory has three
// phases (reference forward + Hessians, GPTQ, tests of the option table); the calibration states
// (input x and reference output of each row) sit in `slots` row buffers beside them. When every
// row fits next to the largest phase, the states stay resident for the whole module and are
// copied once; otherwise they stream through a ring of slots (double buffering at least) and
// are freed during GPTQ. Plain host arithmetic, so it is tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace exq::quant::cuda {

// Bytes of each kind a module needs on the device (allocator-rounded).
struct ModuleFootprint {
  size_t persistent = 0;  // held by the engine across modules (rotary tables, counters)
  size_t weights = 0;     // live when the plan is made: persistent + the module's weights
  size_t upload = 0;      // transient F32 buffer of the largest weight during its conversion
  size_t hessians = 0;    // accumulators of every Hessian (sum + scaled copy)
  size_t prepared = 0;    // act-order + Cholesky factors of every Hessian
  size_t candidates = 0;  // every GPTQ result kept for the forward passes (F16)
  size_t gptq = 0;        // estimated GPTQ working memory of the largest linear
  size_t scratch = 0;     // per-row forward buffers, error sums, rotary tables
  size_t outputs = 0;     // download buffers of the quantized output (quantize only)
  size_t row_bytes = 0;   // one calibration row of one state tensor (F32 [T, hidden])

  size_t phase_reference() const { return weights + upload + hessians + scratch; }
  size_t phase_gptq() const { return weights + hessians + prepared + candidates + gptq; }
  size_t phase_gptq_min() const { return weights + hessians + prepared + candidates; }
  size_t phase_test() const { return persistent + candidates + scratch + outputs; }
  size_t slot_bytes() const { return 2 * row_bytes; }  // x and target of one row
};

struct VramPlan {
  int64_t slots = 0;      // rows whose states are on the device at once
  bool resident = false;  // all rows stay on the device through GPTQ (copied once)
  size_t estimate = 0;    // estimated peak bytes
};

// Chooses the slots for `rows` calibration rows under `budget` bytes. Throws exq::Error with
// the sizes when even one row next to the module's weights, Hessians and GPTQ results does not
// fit (callers prefix the module's name). max_slots > 0 caps the slots (and so may force
// streaming).
VramPlan plan_vram(const ModuleFootprint& f, int64_t rows, size_t budget, int64_t max_slots = 0);

// Working memory of prepare_hessian + gptq_quantize_batch for one linear [out, in], as
// gptq_cuda.cpp allocates it (options run one after another): two F32 copies of the permuted
// weight, its f16 and code buffers, the grid errors, one [in, in] matrix and some slack.
size_t gptq_scratch_estimate(int64_t out, int64_t in);

// "12.34 GB" (2^30 bytes) for messages.
std::string format_gb(size_t bytes);

}  // namespace exq::quant::cuda
