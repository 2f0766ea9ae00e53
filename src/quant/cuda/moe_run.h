// One mixture-of-experts block on the GPU for the CUDA engine (cuda_engine.cpp drives it; the
// semantics of quant::measure_moe / quantize_moe_step on the CPU), within the VRAM budget
// (moe_plan.h):
//  1. reference_gptq(): RMSNorm and the f32 router GEMM of every calibration row (the gate / up
//     Hessian from the normed rows), one download of all router logits, the routes on the host
//     (model::route_tokens, the CPU's rule). Then expert by expert: its fp16 weights uploaded,
//     its tokens of every row gathered through gate / up (fp16 GEMMs, f32 accumulation), SwiGLU
//     (its down Hessian from the act rows) and down, added at their tokens times their weights
//     into the rows' sums; then GPTQ of its gate / up / down under their column's options
//     (batched over the options, gptq_cuda.h), against the identity Hessian (round to nearest,
//     as the CPU engine) when no token reached it, and its Hessian freed. Per token the experts
//     are added in expert order, as the CPU does; + the residual at the end. The routes hold
//     for every later forward of the block (the inputs and the fp16 router do not change).
//  2. test_table() (measure) or forward_quantized() (quantize): per row the whole block for each
//     table row's results. forward() (resume replay): step 1's forward alone with the given
//     weights, bit for bit its target, or with the dequantized results forward_quantized()'s
//     output (both add the same GEMM outputs per token in the same order).
// The states stay on the device; GPTQ results too when they fit, else in pinned host memory,
// loaded a group at a time (moe_plan.h) for chunks of table rows. Results do not depend on the
// plan. The host waits once for the routes, once per factorization attempt (and per option batch
// of the packed downloads) and at the end.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "memory/cuda/span_recorder.h"
#include "quant/cuda/engine_context.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/moe_plan.h"
#include "quant/measure.h"
#include "quant/options.h"

namespace exq::quant::cuda {

// Host views the caller keeps alive for the run: contiguous F32.
struct MoeSpec {
  TensorView norm;                               // [hidden]
  TensorView router;                             // [num_experts, hidden]
  std::vector<std::array<TensorView, 3>> experts;  // gate [ei, hidden], up [ei, hidden], down [hidden, ei]
};

class MoeRun {
 public:
  // states: host F32 [rows, T, hidden]. groups: the option groups (distinct options of the three
  // columns) reference_gptq() will get, 0 for forward(); they size the plan. Throws exq::Error
  // when the block does not fit the budget.
  MoeRun(EngineContext& ctx, const MoeSpec& spec, const TensorView& states, int64_t groups, float percdamp);
  ~MoeRun();
  MoeRun(const MoeRun&) = delete;
  MoeRun& operator=(const MoeRun&) = delete;

  // options[c]: the distinct options of column c (gate, up, down), applied to every expert.
  // Throws exq::Error for NaN/Inf in the states or the reference output.
  void reference_gptq(const std::vector<std::vector<QuantOption>>& options, bool want_packed);
  Tensor target_to_host() const;
  // Tokens routed to each expert over all rows, and all tokens (after the routes).
  std::vector<int64_t> expert_tokens() const;
  int64_t tokens() const { return rows_ * tokens_; }
  const MoePlan& plan() const { return plan_; }
  size_t group_uploads() const { return group_uploads_; }

  std::vector<DeviceGptqResult>& results(int64_t expert, int column) {
    return results_[static_cast<size_t>(expert)][static_cast<size_t>(column)];
  }
  // pick[i][c]: index into options[c] for table row i. Per table row: mean over calibration
  // rows of the row's error under `metric`.
  std::vector<double> test_table(const std::vector<std::vector<size_t>>& pick, ErrorMetric metric);
  // The block with results(e, c)[0] on every row: output F32 [rows, T, hidden] (host) and
  // ||y_q - y||_F / ||y||_F over all rows.
  double forward_quantized(const TensorView& output);
  // Forward only (groups 0): the block with the spec's weights.
  void forward(const TensorView& output);

  MeasureTiming timing;

 private:
  using Views = std::array<exq::cuda::DeviceView, 3>;  // an expert's gate, up, down
  using WeightOf = std::vector<Views>;
  void route(bool hessian);
  // xn_ = RMSNorm of calibration row r (the same kernel on every path, so the same bits).
  void norm_row(int64_t r);
  // Expert e's tokens of row r (xn_ holds the row normed): its output times the routing
  // weights added into out (the row's [T, hidden] sums); its down Hessian when h.
  void expert_rows(int64_t r, int64_t e, const Views& w, DeviceHessian* h, float* out);
  // acc_ = the block's expert sum for row r (no residual) with weights w.
  void expert_sum(int64_t r, const WeightOf& w);
  // target_ = x_ + the block's output with the spec's weights, expert by expert; GPTQ of each
  // expert after its pass when options is not null.
  void run_experts(const std::vector<std::vector<QuantOption>>* options, bool want_packed);
  void gptq_expert(int64_t e, const std::vector<std::vector<QuantOption>>& options, bool want_packed,
                   std::unique_ptr<DeviceHessian> down);
  DevicePreparedHessian prepared(DeviceHessian* h, int64_t in);
  void gemm(const exq::cuda::DeviceView& x16, int64_t rows, const exq::cuda::DeviceView& w,
            const exq::cuda::DeviceView& out);
  // Every expert's result (c, picks[c]); host plan: their groups loaded into the cache first
  // (ensure_groups).
  WeightOf result_weights(const std::vector<size_t>& picks);
  void ensure_groups(const std::vector<std::vector<size_t>>& pick, const std::vector<size_t>& rows);
  // Downloads the counters (one wait) and throws for non-finite inputs (and outputs).
  void check_counters(const char* what, bool outputs);

  EngineContext& ctx_;
  const MoeSpec& spec_;
  TensorView states_;
  int64_t rows_, tokens_, hidden_, experts_, k_, inter_;
  float percdamp_;
  MoePlan plan_;
  GptqContext gptq_ctx_;
  DeviceTensor norm_, router_;
  DeviceTensor x_, target_;  // F32 [rows, T, hidden]; target_ holds the expert sums until the end
  // Routes of every row: per row T * k slots grouped by expert (expert order, token order
  // within), token ids and weights; first_ / count_ [rows][experts] on the host.
  DeviceTensor route_token_, route_weight_;
  std::vector<std::vector<int64_t>> first_, count_;
  // Scratch for one row.
  DeviceTensor xn_, logits_, xg_, xg16_, xs_, graw_, uraw_, act16_, as_, yraw_, acc_;
  DeviceTensor counters_;  // U8 [16]: uint64 non-finite outputs [0], inputs [1]
  std::unique_ptr<DeviceHessian> gate_hessian_;
  std::optional<DevicePreparedHessian> gate_prepared_;
  std::vector<std::array<std::vector<DeviceGptqResult>, 3>> results_;
  // Host plan: results_[e][c][k].weight is empty, its bytes at host_[e][c][k] (ctx_.pinned);
  // cache_[s] holds group cache_key_[s] = (column, option) of every expert.
  std::vector<std::array<std::vector<void*>, 3>> host_;
  std::vector<DeviceTensor> cache_;
  std::vector<std::pair<size_t, size_t>> cache_key_;
  size_t group_uploads_ = 0;
  size_t pinned_next_ = 0;
  // GPU time of the phases (read into `timing` after the final wait).
  memory::cuda::SpanRecorder pass_spans_, prepare_spans_, gptq_spans_, test_spans_;
  void read_timing();
};

}  // namespace exq::quant::cuda
