// Dense matmul y[T, out] = x[T, in] @ W[out, in]^T (a PyTorch Linear without bias).
// x and y are float32; W stays in its file dtype (f32, f16 or bf16) and is converted to
// float32 tile by tile as it is used, so a 16-bit model keeps half the memory traffic.
// Arithmetic is float32 throughout. Parallel over output rows with exq::parallel_for.
#pragma once

#include "core/tensor.h"

namespace exq::cpu {

enum class MatmulImpl {
  Auto,         // the measured-fastest choice for the shapes (see matmul.cpp)
  Kernel,       // exq's own AVX-512 or AVX2/FMA micro-kernel, picked at runtime
  Blas,         // OpenBLAS sgemm/sgemv per output tile, OpenBLAS single-threaded
  BlasThreaded  // one OpenBLAS call using OpenBLAS's own threads (f32 weights only)
};

// x: f32 [T, in] with unit inner stride (rows may be strided); w: contiguous [out, in] in
// f32/f16/bf16; y: f32 [T, out] with unit inner stride. y must not alias x or w.
void matmul(const TensorView& x, const TensorView& w, const TensorView& y,
            MatmulImpl impl = MatmulImpl::Auto);

// y[t, :] += b for every row; b is [out] in f32/f16/bf16.
void add_bias(const TensorView& y, const TensorView& b);

// The instruction set exq's kernel uses on this CPU: "avx512", "avx2" or "portable".
const char* matmul_isa();

}  // namespace exq::cpu
