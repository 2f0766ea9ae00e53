#include "backend/cuda/validate.h"

#include <fmt/format.h>

#include <climits>
#include <string>

#include "core/error.h"

namespace exq::cuda {

void check_dtype(const DeviceView& v, DType want, const char* op, const char* arg) {
  EXQ_CHECK(v.dtype() == want, "cuda {}: {} must be {}, got {}", op, arg, dtype_name(want),
            dtype_name(v.dtype()));
}

void check_dtype_in(const DeviceView& v, std::initializer_list<DType> allowed, const char* op,
                    const char* arg) {
  std::string names;
  for (DType d : allowed) {
    if (d == v.dtype()) return;
    names += names.empty() ? "" : ", ";
    names += dtype_name(d);
  }
  throw Error(fmt::format("cuda {}: {} dtype {} is not supported (supported: {})", op, arg,
                          dtype_name(v.dtype()), names));
}

void check_shape(const DeviceView& v, const Shape& want, const char* op, const char* arg) {
  EXQ_CHECK(v.shape() == want, "cuda {}: {} must have shape {}, got {}", op, arg,
            shape_str(want), shape_str(v.shape()));
}

void check_rank(const DeviceView& v, int rank, const char* op, const char* arg) {
  EXQ_CHECK(v.rank() == rank, "cuda {}: {} must have rank {}, got shape {}", op, arg, rank,
            shape_str(v.shape()));
}

void check_dense(const DeviceView& v, const char* op, const char* arg) {
  EXQ_CHECK(v.is_contiguous(), "cuda {}: {} must be contiguous", op, arg);
  EXQ_CHECK(v.numel() == 0 || !v.empty(), "cuda {}: {} has no device memory", op, arg);
}

int checked_int(int64_t value, const char* op, const char* what) {
  EXQ_CHECK(value >= 0 && value <= INT_MAX, "cuda {}: {} = {} is out of range", op, what, value);
  return static_cast<int>(value);
}

void check_kv_cache_pair(const DeviceView& k_cache, const DeviceView& v_cache, const char* op) {
  check_dtype_in(k_cache, {DType::F16, DType::F32}, op, "k_cache");
  check_rank(k_cache, 3, op, "k_cache");
  check_dense(k_cache, op, "k_cache");
  check_dtype(v_cache, k_cache.dtype(), op, "v_cache");
  check_shape(v_cache, k_cache.shape(), op, "v_cache");
  check_dense(v_cache, op, "v_cache");
}

void check_q8_cache(const DeviceView& cache, const DeviceView& scale, const char* op, const char* what) {
  EXQ_CHECK(cache.dtype() == DType::I8 && cache.rank() == 3 && cache.is_contiguous(),
            "cuda {}: the {} cache must be contiguous I8 [kv_heads, capacity, head_dim], got {} {}", op, what,
            dtype_name(cache.dtype()), shape_str(cache.shape()));
  EXQ_CHECK(cache.dim(2) % 32 == 0, "cuda {}: head_dim {} is not a multiple of 32", op, cache.dim(2));
  EXQ_CHECK(scale.dtype() == DType::F16 && scale.is_contiguous() &&
                scale.shape() == Shape({cache.dim(0), cache.dim(1), cache.dim(2) / 32}),
            "cuda {}: the {} scales must be contiguous F16 [{}, {}, {}], got {} {}", op, what, cache.dim(0),
            cache.dim(1), cache.dim(2) / 32, dtype_name(scale.dtype()), shape_str(scale.shape()));
}

void check_q4_cache(const DeviceView& cache, const DeviceView& step, const char* op, const char* what) {
  EXQ_CHECK(cache.dtype() == DType::U8 && cache.rank() == 3 && cache.is_contiguous(),
            "cuda {}: the {} cache must be contiguous U8 [kv_heads, capacity, head_dim / 2], got {} {}", op, what,
            dtype_name(cache.dtype()), shape_str(cache.shape()));
  EXQ_CHECK(cache.dim(2) % 16 == 0, "cuda {}: head_dim {} is not a multiple of 32", op, cache.dim(2) * 2);
  EXQ_CHECK(step.dtype() == DType::F16 && step.is_contiguous() &&
                step.shape() == Shape({cache.dim(0), cache.dim(1), cache.dim(2) / 8}),
            "cuda {}: the {} steps must be contiguous F16 [{}, {}, {}], got {} {}", op, what, cache.dim(0),
            cache.dim(1), cache.dim(2) / 8, dtype_name(step.dtype()), shape_str(step.shape()));
}

Shape check_quant_cache_pair(const DeviceView& k_cache, const DeviceView& k_scale, const DeviceView& v_cache,
                             const DeviceView& v_scale, bool q4, const char* op) {
  const auto check = q4 ? check_q4_cache : check_q8_cache;
  check(k_cache, k_scale, op, "key");
  check(v_cache, v_scale, op, "value");
  EXQ_CHECK(k_cache.shape() == v_cache.shape(), "cuda {}: caches {} and {} differ", op, shape_str(k_cache.shape()),
            shape_str(v_cache.shape()));
  return {k_cache.dim(0), k_cache.dim(1), k_cache.dim(2) * (q4 ? 2 : 1)};  // q4: two codes a byte
}

}  // namespace exq::cuda
