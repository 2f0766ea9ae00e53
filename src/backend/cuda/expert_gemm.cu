// Grouped expert GEMM (expert_gemm.h). A block: 4 warps, a chunk of <= 64 rows of one expert x
// 64 output columns; K in steps of 128 through two shared-memory stages (the staged rows by
// cp.async; the weights by cp.async when dense, or as EXL2 words loaded into registers two steps
// ahead and decoded into the stage, a warp per (32-column tile, unit) pair with a lane per
// column). Warp (wm, wn) computes rows 32 wm .. + 32 x columns 32 wn .. + 32 with m16n8k16
// tensor-core steps; a warp whose rows all lie past the chunk's skips its multiplies.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_device.cuh"
#include "backend/cuda/expert_gemm.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/mma_utils.cuh"

namespace exq::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kBM = kExpertGemmRows, kBN = kExpertGemmCols;
constexpr int kUnits = 4;                       // EXL2 units a K step
constexpr int kBK = kUnits * kExl2UnitRows;     // 128
constexpr int kStride = kBK + 8;                // elements a shared row (+16 bytes: banks)
constexpr int kStage = (kBM + kBN) * kStride;   // elements of one stage (rows, then weights)
constexpr size_t kSmemBytes = 2 * kStage * 2;   // two stages of 2-byte elements
constexpr int kPairs = 2 * kUnits / (kThreads / 32);  // (tile, unit) pairs a warp decodes a step

// 64 rows x 128 elements (16-byte chunks) from src rows [0, n) with row stride `in`, columns
// [k0, k0 + 128); rows >= n and columns >= in read as zero.
__device__ __forceinline__ void copy_tile(void* dst, const void* src, int n, int in, int k0) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
#pragma unroll
  for (int i = 0; i < kBM * kBK / 8 / kThreads; ++i) {
    const int c = threadIdx.x + i * kThreads, r = c >> 4, k = k0 + (c & 15) * 8;
    const bool ok = r < n && k < in;
    cp_async_16(d + (static_cast<size_t>(r) * kStride + (c & 15) * 8) * 2,
                ok ? s + (static_cast<size_t>(r) * in + k) * 2 : s, ok);
  }
}

// One (tile, unit) pair's words, scale code and multiplier, loaded a step ahead of its decode.
struct UnitWords {
  uint32_t w[8];
  uint32_t code;
  __half m;
  int bits;  // 0: past the layer (decoded as zeros)
};

__device__ __forceinline__ void fetch_unit(const Exl2Desc& d, const uint32_t* qw, const uint32_t* qs,
                                           const __half* gm, int u, int tile, int lane, UnitWords& p) {
  p.bits = 0;
  if (u >= d.num_units || tile * 32 >= d.out_pad) return;
  const Exl2Unit un = d.units[u];
  const int stride = (un.info >> 16) & 0xff, col = tile * 32 + lane;
  p.bits = un.info & 0xff;
  const uint32_t* base = qw + (static_cast<size_t>(tile) * d.tile_rows + un.row) * 32 + lane;
#pragma unroll
  for (int i = 0; i < 8; ++i) p.w[i] = i < p.bits ? base[static_cast<size_t>(i) * stride * 32] : 0u;
  p.code = (qs[static_cast<size_t>(un.group) * (d.out_pad / 8) + col / 8] >> (4 * (col % 8))) & 15u;
  p.m = gm[un.group];
}

template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) mma_16816(c, a, b0, b1);
  else mma_16816_bf16(c, a, b0, b1);
}

template <typename T, bool EXL2>
__global__ void __launch_bounds__(kThreads)
    expert_gemm_kernel(const __grid_constant__ ExpertGemm g) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const ExpertGemmLayer& L = g.l[blockIdx.z];
  const int n0 = blockIdx.y * kBN;
  if (n0 >= L.out) return;
  const ExpertChunk ch = g.chunks[blockIdx.x];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp & 1, wn = warp >> 1;
  const int in = g.in, steps = (in + kBK - 1) / kBK;
  const T* a = static_cast<const T*>(L.a) + static_cast<size_t>(ch.row0) * in;

  const T* wdense = nullptr;
  const uint32_t *qw = nullptr, *qs = nullptr;
  const __half* gm = nullptr;
  if constexpr (EXL2) {
    const int64_t* sh = L.shifts + static_cast<size_t>(ch.expert) * L.stride;
    qw = reinterpret_cast<const uint32_t*>(exl2::shifted(L.d.q_weight, sh));
    qs = exl2::shifted(L.d.q_scale, sh);
    gm = exl2::shifted(L.d.group_m, sh);
  } else {
    wdense = static_cast<const T*>(L.weights[static_cast<size_t>(ch.expert) * L.stride]) +
             static_cast<size_t>(n0) * in;
  }
  // Pair p of this warp: tile (warp + 4 p) / 4 of the block's two, unit (warp + 4 p) % 4 of the step.
  auto fetch = [&](int step, UnitWords (&into)[kPairs]) {
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      const int q = warp + p * (kThreads / 32);
      fetch_unit(L.d, qw, qs, gm, step * kUnits + (q & 3), (n0 >> 5) + (q >> 2), lane, into[p]);
    }
  };
  auto load = [&](int step, int stage) {
    T* s = smem + stage * kStage;
    copy_tile(s, a, ch.rows, in, step * kBK);
    if constexpr (!EXL2) copy_tile(s + kBM * kStride, wdense, L.out - n0, in, step * kBK);
    cp_async_commit();
  };

  float c[2][4][4] = {};
  // Rows of this warp's two 16-row fragments: none (no multiplies), the first only, or both.
  const bool active = wm * 32 < ch.rows, two = wm * 32 + 16 < ch.rows;
  // One K step; EXL2: decode `words` (fetched two steps earlier), then fetch step + 2 into them.
  auto run_step = [&](int step, UnitWords (&words)[kPairs]) {
    const int stage = step & 1;
    T* as = smem + stage * kStage;
    T* ws = as + kBM * kStride;
    if constexpr (EXL2) {
#pragma unroll
      for (int p = 0; p < kPairs; ++p) {
        const int q = warp + p * (kThreads / 32);
        uint4* dst = reinterpret_cast<uint4*>(ws + ((q >> 2) * 32 + lane) * kStride + (q & 3) * kExl2UnitRows);
        if (words[p].bits == 0) {
#pragma unroll
          for (int i = 0; i < 4; ++i) dst[i] = make_uint4(0, 0, 0, 0);
        } else {
          exl2::dequant_unit_rows(words[p].bits, words[p].w, exl2::scale_pair(words[p].code, words[p].m), dst);
        }
      }
      if (step + 2 < steps) fetch(step + 2, words);
    }
    if (step + 1 < steps) {
      load(step + 1, stage ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
#pragma unroll
      for (int ks = 0; ks < kBK / 16; ++ks) {
        uint32_t af[2][4];
        ldmatrix_x4(af[0], reinterpret_cast<const __half*>(as + (wm * 32 + (lane & 15)) * kStride + ks * 16 +
                                                           (lane >> 4) * 8));
        if (two) ldmatrix_x4(af[1], reinterpret_cast<const __half*>(as + (wm * 32 + 16 + (lane & 15)) * kStride +
                                                                    ks * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int nj = 0; nj < 2; ++nj) {
          uint32_t bf[4];
          ldmatrix_x4(bf, reinterpret_cast<const __half*>(ws + (wn * 32 + nj * 16 + ((lane >> 4) & 1) * 8 +
                                                                (lane & 7)) * kStride +
                                                          ks * 16 + ((lane >> 3) & 1) * 8));
          mma<T>(c[0][2 * nj], af[0], bf[0], bf[1]);
          mma<T>(c[0][2 * nj + 1], af[0], bf[2], bf[3]);
          if (two) {
            mma<T>(c[1][2 * nj], af[1], bf[0], bf[1]);
            mma<T>(c[1][2 * nj + 1], af[1], bf[2], bf[3]);
          }
        }
      }
    }
    __syncthreads();
  };
  // EXL2 words two steps ahead in two register sets, used by even and odd steps.
  UnitWords even[kPairs], odd[kPairs];
  load(0, 0);
  if constexpr (EXL2) {
    fetch(0, even);
    if (steps > 1) fetch(1, odd);
  }
  for (int step = 0; step < steps; step += 2) {
    run_step(step, even);
    if (step + 1 < steps) run_step(step + 1, odd);
  }
  if (!active) return;
  const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wm * 32 + mi * 16 + gid + h * 8;
      if (r >= ch.rows) continue;
      const size_t row = static_cast<size_t>(ch.row0) + r;
      const float s = g.row_scale != nullptr ? g.row_scale[row] : 1.0f;
      float* y = L.y + row * L.out;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int col = n0 + wn * 32 + ni * 8 + 2 * tig;
        const float v0 = c[mi][ni][2 * h] * s, v1 = c[mi][ni][2 * h + 1] * s;
        if (col + 1 < L.out && L.out % 2 == 0) {
          *reinterpret_cast<float2*>(y + col) = make_float2(v0, v1);
        } else {
          if (col < L.out) y[col] = v0;
          if (col + 1 < L.out) y[col + 1] = v1;
        }
      }
    }
}

template <typename T, bool EXL2>
void launch(const ExpertGemm& g, cudaStream_t stream) {
  if (g.num_chunks == 0 || g.in == 0) return;
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(expert_gemm_kernel<T, EXL2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(kSmemBytes)));
    return true;
  }();
  (void)configured;
  int out = 0;
  for (int i = 0; i < g.layers; ++i) out = std::max(out, g.l[i].out);
  const dim3 grid(static_cast<unsigned>(g.num_chunks), ceil_div(out, kBN), static_cast<unsigned>(g.layers));
  expert_gemm_kernel<T, EXL2><<<grid, kThreads, kSmemBytes, stream>>>(g);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool expert_gemm_exl2_ok(const Exl2Desc& d, const Exl2Unit* units, const int32_t* unit_krow) {
  if (d.num_units <= 0 || d.in != d.num_units * kExl2UnitRows || d.out_pad % 32 != 0) return false;
  for (int u = 0; u < d.num_units; ++u)
    if (static_cast<int>((units[u].info >> 8) & 0xff) != kExl2UnitRows || unit_krow[u] != u * kExl2UnitRows)
      return false;
  return true;
}

void expert_gemm_exl2_cuda(const ExpertGemm& g, cudaStream_t stream) { launch<__half, true>(g, stream); }

template <typename T>
void expert_gemm_dense_cuda(const ExpertGemm& g, cudaStream_t stream) {
  launch<T, false>(g, stream);
}
template void expert_gemm_dense_cuda<__half>(const ExpertGemm&, cudaStream_t);
template void expert_gemm_dense_cuda<__nv_bfloat16>(const ExpertGemm&, cudaStream_t);

}  // namespace exq::cuda
