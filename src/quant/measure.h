// Measurement of one decoder module (docs exl2.md section 2, step 3), CPU: the reference
// forward over every calibration row gives the target and the Hessians of the linears' inputs
// (q/k/v share one, gate/up share one); each linear is GPTQ-quantized under every distinct
// option of its column of the module's option table; then every table row is tested by running
// the module with those dequantized weights on all rows. Result rows follow exllamav2's
// measurement.json schema (accuracy = 1 - mean over rows of ||y_q - y||_F / ||y||_F).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "quant/gptq.h"
#include "quant/measurement.h"
#include "quant/module_forward.h"
#include "quant/options.h"

namespace exq::quant {

// How a table row's output error is scored (per calibration row, then averaged over rows).
// kRow: ||y_q - y||_F / ||y||_F over all tokens (exllamav2's). kSkip0: the same over tokens
// 1..T-1 (a massive activation on token 0 holds most of ||y||^2 in e.g. SmolLM2). kToken: mean
// over tokens of ||dy_t|| / ||y_t|| (exq quantize's default: every token counts alike, so one
// outlier token cannot hide the error of the others; docs/quality.md).
enum class ErrorMetric { kRow, kSkip0, kToken };

// "row", "skip0", "token" <-> ErrorMetric; parse throws exq::Error naming `what` otherwise.
ErrorMetric parse_error_metric(std::string_view name, std::string_view what = "error metric");
const char* error_metric_name(ErrorMetric metric);

struct MeasureOptions {
  float percdamp = 0.12f;  // GPTQ damping, fraction of mean(diag H)
  ErrorMetric metric = ErrorMetric::kRow;
  // Rows to measure; empty = exllamav2's full table (attn_option_table / mlp_option_table).
  std::vector<AttnOptions> attn_table;
  std::vector<MlpOptions> mlp_table;
  // false: attention without the causal mask (ModuleForward::attention). Exists only to
  // reproduce exllamav2 0.3.2's recorded SmolLM2 measurement (fixtures/exl2), which was made
  // by such a forward (docs/quality.md); never for real conversions. CPU only.
  bool causal = true;
};

// The rows to measure as option lists: `given` (MeasureOptions::attn_table / mlp_table), or
// the full table when it is empty.
template <typename Row>
std::vector<std::vector<QuantOption>> table_rows(const std::vector<Row>& given,
                                                 const std::vector<Row>& full) {
  std::vector<std::vector<QuantOption>> t;
  for (const Row& r : given.empty() ? full : given) t.emplace_back(r.begin(), r.end());
  return t;
}

// A table's distinct options per column and each row's index among them: what the GPU engine
// quantizes once per column (every linear of it) and how each table row picks from that.
struct TablePicks {
  std::vector<std::vector<QuantOption>> distinct;  // [column][k]
  std::vector<std::vector<size_t>> pick;           // [table row][column]: index into distinct
  int64_t groups() const;                          // distinct options of all columns
};
// Throws exq::Error for a row without `columns` options.
TablePicks table_picks(const std::vector<std::vector<QuantOption>>& table, size_t columns);

struct MeasureTiming {
  double reference_s = 0;  // reference forward + Hessian accumulation
  double hessian_s = 0;    // of which: Hessian accumulation
  double prepare_s = 0;    // act-order, damping, Cholesky of H^-1
  double gptq_s = 0;       // all options of all linears
  double test_s = 0;       // forwards of every table row on every calibration row
  int gptq_runs = 0;       // distinct (linear, option) pairs quantized
  // CUDA engine: the host's waits for the device in the module (1 in the normal path), and
  // waits for a pinned staging buffer of the copy ring (engine stats: host_syncs,
  // staging_waits). 0 on the CPU.
  int host_syncs = 0;
  int staging_waits = 0;
};

struct ModuleResult {
  ModuleMeasurement measurement;  // key and one row per table row, in table order
  std::vector<double> errors;     // per table row: mean relative Frobenius error (1 - accuracy)
  Tensor target;                  // F32 [rows, T, hidden]: reference output (next module's input)
  MeasureTiming timing;
};

// states: F32 [rows, T, hidden], the module's input on every calibration row (T <=
// fwd.max_tokens()). `key` is the module's name in measurement.json, e.g.
// "model.layers.3.self_attn" / "model.layers.3.mlp". Throws exq::Error (naming the key) for
// NaN/Inf in the states or the outputs, or a Hessian that cannot be inverted.
ModuleResult measure_attention(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                               const std::string& key, const MeasureOptions& options = {});
ModuleResult measure_mlp(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                         const std::string& key, const MeasureOptions& options = {});

// A mixture-of-experts MLP block (key "model.layers.N.block_sparse_moe", exllamav2's): the
// MLP option table, each row's w1 / w3 / w2 option applied to every expert's gate / up / down;
// total_bits sums over the experts. gate and up of all experts share one Hessian (the normed
// states of all tokens), expert e's down has its own from the act rows of its tokens.
ModuleResult measure_moe(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                         const std::string& key, const MeasureOptions& options = {});
// Warns on stderr about experts that got under 10 % of the `total` calibration tokens (as
// exllamav2 does); tokens[e]: the tokens routed to expert e.
void warn_sparse_experts(const std::string& key, const std::vector<int64_t>& tokens, int64_t total);

// The quantization step for one module at one option per linear: the same reference pass and
// Hessians as the measurement, then GPTQ of each linear (packable layer + dequantized weight).
struct QuantizedLinear {
  std::string name;  // "q_proj", ... (MoE: the full tensor key)
  QuantOption option;
  GptqResult result;
};
struct QuantizedModule {
  std::vector<QuantizedLinear> linears;  // in table column order
  Tensor target;                         // F32 [rows, T, hidden]: reference output
  MeasureTiming timing;                  // test_s unused
};
QuantizedModule quantize_attention(ModuleForward& fwd, const LayerF32& layer,
                                   const TensorView& states, const std::string& key,
                                   const AttnOptions& options, float percdamp = 0.12f);
QuantizedModule quantize_mlp(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                             const std::string& key, const MlpOptions& options,
                             float percdamp = 0.12f);

// MoE: linears by expert (gate, up, down of expert 0, then 1, ...), named by their tensor keys
// (model::expert_key of layer `index`); options: w1, w3, w2.
QuantizedModule quantize_moe(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                             const TensorView& states, const std::string& key,
                             const MlpOptions& options, float percdamp = 0.12f);

// Relative Frobenius error ||a - b||_F / ||b||_F of two F32 tensors of the same size
// (accumulated in double); 0 when both are zero.
double relative_error(const TensorView& a, const TensorView& b);

// Error of one calibration row's output a [T, hidden] against the reference b under `metric`.
double output_error(const TensorView& a, const TensorView& b, ErrorMetric metric);

// Agreement of a measurement with a reference (e.g. exllamav2's) for the same table rows.
struct MeasureComparison {
  double mean_error = 0;      // mean over rows of 1 - accuracy, ours
  double ref_mean_error = 0;  // same for the reference
  double ratio = 0;           // mean_error / ref_mean_error
  double spearman = 0;        // rank correlation of the per-row errors
};
// Rows are matched by position; throws exq::Error when counts or options differ.
MeasureComparison compare_measurements(const ModuleMeasurement& ours,
                                       const ModuleMeasurement& ref);

// Spearman rank correlation (average ranks for ties); a.size() == b.size() >= 2.
double spearman(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace exq::quant
