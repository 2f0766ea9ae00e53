// Token embedding lookup on the device: rows of an f16/bf16/f32 table gathered into f32.
// Launcher: embedding_cuda in launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/device_tensor.h"

namespace exq::cuda {

bool embedding_supports(DType table);  // F16, BF16, F32

// ids: [tokens] I32 (an id outside the table gives a NaN row); table: [vocab, dim];
// out: [tokens, dim] F32.
void embedding(const DeviceView& ids, const DeviceView& table, const DeviceView& out,
               cudaStream_t stream);

}  // namespace exq::cuda
