// EXL2 GEMV on tensor cores: y[b, out] = x[b, in] @ W^T for b <= 8, straight from q_weight.
//
// Work split: a block owns a range of warp steps along the permuted input dimension
// (blockIdx.y) and a set of 32-column tiles, one warp per tile at a time; a step is 4 units of
// 32 rows. Lane (g, t) (g = lane / 4, t = lane % 4) loads the words of unit t for columns
// 4g..4g+3 as 16-byte vectors (one 128-byte line per word row and 8 lanes), decodes them to
// bit-exact fp16 weights (exl2_decode.cuh) and feeds mma.m16n8k16 directly as the A operand:
// A row g is column 4g+2m, row g+8 is column 4g+2m+1 (m = 0, 1: two M tiles), and the k slots
// of lane t are rows of unit t, so a k step sums 4 rows of each of the 4 units. The B operand
// is x, put in act-order once per block into shared memory in the same pair order, padded to
// 8 batch columns with zeros. Products are exact in the f32 accumulators.
//
// Precision: f32 x is rounded to fp16 after scaling each batch row by a power of two that
// brings the row's max |x| into [2^13, 2^14) (exact, no overflow, as in matmul.cu); the scale
// is undone on the f32 sums. So the only rounding beyond f32 accumulation is x's (relative
// 2^-11), the same as the cuBLAS path; fp16 x enters exactly.
//
// Cross-block reduction is deterministic: each block writes its partial tile, and the last
// one to finish a tile (atomic counter) sums the partials in blockIdx.y order and writes y.
//
// Measured on an H100 (docs/perf.md): latency-bound, 39 % of HBM bandwidth at 4 bits on
// 4096x14336; each warp has only one step in flight ahead of the one it computes.
#include <cmath>
#include <type_traits>

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


// The words, scale codes and layout of one unit as a lane sees them; W words per column (the
// bit width in a uniform layer, 8 otherwise).
template <int W>
struct UnitData {
  uint32_t w[4][W];  // [column 4g+c][word]
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

template <int W>
__device__ __forceinline__ void load_unit(const Exl2Desc& d, int u, int tile, int g,
                                          UnitData<W>& ud) {
  Exl2Unit unit{0, 0, 0, 2u};  // past the end: no rows, no words
  if (u < d.num_units) unit = d.units[u];
  ud.info = unit.info;
  const int bits = unit.info & 0xff, rows = (unit.info >> 8) & 0xff;
  const int words = (rows * bits + 31) >> 5;
  const int col = tile * kExl2TileColumns + 4 * g;
  const uint32_t* base = d.q_weight + static_cast<size_t>(unit.word_row) * d.out_pad + col;
#pragma unroll
  for (int i = 0; i < W; ++i) {
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
template <int B, int W>
__device__ __forceinline__ void dequant_kstep(const UnitData<W>& ud, const __half2 (&scale)[4],
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

template <int W>
__device__ __forceinline__ void unit_scales(const UnitData<W>& ud, int g, __half2 (&scale)[4]) {
  const __half m = __ushort_as_half(static_cast<unsigned short>(ud.info >> 16));
  const uint32_t codes = ud.scale_word >> (16 * (g & 1));
#pragma unroll
  for (int c = 0; c < 4; ++c) scale[c] = scale_pair((codes >> (4 * c)) & 15u, m);
}

// One warp step where all four units share the width B (warp-uniform branch).
template <int B, int W>
__device__ __forceinline__ void step_uniform(const UnitData<W>& ud, const uint32_t* xs, int g,
                                             float (&acc)[2][4]) {
  __half2 scale[4];
  unit_scales(ud, g, scale);
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) {
    uint32_t a[2][4];
    dequant_kstep<B, W>(ud, scale, ks, a);
    const uint32_t b0 = xs[(2 * ks) * kExl2MaxBatch + g];
    const uint32_t b1 = xs[(2 * ks + 1) * kExl2MaxBatch + g];
    mma_16816(acc[0], a[0], b0, b1);
    mma_16816(acc[1], a[1], b0, b1);
  }
}

// A step across a bit-width boundary: each lane decodes its own unit's width, then the warp
// reconverges for the mma.
__device__ __forceinline__ void step_mixed(const UnitData<8>& ud, const uint32_t* xs, int g,
                                           float (&acc)[2][4]) {
  __half2 scale[4];
  unit_scales(ud, g, scale);
  const int bits = ud.info & 0xff;
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) {
    uint32_t a[2][4];
    switch (bits) {
      case 2: dequant_kstep<2, 8>(ud, scale, ks, a); break;
      case 3: dequant_kstep<3, 8>(ud, scale, ks, a); break;
      case 4: dequant_kstep<4, 8>(ud, scale, ks, a); break;
      case 5: dequant_kstep<5, 8>(ud, scale, ks, a); break;
      case 6: dequant_kstep<6, 8>(ud, scale, ks, a); break;
      default: dequant_kstep<8, 8>(ud, scale, ks, a); break;
    }
    __syncwarp();
    const uint32_t b0 = xs[(2 * ks) * kExl2MaxBatch + g];
    const uint32_t b1 = xs[(2 * ks + 1) * kExl2MaxBatch + g];
    mma_16816(acc[0], a[0], b0, b1);
    mma_16816(acc[1], a[1], b0, b1);
  }
}

// W = 0: any widths, dispatched per step; else every unit of the layer has W bits.
template <int W>
__device__ __forceinline__ void compute_step(const Exl2Desc& d, int s,
                                             const UnitData<W == 0 ? 8 : W>& ud,
                                             const uint32_t* xs, int g, float (&acc)[2][4]) {
  if constexpr (W != 0) {
    step_uniform<W, W>(ud, xs, g, acc);
  } else {
    switch (d.step_bits[s]) {
      case 2: step_uniform<2, 8>(ud, xs, g, acc); break;
      case 3: step_uniform<3, 8>(ud, xs, g, acc); break;
      case 4: step_uniform<4, 8>(ud, xs, g, acc); break;
      case 5: step_uniform<5, 8>(ud, xs, g, acc); break;
      case 6: step_uniform<6, 8>(ud, xs, g, acc); break;
      case 8: step_uniform<8, 8>(ud, xs, g, acc); break;
      default: step_mixed(ud, xs, g, acc); break;
    }
  }
}

constexpr int kStageUnroll = 4;  // independent vector loads per thread in flight while staging

// Four consecutive x values as float (16-byte or 8-byte load); scalar at the row's end or when
// the rows are not aligned for vectors.
__device__ __forceinline__ void load4(const float* p, bool vec, int left, float (&v)[4]) {
  if (vec && left >= 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = e < left ? p[e] : 0.0f;
  }
}

__device__ __forceinline__ void load4(const __half* p, bool vec, int left, float (&v)[4]) {
  if (vec && left >= 4) {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    const float2 a = __half22float2(as_half2(q.x)), b = __half22float2(as_half2(q.y));
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = e < left ? __half2float(p[e]) : 0.0f;
  }
}

__device__ __forceinline__ void load4(const int32_t* p, bool vec, int left, int (&v)[4]) {
  if (vec && left >= 4) {
    const int4 q = *reinterpret_cast<const int4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = e < left ? p[e] : -1;
  }
}

// Stages the block's x in shared memory as fp16 pairs [unit][pair][batch] (zeros past the
// batch and past a unit's rows). Every block scans whole rows of x with coalesced vector loads
// and keeps the channels whose slot (x_slot: unit * 32 + row in unit) falls in its units; this
// costs far fewer cache-line visits than gathering through q_perm. Each thread has
// kStageUnroll vector loads in flight, so staging costs a few memory latencies.
// f32 x is scaled per batch row by a power of two taken from the whole row (so every block
// agrees); xscale[n] gets the factor to multiply the sums by.
template <typename X>
__device__ void stage_x(const Exl2Desc& d, const X* __restrict__ x, int batch, int u0, int units,
                        uint32_t* xs, float* xscale, float (*red)[kExl2MaxBatch]) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  constexpr int kChunk = 4 * kThreads;  // elements per unrolled load
  const bool vec = d.in % 4 == 0 && reinterpret_cast<uintptr_t>(x) % (4 * sizeof(X)) == 0;
  for (int i = tid; i < units * kXsUnitWords; i += kThreads) xs[i] = 0u;
  if constexpr (std::is_same_v<X, float>) {
    for (int n = 0; n < batch; ++n) {
      const float* xr = x + static_cast<size_t>(n) * d.in;
      float m = 0.0f;
      for (int i0 = 4 * tid; i0 < d.in; i0 += kStageUnroll * kChunk) {
        float v[kStageUnroll][4];
#pragma unroll
        for (int u = 0; u < kStageUnroll; ++u) {
          const int i = i0 + u * kChunk;
          load4(xr + i, vec, d.in - i, v[u]);
        }
#pragma unroll
        for (int u = 0; u < kStageUnroll; ++u)
#pragma unroll
          for (int e = 0; e < 4; ++e) m = fmaxf(m, fabsf(v[u][e]));
      }
      m = warp_max(m);
      if (lane == 0) red[warp][n] = m;
    }
    __syncthreads();
    if (tid < kExl2MaxBatch) {
      float v = 0.0f;
      if (tid < batch)
        for (int w = 0; w < kWarps; ++w) v = fmaxf(v, red[w][tid]);
      float scale = 1.0f;
      if (v > 0.0f && isfinite(v)) {
        int e = 0;
        frexpf(v, &e);
        scale = ldexpf(1.0f, e - kRowMaxExponent);
      }
      xscale[tid] = scale;
    }
  } else {
    if (tid < kExl2MaxBatch) xscale[tid] = 1.0f;  // fp16 x enters the products exactly
  }
  __syncthreads();
  __half* xh = reinterpret_cast<__half*>(xs);
  for (int n = 0; n < batch; ++n) {
    const X* xr = x + static_cast<size_t>(n) * d.in;
    const float inv = 1.0f / xscale[n];  // exact: a power of two
    for (int i0 = 4 * tid; i0 < d.in; i0 += kStageUnroll * kChunk) {
      int slot[kStageUnroll][4];
      float v[kStageUnroll][4];
#pragma unroll
      for (int u = 0; u < kStageUnroll; ++u) {
        const int i = i0 + u * kChunk;
        load4(d.x_slot + i, d.in % 4 == 0, d.in - i, slot[u]);
        load4(xr + i, vec, d.in - i, v[u]);
      }
#pragma unroll
      for (int u = 0; u < kStageUnroll; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int lu = (slot[u][e] >> 5) - u0;
          if (slot[u][e] < 0 || lu < 0 || lu >= units) continue;
          const int k = slot[u][e] & 31;
          xh[2 * (lu * kXsUnitWords + (k & 15) * kExl2MaxBatch + n) + (k >> 4)] =
              __float2half_rn(v[u][e] * inv);
        }
    }
  }
  __syncthreads();
}

// Writes one warp's finished tile: y directly when K is not split, else the block's partial;
// the warp of the last block to finish the tile (counter) adds the partials in blockIdx.y
// order and writes y, so results do not depend on timing.
__device__ __forceinline__ void finish_tile(const Exl2Desc& d, float* y, int batch,
                                            int add_bias, int tile, float* partials,
                                            int* counters, const float* xscale,
                                            float (&acc)[2][4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // acc[m][j]: column 4g + 2m + (j >> 1), batch 2t + (j & 1); partials indexed col * 8 + n.
  if (gridDim.y > 1) {
    float* tp = partials + (static_cast<size_t>(tile) * gridDim.y + blockIdx.y) * kTileOut;
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = 2 * t + (j & 1);
        tp[(4 * g + 2 * m + (j >> 1)) * kExl2MaxBatch + n] = acc[m][j] * xscale[n];
      }
    __threadfence();
    __syncwarp();
    int last = 0;
    if (lane == 0) last = atomicAdd(&counters[tile], 1) == static_cast<int>(gridDim.y) - 1;
    last = __shfl_sync(0xffffffffu, last, 0);
    if (!last) {
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[m][j] = 0.0f;
      return;
    }
    __threadfence();
    const float* all = partials + static_cast<size_t>(tile) * gridDim.y * kTileOut;
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[m][j] = 0.0f;
    // Four partials per output in flight at a time, added in blockIdx.y order.
    for (unsigned k0 = 0; k0 < gridDim.y; k0 += 4) {
      float v[4][2][4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int idx = (4 * g + 2 * m + (j >> 1)) * kExl2MaxBatch + 2 * t + (j & 1);
            v[kk][m][j] = k0 + kk < gridDim.y ? __ldcg(&all[(k0 + kk) * kTileOut + idx]) : 0.0f;
          }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int j = 0; j < 4; ++j)
            if (k0 + kk < gridDim.y) acc[m][j] += v[kk][m][j];
    }
    if (lane == 0) counters[tile] = 0;
  } else {
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[m][j] *= xscale[2 * t + (j & 1)];
  }
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = 2 * t + (j & 1), col = tile * kExl2TileColumns + 4 * g + 2 * m + (j >> 1);
      if (n < batch && col < d.out)
        y[static_cast<size_t>(n) * d.out + col] =
            acc[m][j] + ((add_bias && d.bias) ? __half2float(d.bias[col]) : 0.0f);
      acc[m][j] = 0.0f;
    }
}

// Block (bx, kb) stages x for the steps [kb * steps_per_block, + steps_per_block) once; each
// of its warps then owns whole 32-column tiles, (bx + i * gridDim.x) * 8 + warp, and runs all
// the block's steps over each, so no reduction across warps is needed. A warp's (tile, step)
// items form one sequence and the next item's words are in flight while one is computed.
// W: the layer's common bit width (each kernel gets its own register allocation), 0 if mixed.
template <typename X, int W>
__global__ void __launch_bounds__(kThreads, 2)
    exl2_gemv_kernel(Exl2Desc d, const X* __restrict__ x, float* __restrict__ y, int batch,
                     int add_bias, int steps_per_block, float* __restrict__ partials,
                     int* __restrict__ counters) {
  extern __shared__ uint32_t xs[];  // [units of this block][kXsUnitWords]
  __shared__ float red[kWarps][kExl2MaxBatch];
  __shared__ float xscale[kExl2MaxBatch];

  const int tiles = d.out_pad / kExl2TileColumns;
  const int step0 = blockIdx.y * steps_per_block;
  const int nk = min(steps_per_block, d.num_steps - step0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int stride = gridDim.x * kWarps;
  const int first = blockIdx.x * kWarps + warp;
  const int my_tiles = first < tiles ? (tiles - first + stride - 1) / stride : 0;
  const int items = my_tiles * nk;

  UnitData<W == 0 ? 8 : W> cur, nxt;
  int pt = 0, pk = 0;  // (tile, step) of the next item to load
  auto load_next = [&](UnitData<W == 0 ? 8 : W>& ud) {
    load_unit(d, (step0 + pk) * kExl2UnitsPerStep + t, first + pt * stride, g, ud);
    if (++pk == nk) {
      pk = 0;
      ++pt;
    }
  };
  // Two items are requested before x is staged, so HBM is busy from the start.
  if (items > 0) load_next(cur);
  if (items > 1) load_next(nxt);
  stage_x(d, x, batch, step0 * kExl2UnitsPerStep, nk * kExl2UnitsPerStep, xs, xscale, red);
  float acc[2][4] = {};
  int j = 0;
  for (int tt = 0; tt < my_tiles; ++tt) {
    for (int k = 0; k < nk; ++k, ++j) {
      compute_step<W>(d, step0 + k, cur, xs + (k * kExl2UnitsPerStep + t) * kXsUnitWords, g,
                      acc);
      cur = nxt;
      if (j + 2 < items) load_next(nxt);
    }
    finish_tile(d, y, batch, add_bias, first + tt * stride, partials, counters, xscale, acc);
  }
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

namespace {

template <typename X, int W>
void configure_gemv() {
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(exl2_gemv_kernel<X, W>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    kExl2MaxStepsPerBlock * kExl2UnitsPerStep * kXsUnitWords * 4));
    return true;
  }();
  (void)configured;
}

template <int W>
int blocks_per_sm(int steps_per_block) {
  configure_gemv<float, W>();
  Exl2Split split;
  split.steps_per_block = steps_per_block;
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks, exl2_gemv_kernel<float, W>, kThreads, exl2_gemv_shared_bytes(split)));
  return blocks;
}

template <typename X, int W>
void launch_gemv(const Exl2Desc& d, const X* x, float* y, int batch, bool add_bias,
                 const Exl2Split& split, float* partials, int* counters, cudaStream_t stream) {
  configure_gemv<X, W>();
  const dim3 grid(split.tile_blocks, split.blocks_k);
  exl2_gemv_kernel<X, W><<<grid, kThreads, exl2_gemv_shared_bytes(split), stream>>>(
      d, x, y, batch, add_bias ? 1 : 0, split.steps_per_block, partials, counters);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

int exl2_gemv_blocks_per_sm(const Exl2Desc& d, int steps_per_block) {
  switch (d.uniform_bits) {
    case 2: return blocks_per_sm<2>(steps_per_block);
    case 3: return blocks_per_sm<3>(steps_per_block);
    case 4: return blocks_per_sm<4>(steps_per_block);
    case 5: return blocks_per_sm<5>(steps_per_block);
    case 6: return blocks_per_sm<6>(steps_per_block);
    case 8: return blocks_per_sm<8>(steps_per_block);
    default: return blocks_per_sm<0>(steps_per_block);
  }
}

template <typename X>
void exl2_gemv_cuda(const Exl2Desc& d, const X* x, float* y, int batch, bool add_bias,
                    const Exl2Split& split, float* partials, int* counters,
                    cudaStream_t stream) {
  if (batch <= 0 || d.out == 0) return;
  switch (d.uniform_bits) {
    case 2: launch_gemv<X, 2>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
    case 3: launch_gemv<X, 3>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
    case 4: launch_gemv<X, 4>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
    case 5: launch_gemv<X, 5>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
    case 6: launch_gemv<X, 6>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
    case 8: launch_gemv<X, 8>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
    default: launch_gemv<X, 0>(d, x, y, batch, add_bias, split, partials, counters, stream); break;
  }
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
