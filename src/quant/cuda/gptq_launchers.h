// Raw `*_cuda` launchers of the GPU quantizer (internal to quant/cuda): device pointers, sizes and
// an explicit stream, no validation (hessian_cuda.cpp and gptq_cuda.cpp check first). Free of
// exq/fmt headers so the .cu files can include it (nvcc cannot compile fmt's format strings).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace exq::quant::cuda {

// ---- hessian_kernels.cu -----------------------------------------------------------------------
// x = hi + lo with hi = x rounded to TF32 (what the tensor cores read) and lo = x - hi (exact);
// n elements.
void split_tf32_cuda(const float* x, float* hi, float* lo, int64_t n, cudaStream_t stream);
// The same split of src [rows, cols] (leading dimension ld) stacked for a 3-pass TF32 GEMM:
// dst [3 * rows, cols] = [hi; hi; lo], or [hi; lo; hi] with lo_middle. rows <= 65535.
void split_tf32_stack_cuda(const float* src, int64_t ld, int64_t rows, int64_t cols, float* dst,
                           bool lo_middle, cudaStream_t stream);
// h[r, c] = h[c, r] = sum[r, c] * scale for r <= c: the symmetric matrix from one triangle.
void mirror_scale_cuda(const float* sum, float* h, int64_t n, float scale, cudaStream_t stream);
// dst[r, c] = src[perm[r], perm[c]] ([n, n] row-major).
void permute_symmetric_cuda(const float* src, const int32_t* perm, float* dst, int64_t n,
                            cudaStream_t stream);
// a[i, i] += value.
void add_diagonal_cuda(float* a, int64_t n, float value, cudaStream_t stream);
// Zeroes u[r, c] for r > c (row-major) and sets *flag to 1 when any kept value is not finite.
void clear_lower_check_finite_cuda(float* u, int64_t n, int* flag, cudaStream_t stream);

// ---- gptq_kernels.cu, gptq_rows.cu ------------------------------------------------------------
inline constexpr int kGptqGrid = 97;  // scale factors p = 0.70 .. 1.20 (quant/gptq.cpp)

// Passed by value: identical floats to the CPU's grid_p(i).
struct GptqGrid {
  float p[kGptqGrid];
};

// wp[i, c] = float(w[c, perm[i]]): W^T with rows in act-order. w: [out, in] of T in
// {float, __half, __nv_bfloat16} (dtype code: 0 f32, 1 f16, 2 bf16); wp: [in, out].
void permute_transpose_cuda(const void* w, int dtype, const int32_t* perm, float* wp, int64_t in,
                            int64_t out, cudaStream_t stream);
// weight[c, k] = wq[invperm[k], c]: the permuted [in, out] reconstruction back to HF [out, in].
void unpermute_transpose_cuda(const __half* wq, const int32_t* invperm, __half* weight,
                              int64_t in, int64_t out, cudaStream_t stream);

// Number of partial maxima group_colmax_cuda writes (one per block of 32 columns).
int64_t gptq_colmax_blocks(int64_t out);

// Per column c of rows [a, a + rows) of wp: base[c] = (max |w| + 1e-12) / half_maxq;
// partials[b] = max of base over block b's columns.
void group_colmax_cuda(const float* wp, float* base, float* partials, int64_t out, int64_t a,
                       int64_t rows, float half_maxq, cudaStream_t stream);
// smax = max(partials); per column the scale code qs[c] = clamp(round(sqrt(base/smax)*16), 1, 16)
// and col_err[i, c] = sum over the group's rows of |w - q(w, qs^2/256*smax*p_i)|^3.5.
void group_grid_errors_cuda(const float* wp, const float* base, const float* partials,
                            int64_t partial_count, uint8_t* qs, float* col_err,
                            const GptqGrid& grid, int64_t out, int64_t a, int64_t rows,
                            float zero, float maxq, cudaStream_t stream);
// err[i] = sum over columns of col_err[i, c] in double, in a fixed order (no atomics).
void grid_error_sums_cuda(const float* col_err, double* err, int64_t out, cudaStream_t stream);

// gptq_rows.cu: the group's rows [a, a + rows), each column sequentially: picks
// p = argmin err (first minimum), writes scale_max (fp16 bits of smax * p) and, per row j, the
// code of the row updated by the group's earlier errors, its fp16 reconstruction wq and
// e[j - block_begin] = (w - wq) / u[j, j]. u: [in, in] upper factor; e: [block rows, out].
// The group's rows of wp may be left updated (scratch once the group is done).
void group_rows_cuda(float* wp, const float* u, float* e, uint8_t* codes, __half* wq,
                     uint16_t* scale_max, const uint8_t* qs, const double* err,
                     const float* partials, int64_t partial_count, const GptqGrid& grid,
                     int64_t in, int64_t out, int64_t a, int64_t rows, int64_t block_begin,
                     int bits, cudaStream_t stream);

}  // namespace exq::quant::cuda
