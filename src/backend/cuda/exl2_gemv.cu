// EXL2 GEMV on tensor cores: y[b, out] = x[b, in] @ W^T for b <= 8, from the device layout
// (exl2_launchers.h, exl2_layout.h). Two launches:
//
// 1. x staging (exl2_stage.cu): x permuted, scaled per step and rounded to f16 into the
//    workspace, once for all blocks (for every layer of a group launch: q, k, v or gate, up
//    share x and run as one staging launch and one GEMV launch, blocks of layer after layer). (Staging inside each GEMV block was tried: the dependent
//    gather chain in front of every block made it slower than this launch, which overlaps
//    the GEMV's first weight loads through programmatic dependent launch.)
// 2. exl2_gemv_kernel: warp (tile, K range) streams its steps through a ring of D register
//    stages (no dependent loads: every address is arithmetic on the segment table, a kernel
//    parameter). Lane (g, t) loads 16 bytes per word row of unit t (columns 4g..4g+3), decodes
//    them to bit-exact fp16 weights and feeds mma.m16n8k16 as the A operand: A row g is column
//    4g+2m, row g+8 column 4g+2m+1 (M tiles m = 0, 1), the k slots of lane t are pairs of
//    unit t. B is x from shared memory, N = batch column g. Each step's products start from
//    zero and are added to the f32 totals times the step's x scale (exact power of two).
//    It is launched with programmatic dependent launch: the first weight loads are issued
//    before griddepcontrol.wait, so they overlap the x pass and the previous kernel's tail.
//    K is split over the warps of a block (ksub) and over the blocks of a thread-block
//    cluster (ksplit); partial sums are added in a fixed order through shared / distributed
//    shared memory, so results are identical run to run (no atomics). Without clusters
//    (pre-Hopper or forced) the blocks write partials and a small kernel adds them in order.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_gemv_common.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace {

using namespace exl2;

// Shared x slot: [16 pairs][8 batch columns] words plus 8, so the 4 slots a warp reads at once
// start on different banks; pair offsets are immediates in the loads.
constexpr int kSlotWords = kPairs * kExl2MaxBatch + 8;
constexpr int kStepWords = kExl2UnitsPerStep * kSlotWords;

template <int OFF>
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1+%2];" : "=r"(v) : "r"(addr), "n"(OFF));
  return v;
}

struct GemvArgs {
  int batch;
  int bs;
  int add_bias;
  int tpb;
  int ksub;
  int spw;
};

// What one warp needs in its step loop.
struct WarpCtx {
  const uint4* wbase;     // q_weight + tile * tile_rows * 8 + g (uint4 units)
  const uint32_t* sbase;  // q_scale + tile * 4 + g / 2
  const __half* group_m;
  uint32_t xs;            // shared address of x: + t * kSlotWords + g words, or the zero slot
  uint32_t xsc;           // shared address of the per-step scales [block step][8]
  int scale_row;          // q_scale words per group
  int scale_shift;        // 16 * (g & 1)
  int t;
  int k0;                 // the block's first step
  int step_bytes;         // shared bytes per step for this lane (0 for the zero slot)
};

// Block-wide x staging into shared memory: the staging pass's slots of the block's steps as
// [pair][8 columns] (columns past bs are never read: lanes past the batch read the zero slot),
// step scales, then a barrier.
struct XStage {
  const GemvArgs* a;
  const Exl2LayerIo* io;
  uint32_t* xs;
  float* xsc;
  uint32_t* zero;  // kSlotWords zero words
  int k0, k1;
};

__device__ __forceinline__ void stage_x(const XStage& s) {
  const GemvArgs& a = *s.a;
  for (int i = threadIdx.x; i < kSlotWords; i += blockDim.x) s.zero[i] = 0u;
  pdl_wait();
  const int slots = (s.k1 - s.k0) * kExl2UnitsPerStep;
  const uint32_t* src = s.io->xq + static_cast<size_t>(s.k0) * kExl2UnitsPerStep * kPairs * a.bs;
  if (a.bs >= 4) {
    // 16-byte chunks: bs / 4 per pair.
    const int per_pair = a.bs >> 2;
    stage_elements(reinterpret_cast<const uint4*>(src), slots * kPairs * per_pair,
                   [&](int i, uint4 v) __attribute__((always_inline)) {
                     const int pair = i / per_pair, slot = pair >> 4;
                     *reinterpret_cast<uint4*>(s.xs + slot * kSlotWords +
                                               (pair & 15) * kExl2MaxBatch +
                                               (i - pair * per_pair) * 4) = v;
                   });
  } else {
    const int shift = a.bs >> 1;  // bs 1 or 2
    stage_elements(src, slots * kPairs * a.bs,
                   [&](int i, uint32_t v) __attribute__((always_inline)) {
                     const int pair = i >> shift, slot = pair >> 4;
                     s.xs[slot * kSlotWords + (pair & 15) * kExl2MaxBatch + (i & shift)] = v;
                   });
  }
  stage_scales(s);
}

// First 128-byte row of step s (all earlier steps of its run hold 4 units).
__device__ __forceinline__ int step_row(const Exl2Segment& seg, int s) {
  return seg.row + kExl2UnitsPerStep * (s - seg.first_step) * seg.bits;
}

// A run's loads: q_weight of step s at rows + (s - first_step) * 4 * B (32-bit offsets from
// the warp's tile), scale codes of its group.
template <int B>
__device__ __forceinline__ void load_stage(const WarpCtx& c, const Exl2Segment& seg, int s,
                                           Stage<B>& st) {
  const int ls = s - seg.first_step;
  const int n = min(kExl2UnitsPerStep, seg.units - kExl2UnitsPerStep * ls);
  const uint4* p = c.wbase + (step_row(seg, s) + c.t) * 8;
  if (n == kExl2UnitsPerStep) {  // all but a run's last step: immediate offsets
#pragma unroll
    for (int i = 0; i < B; ++i) st.w[i] = __ldcs(p + i * kExl2UnitsPerStep * 8);
  } else {
    const bool on = c.t < n;
#pragma unroll
    for (int i = 0; i < B; ++i) st.w[i] = on ? __ldcs(p + i * n * 8) : make_uint4(0u, 0u, 0u, 0u);
  }
  const int u = min(kExl2UnitsPerStep * ls + c.t, seg.units - 1);
  const int gi = seg.group_shift >= 0 ? u >> seg.group_shift : u / seg.units_per_group;
  const int group = seg.first_group + min(gi, seg.groups - 1);
  st.code = __ldg(c.sbase + group * c.scale_row) >> c.scale_shift;
  st.m = __ldg(reinterpret_cast<const unsigned short*>(c.group_m) + group);
}

template <int B>
__device__ __forceinline__ void compute_stage(const WarpCtx& c, const Stage<B>& st, int sl,
                                              float (&acc)[2][4]) {
  const __half2 m2 = __half2half2(__ushort_as_half(static_cast<unsigned short>(st.m)));
  const __half2 s01 = scale_pair2(st.code, 0, m2), s23 = scale_pair2(st.code, 1, m2);
  const __half2 sc[4] = {__low2half2(s01), __high2half2(s01), __low2half2(s23), __high2half2(s23)};
  uint32_t w[4][B];
#pragma unroll
  for (int i = 0; i < B; ++i) {
    w[0][i] = st.w[i].x;
    w[1][i] = st.w[i].y;
    w[2][i] = st.w[i].z;
    w[3][i] = st.w[i].w;
  }
  const uint32_t xr = c.xs + sl * c.step_bytes;
  // Two accumulator chains per M tile (even / odd k steps) halve the mma dependency chain.
  float part[2][2][4];
  static_for<8>([&](auto ks_) {
    constexpr int ks = decltype(ks_)::value;
    uint32_t a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      a[mt][0] = pair_weights<B, 2 * ks>(w[2 * mt], sc[2 * mt]);
      a[mt][1] = pair_weights<B, 2 * ks>(w[2 * mt + 1], sc[2 * mt + 1]);
      a[mt][2] = pair_weights<B, 2 * ks + 1>(w[2 * mt], sc[2 * mt]);
      a[mt][3] = pair_weights<B, 2 * ks + 1>(w[2 * mt + 1], sc[2 * mt + 1]);
    }
    const uint32_t b0 = lds32<(2 * ks) * kExl2MaxBatch * 4>(xr);
    const uint32_t b1 = lds32<(2 * ks + 1) * kExl2MaxBatch * 4>(xr);
    if constexpr (ks < 2) {
      mma_16816_zero(part[ks & 1][0], a[0], b0, b1);
      mma_16816_zero(part[ks & 1][1], a[1], b0, b1);
    } else {
      mma_16816(part[ks & 1][0], a[0], b0, b1);
      mma_16816(part[ks & 1][1], a[1], b0, b1);
    }
  });
  const float2 s = lds64f(c.xsc + (sl * kExl2MaxBatch + 2 * c.t) * 4);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      acc[mt][j] = fmaf(part[0][mt][j] + part[1][mt][j], (j & 1) ? s.y : s.x, acc[mt][j]);
}

// Steps [s_begin, s_end) of one run (bit width B). `first`: the warp's first run, which
// stages x (a block barrier) after issuing its first loads.
template <int B, bool MIXED>
__device__ __forceinline__ void run_steps(WarpCtx& c, const Exl2Segment& seg, int s_begin,
                                          int s_end, bool first, const XStage& xst,
                                          float (&acc)[2][4]) {
  constexpr int D = ring_depth<B, MIXED>();
  Stage<B> st[D];
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (s_begin + d < s_end) load_stage<B>(c, seg, s_begin + d, st[d]);
  if (first) stage_x(xst);
  for (int s = s_begin; s < s_end; s += D) {
#pragma unroll
    for (int d = 0; d < D; ++d) {
      const int sd = s + d;
      if (sd < s_end) {
        compute_stage<B>(c, st[d], sd - c.k0, acc);
        if (sd + D < s_end) load_stage<B>(c, seg, sd + D, st[d]);
      }
    }
  }
}

// W: the layer's common bit width (the kernel carries only that decoder), 0 if mixed.
// N: layers the kernel parameter has room for (1, or kExl2MaxGroup for group launches).
template <int W, int N>
__global__ void __launch_bounds__(kExl2MaxWarps * 32, 1)
    exl2_gemv_kernel(const __grid_constant__ GroupParam<N> grp, const __grid_constant__ GemvArgs a) {
  extern __shared__ __align__(16) uint32_t smem[];
  const GroupPlace place = group_place(grp);
  const Exl2Desc& d = grp.d[place.layer];
  const Exl2LayerIo& io = grp.io[place.layer];
  const WarpRange w = warp_range(d, a, place.row);
  const int g = w.g, t = w.t;
  XStage xst{&a, &io, smem, reinterpret_cast<float*>(smem + w.block_steps * kStepWords + kSlotWords),
             smem + w.block_steps * kStepWords, w.k0, w.k1};
  WarpCtx c;
  c.wbase = d.q_weight + static_cast<size_t>(w.tile) * d.tile_rows * 8 + g;
  c.sbase = d.q_scale + w.tile * 4 + (g >> 1);
  c.group_m = d.group_m;
  c.xs = static_cast<uint32_t>(
      __cvta_generic_to_shared((g < a.batch ? smem + t * kSlotWords : xst.zero) + g));
  c.step_bytes = g < a.batch ? kStepWords * 4 : 0;
  c.xsc = static_cast<uint32_t>(__cvta_generic_to_shared(xst.xsc));
  c.scale_row = d.out_pad / 8;
  c.scale_shift = 16 * (g & 1);
  c.t = t;
  c.k0 = w.k0;

  float acc[2][4] = {};
  warp_steps<W>(d, w, c, xst, acc);
  reduce_store(d, a, io, place.row, smem, w, acc);
}

int batch_stride(int batch) { return batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : 8; }

}  // namespace

bool exl2_gemv_hopper() {
  static const bool hopper = [] {
    int device = 0, major = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    return major >= 9;
  }();
  return hopper;
}

size_t exl2_gemv_shared_bytes(const Exl2Split& split, int batch) {
  (void)batch;
  if (split.kernel == 2) return exl2_gemv2_shared_bytes(split);
  const size_t steps = static_cast<size_t>(split.ksub) * split.steps_per_warp;
  const size_t x_bytes = (steps * kStepWords + kSlotWords + steps * kExl2MaxBatch) * 4;
  const size_t red_bytes = static_cast<size_t>(split.tiles_per_block) * split.ksub *
                           kExl2MaxBatch * kRedStride * 4;
  return std::max(x_bytes, red_bytes);
}

size_t exl2_gemv_xq_words(const Exl2Desc& d) {
  return static_cast<size_t>(d.num_steps) * kExl2UnitsPerStep * kPairs * kExl2MaxBatch;
}

size_t exl2_gemv_xscale_floats(const Exl2Desc& d) {
  return static_cast<size_t>(d.num_steps) * kExl2MaxBatch;
}

size_t exl2_gemv_partial_floats(const Exl2Desc& d, const Exl2Split& split) {
  if (split.ksplit <= 1 || split.cluster) return 0;
  return static_cast<size_t>(split.ksplit) * kExl2MaxBatch * d.out_pad;
}

int exl2_gemv_blocks_per_sm(const Exl2Desc& d, const Exl2Split& split) {
  if (split.kernel == 2) return exl2_gemv2_blocks_per_sm(d, split);
  const size_t smem = exl2_gemv_shared_bytes(split, kExl2MaxBatch);
  return by_width(d.uniform_bits,
                  [&]<int W>() { return gemv_blocks_per_sm<exl2_gemv_kernel<W, 1>>(split, smem); });
}

int exl2_gemv_max_clusters(const Exl2Desc& d, const Exl2Split& split) {
  if (split.kernel == 2) return exl2_gemv2_max_clusters(d, split);
  const size_t smem = exl2_gemv_shared_bytes(split, kExl2MaxBatch);
  return by_width(d.uniform_bits,
                  [&]<int W>() { return gemv_max_clusters<exl2_gemv_kernel<W, 1>>(split, smem); });
}

void exl2_gemv_cuda(const Exl2Desc* d, int n, int width, const Exl2Input& x, float* const* y,
                    bool add_bias, const Exl2Split& split, const Exl2Scratch* scratch,
                    cudaStream_t stream, const int64_t* const* shifts) {
  if (x.batch <= 0 || n <= 0) return;
  const int bs = batch_stride(x.batch);
  if (!x.staged) exl2_prep_cuda(d, n, x, bs, scratch, stream, shifts);
  const bool partials = split.ksplit > 1 && !split.cluster;
  Exl2Group g;
  g.count = n;
  for (int i = 0; i < n; ++i) {
    g.d[i] = d[i];
    g.io[i] = {scratch[i].xq, scratch[i].xscale, y[i], partials ? scratch[i].partials : nullptr,
               shifts != nullptr ? shifts[i] : nullptr};
  }
  group_rows(g, split);
  if (split.kernel == 2) {
    exl2_gemv2_launch(g, width, x.batch, bs, add_bias, split, stream);
  } else {
    const GemvArgs a{x.batch, bs, add_bias ? 1 : 0, split.tiles_per_block, split.ksub,
                     split.steps_per_warp};
    const size_t smem = exl2_gemv_shared_bytes(split, a.batch);
    by_width(width, [&]<int W>() { launch_gemv<exl2_gemv_kernel<W, 1>, exl2_gemv_kernel<W, kExl2MaxGroup>>(g, a, split, smem, stream); });
  }
  if (partials)
    for (int i = 0; i < n; ++i)
      exl2_reduce_cuda(scratch[i].partials, split.ksplit, x.batch, d[i].out, d[i].out_pad,
                       add_bias ? d[i].bias : nullptr, y[i], stream);
}

}  // namespace exq::cuda
