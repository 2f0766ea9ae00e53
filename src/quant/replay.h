// Resume of a pass (design.md: "resume = replay of committed state"). Snapshots of the states
// are written only every so often (pipeline.h, ConvertOptions::snapshot_interval_s), so the
// states a resumed pass needs are rebuilt: the last snapshot (or the embedding), then a
// forward-only run of every module committed after it — the reference forward in the
// measurement pass, the forward with the committed EXL2 weights (quant/<key>.safetensors,
// dequantized) in the quantization pass — through the same state checks as the original run,
// so the result is the same bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "memory/host_store.h"
#include "quant/engine.h"
#include "quant/job.h"
#include "quant/pipeline.h"

namespace exq::quant {

struct ReplayResult {
  memory::HostBuffer states;  // input of the first module after job.last_module(pass)
  int64_t from = -1;          // module of the snapshot started from (-1: the embedding)
  int64_t modules = 0;        // modules run again
  double seconds = 0;
};

// `layer(l)` gives layer l's F32 weights; `initial()` the embedded calibration rows (called
// only when the pass has no snapshot). Throws exq::Error naming the file when a snapshot or a
// module's quantized tensors are missing or do not fit the model.
ReplayResult rebuild_states(const Job& job, Pass pass, const std::vector<ModuleStep>& steps,
                            const io::ModelConfig& config, memory::HostStore& store,
                            Engine& engine, const std::function<const LayerF32&(int64_t)>& layer,
                            const std::function<memory::HostBuffer()>& initial);

}  // namespace exq::quant
