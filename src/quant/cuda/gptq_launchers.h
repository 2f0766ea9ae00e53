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
// a[i, i] += *value, `times` times over (each sum rounded to f32, as a retry loop adds it).
void add_diagonal_device_cuda(float* a, int64_t n, const float* value, int times,
                              cudaStream_t stream);
// Act-order and damping from diag(h) ([n, n] row-major) without the host: perm = the indices
// by descending diagonal, ties in index order (std::stable_sort's order; NaN last),
// invperm[perm[i]] = i, reversed[i] = perm[n - 1 - i]; *damp = max(float(percdamp * sum / n),
// 1e-5f) with the sum of diag[perm[i]] in double in perm order, one thread: quant/hessian.cpp's
// arithmetic, bit for bit. Three launches: the diagonal, the ranks (O(n^2) integer comparisons
// over a 2-D grid that fills the GPU), the permutations and the sum (one block).
// scratch: 3 n floats. n <= 65536.
void act_order_cuda(const float* h, int64_t n, float percdamp, int32_t* perm, int32_t* invperm,
                    int32_t* reversed, float* scratch, float* damp, cudaStream_t stream);
// Zeroes u[r, c] for r > c (row-major) and sets *flag to 1 when any kept value is not finite.
void clear_lower_check_finite_cuda(float* u, int64_t n, int* flag, cudaStream_t stream);

// u[r, c] = src[n - 1 - c, n - 1 - r] for r <= c, else 0 ([n, n] row-major): J L^-1 J read
// row-major as the upper factor, from a column-major lower L^-1 (prepare_hessian v2).
void reverse_upper_cuda(const float* src, float* u, int64_t n, cudaStream_t stream);

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

// ---- gptq_batch_kernels.cu, gptq_batch_rows.cu: every option of a linear at once -------------
// (gptq_plan.h describes the blocks and steps.) Option o's buffers start at base + o * stride.
inline constexpr int kGptqMaxBatch = 32;  // options per batch (arrays passed by value)

// One step of a block for every option of the batch.
struct GptqBatchStep {
  int32_t row_begin[kGptqMaxBatch];  // first row of the option's group; -1: none this step
  int32_t rows[kGptqMaxBatch];
  int32_t bits[kGptqMaxBatch];
  int32_t group[kGptqMaxBatch];  // the group's row of qs / entry of scale_max (batch-local)
};

struct GptqBatchBuffers {
  float* wp;               // W' [in, out] f32, permuted transposed weight (updated in place)
  int64_t wp_stride;
  float* ring;             // errors [2 B2, out]: row r in slot r & ring_mask
  int64_t ring_stride;
  __half* wq;              // fp16 reconstruction [in, out]
  int64_t wq_stride;
  uint8_t* codes;          // [in, out], or null (not packing)
  int64_t codes_stride;
  uint8_t* qs;             // [batch groups, out] scale codes
  uint16_t* scale_max;     // [batch groups] fp16 bits
  float* base;             // [count, out] per-column base scales of the current group
  float* partials;         // [count, parts] block maxima of base
  float* col_err;          // [count, 97, out] per-column grid errors
  double* err;             // [count, 97] grid errors summed over columns
  int64_t in, out, parts, ring_mask;
  int32_t count;           // options in the batch (<= kGptqMaxBatch)
};

// W'_o = W^T[perm] for o < count (one read of w, count copies; wp option stride `stride`).
void permute_transpose_copies_cuda(const void* w, int dtype, const int32_t* perm, float* wp,
                                   int64_t stride, int count, int64_t in, int64_t out,
                                   cudaStream_t stream);
// The pending updates of one step: for every option with dst_rows > 0,
// W'[dst_begin, dst_begin + dst_rows) -= U[src_begin:src_end, those rows]^T E[src_begin:src_end]
// (ring rows; f32, ascending source order). max_rows: the largest dst_rows.
struct GptqPendingStep {
  int32_t dst_begin[kGptqMaxBatch];
  int32_t dst_rows[kGptqMaxBatch];
  int32_t src_begin[kGptqMaxBatch];
  int32_t src_end[kGptqMaxBatch];
};
void batch_pending_cuda(const GptqBatchBuffers& b, const GptqPendingStep& step, const float* u,
                        int max_rows, cudaStream_t stream);
// Column maxima, the 97-point grid errors and their sums for every option's group of the step
// (the arithmetic of group_colmax / group_grid_errors / grid_error_sums).
void batch_scale_search_cuda(const GptqBatchBuffers& b, const GptqBatchStep& step,
                             const GptqGrid& grid, cudaStream_t stream);
// The row pass of every option's group (group_rows_cuda's arithmetic); errors into the ring.
void batch_rows_cuda(const GptqBatchBuffers& b, const GptqBatchStep& step, const float* u,
                     const GptqGrid& grid, int max_rows, int active, cudaStream_t stream);
// Ring rows [row_begin, row_begin + rows) (one contiguous run of slots) of options
// first .. first + count - 1 stacked for the 3-pass TF32 flush: dst [3 rows, out] =
// [hi; hi; lo] per option, option stride dst_stride.
void batch_split_errors_cuda(const GptqBatchBuffers& b, int first, int count, int64_t row_begin,
                             int64_t rows, float* dst, int64_t dst_stride, cudaStream_t stream);

}  // namespace exq::quant::cuda
