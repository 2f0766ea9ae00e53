// KV cache append. Layout per layer: k_cache, v_cache [kv_heads, capacity, head_dim], head
// major so one head's keys are contiguous for attention. F16 halves memory and bandwidth
// (attention accumulates in f32); F32 is for exact comparisons. Launcher: kv_append_cuda.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/launchers.h"

namespace exq::cuda {

bool kv_cache_supports(DType cache);  // F16, F32

// k, v: [tokens, kv_heads, head_dim] F32, written at positions [start, start + tokens); start
// may live in device memory (StartPos, launchers.h).
void kv_append(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache,
               const DeviceView& v_cache, StartPos start, cudaStream_t stream);

// The q8 cache (model/kv_quant.h): caches I8 [kv_heads, capacity, head_dim], scales F16
// [kv_heads, capacity, head_dim / 32]; k, v as kv_append.
void kv_append_q8(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache, const DeviceView& k_scale,
                  const DeviceView& v_cache, const DeviceView& v_scale, StartPos start, cudaStream_t stream);

// The q4 cache (model/kv_quant.h, kv_q4.cuh): caches U8 [kv_heads, capacity, head_dim / 2], steps
// F16 [kv_heads, capacity, head_dim / 16] ((step, minimum) per 32 values); k, v as kv_append.
void kv_append_q4(const DeviceView& k, const DeviceView& v, const DeviceView& k_cache, const DeviceView& k_step,
                  const DeviceView& v_cache, const DeviceView& v_step, StartPos start, cudaStream_t stream);

}  // namespace exq::cuda
