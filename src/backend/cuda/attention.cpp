#include "backend/cuda/attention.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

struct AttentionDims {
  int tokens, heads, kv_heads, head_dim, capacity;
};

// Shared checks of prefill and decode; returns the kernel dimensions.
// q, out against a checked cache pair of `cache` [kv_heads, capacity, head_dim] values.
AttentionDims check_queries(const char* op, const DeviceView& q, const Shape& cache, const DeviceView& out,
                            int start_pos, int window) {
  EXQ_CHECK(window >= 0, "cuda {}: window {} is negative", op, window);
  check_dtype(q, DType::F32, op, "q");
  check_rank(q, 3, op, "q");
  check_dense(q, op, "q");
  check_dtype(out, DType::F32, op, "out");
  check_shape(out, q.shape(), op, "out");
  check_dense(out, op, "out");
  const int64_t heads = q.dim(1), kv_heads = cache[0], head_dim = q.dim(2);
  EXQ_CHECK(cache[2] == head_dim, "cuda {}: cache head_dim {} differs from q's {}", op, cache[2], head_dim);
  EXQ_CHECK(head_dim >= 1 && head_dim <= kAttentionMaxHeadDim,
            "cuda {}: head_dim {} is not supported (1..{})", op, head_dim, kAttentionMaxHeadDim);
  EXQ_CHECK(kv_heads >= 1 && heads % kv_heads == 0,
            "cuda {}: {} query heads are not a multiple of {} kv heads", op, heads, kv_heads);
  EXQ_CHECK(start_pos >= 0 && start_pos + q.dim(0) <= cache[1],
            "cuda {}: positions [{}, {}) exceed the cache capacity {}", op, start_pos, start_pos + q.dim(0), cache[1]);
  return {checked_int(q.dim(0), op, "tokens"), checked_int(heads, op, "heads"),
          checked_int(kv_heads, op, "kv_heads"), checked_int(head_dim, op, "head_dim"),
          checked_int(cache[1], op, "capacity")};
}

// attention_prefill_q8 / _q4: the cache pair, q and out against the values it holds, head_dim 64,
// 128 or 256 (the tensor-core kernel's), everything 16-byte aligned.
AttentionDims check_quant_prefill(const char* op, bool q4, const DeviceView& q, const DeviceView& k_cache,
                                  const DeviceView& k_scale, const DeviceView& v_cache, const DeviceView& v_scale,
                                  const DeviceView& out, int start_pos, int window) {
  const Shape values = check_quant_cache_pair(k_cache, k_scale, v_cache, v_scale, q4, op);
  const AttentionDims d = check_queries(op, q, values, out, start_pos, window);
  EXQ_CHECK(flash_prefill_supports_head_dim(d.head_dim), "cuda {}: needs head_dim 64, 96, 128 or 256, got {}", op,
            d.head_dim);
  const auto misaligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 != 0; };
  EXQ_CHECK(!misaligned(q.raw()) && !misaligned(out.raw()) && !misaligned(k_cache.raw()) && !misaligned(v_cache.raw()),
            "cuda {}: q, out and the caches must be 16-byte aligned", op);
  return d;
}

AttentionDims check_attention(const char* op, const DeviceView& q, const DeviceView& k_cache,
                              const DeviceView& v_cache, const DeviceView& out, int start_pos, int window) {
  check_kv_cache_pair(k_cache, v_cache, op);
  return check_queries(op, q, k_cache.shape(), out, start_pos, window);
}

}  // namespace

bool attention_supports(DType cache, int64_t head_dim) {
  return (cache == DType::F16 || cache == DType::F32) && head_dim >= 1 &&
         head_dim <= kAttentionMaxHeadDim;
}

void attention_prefill(const DeviceView& q, const DeviceView& k_cache, const DeviceView& v_cache,
                       const DeviceView& out, StartPos start, float scale, cudaStream_t stream, int window,
                       float softcap) {
  const AttentionDims d = check_attention("attention_prefill", q, k_cache, v_cache, out, start.host, window);
  if (k_cache.dtype() == DType::F16)
    attention_prefill_cuda(q.data<float>(), static_cast<const __half*>(k_cache.raw()),
                           static_cast<const __half*>(v_cache.raw()), out.data<float>(), d.tokens,
                           d.heads, d.kv_heads, d.head_dim, d.capacity, start, scale, stream, window, softcap);
  else
    attention_prefill_cuda(q.data<float>(), k_cache.data<float>(), v_cache.data<float>(),
                           out.data<float>(), d.tokens, d.heads, d.kv_heads, d.head_dim,
                           d.capacity, start, scale, stream, window, softcap);
}

bool attention_prefill_fast_supports(DType cache, int64_t head_dim) {
  return cache == DType::F16 && head_dim <= kAttentionMaxHeadDim &&
         flash_prefill_supports_head_dim(static_cast<int>(head_dim));
}

bool attention_prefill_generic_forced() {
  static const bool generic = [] {
    const char* e = std::getenv("EXQ_PREFILL_ATTN");
    return e != nullptr && std::string(e) == "generic";
  }();
  return generic;
}

void attention_prefill_fast(const DeviceView& q, const DeviceView& k_cache,
                            const DeviceView& v_cache, const DeviceView& out, StartPos start,
                            float scale, cudaStream_t stream, int window, float softcap) {
  constexpr const char* op = "attention_prefill_fast";
  const AttentionDims d = check_attention(op, q, k_cache, v_cache, out, start.host, window);
  EXQ_CHECK(attention_prefill_fast_supports(k_cache.dtype(), d.head_dim),
            "cuda {}: needs an F16 cache and head_dim 64, 96, 128 or 256, got {} and {}", op,
            dtype_name(k_cache.dtype()), d.head_dim);
  const auto misaligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 != 0; };
  EXQ_CHECK(!misaligned(q.raw()) && !misaligned(out.raw()) && !misaligned(k_cache.raw()) &&
                !misaligned(v_cache.raw()),
            "cuda {}: q, out and the caches must be 16-byte aligned", op);
  flash_prefill_cuda(q.data<float>(), static_cast<const __half*>(k_cache.raw()),
                     static_cast<const __half*>(v_cache.raw()), out.data<float>(), d.tokens,
                     d.heads, d.kv_heads, d.head_dim, d.capacity, start, scale, stream, window, softcap);
}

void attention_prefill_q8(const DeviceView& q, const DeviceView& k_cache, const DeviceView& k_scale,
                          const DeviceView& v_cache, const DeviceView& v_scale, const DeviceView& out,
                          StartPos start, float scale, cudaStream_t stream, int window, float softcap) {
  const AttentionDims d = check_quant_prefill("attention_prefill_q8", /*q4=*/false, q, k_cache, k_scale, v_cache,
                                              v_scale, out, start.host, window);
  flash_prefill_q8_cuda(q.data<float>(), static_cast<const int8_t*>(k_cache.raw()),
                        static_cast<const __half*>(k_scale.raw()), static_cast<const int8_t*>(v_cache.raw()),
                        static_cast<const __half*>(v_scale.raw()), out.data<float>(), d.tokens, d.heads, d.kv_heads,
                        d.head_dim, d.capacity, start, scale, stream, window, softcap);
}

void attention_prefill_q4(const DeviceView& q, const DeviceView& k_cache, const DeviceView& k_step,
                          const DeviceView& v_cache, const DeviceView& v_step, const DeviceView& out,
                          StartPos start, float scale, cudaStream_t stream, int window, float softcap) {
  const AttentionDims d = check_quant_prefill("attention_prefill_q4", /*q4=*/true, q, k_cache, k_step, v_cache,
                                              v_step, out, start.host, window);
  flash_prefill_q4_cuda(q.data<float>(), static_cast<const uint8_t*>(k_cache.raw()),
                        static_cast<const __half2*>(k_step.raw()), static_cast<const uint8_t*>(v_cache.raw()),
                        static_cast<const __half2*>(v_step.raw()), out.data<float>(), d.tokens, d.heads, d.kv_heads,
                        d.head_dim, d.capacity, start, scale, stream, window, softcap);
}

void attention_decode(const DeviceView& q, const DeviceView& k_cache, const DeviceView& v_cache,
                      const DeviceView& out, int start_pos, float scale,
                      const DeviceView& workspace, cudaStream_t stream, int splits, int window, float softcap) {
  constexpr const char* op = "attention_decode";
  const AttentionDims d = check_attention(op, q, k_cache, v_cache, out, start_pos, window);
  EXQ_CHECK(d.tokens == 1, "cuda attention_decode: q must hold one token, got shape {}",
            shape_str(q.shape()));
  check_dtype(workspace, DType::F32, op, "workspace");
  check_dense(workspace, op, "workspace");
  const size_t need = attention_decode_workspace_floats(d.heads, d.head_dim);
  EXQ_CHECK(static_cast<size_t>(workspace.numel()) >= need,
            "cuda attention_decode: workspace has {} floats, needs {}", workspace.numel(), need);
  EXQ_CHECK(splits >= 0 && splits <= kDecodeMaxSplits,
            "cuda attention_decode: splits {} outside [0, {}]", splits, kDecodeMaxSplits);
  attention_decode_reset_cuda(workspace.data<float>(), d.heads, d.head_dim, stream);
  auto run = [&](auto* k, auto* v) {
    using C = std::remove_pointer_t<decltype(k)>;
    DecodeAttention<C> a;
    a.q = q.data<float>();
    a.k_cache = k;
    a.v_cache = v;
    a.out = out.data<float>();
    a.workspace = workspace.data<float>();
    a.heads = d.heads;
    a.kv_heads = d.kv_heads;
    a.head_dim = d.head_dim;
    a.capacity = d.capacity;
    a.position = start_pos;
    a.splits = splits;
    a.scale = scale;
    a.window = window;
    a.softcap = softcap;
    attention_decode_cuda(a, stream);
  };
  if (k_cache.dtype() == DType::F16)
    run(static_cast<__half*>(k_cache.raw()), static_cast<__half*>(v_cache.raw()));
  else
    run(k_cache.data<float>(), v_cache.data<float>());
}

}  // namespace exq::cuda
