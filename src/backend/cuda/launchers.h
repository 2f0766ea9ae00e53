// The raw tier of the CUDA backend: `*_cuda` launchers taking device pointers, sizes and an
// explicit stream. They do no validation (the wrappers in norm.h, attention.h, ... do) and
// throw exq::Error only for launch failures. Kept free of exq/fmt headers because nvcc's
// front end cannot compile fmt's consteval format strings; .cu files include only this.
//
// Element types: float, __half, __nv_bfloat16; each launcher lists what it is instantiated for.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace exq::cuda {

// ---- norm.cu ------------------------------------------------------------------------------
// x, out: [rows, dim] (out may alias x); weight: [dim], W in {float, __half, __nv_bfloat16}.
template <typename W>
void rmsnorm_cuda(const float* x, const W* weight, float* out, int rows, int dim, float eps,
                  cudaStream_t stream);

// ---- embedding.cu -------------------------------------------------------------------------
// ids: [tokens] int32; table: [vocab, dim], T in {float, __half, __nv_bfloat16}; out: [tokens,
// dim] f32. An id outside [0, vocab) yields a row of NaN (kernels can't throw; NaN surfaces).
template <typename T>
void embedding_cuda(const int32_t* ids, const T* table, float* out, int tokens, int vocab,
                    int dim, cudaStream_t stream);

// The first position of a chunk of tokens. Kernels read it from `device` when that is set (a
// CUDA graph replayed at other positions: CudaLlama's draft checks); `host` is then the value
// at capture, which the host-side checks see.
struct StartPos {
  int host = 0;
  const int32_t* device = nullptr;
  StartPos(int h) : host(h) {}  // NOLINT: a plain position converts implicitly
  StartPos(int h, const int32_t* d) : host(h), device(d) {}
};

// ---- rotary.cu ----------------------------------------------------------------------------
// In place on x: [tokens, heads, head_dim], HF rotate_half layout over the first 2 * rot_half
// dimensions (pairs i, i + rot_half; rot_half = head_dim / 2 but for a partial rotary).
// cos, sin: [positions, rot_half]; token t uses row start_pos + t.
void rotary_cuda(float* x, const float* cos, const float* sin, int tokens, int heads,
                 int head_dim, int rot_half, StartPos start, cudaStream_t stream);

// ---- elementwise.cu -----------------------------------------------------------------------
// out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
void swiglu_cuda(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
// out = gelu_tanh(gate) * up (geglu_value).
void geglu_cuda(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
// residual[i] += delta[i].
void residual_add_cuda(float* residual, const float* delta, int64_t n, cudaStream_t stream);
// dst[i] = float(src[i]), T in {float, __half, __nv_bfloat16} (logits and other outputs).
template <typename T>
void to_f32_cuda(const T* src, float* dst, int64_t n, cudaStream_t stream);

// ---- kv_cache.cu --------------------------------------------------------------------------
// k, v: [tokens, kv_heads, head_dim] f32 -> caches [kv_heads, capacity, head_dim] at positions
// [start_pos, start_pos + tokens). C in {float, __half}.
template <typename C>
void kv_append_cuda(const float* k, const float* v, C* k_cache, C* v_cache, int tokens,
                    int kv_heads, int head_dim, int capacity, StartPos start, cudaStream_t stream);

// ---- kv_q8.cu ------------------------------------------------------------------------------
// The q8 cache (model/kv_quant.h): codes [kv_heads, capacity, head_dim] int8 and a scale
// [kv_heads, capacity, head_dim / 32] fp16 per 32 values. k, v: [tokens, kv_heads, head_dim]
// f32 written at positions [start_pos, start_pos + tokens); head_dim a multiple of 32.
void kv_append_q8_cuda(const float* k, const float* v, int8_t* k_cache, __half* k_scale, int8_t* v_cache,
                       __half* v_scale, int tokens, int kv_heads, int head_dim, int capacity, StartPos start,
                       cudaStream_t stream);

// ---- kv_q4.cu ------------------------------------------------------------------------------
// The q4 cache (model/kv_quant.h, kv_q4.cuh): codes [kv_heads, capacity, head_dim / 2] bytes and
// a (step, minimum) [kv_heads, capacity, head_dim / 32] per 32 values; k, v as kv_append_q8_cuda.
void kv_append_q4_cuda(const float* k, const float* v, uint8_t* k_cache, __half2* k_step, uint8_t* v_cache,
                       __half2* v_step, int tokens, int kv_heads, int head_dim, int capacity, StartPos start,
                       cudaStream_t stream);

// ---- attention.cu -------------------------------------------------------------------------
// Causal GQA attention over a head-major cache [kv_heads, capacity, head_dim] (C in {float,
// __half}) that already holds positions [0, start_pos + tokens). q, out: [tokens, heads,
// head_dim] f32; query t sits at position start_pos + t. head_dim <= kAttentionMaxHeadDim.
// window > 0: a sliding window, query t sees its `window` latest keys (position - window + 1 on).
inline constexpr int kAttentionMaxHeadDim = 256;
template <typename C>
void attention_prefill_cuda(const float* q, const C* k_cache, const C* v_cache, float* out,
                            int tokens, int heads, int kv_heads, int head_dim, int capacity,
                            StartPos start, float scale, cudaStream_t stream, int window = 0,
                            float softcap = 0.0f);
// Decode (one query token, split over the KV length): attention_decode.h.

// ---- flash_prefill.cu ---------------------------------------------------------------------
// attention_prefill_cuda<__half> on tensor cores (fp16 q/k/v, f32 accumulation and softmax):
// same arguments and semantics (softcap included), head_dim 64, 96, 128 or 256
// (flash_prefill_supports_head_dim); q and out 16-byte aligned.
bool flash_prefill_supports_head_dim(int head_dim);
void flash_prefill_cuda(const float* q, const __half* k_cache, const __half* v_cache, float* out,
                        int tokens, int heads, int kv_heads, int head_dim, int capacity,
                        StartPos start, float scale, cudaStream_t stream, int window = 0,
                        float softcap = 0.0f);
// The same over a q8 cache (kv_q8.cu's layout): each tile's codes are loaded into registers one
// tile ahead and dequantized into the f16 tile buffers.
void flash_prefill_q8_cuda(const float* q, const int8_t* k_cache, const __half* k_scale, const int8_t* v_cache,
                           const __half* v_scale, float* out, int tokens, int heads, int kv_heads, int head_dim,
                           int capacity, StartPos start, float scale, cudaStream_t stream, int window = 0,
                           float softcap = 0.0f);
// The same over a q4 cache (kv_q4.cuh): the tiles hold the rotated values, q is rotated as it is
// loaded and the output rotated back before it is written.
void flash_prefill_q4_cuda(const float* q, const uint8_t* k_cache, const __half2* k_step, const uint8_t* v_cache,
                           const __half2* v_step, float* out, int tokens, int heads, int kv_heads, int head_dim,
                           int capacity, StartPos start, float scale, cudaStream_t stream, int window = 0,
                           float softcap = 0.0f);

// ---- matmul.cu ----------------------------------------------------------------------------
// y[rows, n] = x[rows, k] . w[n, k]^T (w row-major, as HF Linear stores it), W in {__half,
// __nv_bfloat16}. x is scaled per row by a power of two and rounded to W (x_scratch: rows * k,
// row_scale: rows), multiplied on tensor cores with f32 accumulation, and y rescaled.
// x_up (device, rows * k, or null): the rows multiplied are silu(x) * x_up (swiglu_cuda's
// arithmetic; gelu_tanh(x) * x_up with gelu). x_perm (device, k entries, or null): column c of w multiplies row[:, x_perm[c]]
// (gathered while it is rounded). `handle` is bound to `stream` here.
// The most input features matmul_cuda takes with x_perm or x_up (a row in shared memory).
size_t matmul_max_copied_in();
template <typename W>
void matmul_cuda(cublasHandle_t handle, const float* x, const W* w, float* y, W* x_scratch,
                 float* row_scale, int rows, int n, int k, cudaStream_t stream,
                 const int32_t* x_perm = nullptr, const float* x_up = nullptr, bool gelu = false);

// ---- sampling.cu --------------------------------------------------------------------------
// out[r] = index of the largest logits[r, :] (the first on ties; NaN ignored; 0 if none).
void argmax_cuda(const float* logits, int32_t* out, int rows, int vocab, cudaStream_t stream);

// Sampling settings of one draw (sampling.h has the semantics: runtime::Sampler's, exactly).
struct SampleParams {
  float temperature = 1.0f;  // > 0 unless greedy
  int top_k = 0;             // <= 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1: off
  float min_p = 0.0f;        // <= 0: off
  float penalty = 1.0f;      // repetition penalty on tokens flagged in `seen`; 1: off
  int greedy = 0;            // 1: argmax of the penalized row, `uniform` unused
  double uniform = 0.0;      // the draw in [0, 1)
};
// Written to *out instead of a token: NaN or +Inf among the penalized logits, or no finite one.
inline constexpr int32_t kSampleNonFinite = -1;
inline constexpr int32_t kSampleNothing = -2;
// Scratch of sample_cuda (bytes, 256-aligned sections).
size_t sample_workspace_bytes_for(int vocab);
// One block: *out = the token drawn from logits[vocab] (seen: [vocab] flags or null).
void sample_cuda(const float* logits, const uint8_t* seen, int vocab, const SampleParams& params,
                 void* workspace, int32_t* out, cudaStream_t stream);
// out[i] = in[i] + bias[i] - (counts[i] > 0 ? presence + frequency * counts[i] : 0), then -inf
// where allowed[i] == 0 (bias, counts, allowed: [vocab] or null); runtime::Sampler's order and
// float rounding.
void adjust_logits_cuda(const float* in, int vocab, const float* bias, const int32_t* counts, float presence,
                        float frequency, const uint8_t* allowed, float* out, cudaStream_t stream);
// ++counts[*token] when the token is inside [0, vocab).
void count_token_cuda(const int32_t* token, int32_t* counts, int vocab, cudaStream_t stream);
// seen[ids[i]] = 1 for the ids inside [0, vocab).
void mark_seen_cuda(const int32_t* ids, int n, uint8_t* seen, int vocab, cudaStream_t stream);
// What token_logprob_cuda writes: runtime::token_logprob's values for the token in *token.
inline constexpr int kLogprobTopMax = 20;
struct LogprobOut {
  float logprob;                       // log softmax(logits)[token]
  int32_t top_ids[kLogprobTopMax];     // the likeliest first, ties by lower id (NaN skipped); -1: none
  float top_logprobs[kLogprobTopMax];
};
// Per row r: log-softmax of logits[r, vocab] at token[r] and the top_n likeliest into out[r];
// a block per row.
void token_logprob_cuda(const float* logits, int rows, int vocab, const int32_t* token, int top_n,
                        LogprobOut* out, cudaStream_t stream);

}  // namespace exq::cuda
