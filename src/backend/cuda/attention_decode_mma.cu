// Tensor-core decode attention for an f16, q8 or q4 cache, head_dim 64, 96, 128 or 256 and up to
// 16 q heads per kv head (attention_decode_mma.h). Block (split, kv head), 8 warps (4 where a
// block cannot hold their shared memory, or as DecodeAttention::mma_warps asks; head_dim 256:
// always 8; 96: always 6, a thread per dim of two q rows); a split holds a multiple of chunk x warps keys, warp w takes the split's chunks w,
// w + warps, ... of 32 keys (head_dim 256: 16, and q read from shared memory at each step, so
// that the output's registers fit). Per chunk, in one warp and without block barriers:
//   S = Q K^T  (mma m16n8k16: the group's q heads are the 16 rows, zero-padded),
//   Gemma 2's softcap on S when it has one,
//   online softmax in base 2 over the chunk (rows live in quads of lanes),
//   O += P V   (P straight from the S fragments; V through ldmatrix.trans).
// f16 operands hold q and p as hi + lo pairs (two mma each), so scores and outputs keep f32
// accuracy: the cache values are exact in f16 and the mma accumulates in f32 (the q4 cache: one
// fp16 half each, see kParts). The warps' states are combined in warp order through shared
// memory; splits are merged in split order by the last block of the kv head (atomic counter), as
// in the SIMT kernel, whose workspace layout this kernel shares. At 256 keys or fewer a kv head
// is one block and needs no merge: with 8 warps one round of chunks (docs/perf.md, session 10).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "backend/cuda/attention_decode_mma.h"
#include "backend/cuda/attention_split.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/kv_q4.cuh"
#include "backend/cuda/kv_q8.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/softmax_mma.cuh"

namespace exq::cuda {
namespace {

// Keys per warp chunk: 32, or 16 at head_dim 256 (8 warps' chunks then fit 155 KB).
template <int D>
constexpr int chunk_keys() {
  return D > 128 ? 16 : 32;
}
constexpr int kRows = 16;              // mma rows: q heads of the kv head
constexpr int kSingleSplitKeys = 256;  // contexts this short take one split per kv head
constexpr int kMaxDevices = 64;        // devices whose resident block count is cached

// Shared memory: per warp a K and a V chunk [kChunk][P]; q hi and lo [kRows][P] (f16); the new
// key and value rows (f16); per warp m and l [kRows]; merge weights [kRows][kDecodeMaxSplits];
// the "last block" flag. The warps' outputs [kWarps][kRows][D] f32 reuse the chunk area.
template <int D, int kWarps>
struct Smem {
  static constexpr int P = D + 8;  // row pitch in halves: ldmatrix rows in distinct banks
  static constexpr size_t chunk_halves = 2 * static_cast<size_t>(chunk_keys<D>()) * P;
  static constexpr size_t kv = 0;
  static constexpr size_t q = kv + kWarps * chunk_halves * 2;
  static constexpr size_t knew = q + 2 * static_cast<size_t>(kRows) * P * 2;
  static constexpr size_t stats = knew + 2 * static_cast<size_t>(D) * 2;
  static constexpr size_t merge = stats + 2 * kWarps * kRows * 4;
  static constexpr size_t flag = merge + static_cast<size_t>(kRows) * kDecodeMaxSplits * 4;
  static constexpr size_t total = flag + 16;
  static_assert(static_cast<size_t>(kWarps) * kRows * D * 4 <= q - kv, "outputs fit the chunk area");
};

__device__ __forceinline__ void split_half(float x, __half& hi, __half& lo) {
  hi = __float2half_rn(x);
  lo = __float2half_rn(x - __half2float(hi));
}

// kMulti: blockIdx.y covers rows x kv heads (DecodeAttention::rows). C: __half, int8_t for the q8
// cache or uint8_t for the q4 cache (chunks dequantized through registers instead of cp.async;
// q4: q rotated as the keys were, the output rotated back).
template <typename C, int D, int kWarps, bool kMulti>
__global__ void __launch_bounds__(32 * kWarps)
    attention_decode_mma_kernel(const DecodeAttention<C> a_in, int splits, SoftcapFactors cap) {
  constexpr bool kQ8 = std::is_same_v<C, int8_t>, kQ4 = std::is_same_v<C, uint8_t>, kQuant = kQ8 || kQ4;
  // q4: q and p as one fp16 half each (its codes round values ~70x coarser than fp16; half the
  // tensor-core steps: docs/perf.md, session 29); f16 / q8: hi + lo halves, f32 accuracy.
  constexpr int kParts = kQ4 ? 1 : 2;
  constexpr int kChunk = chunk_keys<D>();
  // head_dim 256: q's fragments from shared memory at each step, the staged-x positions read in
  // the combine loop (registers: the output alone takes 128 a lane).
  constexpr bool kSmallHead = D <= 128;
  constexpr int kThreads = 32 * kWarps;
  constexpr int kKeysPerRound = kWarps * kChunk;  // split sizes are multiples of this
  using L = Smem<D, kWarps>;
  constexpr int P = L::P;
  constexpr int kPieces = D / 8;  // 16-byte pieces per cache row
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_trigger();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int seq_row = kMulti ? static_cast<int>(blockIdx.y) / a_in.kv_heads : 0;
  const int kvh = static_cast<int>(blockIdx.y) - seq_row * a_in.kv_heads, split = blockIdx.x;
  const DecodeAttention<C> a = kMulti ? attention_decode_row(a_in, seq_row) : a_in;
  const int group = a.heads / a.kv_heads;
  const int h0 = kvh * group;

  // Fused: the position and the old keys are read before pdl_wait (attention_decode.h).
  const bool fused = a.k_new != nullptr;
  const bool early = fused || !a.pdl;
  if (!early) pdl_wait();
  const int pos = a.position_ptr ? *a.position_ptr : a.position;
  const int kv_len = pos + 1;
  const int lo = window_first_key(pos, a.window);
  const int n_keys = kv_len - lo;
  // Up to kSingleSplitKeys keys stay in one block per kv head: the split merge (an atomic and a
  // second read of the states after the last block is known) sits on the decode chain and
  // costs more than a second round of chunks (docs/perf.md, session 7).
  const int granule = n_keys <= kSingleSplitKeys ? kSingleSplitKeys : kKeysPerRound;
  const SplitKeys sk = split_keys(n_keys, splits, granule, split);
  if (split >= sk.used) return;
  const int k0 = lo + sk.k0, k1 = lo + sk.k1, used = sk.used;
  const int chunks = div_up(k1 - k0, kChunk);
  const bool owns_new = fused && k1 == kv_len;

  __half* ks = reinterpret_cast<__half*>(smem + L::kv) + warp * L::chunk_halves;
  __half* vs = ks + kChunk * P;
  __half* q_hi = reinterpret_cast<__half*>(smem + L::q);
  __half* q_lo = q_hi + kRows * P;
  __half* knew_s = reinterpret_cast<__half*>(smem + L::knew);
  __half* vnew_s = knew_s + D;
  float* m_w = reinterpret_cast<float*>(smem + L::stats);
  float* l_w = m_w + kWarps * kRows;
  float* merge_w = reinterpret_cast<float*>(smem + L::merge);
  int* last_s = reinterpret_cast<int*>(smem + L::flag);

  const size_t head_off = static_cast<size_t>(kvh) * a.capacity * D;
  const C* k_head = a.k_cache + head_off / (kQ4 ? 2 : 1);  // q4: two codes a byte
  const C* v_head = a.v_cache + head_off / (kQ4 ? 2 : 1);

  // Chunk c of this warp into its buffers; rows past the split are zeros (p = 0 must not meet
  // stale values), the new key's row is written separately.
  // q8 / q4: a chunk's codes and scales wait in registers (loaded one chunk ahead of its use),
  // then are dequantized into the chunk buffers.
  using Tile = std::conditional_t<kQ4, Q4Tile<D, kChunk, 32, P>, Q8Tile<D, kChunk, 32, P>>;
  [[maybe_unused]] Tile tile;
  auto load_tile = [&](int c) {
    if constexpr (kQ8)
      tile.load(k_head, a.k_scale + head_off / kQ8Group, v_head, a.v_scale + head_off / kQ8Group, lane,
                k0 + c * kChunk, k1, fused ? pos : -1);
    if constexpr (kQ4)
      tile.load(k_head, reinterpret_cast<const __half2*>(a.k_scale) + head_off / kQ4Group, v_head,
                reinterpret_cast<const __half2*>(a.v_scale) + head_off / kQ4Group, lane, k0 + c * kChunk, k1,
                fused ? pos : -1);
  };
  auto issue = [&](int c) {
    const int kb = k0 + c * kChunk;
    if constexpr (kQuant) {
      load_tile(c);
    } else {
      for (int i = lane; i < kChunk * kPieces; i += 32) {
        const int r = i / kPieces, col = i % kPieces;
        const int key = kb + r;
        const bool valid = key < k1 && !(fused && key == pos);
        const size_t src = static_cast<size_t>(valid ? key : k0) * D + col * 8;
        cp_async_16(ks + r * P + col * 8, k_head + src, valid);
        cp_async_16(vs + r * P + col * 8, v_head + src, valid);
      }
      cp_async_commit();
    }
  };

  if (early && warp < chunks) issue(warp);

  // q of the group, rotated when fused, times scale * log2(e), as f16 hi + lo; rows past the
  // group are zeros. Thread t holds dim t % D of rows t / D, t / D + kThreads / D, ...: one
  // cos / sin pair (read before pdl_wait when fused), and every load is issued before the first
  // use, so q costs one round trip after the wait.
  static_assert(kThreads % D == 0, "a thread's elements share one dim");
  constexpr int kPer = kRows * D / kThreads, kRowStep = kThreads / D;
  // half < D / 2: a partial rotary; dims from 2 * half on pass unrotated (`turns` false).
  const int half = a.rot_half > 0 ? a.rot_half : D / 2, qd = tid % D, r0 = tid / D;
  const bool turns = fused && qd < 2 * half;
  const int j = !turns ? qd : qd < half ? qd : qd - half;
  // The staged-x positions of the thread's outputs (combine loop below), read before the wait.
  int32_t xpos[kSmallHead ? kPer : 1];
  if constexpr (kSmallHead) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = tid + k * kThreads;
      xpos[k] = a.xq16 && i < group * D ? a.x_pos[h0 * D + i] : 0;
    }
  }
  float cs = 1.0f, sn = 0.0f;
  if (turns) {
    cs = a.cos[static_cast<size_t>(pos) * half + j];
    sn = a.sin[static_cast<size_t>(pos) * half + j];
  }
  pdl_wait();
  if (!early && warp < chunks) issue(warp);
  if (a.xq16 && split == 0 && kvh == 0) {  // after the wait: the previous GEMV read the scratch
    for (int i = tid; i < a.xscale_n; i += kThreads) a.xscale[i] = 1.0f;
    for (int i = tid; i < a.x_pad_n; i += kThreads) a.xq16[a.x_pad[i]] = __float2half_rn(0.0f);
  }
  float x1[kPer], x2[kPer], kn1 = 0.0f, kn2 = 0.0f, vn = 0.0f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int r = r0 + k * kRowStep;
    x1[k] = x2[k] = 0.0f;
    if (r < group) {
      const float* qr = a.q + static_cast<size_t>(h0 + r) * D;
      x1[k] = qr[j];
      if (turns) x2[k] = qr[j + half];
    }
  }
  const bool new_row = owns_new && r0 == 0;  // threads [0, D) write the new key and value
  if (new_row) {
    kn1 = a.k_new[static_cast<size_t>(kvh) * D + j];
    if (turns) kn2 = a.k_new[static_cast<size_t>(kvh) * D + j + half];
    vn = a.v_new[static_cast<size_t>(kvh) * D + qd];
  }
  if (a.q_norm != nullptr) {
    // qwen3 / gemma3: each row RMS-normed before the rotary. A row's D threads are whole warps:
    // warp sums of the squares of the dims the threads own, then the row's D / 32 partials.
    __shared__ float part[(kRows + 1) * (D / 32)];
    const bool hi = turns && qd >= half;  // the thread's own dim qd sits in x2
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const float own = hi ? x2[k] : x1[k];
      const float ss = warp_sum(own * own);
      if (lane == 0) part[(r0 + k * kRowStep) * (D / 32) + qd / 32] = ss;
    }
    if (r0 == 0) {  // the new key (its values are loaded by the new-row threads only)
      const float own = hi ? kn2 : kn1;
      const float ss = warp_sum(own * own);
      if (lane == 0) part[kRows * (D / 32) + qd / 32] = ss;
    }
    __syncthreads();
    auto inv_of = [&](int row) {
      float ss = 0.0f;
#pragma unroll
      for (int w = 0; w < D / 32; ++w) ss += part[row * (D / 32) + w];
      return rsqrtf(ss / static_cast<float>(D) + a.norm_eps);
    };
    const float w1 = a.q_norm[j], w2 = turns ? a.q_norm[j + half] : 0.0f;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const float inv = inv_of(r0 + k * kRowStep);
      x1[k] *= inv * w1;
      x2[k] *= inv * w2;
    }
    if (new_row) {
      const float inv = inv_of(kRows);
      kn1 *= inv * a.k_norm[j];
      if (turns) kn2 *= inv * a.k_norm[j + half];
    }
  }
  auto rotate = [&](float u1, float u2) {
    return !turns ? u1 : qd < half ? u1 * cs - u2 * sn : u2 * cs + u1 * sn;
  };
  // Softcapped scores take log2(e) after the cap (softcap_scores).
  const bool capped = cap.in != 0.0f;
  const float qscale = capped ? a.scale : a.scale * kLog2e;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int r = r0 + k * kRowStep;
    float v = r < group ? (fused ? rotate(x1[k], x2[k]) : x1[k]) * qscale : 0.0f;
    if constexpr (kQ4) v = q4_rotate_warp(v);  // a warp holds dims 32j .. 32j + 31 of one row
    if constexpr (kParts == 2)
      split_half(v, q_hi[r * P + qd], q_lo[r * P + qd]);
    else
      q_hi[r * P + qd] = __float2half_rn(v);
  }
  if (new_row) {  // whole warps (D is a multiple of 32): a q8 or q4 group is a warp
    const size_t row = head_off + static_cast<size_t>(pos) * D;
    if constexpr (kQ4) {
      const Q4Lane kq = q4_quantize_warp(rotate(kn1, kn2)), vq = q4_quantize_warp(vn);
      knew_s[qd] = kq.value;
      vnew_s[qd] = vq.value;
      if ((lane & 7) == 0) {
        reinterpret_cast<uint32_t*>(a.k_cache)[(row + qd) / 8] = kq.word;
        reinterpret_cast<uint32_t*>(a.v_cache)[(row + qd) / 8] = vq.word;
      }
      if (lane == 0) {
        reinterpret_cast<__half2*>(a.k_scale)[(row + qd) / kQ4Group] = kq.step;
        reinterpret_cast<__half2*>(a.v_scale)[(row + qd) / kQ4Group] = vq.step;
      }
    } else if constexpr (kQ8) {
      const Q8Lane kq = q8_quantize_warp(rotate(kn1, kn2)), vq = q8_quantize_warp(vn);
      knew_s[qd] = kq.value;
      vnew_s[qd] = vq.value;
      a.k_cache[row + qd] = kq.q;
      a.v_cache[row + qd] = vq.q;
      if (lane == 0) {
        a.k_scale[(row + qd) / kQ8Group] = kq.scale;
        a.v_scale[(row + qd) / kQ8Group] = vq.scale;
      }
    } else {
      const __half kc = __float2half_rn(rotate(kn1, kn2));
      const __half vc = __float2half_rn(vn);
      knew_s[qd] = kc;
      vnew_s[qd] = vc;
      a.k_cache[row + qd] = kc;
      a.v_cache[row + qd] = vc;
    }
  }
  __syncthreads();

  const int sel = lane >> 3, r8 = lane & 7;  // ldmatrix: which 8x8 matrix, which of its rows
  uint32_t qf[kParts][kSmallHead ? D / 16 : 1][4];  // hi, lo
  if constexpr (kSmallHead) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int at = (r8 + (sel & 1) * 8) * P + kk * 16 + (sel >> 1) * 8;
      ldmatrix_x4(qf[0][kk], q_hi + at);
      if constexpr (kParts == 2) ldmatrix_x4(qf[kParts - 1][kk], q_lo + at);
    }
  }
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};

  for (int c = warp; c < chunks; c += kWarps) {
    if constexpr (kQuant) {  // this chunk from registers, the warp's next one into them
      tile.store(ks, vs, lane);
      if (c + kWarps < chunks) load_tile(c + kWarps);
    } else {
      if (c != warp) issue(c);
      cp_async_wait<0>();
    }
    const int kb = k0 + c * kChunk;
    if (owns_new && pos - kb < kChunk) {  // the new key's row (its copy was skipped)
      const int r = pos - kb;
      for (int d = lane; d < D; d += 32) {
        ks[r * P + d] = knew_s[d];
        vs[r * P + d] = vnew_s[d];
      }
    }
    __syncwarp();

    float s[kChunk / 8][4];
#pragma unroll
    for (int i = 0; i < kChunk / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    if constexpr (kSmallHead)
      mma_qk(s, qf, ks, P);
    else
      mma_qk_smem<kParts, D / 16>(s, q_hi, kRows * P, ks, P);
    if (capped) softcap_scores(s, cap.out, cap.in);
    if (kb + kChunk > k1) {  // keys past the split
#pragma unroll
      for (int nt = 0; nt < kChunk / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (kb + nt * 8 + 2 * tig + (e & 1) >= k1) s[nt][e] = -INFINITY;
    }

    // Online softmax; key kb is valid, so each row's max is finite from the first chunk on.
    float mx[2];
    quad_row_max(s, row_max, mx);
    const float corr[2] = {exp2f(row_max[0] - mx[0]), exp2f(row_max[1] - mx[1])};
    float sum[2] = {0.0f, 0.0f};
    uint32_t pf[kParts][kChunk / 16][4];  // hi, lo
#pragma unroll
    for (int nt = 0; nt < kChunk / 8; ++nt) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) p[e] = exp2f(s[nt][e] - mx[e >> 1]);
      sum[0] += p[0] + p[1];
      sum[1] += p[2] + p[3];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        __half h0v, l0v, h1v, l1v;
        split_half(p[2 * r], h0v, l0v);
        split_half(p[2 * r + 1], h1v, l1v);
        const __half2 hh = __halves2half2(h0v, h1v), ll = __halves2half2(l0v, l1v);
        pf[0][nt / 2][(nt & 1) * 2 + r] = *reinterpret_cast<const uint32_t*>(&hh);
        if constexpr (kParts == 2)
          pf[kParts - 1][nt / 2][(nt & 1) * 2 + r] = *reinterpret_cast<const uint32_t*>(&ll);
      }
    }
    softmax_advance(o, row_sum, row_max, sum, mx, corr);
    mma_pv(o, pf, vs, P);
    __syncwarp();  // the buffers are refilled by the next chunk
  }

  // The warps' states through shared memory (the chunk area is free once every warp is done).
  __syncthreads();
  float* o_w = reinterpret_cast<float*>(smem + L::kv);  // [kWarps][kRows][D]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = gid + 8 * r;
    if (row >= group) continue;
    float* dst = o_w + (warp * kRows + row) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<float2*>(dst + dt * 8 + 2 * tig) = make_float2(o[dt][2 * r], o[dt][2 * r + 1]);
    if (tig == 0) {
      m_w[warp * kRows + row] = row_max[r];
      l_w[warp * kRows + row] = row_sum[r];
    }
  }
  __syncthreads();

  const bool single = used == 1;
  const int stride = attention_decode_partial_stride(D);
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = tid + k * kThreads;
    if (i >= group * D) break;
    const int r = i / D, d = i % D;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, m_w[w * kRows + r]);
    float ov = 0.0f, l = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = exp2f(m_w[w * kRows + r] - m);  // 0 for a warp without keys
      ov += f * o_w[(w * kRows + r) * D + d];
      l += f * l_w[w * kRows + r];
    }
    // q4: back from the rotated basis (linear, so also before the split merge). A warp holds
    // dims 32j .. 32j + 31 of one row, and `break` above is the same for all its lanes.
    if constexpr (kQ4) ov = q4_rotate_warp(ov);
    const int h = h0 + r;
    if (single) {
      const float y = ov / l;
      a.out[static_cast<size_t>(h) * D + d] = y;
      if (a.xq16) a.xq16[kSmallHead ? xpos[k] : a.x_pos[h0 * D + i]] = __float2half_rn(y);
    } else {
      float* dst = a.workspace + (static_cast<size_t>(h) * kDecodeMaxSplits + split) * stride;
      dst[d] = ov;
      if (d == 0) {
        dst[D] = m;
        dst[D + 1] = l;
      }
    }
  }
  if (single) return;

  // The last block of this kv head merges the splits in order.
  unsigned* counter =
      reinterpret_cast<unsigned*>(a.workspace + static_cast<size_t>(a.heads) * kDecodeMaxSplits * stride) +
      kvh;
  if (!last_of_splits(counter, static_cast<unsigned>(used), last_s)) return;
  for (int r = warp; r < group; r += kWarps)  // merge weights 2^(m_s - m) / l of head r
    split_merge_weights<true>(a.workspace + static_cast<size_t>(h0 + r) * kDecodeMaxSplits * stride + D,
                              stride, used, merge_w + r * kDecodeMaxSplits);
  __syncthreads();
  // Thread per 4 outputs: splits in order, 16 loads in flight (one round trip for the splits of
  // one wave of 8-warp blocks at 8 kv heads).
  constexpr int kBatch = 16;
  for (int item = tid; item < group * (D / 4); item += kThreads) {
    const int r = item / (D / 4), d = (item % (D / 4)) * 4;
    const float* ph = a.workspace + static_cast<size_t>(h0 + r) * kDecodeMaxSplits * stride + d;
    const float* wr = merge_w + r * kDecodeMaxSplits;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int sp0 = 0; sp0 < used; sp0 += kBatch) {
      float4 v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (sp0 + u < used) v[u] = __ldcg(reinterpret_cast<const float4*>(ph + (sp0 + u) * stride));
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (sp0 + u < used) {
          const float f = wr[sp0 + u];
          acc.x = fmaf(f, v[u].x, acc.x);
          acc.y = fmaf(f, v[u].y, acc.y);
          acc.z = fmaf(f, v[u].z, acc.z);
          acc.w = fmaf(f, v[u].w, acc.w);
        }
      }
    }
    *reinterpret_cast<float4*>(a.out + static_cast<size_t>(h0 + r) * D + d) = acc;
    if (a.xq16) {
      const int32_t* pos4 = a.x_pos + (h0 + r) * D + d;
      a.xq16[pos4[0]] = __float2half_rn(acc.x);
      a.xq16[pos4[1]] = __float2half_rn(acc.y);
      a.xq16[pos4[2]] = __float2half_rn(acc.z);
      a.xq16[pos4[3]] = __float2half_rn(acc.w);
    }
  }
  if (tid == 0) *counter = 0u;  // ready for the next launch
}

template <typename C, int D, int W, bool kMulti>
void launch(const DecodeAttention<C>& a, int splits, int device, cudaStream_t stream) {
  constexpr size_t smem = Smem<D, W>::total;
  auto kernel = attention_decode_mma_kernel<C, D, W, kMulti>;
  if constexpr (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  // One wave: more splits than resident blocks would run a second wave of whole blocks (8 warps
  // fit one block per multiprocessor); fewer, longer splits take more rounds instead. The
  // resident blocks per device are computed once (eager steps launch this every layer).
  static std::atomic<int> resident[kMaxDevices] = {};  // per instantiation
  int blocks = device < kMaxDevices ? resident[device].load(std::memory_order_relaxed) : 0;
  if (blocks == 0) {
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * W, smem));
    blocks = std::max(1, per_sm * current_multiprocessors());
    if (device < kMaxDevices) resident[device].store(blocks, std::memory_order_relaxed);
  }
  // Several rows: each row one wave's split count, as alone (its sums do not depend on the rows
  // beside it).
  splits = std::max(1, std::min(splits, blocks / a.kv_heads));
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.kv_heads * a.rows));
  launch_pdl(a.pdl, kernel, grid, dim3(32 * W), smem, stream, a, splits, softcap_factors(a.softcap));
}

// a.mma_warps, or 8 where their shared memory fits a block (150 KB at head_dim 128: Hopper and
// A100, not the 99 KB of sm_86 / sm_89), else 4. EXQ_ATTN_WARPS=4: 4 by default (A/B timing).
template <typename C, int D>
void launch(const DecodeAttention<C>& a, int splits, cudaStream_t stream) {
  static const bool four = [] {
    const char* e = std::getenv("EXQ_ATTN_WARPS");
    return e != nullptr && std::strcmp(e, "4") == 0;
  }();
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if constexpr (D == 256 || D == 96) {  // a thread per dim of q: 8 warps or 6 (supports())
    constexpr int W = D == 256 ? 8 : 6;
    (void)four;
    if (attention_decode_multi(a))
      launch<C, D, W, true>(a, splits, device, stream);
    else
      launch<C, D, W, false>(a, splits, device, stream);
  } else {
    const bool fits = static_cast<size_t>(current_shared_per_block_optin()) >= Smem<D, 8>::total;
    const int warps = a.mma_warps != 0 ? a.mma_warps : four || !fits ? 4 : 8;
    const bool eight = warps == 8 && fits;
    if (attention_decode_multi(a)) {
      if (eight)
        launch<C, D, 8, true>(a, splits, device, stream);
      else
        launch<C, D, 4, true>(a, splits, device, stream);
    } else if (eight) {
      launch<C, D, 8, false>(a, splits, device, stream);
    } else {
      launch<C, D, 4, false>(a, splits, device, stream);
    }
  }
}

// head_dim 64, 96, 128 or 256 (attention_decode_mma_supports) to the kernels of that size.
template <typename C>
void launch_head_dim(const DecodeAttention<C>& a, int splits, cudaStream_t stream) {
  if (a.head_dim == 64)
    launch<C, 64>(a, splits, stream);
  else if (a.head_dim == 96)
    launch<C, 96>(a, splits, stream);
  else if (a.head_dim == 128)
    launch<C, 128>(a, splits, stream);
  else
    launch<C, 256>(a, splits, stream);
}

}  // namespace

bool attention_decode_mma_supports(int heads, int kv_heads, int head_dim, const void* k_cache,
                                   const void* v_cache, const void* out, const void* workspace) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // head_dim 256: 8 warps' 155 KB of shared memory (sm_80, sm_90; not sm_86 / sm_89's 99 KB).
  const bool dim_ok = head_dim == 64 || head_dim == 96 || head_dim == 128 ||
                      (head_dim == 256 && static_cast<size_t>(current_shared_per_block_optin()) >= Smem<256, 8>::total);
  return dim_ok && kv_heads > 0 && heads % kv_heads == 0 &&
         heads / kv_heads <= kRows && aligned(k_cache) && aligned(v_cache) && aligned(out) &&
         aligned(workspace);
}

void attention_decode_mma_cuda(const DecodeAttention<__half>& a, int splits, cudaStream_t stream) {
  launch_head_dim(a, splits, stream);
}

void attention_decode_mma_cuda(const DecodeAttention<int8_t>& a, int splits, cudaStream_t stream) {
  launch_head_dim(a, splits, stream);
}

void attention_decode_mma_cuda(const DecodeAttention<uint8_t>& a, int splits, cudaStream_t stream) {
  launch_head_dim(a, splits, stream);
}

}  // namespace exq::cuda
