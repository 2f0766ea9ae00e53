// `exq quantize` end to end (docs exl2.md section 2, design.md): calibration rows, the
// measurement pass, the optimizer, the quantization pass and compile, driven by a Job so a
// killed conversion resumes where it stopped. Both passes run the same module loop
// (run_pass); only the work per module differs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/hf_config.h"
#include "memory/host_store.h"
#include "quant/engine.h"
#include "quant/job.h"

namespace exq::quant {

// exllamav2's module list without the embedding (index 0): attention and MLP of each layer
// (1 .. 2L), the final norm (2L+1) and the head (2L+2). A mixture-of-experts layer's MLP is a
// kMoe step, key "model.layers.N.block_sparse_moe".
enum class ModuleKind { kAttention, kMlp, kNorm, kHead, kMoe };
struct ModuleStep {
  int64_t index = 0;
  ModuleKind kind = ModuleKind::kAttention;
  int64_t layer = -1;
  std::string key;  // measurement.json key: "model.layers.3.self_attn", "model.norm.norm", ...
};
std::vector<ModuleStep> module_steps(const io::ModelConfig& config);
// Attention, MLP and MoE steps: measured, quantized, and they change the states.
inline bool changes_states(ModuleKind kind) {
  return kind == ModuleKind::kAttention || kind == ModuleKind::kMlp || kind == ModuleKind::kMoe;
}

// Number of weights of the decoder linears (the optimizer's bits budget is target x this):
// every expert's, not the fp16 routers.
int64_t decoder_weight_count(const io::ModelConfig& config);

// Status output: per module a text block (module, duration, step n/N, rolling average per
// step, ETA, peak host memory, the engine's module_stats() such as GPU time, hidden copies and
// peak VRAM, snapshot and host-memory tiers), or with json one JSON object per line per event
// (engine stats under "engine", host store use under "host").
class Progress {
 public:
  explicit Progress(bool json) : json_(json) {}
  bool json() const { return json_; }
  void message(const std::string& event, const std::string& text,
               const nlohmann::ordered_json& fields = {});
  void module_done(Pass pass, const ModuleStep& step, int64_t n, int64_t total, double seconds,
                   const nlohmann::ordered_json& fields);
  void reset_timing() { recent_.clear(); }

 private:
  bool json_;
  std::vector<double> recent_;  // durations of the last steps of this pass
};

// Peak resident memory of this process so far (getrusage), bytes.
int64_t peak_rss_bytes();

// The work of one module: gets its input states, returns the new states (empty when the module
// leaves them unchanged) and fields for the status line (e.g. {"rfn": 0.01}).
struct StepOutcome {
  Tensor states;
  nlohmann::ordered_json fields = nlohmann::ordered_json::object();
};
using StepWork = std::function<StepOutcome(const ModuleStep&, const TensorView& states)>;

// The module loop: runs `work` on every step after job.last_module(pass), checks the new
// states (NaN aborts, rare Inf is clamped), moves them into `store`, commits each module to
// the job, and reports it. `states` is the input of the first step to run. A module's commit
// carries a state snapshot when snapshot_interval_s have passed since the last one (0: every
// module) and always for the pass's last state-changing module (the final MLP: the norm and
// head steps after it leave the states as they are), so the pass never ends without one.
// step_offset numbers steps job-wide for the EXQ_TEST_ABORT_AFTER hook.
void run_pass(Job& job, Pass pass, const std::vector<ModuleStep>& steps,
              memory::HostBuffer states, const StepWork& work, Progress& progress,
              int64_t step_offset, memory::HostStore& store, double snapshot_interval_s);

// Makes the engine of one pass for rows of up to max_tokens tokens.
using EngineFactory =
    std::function<std::unique_ptr<Engine>(const io::ModelConfig& config, int64_t max_tokens)>;

// Everything here but `args` may change between a run and its resume (same output bytes).
struct ConvertOptions {
  JobArgs args;
  std::string work_dir;
  enum class Resume { kAuto, kResume, kRestart } resume = Resume::kAuto;
  bool status_json = false;
  EngineFactory engine = make_cpu_engine;  // called once per pass
  double snapshot_interval_s = 60;         // see run_pass
  // RAM for the calibration states (memory::HostStore); beyond it they spill to mappings in
  // WORKDIR/spill. < 0: memory::default_host_budget().
  int64_t host_budget_bytes = -1;
};

// Runs the whole conversion (or, with measurement_out, the measurement only). Throws exq::Error.
void run_conversion(const ConvertOptions& options);

}  // namespace exq::quant
