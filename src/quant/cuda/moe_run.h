// One mixture-of-experts block on the GPU for the CUDA engine (cuda_engine.cpp drives it; the
// semantics of quant::measure_moe / quantize_moe_step on the CPU):
//  1. reference(): RMSNorm and the f32 router GEMM of every calibration row, one download of
//     all router logits, the routes on the host (model::route_tokens, the CPU's rule), then
//     the forward of every row: per expert its tokens gathered, gate / up (fp16 GEMMs, f32
//     accumulation), SwiGLU, down, added back at their tokens times their weights in expert
//     order, + the residual. Hessians: the normed states of all tokens (every expert's gate
//     and up), each expert's act rows (its down). The routes are the same for every later
//     forward of the block (the inputs and the fp16 router do not change), so they are kept.
//  2. gptq(): per expert, GPTQ of gate / up / down under their column's options (batched over
//     the options, gptq_cuda.h). An expert that got no token is quantized against the identity
//     Hessian (round to nearest, as the CPU engine does).
//  3. test_table() (measure) or forward_quantized() (quantize), or forward() (resume replay:
//     the reference forward's kernels with the given weights, so bit for bit its target, or
//     with the dequantized results forward_quantized()'s output).
// Correctness first: the states, targets, every expert's fp16 weights and Hessians and the
// GPTQ results stay on the device for the block (no streaming through the VRAM budget: the
// allocator throws when the block does not fit), and the host waits once for the routes, for
// the reference's status, once per factorization attempt (and per option batch of the packed
// downloads) and at the end.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "quant/cuda/engine_context.h"
#include "quant/cuda/gptq_cuda.h"
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
  // states: host F32 [rows, T, hidden]. hessians: accumulate the Hessians in reference().
  MoeRun(EngineContext& ctx, const MoeSpec& spec, const TensorView& states, bool hessians, float percdamp);
  ~MoeRun();
  MoeRun(const MoeRun&) = delete;
  MoeRun& operator=(const MoeRun&) = delete;

  // Throws exq::Error for NaN/Inf in the states or the reference output.
  void reference();
  Tensor target_to_host() const;
  // Tokens routed to each expert over all rows, and all tokens (after reference()).
  std::vector<int64_t> expert_tokens() const;
  int64_t tokens() const { return rows_ * tokens_; }

  // options[c]: the distinct options of column c (gate, up, down), applied to every expert.
  void gptq(const std::vector<std::vector<QuantOption>>& options, bool want_packed);
  std::vector<DeviceGptqResult>& results(int64_t expert, int column) {
    return results_[static_cast<size_t>(expert)][static_cast<size_t>(column)];
  }
  // pick[i][c]: index into options[c] for table row i. Per table row: mean over calibration
  // rows of the row's error under `metric`.
  std::vector<double> test_table(const std::vector<std::vector<size_t>>& pick, ErrorMetric metric);
  // The block with results(e, c)[0] on every row: output F32 [rows, T, hidden] (host) and
  // ||y_q - y||_F / ||y||_F over all rows.
  double forward_quantized(const TensorView& output);
  // Forward only: the block with the spec's weights (reference() first, without Hessians).
  void forward(const TensorView& output);

  MeasureTiming timing;

 private:
  using WeightOf = std::vector<std::array<exq::cuda::DeviceView, 3>>;
  void route();
  // acc_ = the block's expert sum for row r (no residual) with weights w; Hessians when asked.
  void expert_sum(int64_t r, const WeightOf& w, bool hessians);
  // target_ = x_ + the block's output with weights w, every row (status counted in counters_).
  void block_rows(const WeightOf& w, bool hessians);
  void gemm(const exq::cuda::DeviceView& x16, int64_t rows, const exq::cuda::DeviceView& w,
            const exq::cuda::DeviceView& out);
  WeightOf original_weights() const;
  WeightOf result_weights(const std::vector<std::vector<size_t>>& pick, size_t table_row) const;
  // Downloads the counters (one wait) and throws for non-finite inputs (and outputs).
  void check_counters(const char* what, bool outputs);

  EngineContext& ctx_;
  const MoeSpec& spec_;
  TensorView states_;
  int64_t rows_, tokens_, hidden_, experts_, k_, inter_;
  float percdamp_;
  bool hessians_;
  GptqContext gptq_ctx_;
  DeviceTensor norm_, router_;
  std::vector<std::array<DeviceTensor, 3>> w16_;  // F16 copies of the expert weights
  DeviceTensor x_, target_;                       // F32 [rows, T, hidden]
  // Routes of every row: per row T * k slots grouped by expert (expert order, token order
  // within), token ids and weights; first_ / count_ [rows][experts] on the host.
  DeviceTensor route_token_, route_weight_;
  std::vector<std::vector<int64_t>> first_, count_;
  // Scratch for one row.
  DeviceTensor xn_, logits_, xg_, xg16_, xs_, graw_, uraw_, act16_, as_, yraw_, acc_;
  DeviceTensor counters_;  // U8 [16]: uint64 non-finite outputs [0], inputs [1]
  std::vector<std::unique_ptr<DeviceHessian>> hess_;  // [0]: gate / up; [1 + e]: expert e's down
  std::vector<std::array<std::vector<DeviceGptqResult>, 3>> results_;
};

}  // namespace exq::quant::cuda
