// Raw tier of the split-K decode attention (attention_decode.cu): one query token, GQA over a
// head-major cache [kv_heads, capacity, head_dim]. Block (split, kv head, q-head chunk) streams
// its keys of one kv head through shared memory (16-byte cp.async, two stages) once for all
// (up to 8) q heads of the group; the last block of a kv head to finish merges the splits'
// softmax states in split order (deterministic). The position can live in device memory, so
// a CUDA graph captured once serves every step, and the runtime's rotary + KV append can be
// fused in front. Free of exq/fmt headers (nvcc cannot compile fmt); no validation here.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace exq::cuda {

inline constexpr int kDecodeMaxSplits = 64;  // KV splits per kv head at most

// Floats per partial state in the workspace: o [head_dim], m, l, rounded up to a multiple of 4.
__host__ __device__ constexpr int attention_decode_partial_stride(int head_dim) {
  return (head_dim + 2 + 3) / 4 * 4;
}

// Arguments of one launch. C in {float, __half}, int8_t: the q8 cache, or uint8_t: the q4 cache
// (model/kv_quant.h; the tensor-core kernel only: attention_decode_q8_supports).
template <typename C>
struct DecodeAttention {
  const float* q = nullptr;  // [heads, head_dim] f32 (rotated unless k_new is set)
  // Fused rotary + append (the runtime's step): q and k_new [kv_heads, head_dim] are rotated
  // with the rows of `position` in cos/sin [positions, rot_half] (HF rotate_half; even
  // head_dim), and k_new, v_new (f32, [kv_heads, head_dim]) are written to cache row
  // `position`. With pdl, *position_ptr and the rows [0, position) are then read before
  // pdl_wait (pdl.h): no kernel that may still run may write them (the runtime launches the
  // first kernel of each step without pdl). Null k_new: q is rotated and the caches already
  // hold the row; everything is read after pdl_wait.
  const float* k_new = nullptr;
  const float* v_new = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  C* k_cache = nullptr;
  C* v_cache = nullptr;
  // q8 cache: the fp16 scale of each 32 values, [kv_heads, capacity, head_dim / 32] beside each
  // cache (row r's of a several-row launch cache_index[r] * cache_stride / 32 elements in). The
  // new row (k_new) is quantized as kv_append_q8 does, and attended as the cache reads it back.
  // q4 cache (codes two a byte, cache_stride in bytes): the (step, minimum) __half2 of each 32
  // values, [kv_heads, capacity, head_dim / 32] pairs (cache_index[r] * cache_stride / 8 halves
  // in); the new row as kv_append_q4 writes it.
  __half* k_scale = nullptr;
  __half* v_scale = nullptr;
  float* out = nullptr;        // [heads, head_dim] f32
  float* workspace = nullptr;  // attention_decode_workspace_floats(heads, head_dim) floats
  int heads = 0, kv_heads = 0, head_dim = 0, capacity = 0;
  // The query position (keys [0, position] are attended): *position_ptr when set, read on the
  // device, else `position`.
  const int32_t* position_ptr = nullptr;
  int position = 0;
  int max_keys = 0;  // the most keys any launch of a graph sees (sizes the grid); 0: position + 1
  int splits = 0;    // KV splits per kv head; 0: about two blocks per multiprocessor (the
                     // tensor-core kernel takes at most one wave of its blocks)
  float scale = 1.0f;
  // Fused rotary: pairs (i, i + rot_half) over the first 2 * rot_half dimensions, cos / sin rows
  // rot_half wide; 0: head_dim / 2 (a partial rotary leaves the rest unrotated).
  int rot_half = 0;
  // A sliding window: only the `window` latest keys (position - window + 1 .. position) are
  // attended, split over the blocks as a whole cache of that length would be; 0: all.
  int window = 0;
  // > 0: each scaled score s becomes softcap * tanh(s / softcap) (gemma2), in either kernel.
  float softcap = 0.0f;
  // qwen3 / gemma3 (fused only): each head of q and k_new is RMS-normed (norm_eps) and
  // multiplied by these [head_dim] weights before the rotary, as exq::cuda::rmsnorm does; null:
  // q and k_new as given.
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  float norm_eps = 0.0f;
  bool pdl = false;  // programmatic dependent launch (pdl.h)
  // Tensor-core kernel only (attention_decode_uses_mma): the output also as the batch-1 staged
  // x of an EXL2 GEMV (exl2_gemv_staged): out[c] rounded to f16 at xq16[x_pos[c]], 0 at
  // xq16[x_pad[0, x_pad_n)], and 1.0 in xscale[0, xscale_n). Exact without a scale:
  // |out| <= max |v| and the f16 cache holds v.
  __half* xq16 = nullptr;
  const int32_t* x_pos = nullptr;
  const int32_t* x_pad = nullptr;
  int x_pad_n = 0;
  float* xscale = nullptr;
  int xscale_n = 0;
  // The SIMT kernel even where the tensor-core one (attention_decode_mma.h: f16 cache, head_dim
  // 64, 96, 128 or 256, <= 16 q heads per kv head) applies; also EXQ_ATTN_DECODE=simt.
  bool simt = false;
  // Tensor-core kernel: warps per block, 4 or 8; 0: 8 where a block may hold their 150 KB of
  // shared memory (head_dim 128; Hopper, A100), else 4 (EXQ_ATTN_WARPS=4: 4 everywhere);
  // head_dim 256: always 8.
  int mma_warps = 0;
  // Several sequences, one query token each, in one launch: row r's q, k_new, v_new and out
  // start at r * heads (kv_heads) * head_dim; its position is position_ptr[r] (required); its
  // caches begin cache_index[r] * cache_stride elements after k_cache / v_cache (cache_index
  // null: row r's are r * cache_stride; set, it also applies to a one-row launch); its
  // workspace starts r * attention_decode_row_floats(heads, head_dim) floats in. No xq16
  // staging. The rows' caches must differ. Each row gets the split count it would get alone:
  // its output is bit for bit that of a one-row launch.
  int rows = 1;
  const int32_t* cache_index = nullptr;
  int64_t cache_stride = 0;
};

// The workspace of one row of a several-row launch: attention_decode_workspace_floats rounded
// to 16 bytes.
__host__ __device__ constexpr int64_t attention_decode_row_floats(int heads, int head_dim) {
  return ((static_cast<int64_t>(heads) * kDecodeMaxSplits * attention_decode_partial_stride(head_dim) + heads) + 3) /
         4 * 4;
}
// Whether the launch takes the rows / cache_index path (attention_decode_row per row).
template <typename C>
inline bool attention_decode_multi(const DecodeAttention<C>& a) {
  return a.rows > 1 || a.cache_index != nullptr;
}
// Cache elements (C) per fp16 scale element beside them: q8 an fp16 scale a group of 32 codes;
// q4 an (step, minimum) pair, two halves, a group of 32 codes in 16 bytes.
template <typename C>
__host__ __device__ constexpr int64_t kv_cache_elems_per_scale() {
  return std::is_same_v<C, uint8_t> ? 8 : 32;
}
// Row r of a several-row launch as a one-row one (see DecodeAttention::rows); device code only
// when cache_index is set (it is read).
template <typename C>
__host__ __device__ inline DecodeAttention<C> attention_decode_row(DecodeAttention<C> a, int r) {
  const int64_t qd = static_cast<int64_t>(a.heads) * a.head_dim, kd = static_cast<int64_t>(a.kv_heads) * a.head_dim;
  a.q += r * qd;
  a.out += r * qd;
  if (a.k_new != nullptr) {
    a.k_new += r * kd;
    a.v_new += r * kd;
  }
  const int64_t cache = a.cache_index != nullptr ? a.cache_index[r] : r;
  a.k_cache += cache * a.cache_stride;
  a.v_cache += cache * a.cache_stride;
  if (a.k_scale != nullptr) {
    a.k_scale += cache * a.cache_stride / kv_cache_elems_per_scale<C>();
    a.v_scale += cache * a.cache_stride / kv_cache_elems_per_scale<C>();
  }
  a.workspace += r * attention_decode_row_floats(a.heads, a.head_dim);
  a.position_ptr += r;
  a.rows = 1;
  return a;
}

// Workspace of one row (a launch of n rows takes n * attention_decode_row_floats): partial
// states [heads][kDecodeMaxSplits][o (head_dim), m, l; rounded up to a multiple of 4 floats],
// then one counter per (kv head, q-head chunk) that must be zero before the first launch
// (every launch leaves it zero): attention_decode_reset_cuda zeroes them.
size_t attention_decode_workspace_floats(int heads, int head_dim);
void attention_decode_reset_cuda(float* workspace, int heads, int head_dim, cudaStream_t stream);

// Splits per kv head the launch will use (for tests and the bench).
int attention_decode_splits(int heads, int kv_heads, int max_keys, int requested);

template <typename C>
void attention_decode_cuda(const DecodeAttention<C>& args, cudaStream_t stream);

// Whether attention_decode_cuda takes the tensor-core kernel for these arguments.
bool attention_decode_uses_mma(const DecodeAttention<__half>& args);
// The q8 and q4 caches have only the tensor-core kernel: head_dim 64, 96, 128 or 256 (256: sm_80 /
// sm_90's shared memory), at most 16 q heads per kv head (attention_decode_cuda<int8_t> and
// <uint8_t> require this).
bool attention_decode_q8_supports(int heads, int kv_heads, int head_dim);

}  // namespace exq::cuda
