// Mixture-of-experts kernels of the CUDA runtime (moe_launchers.h). Plain launches (no
// programmatic dependent launch): each starts once everything before it is complete, so a
// routing written here is visible to every later kernel, including those that read it before
// their own pdl_wait.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_utils.cuh"
#include "runtime/cuda/moe_launchers.h"

namespace exq::runtime::cuda {
namespace {

using exq::cuda::block_max;
using exq::cuda::ceil_div;
using exq::cuda::f16_row_scale;
using exq::cuda::from_float;
using exq::cuda::swiglu_value;
using exq::cuda::to_float;
using exq::cuda::warp_max;
using exq::cuda::warp_sum;

constexpr int kGemvWarps = 8;

__device__ __forceinline__ float input(const float* x, const float* up, int c) {
  return up != nullptr ? swiglu_value(x[c], up[c]) : x[c];
}

// One warp per output row; 16 bytes of weights per lane and load when rows are 16-byte aligned.
template <typename T>
__global__ void __launch_bounds__(kGemvWarps * 32)
    moe_gemv_kernel(const void* const* __restrict__ table, const int32_t* __restrict__ ids, int rows,
                    const float* __restrict__ x, int64_t x_slot, const float* __restrict__ up,
                    float* __restrict__ y, int64_t y_slot, int out, int in) {
  const int o = blockIdx.x * kGemvWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (o >= out) return;
  const int s = blockIdx.y / rows, r = blockIdx.y - s * rows;
  const T* w = static_cast<const T*>(table[ids != nullptr ? ids[s] : s]) + static_cast<size_t>(o) * in;
  const size_t xo = static_cast<size_t>(s) * x_slot + static_cast<size_t>(r) * in;
  const float* xr = x + xo;
  const float* ur = up != nullptr ? up + xo : nullptr;
  float acc = 0.0f;
  int c0 = 0;
  constexpr int kVec = 16 / sizeof(T);
  if (in % kVec == 0) {
    for (int c = lane * kVec; c < in; c += 32 * kVec) {
      const uint4 v = *reinterpret_cast<const uint4*>(w + c);
      const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc += to_float(e[j]) * input(xr, ur, c + j);
    }
    c0 = in;
  }
  for (int c = c0 + lane; c < in; c += 32) acc += to_float(w[c]) * input(xr, ur, c);
  acc = warp_sum(acc);
  if (lane == 0) y[static_cast<size_t>(s) * y_slot + static_cast<size_t>(r) * out + o] = acc;
}

// One warp per row: model::route_token's rule (probability descending, then the lower id) over
// the lanes' experts, each lane's kPer probabilities held in registers; the softmax sum is a warp
// reduction, so weights can differ from the CPU's in the last bits. (One thread a row took ~k *
// experts serial steps, Qwen3-MoE: 1024 expf; recomputing the probabilities for every pick and
// one lane writing and reading back the picks cost ~20 us a token and layer.)
constexpr int kRouteWarps = 4;

template <int kPer>
__global__ void __launch_bounds__(kRouteWarps * 32)
    moe_route_kernel(const float* __restrict__ logits, int rows, int experts, int k, bool renormalize,
                     int32_t* __restrict__ ids, float* __restrict__ weights, const int64_t* __restrict__ shift_table,
                     int64_t* __restrict__ shifts) {
  const int lane = threadIdx.x & 31, r = blockIdx.x * kRouteWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float* l = logits + static_cast<size_t>(r) * experts;
  float v[kPer];  // logit, then probability, of expert lane + 32 j
  float top = -INFINITY;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int e = lane + 32 * j;
    v[j] = e < experts ? l[e] : -INFINITY;
    top = fmaxf(top, v[j]);
  }
  top = warp_max(top);
  float part = 0.0f;
#pragma unroll
  for (int j = 0; j < kPer; ++j)
    if (lane + 32 * j < experts) part += expf(v[j] - top);
  const float sum = warp_sum(part);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const float p = expf(v[j] - top) / sum;
    v[j] = isnan(p) ? -1.0f : p;  // NaN logits still pick valid ids (last, lowest first)
  }
  // The i-th pick: the best (probability, id) ordered after the previous pick.
  float prev_p = 0.0f, chosen = 0.0f, my_w = 0.0f;
  int prev = -1, my_id = -1;
  for (int i = 0; i < k; ++i) {
    int best = -1;
    float bp = 0.0f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int e = lane + 32 * j;
      const float p = v[j];
      const bool after = prev < 0 || p < prev_p || (p == prev_p && e > prev);
      if (e < experts && after && (best < 0 || p > bp)) {
        best = e;
        bp = p;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float op = __shfl_xor_sync(0xffffffffu, bp, o);
      const int ob = __shfl_xor_sync(0xffffffffu, best, o);
      if (ob >= 0 && (best < 0 || op > bp || (op == bp && ob < best))) {
        best = ob;
        bp = op;
      }
    }
    if (lane == i) {  // every lane holds the pick after the butterfly
      my_id = best;
      my_w = bp;
    }
    chosen += bp;
    prev = best;
    prev_p = bp;
  }
  // Lane i writes pick i and its shifts: no global read-back of the picks.
  if (lane >= k) return;
  ids[r * k + lane] = my_id;
  weights[r * k + lane] = renormalize ? my_w / chosen : my_w;
  if (shift_table != nullptr && r == 0)
    for (int j = 0; j < 3; ++j) shifts[3 * lane + j] = shift_table[my_id * 3 + j];
}

__global__ void moe_combine_kernel(const float* __restrict__ y, const int32_t* __restrict__ ids,
                                   const float* __restrict__ weights, int k, int hidden, float* __restrict__ out) {
  // The slots in ascending expert order (the CPU's order of addition), ranked once a block.
  __shared__ int order[kMoeMaxTopK];
  if (static_cast<int>(threadIdx.x) < k) {
    const int s = static_cast<int>(threadIdx.x), id = ids[s];
    int rank = 0;
    for (int j = 0; j < k; ++j) rank += ids[j] < id || (ids[j] == id && j < s);
    order[rank] = s;
  }
  __syncthreads();
  const int h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= hidden) return;
  float acc = 0.0f;
  for (int i = 0; i < k; ++i) {
    const int s = order[i];
    acc += weights[s] * y[static_cast<size_t>(s) * hidden + h];
  }
  out[h] = acc;
}

__global__ void moe_gather_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int n,
                                  int hidden, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(n) * hidden) return;
  const int64_t r = i / hidden, h = i - r * hidden;
  out[i] = x[static_cast<int64_t>(rows[r]) * hidden + h];
}

__global__ void moe_scatter_add_kernel(const float* __restrict__ y, const int32_t* __restrict__ rows,
                                       const float* __restrict__ weights, int n, int hidden, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(n) * hidden) return;
  const int64_t r = i / hidden, h = i - r * hidden;
  out[static_cast<int64_t>(rows[r]) * hidden + h] += weights[r] * y[i];
}

// One block a row: v = x[token[r]] (x[r] without token), or silu(x[r]) * up[r]; the row's f16
// scale (matmul's rule) from max |v|; layer l's copy in its expert's input order.
template <typename T>
__global__ void __launch_bounds__(256)
    moe_stage_kernel(const float* __restrict__ x, const float* __restrict__ up, const int32_t* __restrict__ token,
                     const int32_t* __restrict__ expert, int in, const int32_t* const* __restrict__ perms,
                     int perm_stride, int layers, T* __restrict__ a0, T* __restrict__ a1,
                     float* __restrict__ row_scale) {
  __shared__ float scratch[32];
  extern __shared__ float row[];
  const int r = blockIdx.x;
  const float* xr = x + static_cast<size_t>(token != nullptr ? token[r] : r) * in;
  const float* ur = up != nullptr ? up + static_cast<size_t>(r) * in : nullptr;
  float amax = 0.0f;
  for (int i = threadIdx.x; i < in; i += blockDim.x) {
    const float v = ur != nullptr ? swiglu_value(xr[i], ur[i]) : xr[i];
    row[i] = v;
    amax = fmaxf(amax, fabsf(v));
  }
  amax = block_max(amax, scratch);  // its barrier makes `row` visible
  const float scale = f16_row_scale(amax), inv = 1.0f / scale;
  for (int l = 0; l < layers; ++l) {
    const int32_t* perm = perms != nullptr ? perms[static_cast<size_t>(expert[r]) * perm_stride + l] : nullptr;
    T* out = (l == 0 ? a0 : a1) + static_cast<size_t>(r) * in;
    for (int i = threadIdx.x; i < in; i += blockDim.x) out[i] = from_float<T>(row[perm != nullptr ? perm[i] : i] * inv);
  }
  if (threadIdx.x == 0) row_scale[r] = scale;
}

// Thread per (token, column), the token's slots in the order of pos.
__global__ void moe_combine_rows_kernel(const float* __restrict__ y, const int32_t* __restrict__ pos,
                                        const float* __restrict__ weights, int n, int k, int hidden,
                                        float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(n) * hidden) return;
  const int64_t t = i / hidden, h = i - t * hidden;
  float acc = 0.0f;
  for (int j = 0; j < k; ++j) acc += weights[t * k + j] * y[static_cast<int64_t>(pos[t * k + j]) * hidden + h];
  out[i] = acc;
}

unsigned blocks(int64_t n) { return static_cast<unsigned>(ceil_div(n, int64_t{256})); }

}  // namespace

template <typename T>
void moe_gemv_cuda(const void* const* table, const int32_t* ids, int slots, int rows, const float* x,
                   int64_t x_slot, const float* up, float* y, int64_t y_slot, int out, int in,
                   cudaStream_t stream) {
  if (slots <= 0 || rows <= 0 || out <= 0) return;
  const dim3 grid(ceil_div(out, kGemvWarps), slots * rows);
  moe_gemv_kernel<T><<<grid, kGemvWarps * 32, 0, stream>>>(table, ids, rows, x, x_slot, up, y, y_slot, out, in);
  CUDA_CHECK_LAUNCH();
}

template void moe_gemv_cuda<__half>(const void* const*, const int32_t*, int, int, const float*, int64_t,
                                    const float*, float*, int64_t, int, int, cudaStream_t);
template void moe_gemv_cuda<float>(const void* const*, const int32_t*, int, int, const float*, int64_t,
                                   const float*, float*, int64_t, int, int, cudaStream_t);
template void moe_gemv_cuda<__nv_bfloat16>(const void* const*, const int32_t*, int, int, const float*, int64_t,
                                           const float*, float*, int64_t, int, int, cudaStream_t);

void moe_route_cuda(const float* logits, int rows, int experts, int k, bool renormalize, int32_t* ids,
                    float* weights, const int64_t* shift_table, int64_t* shifts, cudaStream_t stream) {
  if (rows <= 0) return;
  const unsigned grid = ceil_div(rows, kRouteWarps);
  if (experts <= 256)
    moe_route_kernel<8><<<grid, kRouteWarps * 32, 0, stream>>>(logits, rows, experts, k, renormalize, ids, weights,
                                                                shift_table, shifts);
  else
    moe_route_kernel<kMoeMaxExperts / 32><<<grid, kRouteWarps * 32, 0, stream>>>(
        logits, rows, experts, k, renormalize, ids, weights, shift_table, shifts);
  CUDA_CHECK_LAUNCH();
}

void moe_combine_cuda(const float* y, const int32_t* ids, const float* weights, int k, int hidden,
                      float* out, cudaStream_t stream) {
  moe_combine_kernel<<<blocks(hidden), 256, 0, stream>>>(y, ids, weights, k, hidden, out);
  CUDA_CHECK_LAUNCH();
}

void moe_gather_cuda(const float* x, const int32_t* rows, int n, int hidden, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  moe_gather_kernel<<<blocks(static_cast<int64_t>(n) * hidden), 256, 0, stream>>>(x, rows, n, hidden, out);
  CUDA_CHECK_LAUNCH();
}

void moe_scatter_add_cuda(const float* y, const int32_t* rows, const float* weights, int n, int hidden,
                          float* out, cudaStream_t stream) {
  if (n <= 0) return;
  moe_scatter_add_kernel<<<blocks(static_cast<int64_t>(n) * hidden), 256, 0, stream>>>(y, rows, weights, n,
                                                                                         hidden, out);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void moe_stage_rows_cuda(const float* x, const float* up, const int32_t* token, const int32_t* expert, int rows,
                         int in, const int32_t* const* perms, int perm_stride, int layers, T* a0, T* a1,
                         float* row_scale, cudaStream_t stream) {
  if (rows <= 0 || in <= 0) return;
  const size_t smem = static_cast<size_t>(in) * sizeof(float);
  static const int limit = [] {
    const int optin = exq::cuda::current_shared_per_block_optin() - 1024;
    CUDA_CHECK(cudaFuncSetAttribute(moe_stage_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    return optin;
  }();
  if (smem > static_cast<size_t>(limit)) throw std::runtime_error("moe_stage_rows_cuda: row too wide");
  moe_stage_kernel<T><<<rows, 256, smem, stream>>>(x, up, token, expert, in, perms, perm_stride, layers, a0, a1,
                                                   row_scale);
  CUDA_CHECK_LAUNCH();
}

template void moe_stage_rows_cuda<__half>(const float*, const float*, const int32_t*, const int32_t*, int, int,
                                          const int32_t* const*, int, int, __half*, __half*, float*, cudaStream_t);
template void moe_stage_rows_cuda<__nv_bfloat16>(const float*, const float*, const int32_t*, const int32_t*, int,
                                                 int, const int32_t* const*, int, int, __nv_bfloat16*,
                                                 __nv_bfloat16*, float*, cudaStream_t);

void moe_combine_rows_cuda(const float* y, const int32_t* pos, const float* weights, int n, int k, int hidden,
                           float* out, cudaStream_t stream) {
  if (n <= 0) return;
  moe_combine_rows_kernel<<<blocks(static_cast<int64_t>(n) * hidden), 256, 0, stream>>>(y, pos, weights, n, k,
                                                                                          hidden, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::runtime::cuda
