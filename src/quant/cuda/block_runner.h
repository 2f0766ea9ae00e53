// One decoder module's forward on the device, split where the measurement reuses work:
//   xn = RMSNorm(x)                      (same for every candidate; f32 for the Hessian, fp16
//                                        rounded once per row for the GEMMs)
//   mid = prefix(xn)                     attention: q/k/v, rotary, causal GQA attention -> [T,
//   q_dim]
//                                        MLP: gate/up, SwiGLU or GeGLU -> [T, intermediate]
//   y = mid . w_last^T                   o_proj / down_proj, raw: the caller's output or error
//                                        kernel applies y_scale(), the bias and the residual
//                                        (gemma2 / 3: post_norm() first normalizes y in place)
// Same ops and order as quant::ModuleForward, with backend/cuda/matmul.h's precision: f16
// weights, activations rounded to f16 after a power-of-two row scale, f32 accumulation and
// outputs; the scale, bias and the next elementwise op are fused into one pass. Attention runs
// on tensor cores with fp16 q/k/v (flash_attention.h) or in f32 (backend/cuda/attention.h).
// Owns its scratch (sized for one row of T tokens); one stream, one thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/device_tensor.h"
#include "io/hf_config.h"

namespace exq::quant::cuda {

using exq::cuda::CachingAllocator;
using exq::cuda::DeviceTensor;
using exq::cuda::DeviceView;

struct BlockShape {
  bool attention = true;
  int64_t hidden = 0;
  int64_t mid = 0;  // input width of the last linear: q_dim (attention) or intermediate (MLP)
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t intermediate = 0;
  float eps = 0;
  float attn_scale = 0;  // the attention scores' scale (0: 1/sqrt(head_dim))
  float softcap = 0;     // gemma2: scores capped to softcap * tanh(s / softcap); 0: off
  bool gelu = false;     // MLP: gelu_tanh(gate) * up (gemma) instead of silu(gate) * up
  float residual_scale = 1;  // granite: the block's output times this before the residual add

  static BlockShape of(const io::ModelConfig& config, bool attention);
  // [out, in] of each linear in table order (q, k, v, o or gate, up, down).
  std::vector<std::pair<int64_t, int64_t>> linear_dims() const;
  // Device bytes of BlockRunner's scratch for rows of `tokens` tokens (allocator-rounded), plus
  // the transient buffers of a Hessian update on such a row.
  size_t scratch_bytes(int64_t tokens) const;
};

class BlockRunner {
 public:
  // rope_cos, rope_sin: device [max_tokens, head_dim / 2] F32 (attention only; gemma3's
  // sliding-window layers get the local table).
  BlockRunner(const BlockShape& shape, DeviceView rope_cos, DeviceView rope_sin,
              CachingAllocator& allocator, cudaStream_t stream, exq::cuda::CublasHandle& cublas);

  const BlockShape& shape() const { return shape_; }
  // Allocates the scratch for rows of `tokens` tokens (no-op when already sized so).
  void reserve(int64_t tokens);
  void release();

  // xn() = RMSNorm(x) * norm; x: F32 [T, hidden].
  void norm(const DeviceView& x, const DeviceView& norm_weight);
  // mid() from xn(): w, bias one view per prefix linear (F16 [out, in]; bias F32 [out] or
  // empty). fast: attention on tensor cores where the head size allows. keep_mid: mid() in f32
  // is needed (the Hessian's input); attention always has it.
  void prefix(std::span<const DeviceView> w, std::span<const DeviceView> bias, bool fast,
              bool keep_mid);
  // y() = mid() . w^T, before y_scale(): w F16 [hidden, mid].
  void last(const DeviceView& w);
  // gemma2 / 3: y() = RMSNorm(y() * y_scale() + bias) * weight in place, after last(); the
  // output kernels then take y() with no row scale and no bias. bias F32 [hidden] or null.
  void post_norm(const DeviceView& weight, const float* bias);
  // granite: y() = (y() * y_scale() + bias) * residual_scale in place, after last() (or after
  // post_norm(), bias then null, y_scale not applied again); the output kernels then take y()
  // with no row scale and no bias.
  void scale_output(const float* bias, bool scaled_rows);
  // qwen3: each head of q and k is RMS-normed by these F32 [head_dim] weights before rotary
  // (the views must outlive the runs; empty views turn it off).
  void set_qk_norm(DeviceView q_norm, DeviceView k_norm);

  DeviceView xn() const;         // F32 [T, hidden]
  DeviceView mid() const;        // F32 [T, mid] (when kept)
  DeviceView y() const;          // F32 [T, hidden], raw
  const float* y_scale() const;  // [T]: y's row scales

 private:
  // raw[T, out] = x16 . w^T (cuBLAS, f16 inputs, f32 accumulation and output).
  void gemm(const DeviceTensor& x16, const DeviceView& w, const DeviceTensor& raw);
  void attention_prefix(std::span<const DeviceView> w, std::span<const DeviceView> bias, bool fast);
  void mlp_prefix(std::span<const DeviceView> w, std::span<const DeviceView> bias, bool keep_mid);
  bool flash() const;
  // head_dim 96 / 256 (Phi-3 mini, Gemma 2 / 3): the runtime's tensor-core prefill over f16 caches
  // kc16_ / vc16_.
  bool wide() const;

  BlockShape shape_;
  DeviceView cos_, sin_;
  DeviceView q_norm_, k_norm_;
  CachingAllocator* alloc_;
  cudaStream_t stream_;
  exq::cuda::CublasHandle* cublas_;
  int64_t tokens_ = 0;
  DeviceTensor xn_;         // [T, hidden]
  DeviceTensor xn16_;       // F16 [T, hidden], row-scaled
  DeviceTensor xn_scale_;   // [T]
  DeviceTensor q_, k_, v_;  // attention: raw GEMM outputs [T, heads|kv_heads, head_dim]
  DeviceTensor kc_, vc_;    // attention, f32 path: caches [kv_heads, T, head_dim]
  DeviceTensor q16_;        // attention, fast path: F16 [heads, T, head_dim], pre-scaled
  DeviceTensor k16_, v16_;  // attention, fast path: F16 [kv_heads, T, head_dim]
  DeviceTensor kc16_, vc16_;  // attention, wide path: F16 caches [kv_heads, T, head_dim]
  DeviceTensor mid_;        // [T, mid]: attention output / gate raw, then silu(gate) * up
  DeviceTensor up_;         // MLP: [T, intermediate] up raw
  DeviceTensor mid16_;      // F16 [T, mid], row-scaled
  DeviceTensor mid_scale_;  // [T]
  DeviceTensor y_;          // [T, hidden] raw
};

}  // namespace exq::quant::cuda
