// One module's work for the CUDA engine (cuda_engine.cpp drives it; same semantics as
// quant/measure.cpp and quant/quantize.cpp on the CPU):
//  1. reference(): 16-bit device copies of the weights, the forward of every calibration row
//     with the original weights (the target), and the Hessians of the linears' inputs
//     (DeviceHessian: q/k/v or gate/up share one, o / down have their own).
//  2. gptq(): act-order + Cholesky of each Hessian, then every linear GPTQ-quantized under all
//     its options in one batched call; the results (fp16 weights on the device) replace the
//     originals. Nothing waits: the factorizations are not checked (prepare_hessian_async) and
//     their status comes back with the module's one download; the quantization pass's packed
//     results are copied to pinned memory (ctx.packed) and read after that wait (take_packed).
//     Not with EXQ_GPTQ_IMPL=v1 or groups over v2's block in the quantization pass: those wait
//     as before (reference status, each factorization, the packed codes).
//  3. test_table() (measure): every row of the option table on every calibration row. Table
//     rows that share the options of all linears but the last (q/k/v, gate/up) share the
//     attention output / activation, so the prefix runs once per distinct combination and only
//     o / down per table row. Errors are reduced on the device in double in a fixed order and
//     read back once. Or forward_quantized() (quantize): the module with the quantized weights
//     on every row, its output downloaded and the rfn error.
// Host waits: one per module, at its end (the one download of errors or rfn sums and status:
// NaN/Inf counters, factorization status), in the normal measurement and quantization paths.
// More where states stream (!plan().resident: the reference targets are read back from the
// host before the tests), after a failed factorization (the checked rerun) and in the
// quantization pass's checked path above. EngineContext::host_syncs counts them.
// Or, forward only (resume replay, ForwardOnly constructor): forward() runs the module with the
// given weights through exactly the reference pass's kernels, so with the layer's own weights it
// reproduces reference()'s target and with the dequantized GPTQ results (the same fp16 values)
// forward_quantized()'s output, bit for bit.
// The calibration states live in a RowStore sized by the VRAM plan (engine_plan.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "quant/cuda/block_runner.h"
#include "quant/cuda/engine_context.h"
#include "quant/cuda/engine_plan.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/row_store.h"
#include "quant/measure.h"
#include "quant/options.h"

namespace exq::quant::cuda {

// Host views the caller keeps alive for the run (contiguous F32, checked by the caller).
struct LinearSpec {
  std::string_view name;  // "q_proj", ...
  TensorView weight;      // host F32 [out, in]
  TensorView bias;        // host F32 [out], or an empty view
  int hessian;            // 0: reads RMSNorm(x); 1: reads the prefix output (o / down)
};

struct BlockSpec {
  BlockShape shape;
  TensorView norm;                  // host F32 [hidden]
  std::vector<LinearSpec> linears;  // table order; the last one is o_proj / down_proj
  TensorView q_norm, k_norm;        // qwen3 attention: host F32 [head_dim], else empty
  TensorView post_norm;             // gemma2 / 3: host F32 [hidden] for the last linear's output
  bool local_rope = false;          // gemma3 attention: rotary with the local table
};

struct ForwardOnly {};

class ModuleRun {
 public:
  // states: host F32 [rows, T, hidden] (checked by the caller). For the VRAM plan:
  // results_per_linear (GPTQ results each linear keeps), table_rows (rows test_table() gets),
  // with_output (forward_quantized() will be used).
  ModuleRun(EngineContext& ctx, const BlockSpec& spec, const TensorView& states,
            const std::vector<int64_t>& results_per_linear, int64_t table_rows, bool with_output,
            float percdamp);
  // Forward only: weights and states, no Hessians or GPTQ in the VRAM plan.
  ModuleRun(EngineContext& ctx, const BlockSpec& spec, const TensorView& states, ForwardOnly);
  ~ModuleRun();
  ModuleRun(const ModuleRun&) = delete;
  ModuleRun& operator=(const ModuleRun&) = delete;

  const VramPlan& plan() const { return plan_; }

  // How gptq() prepares Hessian g (0: the linears' input, 1: o_proj / down_proj's): steps[g]
  // damping steps in the first attempt (1 normally); checked: prepare_hessian, which waits
  // after every attempt and retries with more damping, else one attempt without a wait whose
  // status test_table() / forward_quantized() read (failed_factorizations()). fail_first
  // (tests): bit g marks Hessian g's unchecked attempt as failed. want_packed checks when
  // reserve_packed() gives false.
  struct Damping {
    bool checked = false;
    std::array<int, 2> steps = {1, 1};
    unsigned fail_first = 0;
  };
  void set_damping(const Damping& d) { damping_ = d; }
  // After test_table() / forward_quantized(): bit g set when Hessian g's unchecked
  // factorization failed. The results (packed ones too) are then not valid: run the module
  // again with checked damping, one step more there.
  unsigned failed_factorizations() const { return failed_; }

  // The quantization pass: whether gptq(options, true) defers the packed results (GPTQ v2
  // batches every option), reserving their pinned buffers then. Call it before reference():
  // a buffer that must grow is freed first, which waits for the device (not counted).
  bool reserve_packed(const std::vector<std::vector<QuantOption>>& options);

  // host_target: F32 [rows, T, hidden] that receives the reference output, or null (kept on
  // the device when resident, else in an internal host copy). Throws exq::Error for NaN/Inf in
  // the states or the reference output: from test_table() / forward_quantized() (the counts
  // come with their download), from gptq() in the quantization pass's checked path.
  void reference(Tensor* host_target);
  // options[c]: the distinct options of linear c.
  void gptq(const std::vector<std::vector<QuantOption>>& options, bool want_packed);
  // In host-candidate mode (plan().host_candidates) the results' weights are empty: they live
  // in pinned host memory until test_table() / forward_quantized() bring them back. Deferred
  // packed results: `layer` is complete after take_packed(layer, packed), once the module's
  // wait is over and no factorization failed.
  std::vector<DeviceGptqResult>& results(size_t linear) { return results_[linear]; }
  // pick[i][c]: index into options[c] for table row i. Per table row: mean over calibration
  // rows of the row's error under `metric` (measure.h; kRow: ||y_q - y||_F / ||y||_F).
  std::vector<double> test_table(const std::vector<std::vector<size_t>>& pick,
                                 ErrorMetric metric = ErrorMetric::kRow);
  // The module with results(c)[0] for every linear on every row: output F32 [rows, T, hidden]
  // (allocated by the caller) and ||y_q - y||_F / ||y||_F over all rows.
  double forward_quantized(Tensor& output);
  // Forward-only runs: output = the module with the spec's weights on every row, F32
  // [rows, T, hidden] (any host memory, not aliasing the states). Throws exq::Error for NaN/Inf
  // in the states; non-finite outputs are the caller's to check.
  void forward(const TensorView& output);

  // Phase times from events, read at the module's wait (finish()): reference_s, hessian_s,
  // prepare_s, gptq_s, test_s (test_table() or forward_quantized()), gptq_runs.
  MeasureTiming timing;
  // gptq(want_packed), checked path: host seconds of the packed results' copies to host memory
  // (after the wait for the device: GptqContext::packed_download_s), part of timing.gptq_s.
  double packed_download_s = 0;

 private:
  struct DeviceLinear {
    DeviceTensor w16;   // F16 [out, in]: the matmul copy
    DeviceTensor w32;   // F32 [out, in], only when the weight is not exact in F16 (GPTQ input)
    DeviceTensor bias;  // F32 [out] or empty
  };
  DeviceTensor upload_f32(const TensorView& host, bool* f16_exact);
  // keep_f32: keep an F32 copy of weights not exact in fp16 (GPTQ's input).
  void upload_weights(bool keep_f32);
  ModuleFootprint footprint() const;  // weights, scratch and rows; no GPTQ phases
  VramPlan make_plan(const std::vector<int64_t>& results_per_linear, int64_t table_rows,
                     bool with_output) const;
  // Around a forward pass over the rows: buffers ready and NaN/Inf counters zeroed before;
  // after, the counters are copied into status_ (no wait).
  void begin_rows();
  void finish_rows();
  // The module's one download and wait (EngineContext::finish_module): `sums` (optional) and
  // status_; throws exq::Error for NaN/Inf inputs (and outputs with check_outputs), sets
  // failed_ and the timings. Returns the sums.
  std::vector<double> finish(const DeviceTensor* sums, const char* why, bool check_outputs);
  void check_status(const char* status, bool check_outputs);
  int* factor_status(int g) const;
  // The output kernels' inputs after the last linear: y with its row scale and bias, or with
  // neither once the post norm (gemma2 / 3) or the residual multiplier (granite) has taken them.
  struct LastOut {
    const float* y;
    const float* y_scale;
    const float* bias;
  };
  LastOut last(const DeviceView& w_last, const float* bias_last);
  // The reference pass's per-row forward: t = module(x) with weights w (prefix) and w_last.
  void forward_row(const DeviceView& x, const DeviceView& t, std::span<const DeviceView> w,
                   std::span<const DeviceView> bias, const DeviceView& w_last,
                   unsigned long long* counter);
  void weight_views(std::vector<DeviceView>& w, std::vector<DeviceView>& bias,
                    DeviceView& w_last) const;
  // Stages, runs and releases every calibration row in order, prefetching the next ones.
  template <typename Body, typename After>
  void for_each_row(const Tensor* host_target, bool writes_target, Body&& body, After&& after);
  DeviceView last_bias() const { return weights_.back().bias.view(); }
  // test_table() with the GPTQ results in host memory: chunks of table rows whose candidates
  // fit the device cache, every calibration row per chunk; same kernels and sums per entry.
  std::vector<double> test_table_host(const std::vector<std::vector<size_t>>& pick,
                                      ErrorMetric metric);
  DeviceView result_view(size_t linear, const DeviceTensor& buffer) const;

  EngineContext& ctx_;
  const BlockSpec& spec_;
  TensorView states_;
  int64_t tokens_, hidden_;
  float percdamp_;
  GptqContext gptq_ctx_;
  BlockRunner runner_;
  DeviceTensor norm_;
  DeviceTensor q_norm_, k_norm_;  // qwen3 attention, else empty
  DeviceTensor post_norm_;        // gemma2 / 3, else empty
  std::vector<DeviceLinear> weights_;
  std::unique_ptr<DeviceHessian> hessians_[2];
  std::vector<std::vector<DeviceGptqResult>> results_;
  std::vector<std::vector<void*>> host_results_;  // host-candidate mode: in ctx_.pinned
  std::vector<size_t> packed_base_;  // reserve_packed(): linear c's first ctx_.packed buffer
  VramPlan plan_;
  std::unique_ptr<RowStore> rows_;
  Tensor own_target_;                    // reference output when neither resident nor the caller's
  const Tensor* target_host_ = nullptr;  // where phase 3 re-reads targets from (non-resident)
  memory::cuda::SpanRecorder hessian_spans_;
  // U8 [16 + 2 * 4 * kPrepareStatusInts]: the reference pass's uint64 counts of non-finite
  // outputs and inputs, then each Hessian's factorization status (int32, 0 = valid).
  DeviceTensor status_;
  Damping damping_;
  unsigned failed_ = 0;
  // Phase timings from events, read after the module's wait.
  exq::cuda::Event reference_begin_{true}, reference_end_{true}, test_begin_{true},
      test_end_{true};
  bool referenced_ = false, tested_ = false;
  memory::cuda::SpanRecorder prepare_spans_, gptq_spans_;
};

}  // namespace exq::quant::cuda
