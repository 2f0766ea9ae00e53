#include "backend/cuda/kv_cache.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {

bool kv_cache_supports(DType cache) { return cache == DType::F16 || cache == DType::F32; }

void kv_append(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache,
               const DeviceView& v_cache, StartPos start, cudaStream_t stream) {
  constexpr const char* op = "kv_append";
  const int start_pos = start.host;
  check_dtype(k, DType::F32, op, "k");
  check_rank(k, 3, op, "k");
  check_dense(k, op, "k");
  check_dtype(v, DType::F32, op, "v");
  check_shape(v, k.shape(), op, "v");
  check_dense(v, op, "v");
  check_kv_cache_pair(k_cache, v_cache, op);
  EXQ_CHECK(k_cache.dim(0) == k.dim(1) && k_cache.dim(2) == k.dim(2),
            "cuda kv_append: cache {} does not hold k {} ([kv_heads, capacity, head_dim] vs "
            "[tokens, kv_heads, head_dim])",
            shape_str(k_cache.shape()), shape_str(k.shape()));
  EXQ_CHECK(start_pos >= 0 && start_pos + k.dim(0) <= k_cache.dim(1),
            "cuda kv_append: positions [{}, {}) exceed the cache capacity {}", start_pos,
            start_pos + k.dim(0), k_cache.dim(1));
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

}  // namespace exq::cuda
