// Elementwise f32 ops of the decoder: SwiGLU, residual add, and conversion to f32 (logits or
// any f16/bf16 output). Launchers: swiglu_cuda, residual_add_cuda, to_f32_cuda (launchers.h).
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/device_tensor.h"

namespace exq::cuda {

// out = silu(gate) * up, or with `gelu` gelu_tanh(gate) * up (gemma's GeGLU); all F32 of one
// shape; out may alias gate or up.
void swiglu(const DeviceView& gate, const DeviceView& up, const DeviceView& out,
            cudaStream_t stream, bool gelu = false);
// residual += delta; both F32 of one shape.
void residual_add(const DeviceView& residual, const DeviceView& delta, cudaStream_t stream);
// dst (F32) = src (F32, F16 or BF16) of the same shape.
bool to_f32_supports(DType src);
void to_f32(const DeviceView& src, const DeviceView& dst, cudaStream_t stream);

}  // namespace exq::cuda
