// Kernels of the CUDA measurement engine; see engine_kernels.h.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "quant/cuda/engine_kernels.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;
using exq::cuda::geglu_value;
using exq::cuda::swiglu_value;

constexpr int kThreads = 256;
constexpr int kMaxErrorBlocks = 1024;
constexpr int64_t kElemsPerThread = 16;  // error grid: about this many elements per thread

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

constexpr int kRowMaxExponent = 14;  // as backend/cuda/matmul.cu: rows scaled below 2^14

// Power of two bringing a row's max |x| into [2^13, 2^14) (1 for zero or non-finite rows).
__device__ __forceinline__ float row_scale_for(float amax) {
  if (!(amax > 0.0f) || !isfinite(amax)) return 1.0f;
  int e = 0;
  frexpf(amax, &e);
  return ldexpf(1.0f, e - kRowMaxExponent);
}

__global__ void scale_round_rows_kernel(const float* __restrict__ x, __half* __restrict__ xq,
                                        float* __restrict__ row_scale, int k) {
  __shared__ float scratch[32];
  const float* xr = x + static_cast<size_t>(blockIdx.x) * k;
  float amax = 0.0f;
  for (int i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(xr[i]));
  const float scale = row_scale_for(exq::cuda::block_max(amax, scratch));
  const float inv = 1.0f / scale;  // exact: a power of two
  __half* qr = xq + static_cast<size_t>(blockIdx.x) * k;
  for (int i = threadIdx.x; i < k; i += blockDim.x) qr[i] = __float2half_rn(xr[i] * inv);
  if (threadIdx.x == 0) row_scale[blockIdx.x] = scale;
}

__global__ void scale_bias_kernel(const float* raw, const float* __restrict__ row_scale,
                                  const float* __restrict__ bias, float* out, int64_t total,
                                  int width, float mult) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  float v = row_scale ? __fmul_rn(raw[i], row_scale[i / width]) : raw[i];
  if (bias) v += bias[i % width];
  if (mult != 1.0f) v = __fmul_rn(v, mult);
  out[i] = v;
}

// act(g) * u of element j (column i) exactly as backend swiglu / geglu after matmul + bias add.
template <bool kGelu>
__device__ __forceinline__ float swiglu_at(const float* g_raw, const float* u_raw, size_t j, int i,
                                           float s, const float* gb, const float* ub) {
  float g = __fmul_rn(g_raw[j], s);
  if (gb) g += gb[i];
  float u = __fmul_rn(u_raw[j], s);
  if (ub) u += ub[i];
  return kGelu ? geglu_value(g, u) : swiglu_value(g, u);
}

// One block per row: a pass for the values and their max, a second for the fp16 copy.
template <bool kGelu>
__global__ void swiglu_round_kernel(const float* g_raw, const float* __restrict__ u_raw,
                                    const float* __restrict__ row_scale,
                                    const float* __restrict__ gb, const float* __restrict__ ub,
                                    float* act32, __half* __restrict__ act16,
                                    float* __restrict__ act_scale, int n) {
  __shared__ float scratch[32];
  const size_t off = static_cast<size_t>(blockIdx.x) * n;
  const float s = row_scale[blockIdx.x];
  float amax = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float a = swiglu_at<kGelu>(g_raw, u_raw, off + i, i, s, gb, ub);
    if (act32) act32[off + i] = a;  // may overwrite g_raw: the second pass reads act32 then
    amax = fmaxf(amax, fabsf(a));
  }
  const float scale = row_scale_for(exq::cuda::block_max(amax, scratch));
  const float inv = 1.0f / scale;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float a = act32 ? act32[off + i] : swiglu_at<kGelu>(g_raw, u_raw, off + i, i, s, gb, ub);
    act16[off + i] = __float2half_rn(a * inv);
  }
  if (threadIdx.x == 0) act_scale[blockIdx.x] = scale;
}

// One thread per pair of dimensions of one head of one token: i < rh, the rotated pair
// (i, i + rh) (backend rotary's formula); a partial rotary's other threads take two unrotated
// dimensions each (2 rh + 2 (i - rh) and the next).
__global__ void heads_f16_kernel(const float* __restrict__ raw, const float* __restrict__ row_scale,
                                 const float* __restrict__ bias, const float* __restrict__ cos_t,
                                 const float* __restrict__ sin_t, __half* __restrict__ out, int T,
                                 int H, int D, int rh, float out_scale) {
  const int half = D / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(T) * H * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t th = idx / half;
  const int h = static_cast<int>(th % H), t = static_cast<int>(th / H);
  const bool turns = i < rh;
  const int d1 = turns ? i : 2 * rh + 2 * (i - rh), d2 = turns ? i + rh : d1 + 1;
  const float* src = raw + static_cast<size_t>(t) * H * D + static_cast<size_t>(h) * D;
  const float s = row_scale ? row_scale[t] : 1.0f;
  float x1 = __fmul_rn(src[d1], s), x2 = __fmul_rn(src[d2], s);
  if (bias) {
    x1 += bias[h * D + d1];
    x2 += bias[h * D + d2];
  }
  if (cos_t && turns) {
    const float c = cos_t[static_cast<size_t>(t) * rh + i];
    const float sn = sin_t[static_cast<size_t>(t) * rh + i];
    const float y1 = x1 * c - x2 * sn, y2 = x2 * c + x1 * sn;
    x1 = y1;
    x2 = y2;
  }
  __half* o = out + (static_cast<size_t>(h) * T + t) * D;
  o[d1] = __float2half_rn(x1 * out_scale);
  o[d2] = __float2half_rn(x2 * out_scale);
}

__global__ void residual_out_kernel(const float* y, const float* __restrict__ y_scale,
                                    const float* __restrict__ bias, const float* __restrict__ x,
                                    float* out, int64_t n, int64_t width,
                                    unsigned long long* __restrict__ non_finite) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  if (i < n) {
    float v = y[i];
    if (y_scale) v = __fmul_rn(v, y_scale[i / width]);
    if (bias) v += bias[i % width];
    v += x[i];
    out[i] = v;
    bad = !isfinite(v);
  }
  const unsigned votes = __ballot_sync(0xffffffffu, bad);
  if ((threadIdx.x & 31) == 0 && votes) atomicAdd(non_finite, __popc(votes));
}

// Quads of 4 consecutive elements, grid-stride; each thread accumulates its quads in order and
// the block reduces in a fixed tree, so the sums depend only on n and the grid.
template <bool kVector>
__global__ void error_partials_kernel(const float* __restrict__ y,
                                      const float* __restrict__ y_scale,
                                      const float* __restrict__ bias, const float* __restrict__ x,
                                      const float* __restrict__ target, float* out, int64_t n,
                                      int64_t width, double* __restrict__ partials) {
  __shared__ double scratch[2][kThreads / 32];
  const int64_t quads = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  double num = 0.0, den = 0.0;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < quads;
       q += stride) {
    const int64_t i0 = 4 * q;
    float yv[4], xv[4], tv[4], bv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int count = 4;
    if constexpr (kVector) {
      const float4 a = reinterpret_cast<const float4*>(y)[q];
      const float4 b = x ? reinterpret_cast<const float4*>(x)[q] : make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 c = reinterpret_cast<const float4*>(target)[q];
      yv[0] = a.x;
      yv[1] = a.y;
      yv[2] = a.z;
      yv[3] = a.w;
      xv[0] = b.x;
      xv[1] = b.y;
      xv[2] = b.z;
      xv[3] = b.w;
      tv[0] = c.x;
      tv[1] = c.y;
      tv[2] = c.z;
      tv[3] = c.w;
      if (bias) {
        const float4 d = *reinterpret_cast<const float4*>(bias + i0 % width);
        bv[0] = d.x;
        bv[1] = d.y;
        bv[2] = d.z;
        bv[3] = d.w;
      }
    } else {
      count = static_cast<int>(n - i0 < 4 ? n - i0 : 4);
      for (int k = 0; k < count; ++k) {
        yv[k] = y[i0 + k];
        xv[k] = x ? x[i0 + k] : 0.0f;
        tv[k] = target[i0 + k];
        if (bias) bv[k] = bias[(i0 + k) % width];
      }
    }
    for (int k = 0; k < count; ++k) {
      float v = yv[k];
      if (y_scale) v = __fmul_rn(v, y_scale[(i0 + k) / width]);
      if (bias) v += bv[k];
      v += xv[k];
      if (out) out[i0 + k] = v;
      const double d = static_cast<double>(v) - static_cast<double>(tv[k]);
      num = fma(d, d, num);
      den = fma(static_cast<double>(tv[k]), static_cast<double>(tv[k]), den);
    }
  }
  num = warp_sum_d(num);
  den = warp_sum_d(den);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    scratch[0][warp] = num;
    scratch[1][warp] = den;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double a = 0.0, b = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) {
      a += scratch[0][w];
      b += scratch[1][w];
    }
    partials[2 * blockIdx.x] = a;
    partials[2 * blockIdx.x + 1] = b;
  }
}

// One token (a run of `width` elements) per step, all threads of the block on it; thread 0
// keeps the block's running sums in token order, so the result depends only on n and the grid.
__global__ void error_token_kernel(const float* __restrict__ y, const float* __restrict__ y_scale,
                                   const float* __restrict__ bias, const float* __restrict__ x,
                                   const float* __restrict__ target, float* out, int64_t tokens,
                                   int64_t width, int reduce, double* __restrict__ partials) {
  __shared__ double scratch[2][kThreads / 32];
  const int64_t per_block = (tokens + gridDim.x - 1) / gridDim.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * per_block;
  const int64_t t1 = t0 + per_block < tokens ? t0 + per_block : tokens;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double a = 0.0, b = 0.0;  // meaningful in thread 0
  for (int64_t t = t0; t < t1; ++t) {
    const float s = y_scale ? y_scale[t] : 1.0f;
    double num = 0.0, den = 0.0;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const int64_t i = t * width + j;
      float v = y[i];
      if (y_scale) v = __fmul_rn(v, s);
      if (bias) v += bias[j];
      if (x) v += x[i];
      if (out) out[i] = v;
      const double d = static_cast<double>(v) - static_cast<double>(target[i]);
      num = fma(d, d, num);
      den = fma(static_cast<double>(target[i]), static_cast<double>(target[i]), den);
    }
    num = warp_sum_d(num);
    den = warp_sum_d(den);
    if (lane == 0) {
      scratch[0][warp] = num;
      scratch[1][warp] = den;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double n_t = 0.0, d_t = 0.0;
      for (int w = 0; w < kThreads / 32; ++w) {
        n_t += scratch[0][w];
        d_t += scratch[1][w];
      }
      if (reduce == static_cast<int>(ErrorReduce::kToken)) {
        if (d_t > 0.0) {
          a += sqrt(n_t / d_t);
          b += 1.0;
        }
      } else if (t != 0) {  // kSkip0
        a += n_t;
        b += d_t;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = a;
    partials[2 * blockIdx.x + 1] = b;
  }
}

__global__ void error_finalize_kernel(const double* __restrict__ partials, int slots, int blocks,
                                      double* __restrict__ sums, int64_t stride) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= slots) return;
  const double* p = partials + static_cast<int64_t>(s) * blocks * 2;
  double a = 0.0, b = 0.0;
  for (int i = 0; i < blocks; ++i) {
    a += p[2 * i];
    b += p[2 * i + 1];
  }
  sums[s * stride] = a;
  sums[s * stride + 1] = b;
}

__global__ void count_non_finite_kernel(const float* __restrict__ x, int64_t n,
                                        unsigned long long* __restrict__ counter) {
  unsigned count = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    count += isfinite(x[i]) ? 0u : 1u;
  for (int o = 16; o > 0; o >>= 1) count += __shfl_xor_sync(0xffffffffu, count, o);
  if ((threadIdx.x & 31) == 0 && count) atomicAdd(counter, static_cast<unsigned long long>(count));
}

__global__ void f32_to_f16_kernel(const float* __restrict__ src, __half* __restrict__ dst,
                                  int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __float2half_rn(src[i]);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void scale_round_rows_cuda(const float* x, __half* x16, float* row_scale, int rows, int k,
                           cudaStream_t stream) {
  if (rows == 0) return;
  scale_round_rows_kernel<<<rows, kThreads, 0, stream>>>(x, x16, row_scale, k);
  CUDA_CHECK_LAUNCH();
}

void scale_bias_cuda(const float* raw, const float* row_scale, const float* bias, float* out,
                     int rows, int width, cudaStream_t stream, float mult) {
  const int64_t total = static_cast<int64_t>(rows) * width;
  if (total == 0) return;
  scale_bias_kernel<<<ceil_div(total, kThreads), kThreads, 0, stream>>>(raw, row_scale, bias, out,
                                                                        total, width, mult);
  CUDA_CHECK_LAUNCH();
}

void swiglu_round_cuda(const float* gate_raw, const float* up_raw, const float* row_scale,
                       const float* gate_bias, const float* up_bias, float* act32, __half* act16,
                       float* act_scale, int rows, int n, cudaStream_t stream, bool gelu) {
  if (rows == 0) return;
  const auto kernel = gelu ? swiglu_round_kernel<true> : swiglu_round_kernel<false>;
  kernel<<<rows, 4 * kThreads, 0, stream>>>(gate_raw, up_raw, row_scale, gate_bias, up_bias, act32,
                                            act16, act_scale, n);
  CUDA_CHECK_LAUNCH();
}

void heads_f16_cuda(const float* raw, const float* row_scale, const float* bias, const float* cos,
                    const float* sin, __half* out, int tokens, int heads, int head_dim, int rot_half,
                    float out_scale, cudaStream_t stream) {
  const int64_t pairs = static_cast<int64_t>(tokens) * heads * (head_dim / 2);
  if (pairs == 0) return;
  heads_f16_kernel<<<ceil_div(pairs, kThreads), kThreads, 0, stream>>>(
      raw, row_scale, bias, cos, sin, out, tokens, heads, head_dim, cos ? rot_half : head_dim / 2, out_scale);
  CUDA_CHECK_LAUNCH();
}

void residual_out_cuda(const float* y, const float* y_scale, const float* bias, const float* x,
                       float* out, int64_t n, int64_t width, unsigned long long* non_finite,
                       cudaStream_t stream) {
  if (n == 0) return;
  residual_out_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(y, y_scale, bias, x, out, n,
                                                                      width, non_finite);
  CUDA_CHECK_LAUNCH();
}

int error_blocks(int64_t n) {
  const int64_t want = (n + kThreads * kElemsPerThread - 1) / (kThreads * kElemsPerThread);
  return static_cast<int>(want < 1 ? 1 : (want > kMaxErrorBlocks ? kMaxErrorBlocks : want));
}

void error_partials_cuda(const float* y, const float* y_scale, const float* bias, const float* x,
                         const float* target, float* out, int64_t n, int64_t width,
                         double* partials, cudaStream_t stream, ErrorReduce reduce) {
  const int blocks = error_blocks(n);
  if (reduce != ErrorReduce::kRow) {
    error_token_kernel<<<blocks, kThreads, 0, stream>>>(y, y_scale, bias, x, target, out,
                                                        n / width, width,
                                                        static_cast<int>(reduce), partials);
    CUDA_CHECK_LAUNCH();
    return;
  }
  // Same quads and order either way; the vector path only changes how they are loaded.
  const bool vector = n % 4 == 0 && width % 4 == 0 && aligned16(y) && aligned16(x) &&
                      aligned16(target) && (!bias || aligned16(bias));
  if (vector)
    error_partials_kernel<true>
        <<<blocks, kThreads, 0, stream>>>(y, y_scale, bias, x, target, out, n, width, partials);
  else
    error_partials_kernel<false>
        <<<blocks, kThreads, 0, stream>>>(y, y_scale, bias, x, target, out, n, width, partials);
  CUDA_CHECK_LAUNCH();
}

void error_finalize_cuda(const double* partials, int slots, int blocks, double* sums,
                         int64_t stride, cudaStream_t stream) {
  if (slots == 0) return;
  error_finalize_kernel<<<ceil_div(slots, 64), 64, 0, stream>>>(partials, slots, blocks, sums,
                                                                stride);
  CUDA_CHECK_LAUNCH();
}

void count_non_finite_cuda(const float* x, int64_t n, unsigned long long* counter,
                           cudaStream_t stream) {
  if (n == 0) return;
  const int64_t blocks = (n + kThreads * kElemsPerThread - 1) / (kThreads * kElemsPerThread);
  count_non_finite_kernel<<<static_cast<unsigned>(blocks < 1024 ? blocks : 1024), kThreads, 0,
                            stream>>>(x, n, counter);
  CUDA_CHECK_LAUNCH();
}

void f32_to_f16_cuda(const float* src, __half* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  f32_to_f16_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(src, dst, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::quant::cuda
