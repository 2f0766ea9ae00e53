#include "quant/cuda/block_runner.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_cache.h"
#include "backend/cuda/norm.h"
#include "backend/cuda/rotary.h"
#include "core/error.h"
#include "quant/cuda/engine_kernels.h"
#include "quant/cuda/flash_attention.h"

namespace exq::quant::cuda {
namespace {

size_t rounded(size_t bytes) { return CachingAllocator::round_size(bytes); }
size_t f32_bytes(int64_t a, int64_t b) {
  return static_cast<size_t>(a) * static_cast<size_t>(b) * 4;
}
float* f32(const DeviceTensor& t) { return static_cast<float*>(t.raw()); }
__half* f16(const DeviceTensor& t) { return static_cast<__half*>(t.raw()); }
const float* or_null(const DeviceView& v) { return v.empty() ? nullptr : v.data<float>(); }
constexpr float kLog2e = 1.4426950408889634f;  // the flash kernel's softmax works in base 2
// Head dims the converter's own flash kernel lacks and the runtime's tensor-core prefill takes
// (Phi-3 mini's 96, Gemma's 256): BlockRunner::wide, sized by scratch_bytes without a device.
bool wide_head_dim(int64_t head_dim) { return head_dim == 96 || head_dim == 256; }

}  // namespace

BlockShape BlockShape::of(const io::ModelConfig& c, bool attention) {
  BlockShape s;
  s.attention = attention;
  s.hidden = c.hidden_size;
  s.heads = c.num_attention_heads;
  s.kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.intermediate = c.intermediate_size;
  s.mid = attention ? c.q_dim() : c.intermediate_size;
  s.eps = static_cast<float>(c.rms_norm_eps);
  s.attn_scale = static_cast<float>(c.attention_scale());
  s.softcap = static_cast<float>(c.attn_softcap);
  s.gelu = c.activation == io::Activation::GeluTanh;
  s.residual_scale = static_cast<float>(c.residual_multiplier);
  return s;
}

std::vector<std::pair<int64_t, int64_t>> BlockShape::linear_dims() const {
  if (attention) {
    const int64_t q = heads * head_dim, kv = kv_heads * head_dim;
    return {{q, hidden}, {kv, hidden}, {kv, hidden}, {hidden, q}};
  }
  return {{intermediate, hidden}, {intermediate, hidden}, {hidden, intermediate}};
}

size_t BlockShape::scratch_bytes(int64_t tokens) const {
  const int64_t T = tokens;
  // xn, y, mid in f32; xn16, mid16; row scales
  size_t bytes = 2 * rounded(f32_bytes(T, hidden)) + rounded(f32_bytes(T, mid)) +
                 rounded(f32_bytes(T, hidden) / 2) + rounded(f32_bytes(T, mid) / 2) +
                 2 * rounded(f32_bytes(T, 1));
  if (attention) {
    const int64_t kv = kv_heads * head_dim;
    bytes += rounded(f32_bytes(T, heads * head_dim)) + 4 * rounded(f32_bytes(T, kv));
    if (flash_attention_supports(static_cast<int>(head_dim)))
      bytes += rounded(f32_bytes(T, heads * head_dim) / 2) + 2 * rounded(f32_bytes(T, kv) / 2);
    else if (wide_head_dim(head_dim))  // BlockRunner::wide's f16 caches, where the device takes that kernel
      bytes += 2 * rounded(f32_bytes(T, kv) / 2);
  } else {
    bytes += rounded(f32_bytes(T, intermediate));  // up
  }
  bytes += 2 * rounded(f32_bytes(T, std::max(hidden, mid)));  // DeviceHessian::add_batch split
  return bytes;
}

BlockRunner::BlockRunner(const BlockShape& shape, DeviceView rope_cos, DeviceView rope_sin,
                         CachingAllocator& allocator, cudaStream_t stream,
                         exq::cuda::CublasHandle& cublas)
    : shape_(shape),
      cos_(rope_cos),
      sin_(rope_sin),
      alloc_(&allocator),
      stream_(stream),
      cublas_(&cublas) {}

bool BlockRunner::flash() const {
  return shape_.heads % shape_.kv_heads == 0 &&
         flash_attention_supports(static_cast<int>(shape_.head_dim));
}

bool BlockRunner::wide() const {
  return wide_head_dim(shape_.head_dim) && shape_.heads % shape_.kv_heads == 0 &&
         !exq::cuda::attention_prefill_generic_forced() &&
         exq::cuda::attention_prefill_fast_supports(DType::F16, shape_.head_dim);
}

void BlockRunner::reserve(int64_t tokens) {
  if (tokens == tokens_) return;
  release();
  const int64_t T = tokens, H = shape_.heads, KVH = shape_.kv_heads, D = shape_.head_dim;
  auto make = [&](DType dtype, Shape s) {
    return DeviceTensor(dtype, std::move(s), *alloc_, stream_);
  };
  xn_ = make(DType::F32, {T, shape_.hidden});
  xn16_ = make(DType::F16, {T, shape_.hidden});
  xn_scale_ = make(DType::F32, {T});
  mid_ = make(DType::F32, {T, shape_.mid});
  mid16_ = make(DType::F16, {T, shape_.mid});
  mid_scale_ = make(DType::F32, {T});
  y_ = make(DType::F32, {T, shape_.hidden});
  if (shape_.attention) {
    q_ = make(DType::F32, {T, H, D});
    k_ = make(DType::F32, {T, KVH, D});
    v_ = make(DType::F32, {T, KVH, D});
    kc_ = make(DType::F32, {KVH, T, D});
    vc_ = make(DType::F32, {KVH, T, D});
    if (flash()) {
      q16_ = make(DType::F16, {H, T, D});
      k16_ = make(DType::F16, {KVH, T, D});
      v16_ = make(DType::F16, {KVH, T, D});
    } else if (wide()) {
      kc16_ = make(DType::F16, {KVH, T, D});
      vc16_ = make(DType::F16, {KVH, T, D});
    }
  } else {
    up_ = make(DType::F32, {T, shape_.intermediate});
  }
  tokens_ = T;
}

void BlockRunner::release() {
  for (DeviceTensor* t : {&xn_, &xn16_, &xn_scale_, &q_, &k_, &v_, &kc_, &vc_, &q16_, &k16_, &v16_, &kc16_,
                          &vc16_, &mid_, &up_, &mid16_, &mid_scale_, &y_})
    *t = DeviceTensor();
  tokens_ = 0;
}

DeviceView BlockRunner::xn() const { return xn_.view(); }
DeviceView BlockRunner::mid() const { return mid_.view(); }
DeviceView BlockRunner::y() const { return y_.view(); }
const float* BlockRunner::y_scale() const { return f32(mid_scale_); }

void BlockRunner::gemm(const DeviceTensor& x16, const DeviceView& w, const DeviceTensor& raw) {
  const int64_t rows = x16.shape()[0], k = x16.shape()[1];
  w.expect(DType::F16, {raw.numel() / rows, k}, "block weight");
  const int n = static_cast<int>(raw.numel() / rows);
  cublas_->set_stream(stream_);
  // Row-major raw[rows, n] = x16[rows, k] w[n, k]^T, as backend/cuda/matmul.cu calls it.
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(cublas_->get(), CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(rows),
                            static_cast<int>(k), &alpha, w.raw(), CUDA_R_16F, static_cast<int>(k),
                            x16.raw(), CUDA_R_16F, static_cast<int>(k), &beta, raw.raw(),
                            CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void BlockRunner::norm(const DeviceView& x, const DeviceView& norm_weight) {
  EXQ_ASSERT(tokens_ > 0);
  x.expect(DType::F32, {tokens_, shape_.hidden}, "block input");
  exq::cuda::rmsnorm(x, norm_weight, xn_.view(), shape_.eps, stream_);
  scale_round_rows_cuda(f32(xn_), f16(xn16_), f32(xn_scale_), static_cast<int>(tokens_),
                        static_cast<int>(shape_.hidden), stream_);
}

void BlockRunner::prefix(std::span<const DeviceView> w, std::span<const DeviceView> bias, bool fast,
                         bool keep_mid) {
  if (shape_.attention)
    attention_prefix(w, bias, fast);
  else
    mlp_prefix(w, bias, keep_mid);
}

void BlockRunner::set_qk_norm(DeviceView q_norm, DeviceView k_norm) {
  q_norm_ = q_norm;
  k_norm_ = k_norm;
}

void BlockRunner::attention_prefix(std::span<const DeviceView> w, std::span<const DeviceView> bias,
                                   bool fast) {
  EXQ_ASSERT(w.size() == 3 && bias.size() == 3);
  const int T = static_cast<int>(tokens_), H = static_cast<int>(shape_.heads);
  const int KVH = static_cast<int>(shape_.kv_heads), D = static_cast<int>(shape_.head_dim);
  gemm(xn16_, w[0], q_);
  gemm(xn16_, w[1], k_);
  gemm(xn16_, w[2], v_);
  const float* s = f32(xn_scale_);
  const auto scale = shape_.attn_scale > 0.0f
                         ? shape_.attn_scale
                         : static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const bool flash_path = fast && flash();
  // q and k take their row scale and bias in f32 here when something reads them before rotary
  // (qwen3's per-head RMSNorm) or when the exact path rotates them in f32; else the flash path's
  // heads kernel applies both.
  const bool qk_norm = !q_norm_.empty();
  const bool qk_scaled = qk_norm || !flash_path;
  if (qk_scaled) {
    scale_bias_cuda(f32(q_), s, or_null(bias[0]), f32(q_), T, H * D, stream_);
    scale_bias_cuda(f32(k_), s, or_null(bias[1]), f32(k_), T, KVH * D, stream_);
  }
  if (qk_norm) {
    const DeviceView qh = q_.view().reshape({int64_t{T} * H, D});
    const DeviceView kh = k_.view().reshape({int64_t{T} * KVH, D});
    exq::cuda::rmsnorm(qh, q_norm_, qh, shape_.eps, stream_);
    exq::cuda::rmsnorm(kh, k_norm_, kh, shape_.eps, stream_);
  }
  if (flash_path) {
    const float* c = cos_.data<float>();
    const float* sn = sin_.data<float>();
    const float* qk_scale = qk_scaled ? nullptr : s;
    const int rh = static_cast<int>(cos_.dim(1));  // < D / 2: a partial rotary
    heads_f16_cuda(f32(q_), qk_scale, qk_scaled ? nullptr : or_null(bias[0]), c, sn, f16(q16_), T, H, D, rh,
                   scale * kLog2e, stream_);
    heads_f16_cuda(f32(k_), qk_scale, qk_scaled ? nullptr : or_null(bias[1]), c, sn, f16(k16_), T, KVH, D, rh,
                   1.0f, stream_);
    heads_f16_cuda(f32(v_), s, or_null(bias[2]), nullptr, nullptr, f16(v16_), T, KVH, D, D / 2, 1.0f,
                   stream_);
    flash_attention_cuda(f16(q16_), f16(k16_), f16(v16_), f32(mid_), T, H, KVH, D,
                         shape_.softcap * kLog2e, stream_);
  } else {
    scale_bias_cuda(f32(v_), s, or_null(bias[2]), f32(v_), T, KVH * D, stream_);
    exq::cuda::rotary(q_.view(), cos_, sin_, 0, stream_);
    exq::cuda::rotary(k_.view(), cos_, sin_, 0, stream_);
    if (fast && wide()) {  // fp16 q, k, v as the flash path; Gemma 2's softcap in the kernel
      exq::cuda::kv_append(k_.view(), v_.view(), kc16_.view(), vc16_.view(), 0, stream_);
      exq::cuda::attention_prefill_fast(q_.view(), kc16_.view(), vc16_.view(), mid_.view().reshape({T, H, D}), 0,
                                        scale, stream_, /*window=*/0, shape_.softcap);
    } else {
      exq::cuda::kv_append(k_.view(), v_.view(), kc_.view(), vc_.view(), 0, stream_);
      exq::cuda::attention_prefill(q_.view(), kc_.view(), vc_.view(), mid_.view().reshape({T, H, D}),
                                   0, scale, stream_, /*window=*/0, shape_.softcap);
    }
  }
  scale_round_rows_cuda(f32(mid_), f16(mid16_), f32(mid_scale_), T, H * D, stream_);
}

void BlockRunner::mlp_prefix(std::span<const DeviceView> w, std::span<const DeviceView> bias,
                             bool keep_mid) {
  EXQ_ASSERT(w.size() == 2 && bias.size() == 2);
  gemm(xn16_, w[0], mid_);  // gate raw
  gemm(xn16_, w[1], up_);   // up raw
  swiglu_round_cuda(f32(mid_), f32(up_), f32(xn_scale_), or_null(bias[0]), or_null(bias[1]),
                    keep_mid ? f32(mid_) : nullptr, f16(mid16_), f32(mid_scale_),
                    static_cast<int>(tokens_), static_cast<int>(shape_.intermediate), stream_,
                    shape_.gelu);
}

void BlockRunner::last(const DeviceView& w) { gemm(mid16_, w, y_); }

void BlockRunner::post_norm(const DeviceView& weight, const float* bias) {
  // The CPU block's order: linear (row scale, bias), RMSNorm, then the caller's residual add.
  scale_bias_cuda(f32(y_), f32(mid_scale_), bias, f32(y_), static_cast<int>(tokens_),
                  static_cast<int>(shape_.hidden), stream_);
  exq::cuda::rmsnorm(y_.view(), weight, y_.view(), shape_.eps, stream_);
}

void BlockRunner::scale_output(const float* bias, bool scaled_rows) {
  // The CPU block's order: linear (row scale, bias), [RMSNorm], times the multiplier, then the
  // caller's residual add.
  scale_bias_cuda(f32(y_), scaled_rows ? nullptr : f32(mid_scale_), bias, f32(y_), static_cast<int>(tokens_),
                  static_cast<int>(shape_.hidden), stream_, shape_.residual_scale);
}

}  // namespace exq::quant::cuda
