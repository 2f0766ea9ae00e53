// y = x . w^T with f16/bf16 weights through cuBLAS (precision choice: see matmul.cu). The
// activations are scaled and rounded into a caller-provided workspace so the call allocates
// nothing (and can be captured in a CUDA graph). Launcher: matmul_cuda in launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/cublas.h"
#include "backend/cuda/device_tensor.h"

namespace exq::cuda {

bool matmul_supports(DType weight);  // F16, BF16

// Bytes of workspace matmul() needs for `rows` rows of `in_features` (any U8 view that large).
size_t matmul_workspace_bytes(int64_t rows, int64_t in_features);

// x: [rows, in] F32; w: [out, in] F16|BF16 (HF Linear layout); y: [rows, out] F32.
// x_perm (device, `in` entries, or null): w's input channels are permuted, column c multiplies
// x[:, x_perm[c]]. up ([rows, in] F32, or null): the rows multiplied are silu(x) * up, the
// MLP's SwiGLU (swiglu()'s arithmetic; gemma's GeGLU with gelu) formed while x is rounded.
// Either needs matmul_copies_fit(in).
void matmul(CublasHandle& cublas, const DeviceView& x, const DeviceView& w, const DeviceView& y,
            const DeviceView& workspace, cudaStream_t stream, const int32_t* x_perm = nullptr,
            const DeviceView* up = nullptr, bool gelu = false);

// Whether matmul takes x_perm or up for `in_features` (a row is formed in shared memory).
bool matmul_copies_fit(int64_t in_features);

}  // namespace exq::cuda
