// Raw launchers of the mixture-of-experts kernels (moe_kernels.cu): a dense GEMV whose weight
// is picked on the device (the router, and dense experts chosen by routed ids), the routing
// (softmax, top k, renormalization) and the weighted sums. Free of exq/fmt headers (nvcc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace exq::runtime::cuda {

// For slot s < slots and row r < rows: y[s][r][out] = x[s][r][in] . W^T, W = table[ids[s]]
// (table[s] when ids is null), W [out, in] of type T (__half, __nv_bfloat16 or float), f32 sums
// of f32 products. x of slot s at x + s * x_slot (floats; 0: every slot reads one x), y at y + s *
// y_slot. up (or null): the input is silu(x) * up (up at the same offsets as x).
template <typename T>
void moe_gemv_cuda(const void* const* table, const int32_t* ids, int slots, int rows, const float* x,
                   int64_t x_slot, const float* up, float* y, int64_t y_slot, int out, int in,
                   cudaStream_t stream);

// Per row of logits [rows, experts]: the float32 softmax, the k most probable experts (ties: the
// lower id) into ids [rows, k] and their probabilities into weights, divided by their sum when
// renormalize (model::route_token's rule). shift_table [experts][3] (or null): the chosen
// experts' entries copied to shifts [k][3] (row 0; the decode's EXL2 experts). experts <=
// kMoeMaxExperts.
inline constexpr int kMoeMaxExperts = 1024;
void moe_route_cuda(const float* logits, int rows, int experts, int k, bool renormalize, int32_t* ids,
                    float* weights, const int64_t* shift_table, int64_t* shifts, cudaStream_t stream);

// out[hidden] = sum over the k slots, in ascending expert id, of weights[s] * y[s][hidden]
// (moe_mlp's order). k <= kMoeMaxTopK.
inline constexpr int kMoeMaxTopK = 32;
void moe_combine_cuda(const float* y, const int32_t* ids, const float* weights, int k, int hidden,
                      float* out, cudaStream_t stream);

// out[r] = x[rows[r]] for r < n (rows of `hidden` floats).
void moe_gather_cuda(const float* x, const int32_t* rows, int n, int hidden, float* out,
                     cudaStream_t stream);
// out[rows[r]] += weights[r] * y[r] for r < n (rows distinct).
void moe_scatter_add_cuda(const float* y, const int32_t* rows, const float* weights, int n, int hidden,
                          float* out, cudaStream_t stream);

// The rows of a several-row MoE pass grouped by expert, for the expert GEMM (expert_gemm.h): for
// r < rows, v = x[token[r]] (token null: x[r]) or, with up, silu(x[r]) * up[r]; row_scale[r] = the
// power of two matmul would divide v by (f16_row_scale); layer l < layers (1 or 2) gets
// a_l[r][c] = T(v[perm[c]] / row_scale[r]) with perm = perms[expert[r] * perm_stride + l] (perms
// null: v[c]). T: __half or __nv_bfloat16. Throws std::runtime_error when `in` floats exceed the
// block's shared memory.
inline constexpr int64_t kMoeStageMaxIn = 16384;  // a row of floats in shared memory (64 KB)
template <typename T>
void moe_stage_rows_cuda(const float* x, const float* up, const int32_t* token, const int32_t* expert, int rows,
                         int in, const int32_t* const* perms, int perm_stride, int layers, T* a0, T* a1,
                         float* row_scale, cudaStream_t stream);
// out[t] = sum over j < k, in that order, of weights[t * k + j] * y[pos[t * k + j]] for t < n.
void moe_combine_rows_cuda(const float* y, const int32_t* pos, const float* weights, int n, int k, int hidden,
                           float* out, cudaStream_t stream);

}  // namespace exq::runtime::cuda
