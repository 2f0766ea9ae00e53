// The conversion job: the only writer of the work folder. WORKDIR/job.json holds the arguments
// and the committed progress (last measured / quantized module, the measurement so far, the
// optimizer's choice); every write is temp + rename, and a module is committed by first writing
// its files (state snapshot, packed tensors) under new names and then job.json, so a kill at
// any point loses at most the module in flight and a resume replays to the same bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "quant/measurement.h"

namespace exq::quant {

// Everything that changes the output. Resuming with different values is refused.
struct JobArgs {
  std::string model_dir;
  std::string out_dir;  // compiled model folder
  double bits = 4.0;
  int head_bits = 6;
  std::vector<std::string> cal_files;  // empty: self-sampled rows
  int64_t rows = 100, length = 2048;             // quantization pass
  int64_t measure_rows = 16, measure_length = 2048;  // measurement pass
  std::string measurement_in;   // -m: reuse this measurement, skip the measurement pass
  std::string measurement_out;  // -om: write the measurement there and stop
  int64_t shard_mb = 8192;
  std::string error_metric = "token";  // measurement error metric (measure.h: row|skip0|token)

  nlohmann::ordered_json to_json() const;
  static JobArgs from_json(const nlohmann::ordered_json& j, const std::string& source);
  // Names of the fields that differ ("bits", "cal_files", ...), in declaration order.
  std::vector<std::string> diff(const JobArgs& other) const;
};

enum class Pass { kMeasure, kQuantize };
const char* pass_name(Pass pass);

class Job {
 public:
  // Creates WORKDIR (throws exq::Error naming it when that or a test write fails). With an
  // existing job.json: resume=true continues it (refused, naming the fields, when args differ),
  // resume=false starts over (removes the job's files); without one both start fresh.
  static Job open(const std::filesystem::path& work_dir, const JobArgs& args, bool resume);

  const std::filesystem::path& dir() const { return dir_; }
  const JobArgs& args() const { return args_; }
  bool resumed() const { return resumed_; }

  // Calibration rows, written once: int32 [rows, length] in cal_<name>.safetensors.
  std::optional<Tensor> load_rows(const std::string& name) const;
  void save_rows(const std::string& name, const TensorView& ids);

  // Progress of a pass: index of the last committed module (exllamav2's numbering: 0 is the
  // embedding), -1 when none.
  int64_t last_module(Pass pass) const;
  // The last state snapshot of the pass, F32 [rows, T, hidden]; empty when none. Modules that
  // leave the states unchanged (norm, head) commit without one.
  Tensor load_states(Pass pass) const;
  // Commits module `index` of `pass`: states (when non-empty) go to a new snapshot file, then
  // job.json (with the measurement and choice as they stand) is replaced, then the previous
  // snapshot is removed. An empty view commits without a snapshot (unchanged states, or the
  // snapshot policy skipped it: resume then replays the modules after the last snapshot).
  void commit(Pass pass, int64_t index, const TensorView& states);
  // Module whose output the pass's snapshot holds; -1 when none (the pass starts from the
  // embedding). Modules after it up to last_module(pass) are committed but not in a snapshot.
  int64_t states_module(Pass pass) const { return states_idx_[static_cast<int>(pass)]; }
  std::filesystem::path states_path(Pass pass, int64_t index) const;

  // Packed tensors of one quantized module (quant/<key>.safetensors), written before commit.
  void save_module_tensors(const std::string& key, const std::vector<io::NamedTensor>& tensors);
  std::filesystem::path module_tensors_path(const std::string& key) const;

  Measurement& measurement() { return measurement_; }
  const Measurement& measurement() const { return measurement_; }
  // Optimizer result: chosen row per decoder module key; empty until optimized.
  std::vector<std::pair<std::string, int>>& choice() { return choice_; }
  bool compiled() const { return compiled_; }
  void set_compiled();
  // Rewrites job.json with the measurement and choice as they stand.
  void save() { write_job_json(); }

 private:
  void write_job_json();

  std::filesystem::path dir_;
  JobArgs args_;
  bool resumed_ = false;
  int64_t last_[2] = {-1, -1};
  int64_t states_idx_[2] = {-1, -1};  // module whose output the snapshot of each pass holds
  Measurement measurement_;
  std::vector<std::pair<std::string, int>> choice_;
  bool compiled_ = false;
};

// Test hook: when EXQ_TEST_ABORT_AFTER=<n> is set and `step` == n (the job's global step
// count: measurement steps first, then quantization steps), the process kills itself with
// SIGKILL, as an out-of-memory kill or power loss would.
void maybe_test_abort(int64_t step);

}  // namespace exq::quant
