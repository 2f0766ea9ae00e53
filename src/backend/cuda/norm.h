// RMSNorm on the device: out = x / sqrt(mean(x^2) + eps) * weight, per row. The residual
// stream can reach ~25,000 (SmolLM2), so x stays f32 and the reduction accumulates in f32.
// Launcher: rmsnorm_cuda in launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/device_tensor.h"

namespace exq::cuda {

// Weight dtypes the kernel is instantiated for: F32, F16, BF16.
bool rmsnorm_supports(DType weight);

// x: [rows, dim] f32; weight: [dim] f32|f16|bf16; out: [rows, dim] f32 (may alias x).
void rmsnorm(const DeviceView& x, const DeviceView& weight, const DeviceView& out, float eps,
             cudaStream_t stream);

}  // namespace exq::cuda
