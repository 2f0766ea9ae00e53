// What the two EXL2 GEMV kernels (exl2_gemv.cu, exl2_gemv_v2.cu) share: the warp split of a
// launch, the ring stage, the scale decode of kernel 1, the walk over a warp's runs, the
// deterministic K reduction epilogue and the host-side configure / occupancy / launch helpers.
// Everything the kernels do differently (x layout in shared memory, staging, step loop) stays in
// their files. Included only by .cu files.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_device.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/mma_utils.cuh"

namespace exq::cuda::exl2 {

constexpr int kRedStride = 33;  // floats per (warp, batch) row of the reduction buffer

// Block barrier that warps may reach from different call sites (non-aligned barrier).
__device__ __forceinline__ void block_barrier() { asm volatile("barrier.sync 0;" ::: "memory"); }

__device__ __forceinline__ float2 lds64f(uint32_t addr) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];" : "=f"(v.x), "=f"(v.y) : "r"(addr));
  return v;
}

// c = a * b (no accumulator input).
__device__ __forceinline__ void mma_16816_zero(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  const float z = 0.0f;
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%10,%10,%10};\n"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(z));
}

// Ring depth per bit width: stages held in registers (up to 16 warps per multiprocessor cover
// the rest of the latency; an L2 bulk-prefetch window ahead of the ring was tried and
// measured no faster on an H100). The mixed-width loops (MIXED) use depth 1.
template <int B, bool MIXED>
constexpr int ring_depth() {
  return MIXED ? 1 : B <= 2 ? 4 : B == 3 ? 3 : B <= 6 ? 2 : 1;
}

// One ring stage: a lane's loads for one step.
template <int B>
struct Stage {
  uint4 w[B];     // word i of the lane's unit, columns 4g..4g+3
  uint32_t code;  // scale codes of the 4 columns (low 16 bits)
  uint32_t m;     // fp16 bits of the group's q_scale_max / 256
};

// Scales of columns (2k, 2k + 1) (code nibbles 2k, 2k + 1, qs = nibble + 1) as
// half2(fp16(qs0^2 m), fp16(qs1^2 m)), exllamav2's: byte k of `codes` in both halves, its
// nibbles masked under the exponents that read them as half2(1024 + n0, 64 + n1), then exact
// fp16 arithmetic for qs and qs^2 and one rounding multiply by m.
__device__ __forceinline__ __half2 scale_pair2(uint32_t codes, int k, __half2 m2) {
  constexpr uint32_t kMask = 0x00f0000fu, kExp = 0x54006400u;
  const __half2 bias = as_half2(0xd3e0e3feu);  // half2(-1023, -63): qs = n + 1
  const uint32_t u = __byte_perm(codes, 0u, k == 0 ? 0x1010u : 0x0101u);
  const __half2 qs = __hadd2(as_half2(and_or<kMask>(u, kExp)), bias);
  return __hmul2_rn(__hmul2_rn(qs, qs), m2);
}

// A warp's totals, passed by value to and from the mixed-width run functions.
struct Acc {
  float v[2][4];
};

// A warp's place in the launch: lane (g, t), its tile, the block's steps [k0, k1) (block
// `rank` of the K split) and the warp's own steps [s0, s1) (empty past the last tile).
struct WarpRange {
  int lane, warp, g, t, tile, rank, k0, k1, s0, s1, block_steps;
};

// The layer of a group launch this block works on, and the block's row within the layer.
struct GroupPlace {
  int layer, row;
};

// A group launch's kernel parameter with room for N layers: one-layer launches (N = 1) pass a
// third of the bytes and index their layer at compile time.
template <int N>
struct GroupParam {
  int count;
  int block_start[N + 1];
  Exl2Desc d[N];
  Exl2LayerIo io[N];
};

template <int N>
GroupParam<N> group_param(const Exl2Group& g) {
  GroupParam<N> p{};
  p.count = g.count;
  for (int i = 0; i <= N; ++i) p.block_start[i] = g.block_start[i];
  for (int i = 0; i < N; ++i) {
    p.d[i] = g.d[i];
    p.io[i] = g.io[i];
  }
  return p;
}

template <int N>
__device__ __forceinline__ GroupPlace group_place(const GroupParam<N>& g) {
  if constexpr (N == 1) {
    return {0, static_cast<int>(blockIdx.y)};
  } else {
    int l = 0;
    while (l + 1 < g.count && static_cast<int>(blockIdx.y) >= g.block_start[l + 1]) ++l;
    return {l, static_cast<int>(blockIdx.y) - g.block_start[l]};
  }
}

// `row`: the block's row among its layer's blocks (group_place).
template <typename Args>
__device__ __forceinline__ WarpRange warp_range(const Exl2Desc& d, const Args& a, int row) {
  WarpRange r;
  r.lane = threadIdx.x & 31;
  r.warp = threadIdx.x >> 5;
  const int tw = r.warp % a.tpb, sub = r.warp / a.tpb;
  r.g = r.lane >> 2;
  r.t = r.lane & 3;
  r.tile = row * a.tpb + tw;
  r.rank = blockIdx.x;
  r.k0 = min(d.num_steps, r.rank * a.ksub * a.spw);
  r.k1 = min(d.num_steps, r.k0 + a.ksub * a.spw);
  r.s0 = min(r.k1, r.k0 + sub * a.spw);
  r.s1 = r.tile < d.out_pad / kExl2TileColumns ? min(r.k1, r.s0 + a.spw) : r.s0;
  r.block_steps = a.ksub * a.spw;
  return r;
}

// x staging: elements [0, total) of src (x staged by exl2_prep_cuda) into shared memory,
// store(i, v) putting element i; four loads in flight per thread before their stores.
template <typename T, typename Store>
__device__ __forceinline__ void stage_elements(const T* src, int total, Store&& store) {
  for (int i0 = threadIdx.x; i0 < total; i0 += 4 * blockDim.x) {
    T v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = i0 + u * blockDim.x;
      if (i < total) v[u] = __ldcg(src + i);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = i0 + u * blockDim.x;
      if (i < total) store(i, v[u]);
    }
  }
}

// The end of x staging: the block's step scales, a block barrier, then the next kernel may
// launch.
template <typename XSt>
__device__ __forceinline__ void stage_scales(const XSt& s) {
  for (int i = threadIdx.x; i < (s.k1 - s.k0) * kExl2MaxBatch; i += blockDim.x)
    s.xsc[i] = __ldcg(s.io->xscale + s.k0 * kExl2MaxBatch + i);
  block_barrier();
  pdl_trigger();
}

// The run holding step s (a run-time index into the __grid_constant__ parameter).
__device__ __forceinline__ Exl2Segment segment_of(const Exl2Desc& d, int s) {
  const Exl2Segment* segs = d.segments;
  int k = 0;
  while (k + 1 < d.num_segments && s >= segs[k + 1].first_step) ++k;
  return segs[k];
}

// The kernel files' step loops, found by argument-dependent lookup on their WarpCtx / XStage:
//   run_steps<B, MIXED>(const WarpCtx&, const Exl2Segment&, s_begin, s_end, first,
//                       const XStage&, float (&acc)[2][4]): steps [s_begin, s_end) of one run;
//   stage_x(const XStage&): the block's x into shared memory (a block barrier).

// One run of a mixed-width layer: each width in a function of its own (values by copy, the
// totals returned), so every width gets a register allocation of its own instead of one that
// holds all six loops at once.
template <int B, typename Ctx, typename XSt>
__device__ __noinline__ Acc run_mixed(Ctx c, Exl2Segment seg, int s_begin, int s_end, bool first,
                                      XSt xst, Acc acc) {
  run_steps<B, true>(c, seg, s_begin, s_end, first, xst, acc.v);
  return acc;
}

// A warp's steps [s0, s1), run by run (W: the layer's common width, 0 if mixed); the warp's
// first run stages x after issuing its first loads (every warp stages x, also one without
// steps).
// RUNS (W = 0): the launch split puts every warp's steps inside one run, so the warp takes one
// width's loop, inlined (all six compile without spilling when no loop runs them one after
// the other).
template <int W, bool RUNS = false, typename Ctx, typename XSt>
__device__ __forceinline__ void warp_steps(const Exl2Desc& d, const WarpRange& w, Ctx& c,
                                           const XSt& xst, float (&acc)[2][4]) {
  const int s0 = w.s0, s1 = w.s1;
  if (s0 >= s1) {
    stage_x(xst);
    return;
  }
  if constexpr (W == 0 && RUNS) {
    const Exl2Segment seg = segment_of(d, s0);
    switch (seg.bits) {
      case 2: run_steps<2, false>(c, seg, s0, s1, true, xst, acc); break;
      case 3: run_steps<3, false>(c, seg, s0, s1, true, xst, acc); break;
      case 4: run_steps<4, false>(c, seg, s0, s1, true, xst, acc); break;
      case 5: run_steps<5, false>(c, seg, s0, s1, true, xst, acc); break;
      case 6: run_steps<6, false>(c, seg, s0, s1, true, xst, acc); break;
      default: run_steps<8, false>(c, seg, s0, s1, true, xst, acc); break;
    }
  } else {
    for (int s = s0; s < s1;) {
      const Exl2Segment seg = segment_of(d, s);
      const int e = min(s1, seg.first_step + seg.steps);
      if constexpr (W != 0) {
        run_steps<W, false>(c, seg, s, e, s == s0, xst, acc);
      } else {
        Acc t;
        for (int i = 0; i < 8; ++i) t.v[i / 4][i % 4] = acc[i / 4][i % 4];
        switch (seg.bits) {
          case 2: t = run_mixed<2>(c, seg, s, e, s == s0, xst, t); break;
          case 3: t = run_mixed<3>(c, seg, s, e, s == s0, xst, t); break;
          case 4: t = run_mixed<4>(c, seg, s, e, s == s0, xst, t); break;
          case 5: t = run_mixed<5>(c, seg, s, e, s == s0, xst, t); break;
          case 6: t = run_mixed<6>(c, seg, s, e, s == s0, xst, t); break;
          default: t = run_mixed<8>(c, seg, s, e, s == s0, xst, t); break;
        }
        for (int i = 0; i < 8; ++i) acc[i / 4][i % 4] = t.v[i / 4][i % 4];
      }
      s = e;
    }
  }
}

__device__ __forceinline__ void cluster_sync_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
          : "memory");
#endif
}

__device__ __forceinline__ float load_peer(const float* p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t remote;
  asm("mapa.shared::cluster.u32 %0, %1, %2;"
      : "=r"(remote) : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(p))), "r"(rank));
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
#else
  (void)rank;
  return *p;
#endif
}

// The kernels' epilogue. Partial sums: warp -> red[warp][batch][column] (aliases x in smem,
// which every warp is done with). Outputs of the block column: the cluster's blocks share
// them; each adds the partials of every block (rank order) and warp along K (sub order), so
// results are identical run to run. Without a cluster but with a K split, the block's sums go
// to io.partials (added by exl2_reduce_cuda), else to io.y (+ bias). `row`: the block's row
// among its layer's blocks.
template <typename Args>
__device__ __forceinline__ void reduce_store(const Exl2Desc& d, const Args& a,
                                             const Exl2LayerIo& io, int row, uint32_t* smem,
                                             const WarpRange& w, const float (&acc)[2][4]) {
  block_barrier();
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      red[(w.warp * kExl2MaxBatch + 2 * w.t + (j & 1)) * kRedStride + 4 * w.g + 2 * mt +
          (j >> 1)] = acc[mt][j];
  const bool cluster = gridDim.x > 1 && io.partials == nullptr;
  if (cluster) cluster_sync_all();
  else block_barrier();
  const int cols = a.tpb * kExl2TileColumns, outs = cols * a.batch;
  const int ranks = cluster ? gridDim.x : 1;
  const int first = cluster ? w.rank * blockDim.x + threadIdx.x : threadIdx.x;
  for (int o = first; o < outs; o += ranks * blockDim.x) {
    const int b = o / cols, cl = o - b * cols, twx = cl >> 5, cc = cl & 31;
    const int col = (row * a.tpb + twx) * kExl2TileColumns + cc;
    float v = 0.0f;
    for (int r = 0; r < ranks; ++r)
      for (int k = 0; k < a.ksub; ++k) {
        const float* p = red + ((k * a.tpb + twx) * kExl2MaxBatch + b) * kRedStride + cc;
        v += cluster ? load_peer(p, r) : *p;
      }
    if (col >= d.out) continue;
    if (io.partials != nullptr && gridDim.x > 1) {
      io.partials[(static_cast<size_t>(w.rank) * a.batch + b) * d.out_pad + col] = v;
    } else {
      if (a.add_bias && d.bias) v += __half2float(d.bias[col]);
      io.y[static_cast<size_t>(b) * d.out + col] = v;
    }
  }
  if (cluster) cluster_sync_all();
}

// Host side.

inline int max_shared_bytes() {
  static const int bytes = current_shared_per_block_optin();
  return bytes;
}

// Lets Kernel use all the shared memory of a block (once per kernel).
template <auto Kernel>
void configure_gemv() {
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    max_shared_bytes()));
    return true;
  }();
  (void)configured;
}

template <auto Kernel>
int gemv_blocks_per_sm(const Exl2Split& split, size_t smem) {
  configure_gemv<Kernel>();
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks, Kernel, 32 * split.tiles_per_block * split.ksub, smem));
  return blocks;
}

template <auto Kernel>
int gemv_max_clusters(const Exl2Split& split, size_t smem) {
  configure_gemv<Kernel>();
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(split.ksplit, 1024);
  cfg.blockDim = dim3(32 * split.tiles_per_block * split.ksub);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(split.ksplit);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, Kernel, &cfg));
  return clusters;
}

// Rows of blocks per layer of a group launch (block_start), from the split.
inline void group_rows(Exl2Group& g, const Exl2Split& split) {
  for (int i = 0; i < g.count; ++i) {
    const int tiles = g.d[i].out_pad / kExl2TileColumns;
    g.block_start[i + 1] = g.block_start[i] + (tiles + split.tiles_per_block - 1) / split.tiles_per_block;
  }
}

// Grid (ksplit, the group's rows), a cluster along K unless the partials go through memory.
// K1 / KN: the kernel instances taking GroupParam<1> (one layer) and GroupParam<kExl2MaxGroup>.
template <auto K1, auto KN, typename Args>
void launch_gemv(const Exl2Group& g, const Args& a, const Exl2Split& split, size_t smem,
                 cudaStream_t stream) {
  const dim3 grid(split.ksplit, g.block_start[g.count]);
  const dim3 block(32 * split.tiles_per_block * split.ksub);
  const int cluster = g.io[0].partials == nullptr ? split.ksplit : 1;
  if (g.count == 1) {
    configure_gemv<K1>();
    launch(K1, grid, block, smem, cluster, stream, group_param<1>(g), a);
  } else {
    configure_gemv<KN>();
    launch(KN, grid, block, smem, cluster, stream, group_param<kExl2MaxGroup>(g), a);
  }
}

// Calls f.template operator()<W>() for the kernel instance of width W (a layer's or group's
// common width, 0 if mixed).
template <typename F>
auto by_width(int width, F&& f) {
  switch (width) {
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 8: return f.template operator()<8>();
    default: return f.template operator()<0>();
  }
}

}  // namespace exq::cuda::exl2
