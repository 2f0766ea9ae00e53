#include "backend/cuda/kv_cache.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {

bool kv_cache_supports(DType cache) { return cache == DType::F16 || cache == DType::F32; }

namespace {

// k, v: F32 [tokens, kv_heads, head_dim] that fit a cache of `cache` [kv_heads, capacity, head_dim]
// values from position start.
void check_new_rows(const DeviceView& k, const DeviceView& v, const Shape& cache, StartPos start, const char* op) {
  check_dtype(k, DType::F32, op, "k");
  check_rank(k, 3, op, "k");
  check_dense(k, op, "k");
  check_dtype(v, DType::F32, op, "v");
  check_shape(v, k.shape(), op, "v");
  check_dense(v, op, "v");
  EXQ_CHECK(cache.size() == 3 && cache[0] == k.dim(1) && cache[2] == k.dim(2),
            "cuda {}: cache {} does not hold k {} ([kv_heads, capacity, head_dim] vs "
            "[tokens, kv_heads, head_dim])",
            op, shape_str(cache), shape_str(k.shape()));
  EXQ_CHECK(start.host >= 0 && start.host + k.dim(0) <= cache[1],
            "cuda {}: positions [{}, {}) exceed the cache capacity {}", op, start.host, start.host + k.dim(0),
            cache[1]);
}


}  // namespace

void kv_append(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache,
               const DeviceView& v_cache, StartPos start, cudaStream_t stream) {
  constexpr const char* op = "kv_append";
  check_kv_cache_pair(k_cache, v_cache, op);
  check_new_rows(k, v, k_cache.shape(), start, op);
  const int tokens = checked_int(k.dim(0), op, "tokens");
  const int kv_heads = checked_int(k.dim(1), op, "kv_heads");
  const int head_dim = checked_int(k.dim(2), op, "head_dim");
  const int capacity = checked_int(k_cache.dim(1), op, "capacity");
  if (k_cache.dtype() == DType::F16)
    kv_append_cuda(k.data<float>(), v.data<float>(), static_cast<__half*>(k_cache.raw()),
                   static_cast<__half*>(v_cache.raw()), tokens, kv_heads, head_dim, capacity,
                   start, stream);
  else
    kv_append_cuda(k.data<float>(), v.data<float>(), k_cache.data<float>(), v_cache.data<float>(),
                   tokens, kv_heads, head_dim, capacity, start, stream);
}


void kv_append_q8(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache, const DeviceView& k_scale,
                  const DeviceView& v_cache, const DeviceView& v_scale, StartPos start, cudaStream_t stream) {
  constexpr const char* op = "kv_append_q8";
  check_new_rows(k, v, check_quant_cache_pair(k_cache, k_scale, v_cache, v_scale, /*q4=*/false, op), start, op);
  kv_append_q8_cuda(k.data<float>(), v.data<float>(), static_cast<int8_t*>(k_cache.raw()),
                    static_cast<__half*>(k_scale.raw()), static_cast<int8_t*>(v_cache.raw()),
                    static_cast<__half*>(v_scale.raw()), checked_int(k.dim(0), op, "tokens"),
                    checked_int(k.dim(1), op, "kv_heads"), checked_int(k.dim(2), op, "head_dim"),
                    checked_int(k_cache.dim(1), op, "capacity"), start, stream);
}

void kv_append_q4(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache, const DeviceView& k_step,
                  const DeviceView& v_cache, const DeviceView& v_step, StartPos start, cudaStream_t stream) {
  constexpr const char* op = "kv_append_q4";
  const Shape values = check_quant_cache_pair(k_cache, k_step, v_cache, v_step, /*q4=*/true, op);
  check_new_rows(k, v, values, start, op);
  const int64_t head_dim = values[2];
  kv_append_q4_cuda(k.data<float>(), v.data<float>(), static_cast<uint8_t*>(k_cache.raw()),
                    static_cast<__half2*>(k_step.raw()), static_cast<uint8_t*>(v_cache.raw()),
                    static_cast<__half2*>(v_step.raw()), checked_int(k.dim(0), op, "tokens"),
                    checked_int(k.dim(1), op, "kv_heads"), checked_int(head_dim, op, "head_dim"),
                    checked_int(k_cache.dim(1), op, "capacity"), start, stream);
}

}  // namespace exq::cuda
