// Kernels of the CUDA engine's mixture-of-experts blocks (moe_run.h): an expert's tokens
// gathered into contiguous rows, its output added back at their tokens times the routing
// weight, and an identity matrix (the Hessian of an expert no token reached). Raw pointers and
// an explicit stream; free of fmt so nvcc compiles the .cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace exq::quant::cuda {

// dst[r] = src[token[r]] for r < rows; rows of `width` floats.
void gather_rows_cuda(const float* src, const int32_t* token, float* dst, int rows, int width,
                      cudaStream_t stream);

// out[token[r]] += weight[r] * (y[r] * y_scale[r]) elementwise, in that order (the CPU's
// o += s * src after the GEMM's row scale); tokens must be distinct within one call.
void scatter_add_rows_cuda(const float* y, const float* y_scale, const int32_t* token, const float* weight,
                           float* out, int rows, int width, cudaStream_t stream);

// m = I, [n, n] f32.
void identity_cuda(float* m, int64_t n, cudaStream_t stream);

}  // namespace exq::quant::cuda
