// Tensor-core causal prefill attention over the f16, q8 or q4 KV cache (launchers.h). The scheme
// of quant/cuda/flash_attention.cu (FlashAttention-2: 64 queries per block, 16 per warp, 64-key
// tiles double-buffered with cp.async, online softmax in base 2, mma.sync m16n8k16 fp16 in /
// f32 accumulate), generalised to a cache with a capacity stride, queries at start_pos + t and
// f32 q rounded to fp16 (times scale * log2(e)) as it is staged into shared memory; head_dim 64,
// 96, 128 or 256. head_dim 256 takes 32-key tiles (99 KB of shared memory a block) and reads q's
// fragments from shared memory at each step (the output's 128 registers a lane leave no room for
// them). Gemma 2's softcap applies to each S tile (q then carries the scale alone, log2(e) comes
// after the cap).
// Fragment layouts are PTX's mma.m16n8k16 (.row.col): gid = lane / 4, tig = lane % 4; C holds
// rows gid and gid + 8 at columns 2*tig, 2*tig + 1.
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/kv_q4.cuh"
#include "backend/cuda/kv_q8.cuh"
#include "backend/cuda/launchers.h"
#include "backend/cuda/softmax_mma.cuh"

namespace exq::cuda {
namespace {

constexpr int kBlockM = 64;  // queries per block (16 per warp)
constexpr int kFlashThreads = 128;

// Keys per tile.
template <int D>
__host__ __device__ constexpr int block_n() {
  return D > 128 ? 32 : 64;
}

// Row pitch in halves: 8 extra halves put the 8 rows an ldmatrix phase reads in distinct banks
// and keep rows 16-byte aligned for cp.async.
template <int D>
__host__ __device__ constexpr int pitch() {
  return D + 8;
}

template <int D>
constexpr size_t flash_smem_bytes() {
  return static_cast<size_t>(kBlockM + 4 * block_n<D>()) * pitch<D>() * sizeof(__half);
}

// Keys [key0, key0 + block_n) of one cache head ([capacity, D], rows < kv_len valid) into shared
// memory; rows past kv_len are zero-filled (and masked by causality for every real query).
template <int D>
__device__ __forceinline__ void load_kv_tile(__half* dst, const __half* src, int key0, int kv_len) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int i = threadIdx.x; i < block_n<D>() * kChunks; i += kFlashThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const int key = key0 + r;
    const __half* g = src + static_cast<size_t>(key < kv_len ? key : kv_len - 1) * D + c * 8;
    cp_async_16(dst + r * pitch<D>() + c * 8, g, key < kv_len);
  }
}

// grid (ceil(T / 64), heads); the heavy (late) query blocks go first. q, out: [T, H, D] f32;
// caches [KVH, capacity, D] holding positions [0, start_pos + T): f16 (C = __half), or q8 codes
// (C = int8_t) with their scales [KVH, capacity, D / 32], whose tiles are loaded into registers
// one tile ahead and dequantized into the same f16 tile buffers, or q4 codes (C = uint8_t, two a
// byte) with their (step, minimum) pairs as k_scale / v_scale: the tiles hold the rotated values,
// q is rotated as it is loaded and the output rotated back (kv_q4.cuh).
template <typename C, int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_prefill_kernel(const float* __restrict__ q, const C* __restrict__ k_cache,
                         const C* __restrict__ v_cache, const __half* __restrict__ k_scale,
                         const __half* __restrict__ v_scale, float* __restrict__ out, int T, int H, int KVH,
                         int capacity, int start_pos, const int32_t* start_dev, float q_scale, int window,
                         SoftcapFactors cap) {
  constexpr bool kQ8 = std::is_same_v<C, int8_t>, kQ4 = std::is_same_v<C, uint8_t>, kQuant = kQ8 || kQ4;
  constexpr int kBlockN = block_n<D>();
  constexpr bool kSmallHead = D <= 128;  // q's fragments in registers
  if (start_dev != nullptr) start_pos = *start_dev;
  constexpr int P = pitch<D>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* q_s = reinterpret_cast<__half*>(smem_raw);  // [64][P]
  __half* k_s = q_s + kBlockM * P;                    // [2][kBlockN][P]
  __half* v_s = k_s + 2 * kBlockN * P;                // [2][kBlockN][P]

  const int m_block = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  const int h = blockIdx.y, kvh = h / (H / KVH);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int m0 = m_block * kBlockM;
  const int q_pos0 = start_pos + m0;                      // position of the block's first query
  const int kv_len = start_pos + min(m0 + kBlockM, T);    // keys its last real query sees
  const int tiles = (kv_len + kBlockN - 1) / kBlockN;
  // A sliding window: query p sees keys from p - window + 1 on. Tiles before the block's first
  // query's first key are skipped; keys below a row's first are masked while a tile may hold
  // some (up to the block's last query's first key, w_end).
  const int j0 = window_first_key(q_pos0, window) / kBlockN;
  const int w_end = window > 0 ? q_pos0 + kBlockM - window : 0;
  const C* kh = k_cache + static_cast<size_t>(kvh) * capacity * D / (kQ4 ? 2 : 1);
  const C* vh = v_cache + static_cast<size_t>(kvh) * capacity * D / (kQ4 ? 2 : 1);
  using Tile = std::conditional_t<kQ4, Q4Tile<D, kBlockN, kFlashThreads, P>, Q8Tile<D, kBlockN, kFlashThreads, P>>;
  [[maybe_unused]] Tile tile;  // q8 / q4 only
  [[maybe_unused]] const size_t scale_off = static_cast<size_t>(kvh) * capacity * (D / kQ8Group);
  auto load_tile = [&](int key0) {
    if constexpr (kQ4)
      tile.load(kh, reinterpret_cast<const __half2*>(k_scale) + scale_off, vh,
                reinterpret_cast<const __half2*>(v_scale) + scale_off, threadIdx.x, key0, kv_len, -1);
    else if constexpr (kQ8)
      tile.load(kh, k_scale + scale_off, vh, v_scale + scale_off, threadIdx.x, key0, kv_len, -1);
  };
  if constexpr (kQuant) {
    load_tile(j0 * kBlockN);
  } else {
    load_kv_tile<D>(k_s + (j0 & 1) * kBlockN * P, kh, j0 * kBlockN, kv_len);
    load_kv_tile<D>(v_s + (j0 & 1) * kBlockN * P, vh, j0 * kBlockN, kv_len);
    cp_async_commit();
  }

  // q tile: f32 -> fp16 * q_scale while the first K/V tile is in flight; rows >= T are zeros.
  if constexpr (kQ4) {  // rotated as the keys were: a warp per (row, 32 dims), a dim a lane
    constexpr int kGroups = D / kQ4Group;
    for (int item = warp; item < kBlockM * kGroups; item += kFlashThreads / 32) {
      const int r = item / kGroups, c = (item % kGroups) * kQ4Group + lane, t = m0 + r;
      const float x = t < T ? q[(static_cast<size_t>(t) * H + h) * D + c] : 0.0f;
      q_s[r * P + c] = __float2half_rn(q4_rotate_warp(x) * q_scale);
    }
  } else {
    constexpr int kVec = D / 4;  // float4 per row
    for (int i = threadIdx.x; i < kBlockM * kVec; i += kFlashThreads) {
      const int r = i / kVec, c = i % kVec;
      const int t = m0 + r;
      float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (t < T)
        x = *reinterpret_cast<const float4*>(q + (static_cast<size_t>(t) * H + h) * D + c * 4);
      uint2 packed;
      packed.x = pack_half2(x.x * q_scale, x.y * q_scale);
      packed.y = pack_half2(x.z * q_scale, x.w * q_scale);
      *reinterpret_cast<uint2*>(q_s + r * P + c * 4) = packed;
    }
  }

  uint32_t qf[1][kSmallHead ? D / 16 : 1][4];
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int sel = lane >> 3, r8 = lane & 7;  // ldmatrix: which 8x8 matrix, which of its rows

  if constexpr (kQuant) tile.store(k_s + (j0 & 1) * kBlockN * P, v_s + (j0 & 1) * kBlockN * P, threadIdx.x);
  for (int j = j0; j < tiles; ++j) {
    if constexpr (kQuant) {
      if (j + 1 < tiles) load_tile((j + 1) * kBlockN);
    } else if (j + 1 < tiles) {
      load_kv_tile<D>(k_s + ((j + 1) & 1) * kBlockN * P, kh, (j + 1) * kBlockN, kv_len);
      load_kv_tile<D>(v_s + ((j + 1) & 1) * kBlockN * P, vh, (j + 1) * kBlockN, kv_len);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kSmallHead && j == j0) {
#pragma unroll
      for (int kk = 0; kk < (kSmallHead ? D / 16 : 1); ++kk)
        ldmatrix_x4(qf[0][kk], q_s + (warp * 16 + r8 + (sel & 1) * 8) * P + kk * 16 + (sel >> 1) * 8);
    }
    const __half* ks = k_s + (j & 1) * kBlockN * P;
    const __half* vs = v_s + (j & 1) * kBlockN * P;

    float s[kBlockN / 8][4];
#pragma unroll
    for (int i = 0; i < kBlockN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    if constexpr (kSmallHead)
      mma_qk(s, qf, ks, P);
    else
      mma_qk_smem<1, D / 16>(s, q_s + warp * 16 * P, 0, ks, P);
    if (cap.in != 0.0f) softcap_scores(s, cap.out, cap.in);
    // Tiles reaching past the first query's position: keys after a query's position are
    // masked (this also masks the zero-filled keys >= kv_len for every real query); tiles
    // before w_end: keys before a query's window. Without a window key 0 is never masked, so
    // each row's max is finite from the first tile on.
    const bool in_window_start = j * kBlockN < w_end;
    if ((j + 1) * kBlockN - 1 > q_pos0 || in_window_start) {
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int pos = q_pos0 + warp * 16 + gid + (e >> 1) * 8;
          const int key = j * kBlockN + nt * 8 + 2 * tig + (e & 1);
          if (key > pos || (in_window_start && key <= pos - window)) s[nt][e] = -INFINITY;
        }
    }

    // Online softmax (base 2: q carries log2(e)); each row lives in one quad of lanes.
    // A window can leave a row without a visible key so far (max -inf): 0 as its base keeps
    // p and corr at 0 instead of NaN.
    float mx[2];
    quad_row_max(s, row_max, mx);
    const float base[2] = {mx[0] == -INFINITY ? 0.0f : mx[0], mx[1] == -INFINITY ? 0.0f : mx[1]};
    const float corr[2] = {exp2f(row_max[0] - base[0]), exp2f(row_max[1] - base[1])};
    float sum[2] = {0.0f, 0.0f};
    uint32_t pf[1][kBlockN / 16][4];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      const float p0 = exp2f(s[nt][0] - base[0]), p1 = exp2f(s[nt][1] - base[0]);
      const float p2 = exp2f(s[nt][2] - base[1]), p3 = exp2f(s[nt][3] - base[1]);
      sum[0] += p0 + p1;
      sum[1] += p2 + p3;
      pf[0][nt / 2][(nt & 1) * 2] = pack_half2(p0, p1);
      pf[0][nt / 2][(nt & 1) * 2 + 1] = pack_half2(p2, p3);
    }
    softmax_advance(o, row_sum, row_max, sum, mx, corr);
    mma_pv(o, pf, vs, P);
    // q8 / q4: the next tile into the other buffers, last read two barriers ago.
    if constexpr (kQuant)
      if (j + 1 < tiles) tile.store(k_s + ((j + 1) & 1) * kBlockN * P, v_s + ((j + 1) & 1) * kBlockN * P, threadIdx.x);
    __syncthreads();  // this tile's buffers are refilled two iterations on
  }

  const float inv[2] = {1.0f / row_sum[0], 1.0f / row_sum[1]};
  if constexpr (kQ4) {
    // Rotated back through shared memory: the warp's 16 rows [16][D] f32 in the K and V buffers
    // (every warp is past the last tile's barrier), then a warp pass per (row, 32 dims).
    float* o_s = reinterpret_cast<float*>(k_s) + warp * 16 * D;
    static_assert(kBlockM * D * 4 <= 4 * kBlockN * P * 2, "the outputs fit the K and V buffers");
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<float2*>(o_s + (gid + r * 8) * D + dt * 8 + 2 * tig) =
            make_float2(o[dt][2 * r] * inv[r], o[dt][2 * r + 1] * inv[r]);
    __syncwarp();
    for (int item = 0; item < 16 * (D / kQ4Group); ++item) {
      const int r = item / (D / kQ4Group), c = (item % (D / kQ4Group)) * kQ4Group + lane;
      const int t = m0 + warp * 16 + r;
      const float y = q4_rotate_warp(o_s[r * D + c]);
      if (t < T) out[(static_cast<size_t>(t) * H + h) * D + c] = y;
    }
  } else {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = m0 + warp * 16 + gid + r * 8;
      if (t >= T) continue;
      float* orow = out + (static_cast<size_t>(t) * H + h) * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<float2*>(orow + dt * 8 + 2 * tig) =
            make_float2(o[dt][2 * r] * inv[r], o[dt][2 * r + 1] * inv[r]);
    }
  }
}

template <typename C, int D>
void launch_flash(const float* q, const C* k_cache, const C* v_cache, const __half* k_scale,
                  const __half* v_scale, float* out, int tokens, int heads, int kv_heads, int capacity,
                  StartPos start, float scale, cudaStream_t stream, int window, float softcap) {
  constexpr size_t smem = flash_smem_bytes<D>();
  CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<C, D>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  const dim3 grid(ceil_div(tokens, kBlockM), heads);
  flash_prefill_kernel<C, D><<<grid, kFlashThreads, smem, stream>>>(
      q, k_cache, v_cache, k_scale, v_scale, out, tokens, heads, kv_heads, capacity, start.host, start.device,
      softcap > 0.0f ? scale : scale * kLog2e, window, softcap_factors(softcap));
  CUDA_CHECK_LAUNCH();
}

// head_dim 64, 96, 128 or 256 to the kernel of that size.
template <typename C>
void launch_flash_any(const float* q, const C* k_cache, const C* v_cache, const __half* k_scale,
                      const __half* v_scale, float* out, int tokens, int heads, int kv_heads, int head_dim,
                      int capacity, StartPos start, float scale, cudaStream_t stream, int window, float softcap) {
  if (tokens == 0 || heads == 0) return;
  if (head_dim == 64)
    launch_flash<C, 64>(q, k_cache, v_cache, k_scale, v_scale, out, tokens, heads, kv_heads, capacity, start, scale,
                        stream, window, softcap);
  else if (head_dim == 96)
    launch_flash<C, 96>(q, k_cache, v_cache, k_scale, v_scale, out, tokens, heads, kv_heads, capacity, start, scale,
                        stream, window, softcap);
  else if (head_dim == 128)
    launch_flash<C, 128>(q, k_cache, v_cache, k_scale, v_scale, out, tokens, heads, kv_heads, capacity, start, scale,
                         stream, window, softcap);
  else
    launch_flash<C, 256>(q, k_cache, v_cache, k_scale, v_scale, out, tokens, heads, kv_heads, capacity, start, scale,
                         stream, window, softcap);
}

}  // namespace

void flash_prefill_q4_cuda(const float* q, const uint8_t* k_cache, const __half2* k_step, const uint8_t* v_cache,
                           const __half2* v_step, float* out, int tokens, int heads, int kv_heads, int head_dim,
                           int capacity, StartPos start, float scale, cudaStream_t stream, int window,
                           float softcap) {
  // The kernel's scale pointers: (step, minimum) pairs.
  launch_flash_any(q, k_cache, v_cache, reinterpret_cast<const __half*>(k_step),
                   reinterpret_cast<const __half*>(v_step), out, tokens, heads, kv_heads, head_dim, capacity, start,
                   scale, stream, window, softcap);
}

// head_dim 256 takes 99 KB of shared memory a block: what sm_86 / sm_89 offer at most, less than
// sm_80 / sm_90's.
bool flash_prefill_supports_head_dim(int head_dim) {
  return head_dim == 64 || head_dim == 96 || head_dim == 128 ||
         (head_dim == 256 && static_cast<size_t>(current_shared_per_block_optin()) >= flash_smem_bytes<256>());
}

void flash_prefill_cuda(const float* q, const __half* k_cache, const __half* v_cache, float* out,
                        int tokens, int heads, int kv_heads, int head_dim, int capacity,
                        StartPos start, float scale, cudaStream_t stream, int window, float softcap) {
  launch_flash_any<__half>(q, k_cache, v_cache, nullptr, nullptr, out, tokens, heads, kv_heads, head_dim, capacity,
                           start, scale, stream, window, softcap);
}

void flash_prefill_q8_cuda(const float* q, const int8_t* k_cache, const __half* k_scale, const int8_t* v_cache,
                           const __half* v_scale, float* out, int tokens, int heads, int kv_heads, int head_dim,
                           int capacity, StartPos start, float scale, cudaStream_t stream, int window,
                           float softcap) {
  launch_flash_any(q, k_cache, v_cache, k_scale, v_scale, out, tokens, heads, kv_heads, head_dim, capacity, start,
                   scale, stream, window, softcap);
}

}  // namespace exq::cuda
