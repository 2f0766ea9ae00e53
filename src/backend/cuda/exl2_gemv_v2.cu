// EXL2 GEMV, kernel 2 (Exl2Split::kernel == 2): the same device layout, decode, launch split
// and deterministic K reduction as kernel 1 (exl2_gemv.cu), with a leaner step loop:
// - a warp walks a run's full steps with pointers that advance by constants (q_weight by
//   4 * B * 512 bytes, the lane's unit index by 4); a run's short last step goes through a
//   separate masked path after the ring, so the loop has no per-step branches on the unit count,
//   no clamps and no run-time division (the group of unit u is u >> group_shift: layers whose
//   groups are not a power-of-two number of units use kernel 1, exl2_gemv2_supports);
// - x sits in shared memory as [slot][batch column][16 pairs] (+4 words of padding per slot),
//   so a lane's B operands of a whole step are four 16-byte loads instead of sixteen 4-byte ones
//   (the staging copy transposes the workspace's [slot][pair][bs]);
// - one mma accumulator chain per M tile (8 registers fewer than kernel 1's two);
// - runs whose groups span whole steps (>= 4 units, group_shift >= 2: all of exllamav2's
//   128-row groups) take the offset decode: one LOP3 per pair gives half2(2^(10-o) + q)
//   (offset_magic, exl2_layout.h), no floating-point operation per weight; the mma sums those
//   times x, the block's per-step offset sums (stage_offsets) are taken off in f32 and the
//   column's fp16 scale (exllamav2's) multiplies the step's sum. The weights are thus exact
//   (q - z) * scale, not exllamav2's fp16 rounding of it: results differ from a GEMV with its fp16
//   weights by at most 2^-11 * sum |w x| (plus f32 sums). Other runs use kernel 1's decode, with
//   bit-exact fp16 weights.
// Products are exact, sums are f32 as in kernel 1.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_gemv_common.cuh"
#include "backend/cuda/exl2_launchers.h"

namespace exq::cuda {
namespace {

using namespace exl2;

// Shared x slot: [8 batch columns][16 pairs] words + 4: the 8 lanes of a 16-byte load phase
// (t = 0..3, two columns g) start on 8 different 4-bank groups.
constexpr int kSlotWords = kPairs * kExl2MaxBatch + 4;
constexpr int kStepWords = kExl2UnitsPerStep * kSlotWords;
constexpr uint32_t kStepBytes = kStepWords * 4;
// Per block step in shared memory after x: for each pair of batch columns (2t, 2t + 1) their x
// scales, then their offset sums (stage_offsets): one 16-byte load per lane and step.
constexpr int kScaleStride = 2 * kExl2MaxBatch;
constexpr uint32_t kScaleBytes = kScaleStride * 4;

template <int OFF>
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4+%5];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr), "n"(OFF));
  return v;
}

struct GemvArgs {
  int batch;
  int bs;
  int bs_shift;  // log2(bs)
  int add_bias;
  int tpb;
  int ksub;
  int spw;
};

struct WarpCtx {
  const uint4* wbase;             // q_weight + tile * tile_rows * 8 + g (uint4 units)
  const unsigned short* sbase;    // q_scale as 16-bit codes of 4 columns: + tile * 8 + g
  const unsigned short* mbase;    // group_m
  uint32_t xs;                    // shared x of the first block step: slot t, batch column g
  uint32_t xsc;                   // shared step scales and offset sums of columns 2t, 2t + 1
  int scale_row;                  // 16-bit codes per q_scale row
  int t;
  int k0;
  bool one;                       // batch 1
};

struct XStage {
  const GemvArgs* a;
  const Exl2LayerIo* io;
  const Exl2Desc* d;
  uint32_t* xs;
  float* xsc;  // [block step][kScaleStride]
  int k0, k1;
  int width;   // the kernel's W: the layer's common width, 0 if mixed
};

// The block's offset sums: for each step and batch column, sum_k (2^(10-o_k) + z) x_k over the
// step's 128 rows (x as staged), what the offset decode's mma sums carry besides
// sum_k (q_k - z) x_k. 16 threads per (step, column), each 4 pairs (a 16-byte load) of one slot,
// summed in a fixed order (results repeat bit for bit). A thread's pairs 4 qtr .. 4 qtr + 3 are
// fixed (qtr = threadIdx.x & 3); so are their constants when the layer has one width.
struct OffsetSums {
  float cz[4];
  int qtr;
  __device__ __forceinline__ explicit OffsetSums(const XStage& s) : qtr(threadIdx.x & 3) {
    if (s.width != 0) set(s.width);
  }
  __device__ __forceinline__ void set(int bits) {
#pragma unroll
    for (int p = 0; p < 4; ++p) cz[p] = offset_const(bits, 4 * qtr + p);
  }
  // Mixed widths: the constants of block step `step`'s run.
  __device__ __forceinline__ void at_step(const XStage& s, int step) {
    if (s.width == 0) set(segment_of(*s.d, s.k0 + step).bits);
  }
  __device__ __forceinline__ float sum(const uint4& v) const {
    const uint32_t wv[4] = {v.x, v.y, v.z, v.w};
    float f = 0.0f;
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const float2 h = __half22float2(as_half2(wv[p]));
      f = fmaf(cz[p], h.x + h.y, f);
    }
    return f;
  }
};

// The 16 threads' parts of a (step, column) sum added (all lanes of the warp take part).
__device__ __forceinline__ float sum16(float f) {
#pragma unroll
  for (int m = 8; m >= 1; m >>= 1) f += __shfl_xor_sync(0xffffffffu, f, m);
  return f;
}

// Where block step `step`'s x scale (OFFSET false) or offset sum (true) of batch column `col`
// goes: [column pair][x scales of 2t, 2t + 1, offset sums of 2t, 2t + 1].
template <bool OFFSET>
__device__ __forceinline__ float* scale_slot(const XStage& s, int step, int col) {
  return s.xsc + step * kScaleStride + 4 * (col >> 1) + (OFFSET ? 2 : 0) + (col & 1);
}

// Batch > 1: the sums from the x in shared memory, after it is staged.
__device__ __forceinline__ void stage_offsets(const XStage& s) {
  const GemvArgs& a = *s.a;
  const int items = (s.k1 - s.k0) * a.bs * 16;
  const int lane = threadIdx.x & 31, slot = (threadIdx.x >> 2) & 3;
  OffsetSums os(s);
  for (int base = threadIdx.x & ~31; base < items; base += blockDim.x) {
    const int i = base + lane, sc = i >> 4;
    const int step = sc >> a.bs_shift, col = sc & (a.bs - 1);
    float f = 0.0f;
    if (i < items) {
      os.at_step(s, step);
      f = os.sum(*reinterpret_cast<const uint4*>(
          s.xs + (step * kExl2UnitsPerStep + slot) * kSlotWords + col * kPairs + 4 * os.qtr));
    }
    f = sum16(f);
    if (i < items && (lane & 15) == 0) *scale_slot<true>(s, step, col) = f;
  }
}

// Block-wide copy of the block's steps of x into shared memory ([slot][column][pair], columns
// below bs), the step scales and the offset sums (at batch 1 from the copy's own loads), then
// a barrier.
__device__ __forceinline__ void stage_x(const XStage& s) {
  const GemvArgs& a = *s.a;
  pdl_wait();
  // The first step scale of each thread is loaded before x: its L2 round trip overlaps x's.
  const int nsc = (s.k1 - s.k0) * kExl2MaxBatch;
  const float* scale_src = s.io->xscale + s.k0 * kExl2MaxBatch;
  const float sc0 = static_cast<int>(threadIdx.x) < nsc ? __ldcg(scale_src + threadIdx.x) : 0.0f;
  const int slots = (s.k1 - s.k0) * kExl2UnitsPerStep;
  const uint32_t* src = s.io->xq + static_cast<size_t>(s.k0) * kExl2UnitsPerStep * kPairs * a.bs;
  if (a.bs == 1) {  // a slot is 16 contiguous words on both sides; 16 loads per step
    const int total = slots * (kPairs / 4), lane = threadIdx.x & 31;
    OffsetSums os(s);
    for (int base = threadIdx.x & ~31; base < total; base += blockDim.x) {
      const int i = base + lane;
      float f = 0.0f;
      if (i < total) {
        const uint4 v = __ldcg(reinterpret_cast<const uint4*>(src) + i);
        *reinterpret_cast<uint4*>(s.xs + (i >> 2) * kSlotWords + (i & 3) * 4) = v;
        os.at_step(s, i >> 4);
        f = os.sum(v);
      }
      f = sum16(f);
      if (i < total && (lane & 15) == 0) *scale_slot<true>(s, i >> 4, 0) = f;
    }
  } else {
    const int sh = a.bs_shift;
    stage_elements(src, slots * kPairs * a.bs,
                   [&](int i, uint32_t v) __attribute__((always_inline)) {
                     const int b = i & (a.bs - 1), pair = (i >> sh) & (kPairs - 1);
                     const int slot = i >> (sh + 4);
                     s.xs[slot * kSlotWords + b * kPairs + pair] = v;
                   });
  }
  auto put_scale = [&](int i, float v) { *scale_slot<false>(s, i >> 3, i & 7) = v; };
  if (static_cast<int>(threadIdx.x) < nsc) put_scale(threadIdx.x, sc0);
  for (int i = threadIdx.x + blockDim.x; i < nsc; i += blockDim.x) put_scale(i, __ldcg(scale_src + i));
  block_barrier();
  pdl_trigger();
  if (a.bs != 1) {  // the offset sums read the x just staged
    stage_offsets(s);
    block_barrier();
  }
}

__device__ __forceinline__ void load_scale(const WarpCtx& c, int group, uint32_t& code,
                                           uint32_t& m) {
  code = __ldg(c.sbase + group * c.scale_row);
  m = __ldg(c.mbase + group);
}

// The scales of a lane's 4 columns (scale_pair2, exllamav2's fp16 values) as f32.
__device__ __forceinline__ void column_scales(uint32_t code, uint32_t m_bits, float (&cs)[4]) {
  const __half2 m2 = __half2half2(__ushort_as_half(static_cast<unsigned short>(m_bits)));
  const float2 s01 = __half22float2(scale_pair2(code, 0, m2));
  const float2 s23 = __half22float2(scale_pair2(code, 1, m2));
  cs[0] = s01.x;
  cs[1] = s01.y;
  cs[2] = s23.x;
  cs[3] = s23.y;
}

// One step: decode the lane's 4 columns x 32 rows, 16 mma (2 M tiles x 8 k steps), then
// acc += sums * the step's x scale; SCALED: the offset decode, acc += (sums - the step's offset
// sum) * the column's scale * the step's x scale.
template <int B, bool SCALED>
__device__ __forceinline__ void compute_stage(const WarpCtx& c, const Stage<B>& st, uint32_t xr,
                                              uint32_t xsr, float (&acc)[2][4]) {
  uint32_t w[4][B];
#pragma unroll
  for (int i = 0; i < B; ++i) {
    w[0][i] = st.w[i].x;
    w[1][i] = st.w[i].y;
    w[2][i] = st.w[i].z;
    w[3][i] = st.w[i].w;
  }
  __half2 sc[4];  // not SCALED: kernel 1's column scales
  if constexpr (!SCALED) {
    const __half2 m2 = __half2half2(__ushort_as_half(static_cast<unsigned short>(st.m)));
    const __half2 s01 = scale_pair2(st.code, 0, m2), s23 = scale_pair2(st.code, 1, m2);
    sc[0] = __low2half2(s01);
    sc[1] = __high2half2(s01);
    sc[2] = __low2half2(s23);
    sc[3] = __high2half2(s23);
  }
  auto weights = [&](auto j_, int col) {
    constexpr int J = decltype(j_)::value;
    if constexpr (SCALED) {
      return pair_bits<B, J, offset_magic(pair_offset<B, J>())>(w[col]);
    } else {
      return pair_weights<B, J>(w[col], sc[col]);
    }
  };
  float part[2][4];
  static_for<4>([&](auto q_) {
    constexpr int q = decltype(q_)::value;
    const uint4 xv = lds128<16 * q>(xr);  // pairs 4q .. 4q + 3 of the lane's slot and column
    static_for<2>([&](auto h_) {
      constexpr int ks = 2 * q + decltype(h_)::value;
      const std::integral_constant<int, 2 * ks> j0;
      const std::integral_constant<int, 2 * ks + 1> j1;
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        a[mt][0] = weights(j0, 2 * mt);
        a[mt][1] = weights(j0, 2 * mt + 1);
        a[mt][2] = weights(j1, 2 * mt);
        a[mt][3] = weights(j1, 2 * mt + 1);
      }
      const uint32_t b0 = ks % 2 ? xv.z : xv.x, b1 = ks % 2 ? xv.w : xv.y;
      if constexpr (ks == 0) {
        mma_16816_zero(part[0], a[0], b0, b1);
        mma_16816_zero(part[1], a[1], b0, b1);
      } else {
        mma_16816(part[0], a[0], b0, b1);
        mma_16816(part[1], a[1], b0, b1);
      }
    });
  });
  // Odd accumulator elements hold batch columns 2t + 1, which a batch-1 launch never stores.
  if constexpr (SCALED) {
    const uint4 sv = lds128<0>(xsr);  // x scales, then offset sums, of columns 2t, 2t + 1
    const float sx = __uint_as_float(sv.x), sy = __uint_as_float(sv.y);
    const float ox = __uint_as_float(sv.z), oy = __uint_as_float(sv.w);
    // The lane's 4 column scales, exllamav2's fp16 values, as f32 (column_scales).
    float cs[4];
    column_scales(st.code, st.m, cs);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // column 2 mt + h: accumulator elements 2h, 2h + 1
        const float f = cs[2 * mt + h];
        acc[mt][2 * h] = fmaf(part[mt][2 * h] - ox, f * sx, acc[mt][2 * h]);
        if (!c.one) acc[mt][2 * h + 1] = fmaf(part[mt][2 * h + 1] - oy, f * sy, acc[mt][2 * h + 1]);
      }
  } else {
    const float2 s = lds64f(xsr);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (!(j & 1) || !c.one) acc[mt][j] = fmaf(part[mt][j], (j & 1) ? s.y : s.x, acc[mt][j]);
  }
}

// Steps [s_begin, s_end) of one run (bit width B); full steps through a ring of D register
// stages with constant pointer increments, then the run's short last step (if in range).
// STEP_GROUPS: the run's groups are one step each (group_shift 2, exllamav2's 128-row groups):
// the scale pointers advance by a constant per step instead of being formed from the unit.
template <int B, bool MIXED, bool SCALED, bool STEP_GROUPS = false>
__device__ __forceinline__ void run_steps_as(const WarpCtx& c, const Exl2Segment& seg, int s_begin,
                                          int s_end, bool first, const XStage& xst,
                                          float (&acc)[2][4]) {
  constexpr int D = ring_depth<B, MIXED>();
  constexpr int kStepVecs = kExl2UnitsPerStep * B * 8;  // uint4 per full step
  const int full_end = min(s_end, seg.first_step + seg.units / kExl2UnitsPerStep);
  const int ls0 = s_begin - seg.first_step;
  const uint4* p = c.wbase + (seg.row + kExl2UnitsPerStep * ls0 * B + c.t) * 8;
  int u = kExl2UnitsPerStep * ls0 + c.t;  // the lane's unit in the run
  const int gshift = seg.group_shift, g0 = seg.first_group;
  const unsigned short* sp = c.sbase + (g0 + ls0) * c.scale_row;  // STEP_GROUPS: group g0 + step
  const unsigned short* mp = c.mbase + g0 + ls0;
  auto load = [&](Stage<B>& st) {
#pragma unroll
    for (int i = 0; i < B; ++i) st.w[i] = __ldcs(p + i * kExl2UnitsPerStep * 8);
    if constexpr (STEP_GROUPS) {
      st.code = __ldg(sp);
      st.m = __ldg(mp);
      sp += c.scale_row;
      ++mp;
    } else {
      load_scale(c, g0 + (u >> gshift), st.code, st.m);
      u += kExl2UnitsPerStep;
    }
    p += kStepVecs;
  };
  // Shared addresses of the step's x and scales, advanced per step (loop-carried).
  uint32_t xr = c.xs + (s_begin - c.k0) * kStepBytes;
  uint32_t xsr = c.xsc + (s_begin - c.k0) * kScaleBytes;
  Stage<B> st[D];
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (s_begin + d < full_end) load(st[d]);
  if (first) stage_x(xst);
  for (int s = s_begin; s < full_end; s += D) {
#pragma unroll
    for (int d = 0; d < D; ++d) {
      if (s + d < full_end) {
        compute_stage<B, SCALED>(c, st[d], xr, xsr, acc);
        xr += kStepBytes;
        xsr += kScaleBytes;
        if (s + d + D < full_end) load(st[d]);
      }
    }
  }
  if (full_end < s_end) {  // the run's last step holds n < 4 units (stride n)
    const int ls = full_end - seg.first_step;
    const int n = seg.units - kExl2UnitsPerStep * ls;
    const uint4* q = c.wbase + (seg.row + kExl2UnitsPerStep * ls * B + c.t) * 8;
    Stage<B> tail;
#pragma unroll
    for (int i = 0; i < B; ++i)
      tail.w[i] = c.t < n ? __ldcs(q + i * n * 8) : make_uint4(0u, 0u, 0u, 0u);
    const int ut = min(kExl2UnitsPerStep * ls + c.t, seg.units - 1);
    load_scale(c, g0 + (ut >> gshift), tail.code, tail.m);
    compute_stage<B, SCALED>(c, tail, c.xs + (full_end - c.k0) * kStepBytes,
                             c.xsc + (full_end - c.k0) * kScaleBytes, acc);
  }
}

// Runs whose groups span whole steps take the offset decode; groups of exactly one step (the
// common 128-row groups) also the constant scale-pointer increments.
template <int B, bool MIXED>
__device__ __forceinline__ void run_steps(const WarpCtx& c, const Exl2Segment& seg, int s_begin,
                                          int s_end, bool first, const XStage& xst,
                                          float (&acc)[2][4]) {
  if (seg.group_shift == 2)
    run_steps_as<B, MIXED, true, true>(c, seg, s_begin, s_end, first, xst, acc);
  else if (seg.group_shift > 2)
    run_steps_as<B, MIXED, true>(c, seg, s_begin, s_end, first, xst, acc);
  else
    run_steps_as<B, MIXED, false>(c, seg, s_begin, s_end, first, xst, acc);
}

// Split.runs (mixed widths): each run's steps padded to whole warp slices of a.spw steps in a
// virtual step space that the launch split covers, so that every warp's steps lie in one run;
// the block's steps [k0, k1) are the real steps its warps cover (runs are contiguous).
__device__ __forceinline__ WarpRange warp_range_runs(const Exl2Desc& d, const GemvArgs& a,
                                                     int row) {
  WarpRange r = warp_range(d, a, row);
  const int sub = r.warp / a.tpb;
  const int vk0 = r.rank * a.ksub * a.spw, vk1 = vk0 + a.ksub * a.spw, vs0 = vk0 + sub * a.spw;
  int k0 = d.num_steps, k1 = d.num_steps, s0 = d.num_steps, s1 = d.num_steps;
  for (int i = 0, v = 0; i < d.num_segments; ++i) {
    const Exl2Segment& sg = d.segments[i];
    const int pad = (sg.steps + a.spw - 1) / a.spw * a.spw;
    if (vk0 >= v && vk0 < v + pad) k0 = sg.first_step + min(vk0 - v, sg.steps);
    if (vk1 > v && vk1 <= v + pad) k1 = sg.first_step + min(vk1 - v, sg.steps);
    if (vs0 >= v && vs0 < v + pad) {
      s0 = sg.first_step + min(vs0 - v, sg.steps);
      s1 = sg.first_step + min(vs0 + a.spw - v, sg.steps);
    }
    v += pad;
  }
  r.k0 = k0;
  r.k1 = k1;
  r.s0 = s0;
  r.s1 = r.tile < d.out_pad / kExl2TileColumns ? s1 : s0;
  return r;
}

// One block of a layer's GEMV: block row `row` of `d` (its x staged, the warps' steps, the
// block column's outputs summed in a fixed order, as kernel 1). The body of the dense and the MoE
// kernels below; inlined, so each kernel compiles as if it were written out.
template <int W, bool RUNS>
__device__ __forceinline__ void gemv2_block(const Exl2Desc& d, const Exl2LayerIo& io, int row, const GemvArgs& a,
                                            uint32_t* smem) {
  const WarpRange w = RUNS ? warp_range_runs(d, a, row) : warp_range(d, a, row);
  const int g = w.g, t = w.t;
  XStage xst{&a, &io, &d, smem, reinterpret_cast<float*>(smem + w.block_steps * kStepWords),
             w.k0, w.k1, W};
  WarpCtx c;
  c.wbase = shifted(d.q_weight, io.shift) + static_cast<size_t>(w.tile) * d.tile_rows * 8 + g;
  c.sbase = reinterpret_cast<const unsigned short*>(shifted(d.q_scale, io.shift)) + w.tile * 8 + g;
  c.mbase = reinterpret_cast<const unsigned short*>(shifted(d.group_m, io.shift));
  // Columns g >= batch read whatever is there: they only feed mma output columns that are
  // never stored (columns of an mma do not mix).
  c.xs = static_cast<uint32_t>(__cvta_generic_to_shared(smem + t * kSlotWords + g * kPairs));
  c.xsc = static_cast<uint32_t>(__cvta_generic_to_shared(xst.xsc + 4 * t));
  c.scale_row = d.out_pad / 4;
  c.t = t;
  c.k0 = w.k0;
  c.one = a.batch == 1;

  float acc[2][4] = {};
  warp_steps<W, RUNS>(d, w, c, xst, acc);
  reduce_store(d, a, io, row, smem, w, acc);
}

// W: the layer's common bit width, 0 if mixed (each run through its width's function; with
// RUNS, split.runs, one run per warp). N: layers the kernel parameter has room for (1, or
// kExl2MaxGroup for group launches).
template <int W, int N, bool RUNS = false>
__global__ void __launch_bounds__(kExl2MaxWarps * 32, 1)
    exl2_gemv2_kernel(const __grid_constant__ GroupParam<N> grp, const __grid_constant__ GemvArgs a) {
  extern __shared__ __align__(16) uint32_t smem[];
  const GroupPlace place = group_place(grp);
  gemv2_block<W, RUNS>(grp.d[place.layer], grp.io[place.layer], place.row, a, smem);
}

// MoE decode: the block's (layer, slot, row) of an Exl2MoeGroup. A kernel of its own, so the
// dense instances above stay as they are.
template <int W, bool RUNS = false>
__global__ void __launch_bounds__(kExl2MaxWarps * 32, 1)
    exl2_gemv2_moe_kernel(const __grid_constant__ Exl2MoeGroup grp, const __grid_constant__ GemvArgs a) {
  extern __shared__ __align__(16) uint32_t smem[];
  int y = static_cast<int>(blockIdx.y), l = 0;
  if (grp.count > 1 && y >= grp.slots * grp.rows[0]) {
    y -= grp.slots * grp.rows[0];
    l = 1;
  }
  const int slot = y / grp.rows[l], row = y - slot * grp.rows[l];
  gemv2_block<W, RUNS>(grp.d[l], grp.io[l][slot], row, a, smem);
}

template <auto K>
void launch_moe(const Exl2MoeGroup& g, const GemvArgs& a, const Exl2Split& split, size_t smem,
                cudaStream_t stream) {
  int rows = 0;
  for (int l = 0; l < g.count; ++l) rows += g.slots * g.rows[l];
  configure_gemv<K>();
  const int cluster = g.io[0][0].partials == nullptr ? split.ksplit : 1;
  launch(K, dim3(split.ksplit, rows), dim3(32 * split.tiles_per_block * split.ksub), smem, cluster,
         stream, g, a);
}

}  // namespace

size_t exl2_gemv2_shared_bytes(const Exl2Split& split) {
  const size_t steps = static_cast<size_t>(split.ksub) * split.steps_per_warp;
  const size_t x_bytes = (steps * kStepWords + steps * kScaleStride) * 4;
  const size_t red_bytes = static_cast<size_t>(split.tiles_per_block) * split.ksub *
                           kExl2MaxBatch * kRedStride * 4;
  return std::max(x_bytes, red_bytes);
}

int exl2_gemv2_blocks_per_sm(const Exl2Desc& d, const Exl2Split& split) {
  const size_t smem = exl2_gemv2_shared_bytes(split);
  return by_width(d.uniform_bits,
                  [&]<int W>() { return gemv_blocks_per_sm<exl2_gemv2_kernel<W, 1>>(split, smem); });
}

int exl2_gemv2_max_clusters(const Exl2Desc& d, const Exl2Split& split) {
  const size_t smem = exl2_gemv2_shared_bytes(split);
  return by_width(d.uniform_bits,
                  [&]<int W>() { return gemv_max_clusters<exl2_gemv2_kernel<W, 1>>(split, smem); });
}

void exl2_gemv2_launch(const Exl2Group& g, int width, int batch, int bs, bool add_bias,
                       const Exl2Split& split, cudaStream_t stream) {
  const GemvArgs a{batch, bs, __builtin_ctz(static_cast<unsigned>(bs)), add_bias ? 1 : 0,
                   split.tiles_per_block, split.ksub, split.steps_per_warp};
  const size_t smem = exl2_gemv2_shared_bytes(split);
  if (width == 0 && split.runs) {
    launch_gemv<exl2_gemv2_kernel<0, 1, true>, exl2_gemv2_kernel<0, kExl2MaxGroup, true>>(
        g, a, split, smem, stream);
    return;
  }
  by_width(width, [&]<int W>() { launch_gemv<exl2_gemv2_kernel<W, 1>, exl2_gemv2_kernel<W, kExl2MaxGroup>>(g, a, split, smem, stream); });
}

void exl2_gemv2_moe_launch(const Exl2MoeGroup& g, int width, const Exl2Split& split,
                           cudaStream_t stream) {
  const GemvArgs a{1, 1, 0, 1, split.tiles_per_block, split.ksub, split.steps_per_warp};
  const size_t smem = exl2_gemv2_shared_bytes(split);
  if (width == 0 && split.runs) {
    launch_moe<exl2_gemv2_moe_kernel<0, true>>(g, a, split, smem, stream);
    return;
  }
  by_width(width, [&]<int W>() { launch_moe<exl2_gemv2_moe_kernel<W>>(g, a, split, smem, stream); });
}

}  // namespace exq::cuda
