// Shape / dtype checks shared by the op wrappers. Each throws exq::Error naming the op and the
// argument, with expected vs actual, before anything is launched.
#pragma once

#include <initializer_list>

#include "backend/cuda/device_tensor.h"

namespace exq::cuda {

void check_dtype(const DeviceView& v, DType want, const char* op, const char* arg);
void check_dtype_in(const DeviceView& v, std::initializer_list<DType> allowed, const char* op,
                    const char* arg);
void check_shape(const DeviceView& v, const Shape& want, const char* op, const char* arg);
void check_rank(const DeviceView& v, int rank, const char* op, const char* arg);
// Contiguous and non-null (unless empty shape).
void check_dense(const DeviceView& v, const char* op, const char* arg);
// A K/V cache pair: dense [kv_heads, capacity, head_dim] tensors of one dtype (f16 or f32).
// The q8 cache (model/kv_quant.h): `cache` contiguous I8 [kv_heads, capacity, head_dim] (head_dim
// a multiple of 32) and `scale` contiguous F16 [kv_heads, capacity, head_dim / 32]; `what` names
// them in the message ("key", "value").
void check_q8_cache(const DeviceView& cache, const DeviceView& scale, const char* op, const char* what);
// The q4 cache (model/kv_quant.h): `cache` contiguous U8 [kv_heads, capacity, head_dim / 2] (head_dim
// a multiple of 32), `step` contiguous F16 [kv_heads, capacity, head_dim / 16] ((step, minimum) pairs).
void check_q4_cache(const DeviceView& cache, const DeviceView& step, const char* op, const char* what);
// A key / value pair of either quantized cache (check_q4_cache when q4, else check_q8_cache), of
// one shape; returns the shape of the values they hold, [kv_heads, capacity, head_dim].
Shape check_quant_cache_pair(const DeviceView& k_cache, const DeviceView& k_scale, const DeviceView& v_cache,
                             const DeviceView& v_scale, bool q4, const char* op);
void check_kv_cache_pair(const DeviceView& k_cache, const DeviceView& v_cache, const char* op);
// Dimensions are passed to kernels as int.
int checked_int(int64_t value, const char* op, const char* what);

}  // namespace exq::cuda
