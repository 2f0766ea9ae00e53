// Small launches around the EXL2 GEMV (exl2_gemv.cu): the x staging pass, the in-order sum
// of K-split partials when clusters are not used, and the bias add of the prefill path.
//
// Staging: one warp per step (of any layer of a group launch) gathers x through the act-order
// permutation, scales each batch row of the step by a power of two that brings its max |x|
// into [2^13, 2^14) (exact, f32 x only; the GEMV multiplies the step's sums back) and rounds
// to f16 as half2 of the rows (j, j + 16) of pair j: xq [slot][pair][bs], bs = batch rounded
// up to a power of two.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_device.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace exl2 {

bool use_pdl() {
  static const bool pdl = exl2_gemv_hopper() && std::getenv("EXQ_EXL2_NO_PDL") == nullptr;
  return pdl;
}

}  // namespace exl2

namespace {

using namespace exl2;

constexpr int kRowMaxExponent = 14;
constexpr int kPrepWarps = 4;

__device__ __forceinline__ float load_x(const void* x, bool f32, size_t i) {
  if (f32) return __ldcg(static_cast<const float*>(x) + i);
  return __half2float(__ushort_as_half(__ldcg(static_cast<const unsigned short*>(x) + i)));
}

// Input channels of rows p0, p0 + 16, p0 + 1, p0 + 17 of the lane's slot (x_map [slot][pair][2]).
__device__ __forceinline__ int4 step_channels(const int32_t* x_map, int step, int lane) {
  const int slot = step * kExl2UnitsPerStep + (lane >> 3), p0 = 2 * (lane & 7);
  return __ldg(reinterpret_cast<const int4*>(x_map + (slot * kPairs + p0) * 2));
}

// One warp stages one step: slot t of the step at dst + t * slot_words, pair p, batch column b
// at + p * pair_words + b (b < bs; zeros past the batch); the step's 8 scales (1 past the
// batch) at scale_dst.
// SWIGLU: x is f32 gate, the values staged are silu(gate) * up (decode_swiglu_kernel's
// arithmetic; gelu_tanh(gate) * up with `gelu`), the MLP's SwiGLU staged straight into the
// down projection. Every load of a pass is issued before its first use.
template <bool SWIGLU>
__device__ __forceinline__ void stage_step(int4 ch, const void* x, const float* up, bool gelu, bool f32,
                                           int in, int batch, int bs, uint32_t* dst,
                                           int slot_words, int pair_words, float* scale_dst) {
  const int lane = threadIdx.x & 31, p0 = 2 * (lane & 7);
  const int c[4] = {ch.x, ch.y, ch.z, ch.w};
  float v[kExl2MaxBatch][4];
#pragma unroll
  for (int b = 0; b < kExl2MaxBatch; ++b)
#pragma unroll
    for (int k = 0; k < 4; ++k)
      v[b][k] = b < batch && c[k] >= 0 ? load_x(x, f32, static_cast<size_t>(b) * in + c[k]) : 0.0f;
  if constexpr (SWIGLU) {
    float u[kExl2MaxBatch][4];
#pragma unroll
    for (int b = 0; b < kExl2MaxBatch; ++b)
#pragma unroll
      for (int k = 0; k < 4; ++k)
        u[b][k] = b < batch && c[k] >= 0 ? __ldcg(up + static_cast<size_t>(b) * in + c[k]) : 0.0f;
    // Rows past the batch stay 0 (so would their SwiGLU): a division and an expf for all 8
    // rows made this staging five times the instructions of the others at batch 1.
#pragma unroll
    for (int b = 0; b < kExl2MaxBatch; ++b) {
      if (b >= batch) break;  // warp-uniform
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        v[b][k] = gelu ? geglu_value(v[b][k], u[b][k]) : swiglu_value(v[b][k], u[b][k]);
      }
    }
  }
  uint32_t* d = dst + (lane >> 3) * slot_words + p0 * pair_words;
#pragma unroll
  for (int b = 0; b < kExl2MaxBatch; ++b) {
    if (b >= batch) {  // warp-uniform
      if (b < bs) d[b] = d[pair_words + b] = 0u;
      if (lane == 0) scale_dst[b] = 1.0f;
      continue;
    }
    float mul = 1.0f, scale = 1.0f;
    if (f32) {
      float m = fmaxf(fmaxf(fabsf(v[b][0]), fabsf(v[b][1])), fmaxf(fabsf(v[b][2]), fabsf(v[b][3])));
      m = warp_max(m);
      if (m > 0.0f && isfinite(m)) {
        int e = 0;
        frexpf(m, &e);
        e = max(e, -100);
        mul = ldexpf(1.0f, kRowMaxExponent - e);
        scale = ldexpf(1.0f, e - kRowMaxExponent);
      }
    }
    d[b] = as_u32(__floats2half2_rn(v[b][0] * mul, v[b][1] * mul));
    d[pair_words + b] = as_u32(__floats2half2_rn(v[b][2] * mul, v[b][3] * mul));
    if (lane == 0) scale_dst[b] = scale;
  }
}

// The staging of a group launch with room for N layers: x, and per layer its map and
// destination; layer i's steps are the group's steps [step_start[i], step_start[i + 1]).
// One-layer launches (N = 1) index their layer at compile time: the dependent reads of a
// run-time index into the parameter sit on the critical path of every GEMV.
template <int N>
struct PrepGroup {
  const void* x;
  const float* up;
  int gelu, x_f32, in, batch, bs, count;
  int step_start[N + 1];
  const int32_t* x_map[N];
  const int64_t* shift[N];  // MoE: the routed expert's map (Exl2LayerIo::shift), or null
  uint32_t* xq[N];
  float* xscale[N];
};

template <int N, bool SWIGLU>
__global__ void __launch_bounds__(kPrepWarps * 32)
    exl2_prep_kernel(const __grid_constant__ PrepGroup<N> p) {
  pdl_trigger();
  int step = blockIdx.x * kPrepWarps + (threadIdx.x >> 5);
  int l = 0;
  if constexpr (N > 1) {
    if (step >= p.step_start[p.count]) return;
    while (step >= p.step_start[l + 1]) ++l;
    step -= p.step_start[l];
  } else {
    if (step >= p.step_start[1]) return;
  }
  const int4 ch = step_channels(shifted(p.x_map[l], p.shift[l]), step, threadIdx.x & 31);
  pdl_wait();  // x is written by the previous kernel
  stage_step<SWIGLU>(ch, p.x, p.up, p.gelu != 0, p.x_f32 != 0, p.in, p.batch, p.bs,
             p.xq[l] + static_cast<size_t>(step) * kExl2UnitsPerStep * kPairs * p.bs,
             kPairs * p.bs, p.bs, p.xscale[l] + step * kExl2MaxBatch);
}

template <int N>
void prep_launch(const Exl2Desc* d, int n, const Exl2Input& x, int bs, const Exl2Scratch* scratch,
                 cudaStream_t stream, const int64_t* const* shifts) {
  PrepGroup<N> p{};
  p.x = x.x;
  p.up = x.up;
  p.gelu = x.gelu ? 1 : 0;
  p.x_f32 = x.f32 ? 1 : 0;
  p.in = d[0].in;
  p.batch = x.batch;
  p.bs = bs;
  p.count = n;
  for (int i = 0; i < n; ++i) {
    p.step_start[i + 1] = p.step_start[i] + d[i].num_steps;
    p.x_map[i] = d[i].x_map;
    p.shift[i] = shifts != nullptr ? shifts[i] : nullptr;
    p.xq[i] = scratch[i].xq;
    p.xscale[i] = scratch[i].xscale;
  }
  const dim3 grid((p.step_start[n] + kPrepWarps - 1) / kPrepWarps), block(kPrepWarps * 32);
  if (x.up != nullptr) launch(exl2_prep_kernel<N, true>, grid, block, 0, 1, stream, p);
  else launch(exl2_prep_kernel<N, false>, grid, block, 0, 1, stream, p);
}

// The staging of an Exl2MoeGroup (batch 1, f32 x): one entry per (layer, slot), each with its
// x (and up), its expert's map and its destination; entry e's steps are [step_start[e], + 1).
constexpr int kMoeEntries = kExl2MoeMaxLayers * kExl2MoeMaxSlots;
struct MoePrep {
  int in, count;
  int gelu, x_f32, batch, bs;  // 0, 1, 1, 1: run-time values as exl2_prep_kernel's
  int step_start[kMoeEntries + 1];
  const float* x[kMoeEntries];
  const float* up[kMoeEntries];
  const int32_t* x_map[kMoeEntries];
  const int64_t* shift[kMoeEntries];
  uint32_t* xq[kMoeEntries];
  float* xscale[kMoeEntries];
};

template <bool SWIGLU>
__global__ void __launch_bounds__(kPrepWarps * 32)
    exl2_moe_prep_kernel(const __grid_constant__ MoePrep p) {
  pdl_trigger();
  int step = blockIdx.x * kPrepWarps + (threadIdx.x >> 5);
  if (step >= p.step_start[p.count]) return;
  int e = 0;
  while (step >= p.step_start[e + 1]) ++e;
  step -= p.step_start[e];
  const int4 ch = step_channels(shifted(p.x_map[e], p.shift[e]), step, threadIdx.x & 31);
  pdl_wait();  // x is written by the previous kernel
  // exl2_prep_kernel's arithmetic at batch 1 (bs 1), so the results match the per-slot launches.
  stage_step<SWIGLU>(ch, p.x[e], p.up[e], p.gelu != 0, p.x_f32 != 0, p.in, p.batch, p.bs,
                     p.xq[e] + static_cast<size_t>(step) * kExl2UnitsPerStep * kPairs * p.bs,
                     kPairs * p.bs, p.bs, p.xscale[e] + step * kExl2MaxBatch);
}

// exl2_reduce_kernel's sums (batch 1, no bias) for the entries of an Exl2MoeGroup: entry
// blockIdx.y.
struct MoeReduce {
  int ksplit;
  int out[kMoeEntries], out_pad[kMoeEntries];
  const float* partials[kMoeEntries];
  float* y[kMoeEntries];
};

__global__ void exl2_moe_reduce_kernel(const __grid_constant__ MoeReduce p) {
  pdl_trigger();
  pdl_wait();
  const int e = blockIdx.y, col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= p.out[e]) return;
  float v = 0.0f;
  for (int r = 0; r < p.ksplit; ++r) v += p.partials[e][static_cast<size_t>(r) * p.out_pad[e] + col];
  p.y[e][col] = v;
}

// Sum of the K-split partials in rank order (+ bias), when clusters are not used.
__global__ void exl2_reduce_kernel(const float* __restrict__ partials, int ksplit, int batch,
                                   int out, int out_pad, const __half* __restrict__ bias,
                                   float* __restrict__ y) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= batch * out) return;
  const int b = i / out, col = i - b * out;
  float v = 0.0f;
  for (int r = 0; r < ksplit; ++r) v += partials[(static_cast<size_t>(r) * batch + b) * out_pad + col];
  if (bias) v += __half2float(bias[col]);
  y[i] = v;
}

__global__ void add_bias_kernel(float* __restrict__ y, const __half* __restrict__ bias,
                                int64_t total, int out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) y[i] += __half2float(bias[i % out]);
}
}  // namespace

void exl2_prep_cuda(const Exl2Desc* d, int n, const Exl2Input& x, int bs,
                    const Exl2Scratch* scratch, cudaStream_t stream, const int64_t* const* shifts) {
  if (n == 1) prep_launch<1>(d, n, x, bs, scratch, stream, shifts);
  else prep_launch<kExl2MaxGroup>(d, n, x, bs, scratch, stream, shifts);
}

void exl2_moe_prep_cuda(const Exl2MoeGroup& g, const float* const* x, const float* const* up,
                        cudaStream_t stream) {
  MoePrep p{};
  p.in = g.d[0].in;
  p.count = g.count * g.slots;
  p.x_f32 = p.batch = p.bs = 1;
  for (int e = 0; e < p.count; ++e) {
    const int l = e / g.slots, s = e - l * g.slots;
    p.step_start[e + 1] = p.step_start[e] + g.d[l].num_steps;
    p.x[e] = x[e];
    p.up[e] = up != nullptr ? up[e] : nullptr;
    p.x_map[e] = g.d[l].x_map;
    p.shift[e] = g.io[l][s].shift;
    p.xq[e] = const_cast<uint32_t*>(g.io[l][s].xq);
    p.xscale[e] = const_cast<float*>(g.io[l][s].xscale);
  }
  const dim3 grid((p.step_start[p.count] + kPrepWarps - 1) / kPrepWarps), block(kPrepWarps * 32);
  if (up != nullptr) launch(exl2_moe_prep_kernel<true>, grid, block, 0, 1, stream, p);
  else launch(exl2_moe_prep_kernel<false>, grid, block, 0, 1, stream, p);
}

void exl2_moe_reduce_cuda(const Exl2MoeGroup& g, int ksplit, cudaStream_t stream) {
  MoeReduce p{};
  p.ksplit = ksplit;
  int out = 0;
  for (int l = 0; l < g.count; ++l)
    for (int s = 0; s < g.slots; ++s) {
      const int e = l * g.slots + s;
      p.out[e] = g.d[l].out;
      p.out_pad[e] = g.d[l].out_pad;
      p.partials[e] = g.io[l][s].partials;
      p.y[e] = g.io[l][s].y;
      out = std::max(out, g.d[l].out);
    }
  launch(exl2_moe_reduce_kernel, dim3(ceil_div(out, 256), g.count * g.slots), dim3(256), 0, 1, stream, p);
}

void exl2_reduce_cuda(const float* partials, int ksplit, int batch, int out, int out_pad,
                      const __half* bias, float* y, cudaStream_t stream) {
  const int total = batch * out;
  launch(exl2_reduce_kernel, dim3(ceil_div(total, 256)), dim3(256), 0, 1, stream, partials, ksplit,
         batch, out, out_pad, bias, y);
}

void exl2_add_bias_cuda(float* y, const __half* bias, int rows, int out, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(rows) * out;
  if (total == 0) return;
  add_bias_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(y, bias, total, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
