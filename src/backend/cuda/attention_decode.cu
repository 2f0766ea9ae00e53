// Split-K decode attention (attention_decode.h), SIMT kernel: the f32 cache and the shapes the
// tensor-core kernel (attention_decode_mma.cu, taken where it applies) does not serve. Block
// (split, kv head, chunk of <= 8 q heads), 256 threads; keys of the split go through shared
// memory in tiles of 16 KB of K and 16 KB of V, two stages deep (16-byte cp.async.cg). Per tile:
//   1. scores: thread (key, part) dots its part of the key row with every q head of the block
//      (q in shared memory, broadcast reads); parts are summed in a fixed order;
//   2. softmax: warp g keeps head g's running max and sum, writes p = exp(s - m) and the
//      rescale factor of the old state;
//   3. P.V: thread (16-byte column chunk, key stride) accumulates every head's output in
//      registers, so each V vector is read once for the whole group.
// Rows are padded by 16 bytes where needed so the 8 lanes of a quarter warp hit distinct banks.
// Blocks of a kv head write (m, l, o) to the workspace; the last one (atomic counter, reset by
// it) merges them in split order. With the fused rotary + append, the first two tiles of old
// keys are requested before pdl_wait, overlapping the previous kernel's tail.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "backend/cuda/attention_decode.h"
#include "backend/cuda/attention_decode_mma.h"
#include "backend/cuda/attention_split.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/mma_utils.cuh"
#include "backend/cuda/pdl.cuh"

namespace exq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kGroup = kWarps;       // q heads per block: one softmax warp each
constexpr int kSplitAlign = 32;      // keys per split: a multiple of this
constexpr int kTileBytes = 16384;    // K bytes (and V bytes) of one tile
constexpr int kMaxTileKeys = 128;
constexpr int kMinTileKeys = 16;
constexpr int kBlocksPerSm = 2;

__host__ __device__ constexpr size_t align16(size_t v) { return (v + 15) / 16 * 16; }

// Shared memory layout, the same on host and device.
struct Plan {
  int tile_keys;   // keys per tile (power of two)
  int row;         // elements between cache rows in a tile
  int nv;          // vectors per row
  int kp;          // key strides of the P.V phase (kThreads / nv)
  int parts;       // dot-product parts of the score phase (kThreads / tile_keys)
  size_t tile_bytes, q_off, red_off, p_off, new_off, stat_off, total;

  __host__ __device__ Plan(int head_dim, int elem, int vec) {
    const int by_bytes = kTileBytes / (head_dim * elem);
    tile_keys = kMaxTileKeys;
    while (tile_keys > kMinTileKeys && tile_keys > by_bytes) tile_keys /= 2;
    size_t row_bytes = static_cast<size_t>(head_dim) * elem;
    if (vec > 1) {
      if ((row_bytes / 16) % 2 == 0) row_bytes += 16;  // odd number of 16-byte chunks
    } else {
      row_bytes = align16(row_bytes);
    }
    row = static_cast<int>(row_bytes / elem);
    nv = head_dim / vec;
    kp = kThreads / nv;
    parts = kThreads / tile_keys;
    const size_t tiles = 4 * static_cast<size_t>(tile_keys) * row_bytes;  // 2 stages x (K, V)
    const size_t red_o = static_cast<size_t>(kp) * kGroup * head_dim * 4;
    tile_bytes = align16(tiles > red_o ? tiles : red_o);
    q_off = tile_bytes;
    red_off = q_off + align16(static_cast<size_t>(kGroup) * head_dim * 4);
    p_off = red_off + static_cast<size_t>(kThreads) * kGroup * 4;
    new_off = p_off + static_cast<size_t>(kGroup) * kMaxTileKeys * 4;
    stat_off = new_off + 2 * align16(static_cast<size_t>(head_dim) * elem);
    // m, l, corr [kGroup]; merge weights [kGroup][kDecodeMaxSplits]; the "last block" flag.
    total = stat_off + (3 * kGroup + kGroup * kDecodeMaxSplits + 4) * 4;
  }
};

// VEC consecutive elements of shared memory as floats (VEC * sizeof(C) == 16, or VEC == 1).
template <typename C, int VEC>
__device__ __forceinline__ void load_vec(const C* p, float (&f)[VEC]) {
  if constexpr (VEC == 1) {
    f[0] = to_float(p[0]);
  } else if constexpr (sizeof(C) == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x;
    f[1] = v.y;
    f[2] = v.z;
    f[3] = v.w;
  } else {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 t = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      f[2 * i] = t.x;
      f[2 * i + 1] = t.y;
    }
  }
}

// grid (splits, kv_heads, q-head chunks), kThreads threads.
// kMulti: blockIdx.y covers rows x kv heads (DecodeAttention::rows).
template <typename C, int VEC, bool kMulti>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    attention_decode_kernel(const DecodeAttention<C> a_in, int splits) {
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_trigger();
  const int seq_row = kMulti ? static_cast<int>(blockIdx.y) / a_in.kv_heads : 0;
  const int kvh = static_cast<int>(blockIdx.y) - seq_row * a_in.kv_heads, chunk = blockIdx.z, split = blockIdx.x;
  const DecodeAttention<C> a = kMulti ? attention_decode_row(a_in, seq_row) : a_in;
  const int D = a.head_dim;
  const Plan plan(D, static_cast<int>(sizeof(C)), VEC);
  const int TK = plan.tile_keys, NV = plan.nv;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int group = a.heads / a.kv_heads;
  const int h0 = kvh * group + chunk * kGroup;
  const int gn = min(kGroup, group - chunk * kGroup);

  // Fused: the position and the old keys are read before pdl_wait (attention_decode.h).
  const bool early = a.k_new != nullptr || !a.pdl;
  if (!early) pdl_wait();
  const int pos = a.position_ptr ? *a.position_ptr : a.position;
  const int kv_len = pos + 1;
  const int lo = window_first_key(pos, a.window);
  const SplitKeys sk = split_keys(kv_len - lo, splits, kSplitAlign, split);
  if (split >= sk.used) return;
  const int k0 = lo + sk.k0, k1 = lo + sk.k1, used = sk.used;
  const int tiles = div_up(k1 - k0, TK);
  const bool fused = a.k_new != nullptr;
  const bool owns_new = fused && k1 == kv_len;  // the last split holds the new key
  const int new_tile = owns_new ? (pos - k0) / TK : -1;

  C* tile_base = reinterpret_cast<C*>(smem);
  const size_t stage_elems = 2 * static_cast<size_t>(TK) * plan.row;  // K then V
  float* q_s = reinterpret_cast<float*>(smem + plan.q_off);
  float* red_s = reinterpret_cast<float*>(smem + plan.red_off);
  float* p_s = reinterpret_cast<float*>(smem + plan.p_off);
  C* knew_s = reinterpret_cast<C*>(smem + plan.new_off);
  C* vnew_s = reinterpret_cast<C*>(smem + plan.new_off + align16(static_cast<size_t>(D) * sizeof(C)));
  float* m_s = reinterpret_cast<float*>(smem + plan.stat_off);
  float* l_s = m_s + kGroup;
  float* corr_s = l_s + kGroup;
  float* merge_w = corr_s + kGroup;
  int* last_s = reinterpret_cast<int*>(merge_w + kGroup * kDecodeMaxSplits);

  const size_t head_off = static_cast<size_t>(kvh) * a.capacity * D;
  const C* k_head = a.k_cache + head_off;
  const C* v_head = a.v_cache + head_off;

  auto k_tile = [&](int t) { return tile_base + (t & 1) * stage_elems; };
  auto v_tile = [&](int t) { return tile_base + (t & 1) * stage_elems + static_cast<size_t>(TK) * plan.row; };
  // Requests tile t into its stage (the fused new row is patched in separately).
  auto issue = [&](int t) {
    if (t < tiles) {
      C* ks = k_tile(t);
      C* vs = v_tile(t);
      const int kb = k0 + t * TK;
      const int rows = min(TK, k1 - kb);
      if constexpr (VEC > 1) {
        for (int i = tid; i < rows * NV; i += kThreads) {
          const int r = i / NV, c = i - r * NV;
          if (fused && kb + r == pos) continue;
          const size_t src = static_cast<size_t>(kb + r) * D + c * VEC;
          cp_async_16(ks + r * plan.row + c * VEC, k_head + src, true);
          cp_async_16(vs + r * plan.row + c * VEC, v_head + src, true);
        }
      } else {
        for (int i = tid; i < rows * D; i += kThreads) {
          const int r = i / D, d = i - r * D;
          if (fused && kb + r == pos) continue;
          const size_t src = static_cast<size_t>(kb + r) * D + d;
          ks[r * plan.row + d] = k_head[src];
          vs[r * plan.row + d] = v_head[src];
        }
      }
    }
    cp_async_commit();
  };
  auto patch = [&](int t) {  // the new key's row into tile t (its copy skipped that row)
    const int r = pos - k0 - t * TK;
    C* ks = k_tile(t) + r * plan.row;
    C* vs = v_tile(t) + r * plan.row;
    for (int d = tid; d < D; d += kThreads) {
      ks[d] = knew_s[d];
      vs[d] = vnew_s[d];
    }
  };

  if (early) {
    issue(0);
    issue(1);
  }
  pdl_wait();
  if (!early) {
    issue(0);
    issue(1);
  }

  const int half = a.rot_half > 0 ? a.rot_half : D / 2;  // < D / 2: partial rotary
  // qwen3 / gemma3: each head's RMS (q heads g < gn, the new key at gn), a warp per head.
  __shared__ float inv_rms[kGroup + 1];
  const bool qk_norm = a.q_norm != nullptr;
  if (qk_norm) {
    for (int g = warp; g <= gn; g += kWarps) {
      if (g == gn && !owns_new) break;
      const float* row = g < gn ? a.q + static_cast<size_t>(h0 + g) * D : a.k_new + static_cast<size_t>(kvh) * D;
      float ss = 0.0f;
      for (int d = lane; d < D; d += 32) ss += row[d] * row[d];
      ss = warp_sum(ss);
      if (lane == 0) inv_rms[g] = rsqrtf(ss / static_cast<float>(D) + a.norm_eps);
    }
    __syncthreads();
  }
  // Element d of a row as the rotary reads it: RMS-normed by weight w when qk_norm.
  auto normed = [&](const float* row, const float* w, float inv, int d) {
    return qk_norm ? row[d] * inv * w[d] : row[d];
  };
  for (int i = tid; i < gn * D; i += kThreads) {
    const int g = i / D, d = i - g * D;
    const float* qr = a.q + static_cast<size_t>(h0 + g) * D;
    const float inv = qk_norm ? inv_rms[g] : 1.0f;
    float v;
    if (fused && d < 2 * half) {
      const int j = d < half ? d : d - half;
      const float c = a.cos[static_cast<size_t>(pos) * half + j];
      const float s = a.sin[static_cast<size_t>(pos) * half + j];
      const float x1 = normed(qr, a.q_norm, inv, j), x2 = normed(qr, a.q_norm, inv, j + half);
      v = d < half ? x1 * c - x2 * s : x2 * c + x1 * s;
    } else {
      v = normed(qr, a.q_norm, inv, d);
    }
    q_s[i] = v * a.scale;
  }
  if (owns_new) {
    const float* kr = a.k_new + static_cast<size_t>(kvh) * D;
    const float* vr = a.v_new + static_cast<size_t>(kvh) * D;
    const size_t row = head_off + static_cast<size_t>(pos) * D;
    const float kinv = qk_norm ? inv_rms[gn] : 1.0f;
    for (int d = tid; d < D; d += kThreads) {
      float kv = normed(kr, a.k_norm, kinv, d);
      if (d < 2 * half) {
        const int j = d < half ? d : d - half;
        const float c = a.cos[static_cast<size_t>(pos) * half + j];
        const float s = a.sin[static_cast<size_t>(pos) * half + j];
        const float x1 = normed(kr, a.k_norm, kinv, j), x2 = normed(kr, a.k_norm, kinv, j + half);
        kv = d < half ? x1 * c - x2 * s : x2 * c + x1 * s;
      }
      const C kc = from_float<C>(kv);
      const C vc = from_float<C>(vr[d]);
      knew_s[d] = kc;
      vnew_s[d] = vc;
      if (chunk == 0) {
        a.k_cache[row + d] = kc;
        a.v_cache[row + d] = vc;
      }
    }
    __syncthreads();
    if (new_tile == 0 || new_tile == 1) patch(new_tile);
  }

  float m_run = -INFINITY, l_run = 0.0f;  // warp g: head g's softmax state
  float acc[kGroup][VEC];
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[g][e] = 0.0f;
  const int pv_c = tid % NV, pv_k = tid / NV;
  const bool pv_on = pv_k < plan.kp;
  const int sc_key = tid % TK, sc_part = tid / TK;

  for (int t = 0; t < tiles; ++t) {
    cp_async_wait<1>();
    __syncthreads();
    const C* ks = k_tile(t);
    const C* vs = v_tile(t);
    const int rows = min(TK, k1 - (k0 + t * TK));

    // 1. Partial scores of (key, part) for every head.
    float s[kGroup];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) s[g] = 0.0f;
    if (sc_key < rows) {
      for (int v = sc_part; v < NV; v += plan.parts) {
        float kf[VEC];
        load_vec<C, VEC>(ks + sc_key * plan.row + v * VEC, kf);
#pragma unroll
        for (int g = 0; g < kGroup; ++g) {
          if (g < gn) {
            const float* qg = q_s + g * D + v * VEC;
#pragma unroll
            for (int e = 0; e < VEC; ++e) s[g] = fmaf(qg[e], kf[e], s[g]);
          }
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kGroup; ++g)
      if (g < gn) red_s[(sc_part * kGroup + g) * TK + sc_key] = s[g];
    __syncthreads();

    // 2. Online softmax, warp g for head g.
    if (warp < gn) {
      float sv[kMaxTileKeys / 32];
      float tmax = -INFINITY;
#pragma unroll
      for (int i = 0; i < kMaxTileKeys / 32; ++i) {
        const int j = lane + 32 * i;
        float x = -INFINITY;
        if (j < rows) {
          x = 0.0f;
          for (int p = 0; p < plan.parts; ++p) x += red_s[(p * kGroup + warp) * TK + j];
          if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
        }
        sv[i] = x;
        tmax = fmaxf(tmax, x);
      }
      const float m_new = fmaxf(m_run, warp_max(tmax));  // finite: key 0 of the tile is valid
      const float corr = expf(m_run - m_new);
      float lsum = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxTileKeys / 32; ++i) {
        const int j = lane + 32 * i;
        if (j < TK) {
          const float p = j < rows ? expf(sv[i] - m_new) : 0.0f;
          p_s[warp * TK + j] = p;
          lsum += p;
        }
      }
      l_run = l_run * corr + warp_sum(lsum);
      m_run = m_new;
      if (lane == 0) corr_s[warp] = corr;
    }
    __syncthreads();

    // 3. o = o * corr + P.V; every V vector serves all heads.
    if (pv_on) {
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        if (g < gn) {
          const float c = corr_s[g];
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[g][e] *= c;
        }
      }
      for (int j = pv_k; j < rows; j += plan.kp) {
        float vf[VEC];
        load_vec<C, VEC>(vs + j * plan.row + pv_c * VEC, vf);
#pragma unroll
        for (int g = 0; g < kGroup; ++g) {
          if (g < gn) {
            const float p = p_s[g * TK + j];
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[g][e] = fmaf(p, vf[e], acc[g][e]);
          }
        }
      }
    }
    __syncthreads();
    issue(t + 2);
    if (new_tile >= 2 && new_tile == t + 2) patch(new_tile);
  }
  cp_async_wait<0>();
  __syncthreads();

  // The key strides' outputs through shared memory (the tile area is free now).
  float* red_o = reinterpret_cast<float*>(smem);
  if (pv_on) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g)
      if (g < gn)
#pragma unroll
        for (int e = 0; e < VEC; ++e) red_o[(pv_k * kGroup + g) * D + pv_c * VEC + e] = acc[g][e];
  }
  if (warp < gn && lane == 0) {
    m_s[warp] = m_run;
    l_s[warp] = l_run;
  }
  __syncthreads();

  const bool single = used == 1;
  const int stride = attention_decode_partial_stride(D);  // o [D], then m, l
  for (int i = tid; i < gn * D; i += kThreads) {
    const int g = i / D, d = i - g * D;
    float o = 0.0f;
    for (int k = 0; k < plan.kp; ++k) o += red_o[(k * kGroup + g) * D + d];
    const int h = h0 + g;
    if (single) {
      a.out[static_cast<size_t>(h) * D + d] = o / l_s[g];
    } else {
      float* dst = a.workspace + (static_cast<size_t>(h) * kDecodeMaxSplits + split) * stride;
      dst[d] = o;
      if (d == 0) {
        dst[D] = m_s[g];
        dst[D + 1] = l_s[g];
      }
    }
  }
  if (single) return;

  // The last block of this (kv head, chunk) merges the splits in order.
  unsigned* counter = reinterpret_cast<unsigned*>(a.workspace + static_cast<size_t>(a.heads) *
                                                                    kDecodeMaxSplits * stride) +
                      kvh * gridDim.z + blockIdx.z;
  if (!last_of_splits(counter, static_cast<unsigned>(used), last_s)) return;
  if (warp < gn)  // merge weights exp(m_s - m) / l of head `warp`
    split_merge_weights<false>(a.workspace + static_cast<size_t>(h0 + warp) * kDecodeMaxSplits * stride + D,
                               stride, used, merge_w + warp * kDecodeMaxSplits);
  __syncthreads();
  // Thread (item of MW outputs, lane): splits lane, lane + lanes, ... with kBatch loads in
  // flight; the lanes' sums are then added in lane order (deterministic).
  constexpr int MW = VEC > 1 ? 4 : 1;
  constexpr int kBatch = 8;
  const int row_items = D / MW, items = gn * row_items;
  const int lanes = items >= kThreads ? 1 : kThreads / items;
  float* red_m = reinterpret_cast<float*>(smem);  // [lanes][items][MW], the tile area
  for (int w = tid; w < items * lanes; w += kThreads) {
    const int item = w % items, ln = w / items;
    const int g = item / row_items, d = (item - g * row_items) * MW;
    const float* ph = a.workspace + static_cast<size_t>(h0 + g) * kDecodeMaxSplits * stride + d;
    const float* wg = merge_w + g * kDecodeMaxSplits;
    float o[MW];
#pragma unroll
    for (int e = 0; e < MW; ++e) o[e] = 0.0f;
    for (int sp0 = ln; sp0 < used; sp0 += kBatch * lanes) {
      float v[kBatch][MW];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int sp = sp0 + u * lanes;
        if (sp < used) {
          if constexpr (MW == 4) {
            const float4 t = __ldcg(reinterpret_cast<const float4*>(ph + sp * stride));
            v[u][0] = t.x;
            v[u][1] = t.y;
            v[u][2] = t.z;
            v[u][3] = t.w;
          } else {
            v[u][0] = __ldcg(ph + sp * stride);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int sp = sp0 + u * lanes;
        if (sp < used) {
#pragma unroll
          for (int e = 0; e < MW; ++e) o[e] = fmaf(wg[sp], v[u][e], o[e]);
        }
      }
    }
    if (lanes == 1) {
#pragma unroll
      for (int e = 0; e < MW; ++e) a.out[static_cast<size_t>(h0 + g) * D + d + e] = o[e];
    } else {
#pragma unroll
      for (int e = 0; e < MW; ++e) red_m[(static_cast<size_t>(ln) * items + item) * MW + e] = o[e];
    }
  }
  if (lanes > 1) {
    __syncthreads();
    for (int i = tid; i < items * MW; i += kThreads) {
      const int item = i / MW, e = i - item * MW;
      const int g = item / row_items, d = (item - g * row_items) * MW + e;
      float o = 0.0f;
      for (int ln = 0; ln < lanes; ++ln) o += red_m[(static_cast<size_t>(ln) * items + item) * MW + e];
      a.out[static_cast<size_t>(h0 + g) * D + d] = o;
    }
  }
  if (tid == 0) *counter = 0u;  // ready for the next launch
}

template <typename C, int VEC, bool kMulti>
void launch(const DecodeAttention<C>& a, int splits, cudaStream_t stream) {
  const Plan plan(a.head_dim, static_cast<int>(sizeof(C)), VEC);
  auto kernel = attention_decode_kernel<C, VEC, kMulti>;
  if (plan.total > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(plan.total)));
  const int group = a.heads / a.kv_heads;
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.kv_heads * a.rows),
                  static_cast<unsigned>(div_up(group, kGroup)));
  launch_pdl(a.pdl, kernel, grid, dim3(kThreads), plan.total, stream, a, splits);
}

}  // namespace

size_t attention_decode_workspace_floats(int heads, int head_dim) {
  return static_cast<size_t>(heads) * kDecodeMaxSplits * attention_decode_partial_stride(head_dim) +
         static_cast<size_t>(heads);
}

void attention_decode_reset_cuda(float* workspace, int heads, int head_dim, cudaStream_t stream) {
  const size_t off = static_cast<size_t>(heads) * kDecodeMaxSplits * attention_decode_partial_stride(head_dim);
  CUDA_CHECK(cudaMemsetAsync(workspace + off, 0, static_cast<size_t>(heads) * sizeof(float), stream));
}

int attention_decode_splits(int heads, int kv_heads, int max_keys, int requested) {
  const int blocks_per_split = kv_heads * div_up(heads / kv_heads, kGroup);
  int s = requested > 0 ? requested : div_up(kBlocksPerSm * current_multiprocessors(), blocks_per_split);
  s = s < kDecodeMaxSplits ? s : kDecodeMaxSplits;
  const int by_keys = div_up(max_keys > 0 ? max_keys : 1, kSplitAlign);
  s = s < by_keys ? s : by_keys;
  return s < 1 ? 1 : s;
}

bool attention_decode_uses_mma(const DecodeAttention<__half>& a) {
  // EXQ_ATTN_DECODE=simt: the SIMT kernel everywhere (A/B timing).
  static const bool env_simt = [] {
    const char* e = std::getenv("EXQ_ATTN_DECODE");
    return e != nullptr && std::strcmp(e, "simt") == 0;
  }();
  return !a.simt && !env_simt &&
         attention_decode_mma_supports(a.heads, a.kv_heads, a.head_dim, a.k_cache, a.v_cache, a.out,
                                       a.workspace);
}

bool attention_decode_q8_supports(int heads, int kv_heads, int head_dim) {
  return attention_decode_mma_supports(heads, kv_heads, head_dim, nullptr, nullptr, nullptr, nullptr);
}

// f32 and f16 caches: the tensor-core kernel where it applies, else the SIMT one.
template <typename C>
void attention_decode_any(const DecodeAttention<C>& a, int splits, cudaStream_t stream) {
  if constexpr (std::is_same_v<C, __half>) {
    if (attention_decode_uses_mma(a)) {
      attention_decode_mma_cuda(a, splits, stream);
      return;
    }
  }
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = (static_cast<size_t>(a.head_dim) * sizeof(C)) % 16 == 0 && aligned(a.k_cache) &&
                   aligned(a.v_cache) && aligned(a.workspace);
  constexpr int kVec = static_cast<int>(16 / sizeof(C));
  if (attention_decode_multi(a)) {
    if (vec)
      launch<C, kVec, true>(a, splits, stream);
    else
      launch<C, 1, true>(a, splits, stream);
  } else if (vec) {
    launch<C, kVec, false>(a, splits, stream);
  } else {
    launch<C, 1, false>(a, splits, stream);
  }
}

template <typename C>
void attention_decode_cuda(const DecodeAttention<C>& a, cudaStream_t stream) {
  if (a.heads == 0 || a.kv_heads == 0 || a.head_dim == 0) return;
  const int max_keys = a.max_keys > 0 ? a.max_keys : a.position + 1;
  // Several rows take one row's split count each (more waves), so that a row's sums do not
  // depend on the rows beside it.
  const int splits = attention_decode_splits(a.heads, a.kv_heads, max_keys, a.splits);
  if constexpr (std::is_same_v<C, int8_t> || std::is_same_v<C, uint8_t>) {  // q8 / q4: tensor cores only
    attention_decode_mma_cuda(a, splits, stream);
  } else {
    attention_decode_any(a, splits, stream);
  }
}

template void attention_decode_cuda<float>(const DecodeAttention<float>&, cudaStream_t);
template void attention_decode_cuda<__half>(const DecodeAttention<__half>&, cudaStream_t);
template void attention_decode_cuda<int8_t>(const DecodeAttention<int8_t>&, cudaStream_t);
template void attention_decode_cuda<uint8_t>(const DecodeAttention<uint8_t>&, cudaStream_t);

}  // namespace exq::cuda
