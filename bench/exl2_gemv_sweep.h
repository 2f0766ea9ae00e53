// Launch-shape sweeps of exl2_gemv_bench (--only sweep, runsweep): which Exl2Split the split
// chooser should pick, timed per launch and as the kernel alone in a graph.
#pragma once

#include <nlohmann/json.hpp>

#include "backend/cuda/memory.h"
#include "backend/cuda/stream.h"

namespace exq::cuda::bench {

// 1:4b_128g at the benchmark's shapes, batch 1.
nlohmann::json split_sweep(int iters, const DeviceBuffer& x32, Stream& stream);
// The mixed-width options with a run per warp (Exl2Split::runs), and the gate + up group of
// exllamav2's MLP row 9 at Llama-3-8B's shape.
nlohmann::json runs_sweep(int iters, const DeviceBuffer& x32, Stream& stream);
// Only the group launches of runs_sweep (gate + up of MLP row 9, q, k, v of attention row 10).
nlohmann::json group_sweep(const DeviceBuffer& x32, Stream& stream);

}  // namespace exq::cuda::bench
