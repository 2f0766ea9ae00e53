// EXL2 GEMV on tensor cores: y[b, out] = x[b, in] @ W^T for b <= 8, straight from q_weight.
//
// Work split: a block owns one 32-column tile and a contiguous range of warp steps along the
// permuted input dimension (blockIdx.y); a warp step is 4 units of 32 rows. Lane (g, t)
// (g = lane / 4, t = lane % 4) loads the words of unit t for columns 4g..4g+3 as 16-byte
// vectors (one 128-byte line per word row and 8 lanes), decodes them to bit-exact fp16 weights
// (exl2_decode.cuh) and feeds mma.m16n8k16 directly as the A operand: A row g is column
// 4g+2m, row g+8 is column 4g+2m+1 (m = 0, 1: two M tiles), and the k slots of lane t are
// rows of unit t, so a k step sums 4 rows of each of the 4 units. The B operand is x, gathered
// through q_perm once per block into shared memory in the same pair order, padded to 8 batch
// columns with zeros. Products are exact in the f32 accumulators.
//
// Precision: x is rounded to fp16 after scaling each batch row by a power of two that brings
// the block's max |x| into [2^13, 2^14) (exact, no overflow, as in matmul.cu); the scale is
// undone on the f32 partial sums. So the only rounding beyond f32 accumulation is x's
// (relative 2^-11), the same as the cuBLAS path.
//
// Cross-block reduction is deterministic: each block writes its partial tile, and the last
// block of a tile (atomic counter) sums them in blockIdx.y order and writes y.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace {

using namespace exl2;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileOut = kExl2TileColumns * kExl2MaxBatch;  // 256 outputs per tile
// x pairs of one unit in shared memory: [16 pairs][8 batch] half2, plus 8 words so the 4 units
// a warp reads at once start on different banks.
constexpr int kXsUnitWords = kPairs * kExl2MaxBatch + 8;
constexpr int kRowMaxExponent = 14;

static_assert(kThreads == kTileOut, "the final reduction maps one thread to one output");

// The words, scale codes and layout of one unit as a lane sees them.
struct UnitData {
  uint32_t w[4][8];  // [column 4g+c][word]
  uint32_t scale_word;
  uint32_t info;
};

__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 load_stream(const uint32_t* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ void load_unit(const Exl2Desc& d, int u, int tile, int g,
                                          UnitData& ud) {
  Exl2Unit unit{0, 0, 0, 2u};  // past the end: no rows, no words
  if (u < d.num_units) unit = d.units[u];
  ud.info = unit.info;
  const int bits = unit.info & 0xff, rows = (unit.info >> 8) & 0xff;
  const int words = (rows * bits + 31) >> 5;
  const int col = tile * kExl2TileColumns + 4 * g;
  const uint32_t* base = d.q_weight + static_cast<size_t>(unit.word_row) * d.out_pad + col;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (i < words) v = load_stream(base + static_cast<size_t>(i) * d.out_pad);
    ud.w[0][i] = v.x;
    ud.w[1][i] = v.y;
    ud.w[2][i] = v.z;
    ud.w[3][i] = v.w;
  }
  ud.scale_word = d.q_scale[static_cast<size_t>(unit.group) * (d.out_pad / 8) + col / 8];
}

// A fragments of k step ks for both M tiles from unit data of width B.
template <int B>
__device__ __forceinline__ void dequant_kstep(const UnitData& ud, const __half2 (&scale)[4],
                                              int ks, uint32_t (&a)[2][4]) {
  const __half2 zero = zero_pair<B>();
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    a[m][0] = dequant_pair(extract_pair<B>(ud.w[2 * m], 2 * ks), zero, scale[2 * m]);
    a[m][1] = dequant_pair(extract_pair<B>(ud.w[2 * m + 1], 2 * ks), zero, scale[2 * m + 1]);
    a[m][2] = dequant_pair(extract_pair<B>(ud.w[2 * m], 2 * ks + 1), zero, scale[2 * m]);
    a[m][3] =
        dequant_pair(extract_pair<B>(ud.w[2 * m + 1], 2 * ks + 1), zero, scale[2 * m + 1]);
  }
}

__device__ __forceinline__ void unit_scales(const UnitData& ud, int g, __half2 (&scale)[4]) {
  const __half m = __ushort_as_half(static_cast<unsigned short>(ud.info >> 16));
  const uint32_t codes = ud.scale_word >> (16 * (g & 1));
#pragma unroll
  for (int c = 0; c < 4; ++c) scale[c] = scale_pair((codes >> (4 * c)) & 15u, m);
}

// One warp step where all four units share the width B (warp-uniform branch).
template <int B>
__device__ __forceinline__ void step_uniform(const UnitData& ud, const uint32_t* xs, int g,
                                             float (&acc)[2][4]) {
  __half2 scale[4];
  unit_scales(ud, g, scale);
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) {
    uint32_t a[2][4];
    dequant_kstep<B>(ud, scale, ks, a);
    const uint32_t b0 = xs[(2 * ks) * kExl2MaxBatch + g];
    const uint32_t b1 = xs[(2 * ks + 1) * kExl2MaxBatch + g];
    mma_16816(acc[0], a[0], b0, b1);
    mma_16816(acc[1], a[1], b0, b1);
  }
}

// A step across a bit-width boundary: each lane decodes its own unit's width, then the warp
// reconverges for the mma.
__device__ __forceinline__ void step_mixed(const UnitData& ud, const uint32_t* xs, int g,
                                        float (&acc)[2][4]) {
  __half2 scale[4];
  unit_scales(ud, g, scale);
  const int bits = ud.info & 0xff;
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) {
    uint32_t a[2][4];
    switch (bits) {
      case 2: dequant_kstep<2>(ud, scale, ks, a); break;
      case 3: dequant_kstep<3>(ud, scale, ks, a); break;
      case 4: dequant_kstep<4>(ud, scale, ks, a); break;
      case 5: dequant_kstep<5>(ud, scale, ks, a); break;
      case 6: dequant_kstep<6>(ud, scale, ks, a); break;
      default: dequant_kstep<8>(ud, scale, ks, a); break;
    }
    __syncwarp();
    const uint32_t b0 = xs[(2 * ks) * kExl2MaxBatch + g];
    const uint32_t b1 = xs[(2 * ks + 1) * kExl2MaxBatch + g];
    mma_16816(acc[0], a[0], b0, b1);
    mma_16816(acc[1], a[1], b0, b1);
  }
}

__device__ __forceinline__ void compute_step(const Exl2Desc& d, int s, const UnitData& ud,
                                             const uint32_t* xs, int g, float (&acc)[2][4]) {
  switch (d.step_bits[s]) {
    case 2: step_uniform<2>(ud, xs, g, acc); break;
    case 3: step_uniform<3>(ud, xs, g, acc); break;
    case 4: step_uniform<4>(ud, xs, g, acc); break;
    case 5: step_uniform<5>(ud, xs, g, acc); break;
    case 6: step_uniform<6>(ud, xs, g, acc); break;
    case 8: step_uniform<8>(ud, xs, g, acc); break;
    default: step_mixed(ud, xs, g, acc); break;
  }
}

// x[n][q_perm[row]] of unit u's row r (0 past the unit's rows).
template <typename X>
__device__ __forceinline__ float gather_x(const Exl2Desc& d, const X* x, const Exl2Unit& unit,
                                          int r, int n) {
  if (r >= static_cast<int>((unit.info >> 8) & 0xff)) return 0.0f;
  return to_float(x[static_cast<size_t>(n) * d.in + d.q_perm[unit.row_base + r]]);
}

// Fills the block's x pairs (fp16, scaled per batch row) and returns nothing; xscale[n] gets
// the power of two to multiply the partial sums by.
template <typename X>
__device__ void stage_x(const Exl2Desc& d, const X* x, int batch, int u0, int units,
                        uint32_t* xs, float* xscale, float (*red)[kTileOut]) {
  const int tid = threadIdx.x;
  float amax[kExl2MaxBatch];
#pragma unroll
  for (int n = 0; n < kExl2MaxBatch; ++n) amax[n] = 0.0f;
  for (int idx = tid; idx < units * kExl2UnitRows; idx += kThreads) {
    const int u = u0 + idx / kExl2UnitRows;
    if (u >= d.num_units) break;
    const Exl2Unit unit = d.units[u];
#pragma unroll
    for (int n = 0; n < kExl2MaxBatch; ++n)
      if (n < batch) amax[n] = fmaxf(amax[n], fabsf(gather_x(d, x, unit, idx % kExl2UnitRows, n)));
  }
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int n = 0; n < kExl2MaxBatch; ++n) {
    const float v = warp_max(amax[n]);
    if (lane == 0) red[warp][n] = v;
  }
  __syncthreads();
  if (tid < kExl2MaxBatch) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v = fmaxf(v, red[w][tid]);
    float scale = 1.0f;
    if (v > 0.0f && isfinite(v)) {
      int e = 0;
      frexpf(v, &e);
      scale = ldexpf(1.0f, e - kRowMaxExponent);
    }
    xscale[tid] = scale;
  }
  __syncthreads();
  for (int idx = tid; idx < units * kPairs * kExl2MaxBatch; idx += kThreads) {
    const int lu = idx / (kPairs * kExl2MaxBatch);
    const int p = (idx / kExl2MaxBatch) % kPairs, n = idx % kExl2MaxBatch;
    const int u = u0 + lu;
    float lo = 0.0f, hi = 0.0f;
    if (u < d.num_units && n < batch) {
      const Exl2Unit unit = d.units[u];
      const float inv = 1.0f / xscale[n];  // exact: a power of two
      lo = gather_x(d, x, unit, p, n) * inv;
      hi = gather_x(d, x, unit, p + kPairs, n) * inv;
    }
    xs[lu * kXsUnitWords + p * kExl2MaxBatch + n] = as_u32(__floats2half2_rn(lo, hi));
  }
  __syncthreads();
}

template <typename X>
__global__ void __launch_bounds__(kThreads, 2)
    exl2_gemv_kernel(Exl2Desc d, const X* __restrict__ x, float* __restrict__ y, int batch,
                     int add_bias, int steps_per_block, float* __restrict__ partials,
                     int* __restrict__ counters) {
  extern __shared__ uint32_t xs[];  // [units of this block][kXsUnitWords]
  __shared__ float red[kWarps][kTileOut];
  __shared__ float xscale[kExl2MaxBatch];
  __shared__ bool last_block;

  const int tile = blockIdx.x, kb = blockIdx.y;
  const int step0 = kb * steps_per_block;
  const int step1 = min(step0 + steps_per_block, d.num_steps);
  const int u0 = step0 * kExl2UnitsPerStep;
  stage_x(d, x, batch, u0, (step1 - step0) * kExl2UnitsPerStep, xs, xscale, red);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  float acc[2][4] = {};
  // The next step's words are in flight while this one is computed.
  UnitData cur;
  int s = step0 + warp;
  if (s < step1) load_unit(d, s * kExl2UnitsPerStep + t, tile, g, cur);
  while (s < step1) {
    UnitData nxt;
    const int s1 = s + kWarps;
    if (s1 < step1) load_unit(d, s1 * kExl2UnitsPerStep + t, tile, g, nxt);
    compute_step(d, s, cur, xs + ((s - step0) * kExl2UnitsPerStep + t) * kXsUnitWords, g, acc);
    cur = nxt;
    s = s1;
  }

  // acc[m][j]: column 4g + 2m + (j >> 1), batch 2t + (j & 1); outputs indexed col * 8 + n.
  __syncthreads();  // red was used by stage_x
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      red[warp][(4 * g + 2 * m + (j >> 1)) * kExl2MaxBatch + 2 * t + (j & 1)] = acc[m][j];
  __syncthreads();
  float v = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) v += red[w][tid];
  const int n = tid % kExl2MaxBatch;
  const int col = tile * kExl2TileColumns + tid / kExl2MaxBatch;
  v *= xscale[n];
  const bool store = n < batch && col < d.out;
  const float b = (add_bias && d.bias && store) ? __half2float(d.bias[col]) : 0.0f;
  if (gridDim.y == 1) {
    if (store) y[static_cast<size_t>(n) * d.out + col] = v + b;
    return;
  }
  float* tile_partials = partials + static_cast<size_t>(tile) * gridDim.y * kTileOut;
  tile_partials[kb * kTileOut + tid] = v;
  __threadfence();
  __syncthreads();
  if (tid == 0) last_block = atomicAdd(&counters[tile], 1) == static_cast<int>(gridDim.y) - 1;
  __syncthreads();
  if (!last_block) return;
  float sum = 0.0f;
  for (unsigned k = 0; k < gridDim.y; ++k) sum += __ldcg(&tile_partials[k * kTileOut + tid]);
  if (store) y[static_cast<size_t>(n) * d.out + col] = sum + b;
  if (tid == 0) counters[tile] = 0;
}

__global__ void add_bias_kernel(float* __restrict__ y, const __half* __restrict__ bias,
                                int64_t total, int out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) y[i] += __half2float(bias[i % out]);
}

}  // namespace

size_t exl2_gemv_shared_bytes(const Exl2Split& split) {
  return static_cast<size_t>(split.steps_per_block) * kExl2UnitsPerStep * kXsUnitWords *
         sizeof(uint32_t);
}

size_t exl2_gemv_partial_floats(const Exl2Desc& d, const Exl2Split& split) {
  return static_cast<size_t>(d.out_pad / kExl2TileColumns) * split.blocks_k * kTileOut;
}

size_t exl2_gemv_counter_ints(const Exl2Desc& d) {
  return static_cast<size_t>(d.out_pad / kExl2TileColumns);
}

template <typename X>
void exl2_gemv_cuda(const Exl2Desc& d, const X* x, float* y, int batch, bool add_bias,
                    const Exl2Split& split, float* partials, int* counters,
                    cudaStream_t stream) {
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(exl2_gemv_kernel<X>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    kExl2MaxStepsPerBlock * kExl2UnitsPerStep * kXsUnitWords * 4));
    return true;
  }();
  (void)configured;
  if (batch <= 0 || d.out == 0) return;
  const dim3 grid(d.out_pad / kExl2TileColumns, split.blocks_k);
  exl2_gemv_kernel<X><<<grid, kThreads, exl2_gemv_shared_bytes(split), stream>>>(
      d, x, y, batch, add_bias ? 1 : 0, split.steps_per_block, partials, counters);
  CUDA_CHECK_LAUNCH();
}

template void exl2_gemv_cuda<float>(const Exl2Desc&, const float*, float*, int, bool,
                                    const Exl2Split&, float*, int*, cudaStream_t);
template void exl2_gemv_cuda<__half>(const Exl2Desc&, const __half*, float*, int, bool,
                                     const Exl2Split&, float*, int*, cudaStream_t);

void exl2_add_bias_cuda(float* y, const __half* bias, int rows, int out, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(rows) * out;
  if (total == 0) return;
  add_bias_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(y, bias, total, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
