// How the CUDA engine spends its VRAM budget on one module. The module's device memory has three
// phases (reference forward + Hessians, GPTQ, tests of the option table); the calibration states
// (input x and reference output of each row) sit in `slots` row buffers beside them. When every
// row fits next to the largest phase, the states stay resident for the whole module and are
// copied once; otherwise they stream through a ring of slots (double buffering at least) and
// are freed during GPTQ. When not even one row fits beside every GPTQ result, the plan keeps the
// results in pinned host memory (host_candidates): each is downloaded right after GPTQ produces
// it, and the table tests bring back only the candidates a chunk of table rows needs into a
// device cache of `cache_slots` fixed-size buffers. Plain host arithmetic, so it is tested
// without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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
  size_t candidate_max = 0;  // the largest single GPTQ result (F16 [out, in], rounded)
  int64_t linears = 0;       // linears of the module: candidates one table row needs
  int64_t candidate_count = 0;  // GPTQ results of all linears (the cache never needs more)
  size_t kept = 0;           // norm and biases: still on the device during the tests

  size_t phase_reference() const { return weights + upload + hessians + scratch; }
  size_t phase_gptq() const { return weights + hessians + prepared + candidates + gptq; }
  size_t phase_gptq_min() const { return weights + hessians + prepared + candidates; }
  size_t phase_test() const { return persistent + candidates + scratch + outputs; }
  size_t slot_bytes() const { return 2 * row_bytes; }  // x and target of one row
  // Host-candidate mode: two results on the device at a time during GPTQ (one being computed,
  // the previous one being downloaded), and a cache of at least one candidate per linear
  // during the tests.
  size_t cache_min() const { return static_cast<size_t>(linears) * candidate_max; }
  size_t phase_gptq_host() const {
    return weights + hessians + prepared + gptq + 2 * candidate_max;
  }
  size_t phase_test_host() const {
    return persistent + kept + cache_min() + scratch + outputs;
  }
};

struct VramPlan {
  int64_t slots = 0;      // rows whose states are on the device at once
  bool resident = false;  // all rows stay on the device through GPTQ (copied once)
  size_t estimate = 0;    // estimated peak bytes
  bool host_candidates = false;  // GPTQ results live in pinned host memory
  int64_t cache_slots = 0;       // host_candidates: device buffers of candidate_max bytes
};

// Rows streamed at once in host-candidate mode (prefetch depth + 1): the rest of the budget goes
// to the candidate cache, since the rows are streamed again for every chunk of table rows.
constexpr int64_t kHostCandidateSlots = 3;

// Chooses the slots for `rows` calibration rows under `budget` bytes. Throws exq::Error with
// the sizes when even one row next to the module's weights, Hessians and GPTQ results does not
// fit (callers prefix the module's name). max_slots > 0 caps the slots (and so may force
// streaming).
// Falls back to host candidates only when the all-on-device plan cannot fit one row, or when
// force_host_candidates (tests).
VramPlan plan_vram(const ModuleFootprint& f, int64_t rows, size_t budget, int64_t max_slots = 0,
                   bool force_host_candidates = false);

// Host-candidate mode: the table rows (pick[i][c]: option index of linear c) in chunks whose
// distinct candidates (c, pick[i][c]) fit `cache_slots`. Rows are sorted by their picks, so
// neighbours share the prefix linears' candidates (and the prefix pass) and consecutive chunks
// overlap. Throws exq::Error when one row's linears exceed the cache.
std::vector<std::vector<size_t>> table_chunks(const std::vector<std::vector<size_t>>& pick,
                                              int64_t cache_slots);

// Working memory of prepare_hessian + gptq_quantize_batch for one linear [out, in], as
// gptq_cuda.cpp allocates it (options run one after another): two F32 copies of the permuted
// weight, its f16 and code buffers, the grid errors, the block-update stacks (3 x 128 x
// (in + out) floats), one [in, in] matrix and some slack.
size_t gptq_scratch_estimate(int64_t out, int64_t in);

// "12.34 GB" (10^9 bytes, the unit of --vram-budget) for messages.
std::string format_gb(size_t bytes);

}  // namespace exq::quant::cuda
