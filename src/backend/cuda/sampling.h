// Greedy sampling on the device: argmax over the vocabulary, so a decode loop can feed the
// token back to the embedding without a host round trip. Launcher: argmax_cuda.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/device_tensor.h"

namespace exq::cuda {

// logits: [vocab] or [rows, vocab] F32; out: [rows] I32 (rows = 1 for 1-D logits). The first
// maximum wins on ties; NaN logits are ignored.
void argmax(const DeviceView& logits, const DeviceView& out, cudaStream_t stream);

}  // namespace exq::cuda
