// Launchers of the CUDA engine's own kernels (engine_kernels.cu): activation rounding for the
// GEMMs and the fused epilogues after them (row scale, bias, SwiGLU, rotary), the module output
// with its residual, NaN/Inf counts, and the relative-error sums of the measurement, reduced in
// double in a fixed order (a grid that depends only on the element count, no float atomics) so
// results are identical for every VRAM budget and run. Raw pointers and an explicit stream; no
// validation (cuda_engine.cpp checks shapes); free of fmt so nvcc can compile the .cu.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace exq::quant::cuda {

// The GEMMs take fp16 activations scaled per row by a power of two (backend/cuda/matmul.h's
// scheme, max |x| of a row brought into [2^13, 2^14)) and give raw f32 outputs; the kernels
// below apply the row scale (y = raw * row_scale[r], one rounding), then the bias, exactly as
// backend matmul + bias add would.

// x16[r] = fp16(x[r] / s_r), row_scale[r] = s_r; x: [rows, k] f32.
void scale_round_rows_cuda(const float* x, __half* x16, float* row_scale, int rows, int k,
                           cudaStream_t stream);

// out = (raw * row_scale[r] (+ bias[j])) * mult; [rows, width]; out may alias raw; row_scale and
// bias may be null; mult 1 leaves the product as it is.
void scale_bias_cuda(const float* raw, const float* row_scale, const float* bias, float* out,
                     int rows, int width, cudaStream_t stream, float mult = 1.0f);

// SwiGLU of raw gate/up GEMM outputs [rows, n] (shared row scale, optional biases):
// a = silu(g) * u as backend swiglu computes it (gelu: gelu_tanh(g) * u, gemma's GeGLU, as
// backend geglu), then act16/act_scale as scale_round_rows. act32 (may alias gate_raw, else
// null) also receives a in f32.
void swiglu_round_cuda(const float* gate_raw, const float* up_raw, const float* row_scale,
                       const float* gate_bias, const float* up_bias, float* act32, __half* act16,
                       float* act_scale, int rows, int n, cudaStream_t stream, bool gelu = false);

// Raw q or k or v GEMM output [T, heads * D] -> head-major fp16 [heads, T, D]: row scale (1 when
// null), bias, rotary (cos/sin [>= T, rot_half], when not null; pairs (i, i + rot_half) over the
// first 2 * rot_half dims, rot_half < D / 2 for a partial rotary) in f32, then times out_scale
// and rounded.
void heads_f16_cuda(const float* raw, const float* row_scale, const float* bias, const float* cos,
                    const float* sin, __half* out, int tokens, int heads, int head_dim, int rot_half,
                    float out_scale, cudaStream_t stream);

// out = ((y * y_scale[row]) + bias) + x elementwise, in float and in that order (the CPU
// block's linear, bias add and residual add); y_scale [n / width] and bias [width] may be null;
// out may alias y. Adds the count of non-finite outputs to *non_finite.
void residual_out_cuda(const float* y, const float* y_scale, const float* bias, const float* x,
                       float* out, int64_t n, int64_t width, unsigned long long* non_finite,
                       cudaStream_t stream);

// Blocks of error_partials_cuda for n elements (the partials buffer holds 2 doubles per block).
int error_blocks(int64_t n);

// How error_partials_cuda scores one calibration row (quant::ErrorMetric without its header:
// .cu files stay free of core/error.h).
enum class ErrorReduce { kRow = 0, kSkip0 = 1, kToken = 2 };

// One module output against its reference: yq as residual_out_cuda computes it, d = yq - target
// in double; error_blocks(n) blocks write partials[2b], partials[2b+1]:
//   kRow:   block b's sum of d^2 and of target^2;
//   kSkip0: the same without the first token (row of `width` elements);
//   kToken: block b's sum over its tokens of ||d_t|| / ||target_t|| and its count of tokens
//           with a non-zero target (tokens are split into contiguous runs, one per block).
// When out is not null it receives yq. y_scale, bias and x may be null. Deterministic.
void error_partials_cuda(const float* y, const float* y_scale, const float* bias, const float* x,
                         const float* target, float* out, int64_t n, int64_t width,
                         double* partials, cudaStream_t stream,
                         ErrorReduce reduce = ErrorReduce::kRow);

// For s in [0, slots): sums[s * stride + 0/1] = sum over b of partials[(s * blocks + b) * 2 + 0/1],
// in block order.
void error_finalize_cuda(const double* partials, int slots, int blocks, double* sums,
                         int64_t stride, cudaStream_t stream);

// Adds the count of non-finite values of x[0, n) to *counter.
void count_non_finite_cuda(const float* x, int64_t n, unsigned long long* counter,
                           cudaStream_t stream);

// dst = fp16(src) (round to nearest even).
void f32_to_f16_cuda(const float* src, __half* dst, int64_t n, cudaStream_t stream);

}  // namespace exq::quant::cuda
