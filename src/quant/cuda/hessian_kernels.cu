// Element and tile kernels around the Hessian: the TF32 hi/lo split that lets tensor cores
// accumulate X^T X to about f32 precision, mirroring one triangle, the act-order permutation,
// damping and the clean-up of the Cholesky factor.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "quant/cuda/gptq_device.cuh"
#include "quant/cuda/gptq_launchers.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;

constexpr int kThreads = 256;
constexpr int kTile = 32;
constexpr int kTileRows = 8;  // a 32x8 block walks a 32x32 tile in 4 steps
// Act-order: each rank block compares kThreads entries with one kRankChunk slice of the keys,
// so n = 14336 runs 56 x 14 blocks (every SM busy) instead of 56 blocks of 14336 comparisons a
// thread; the sorted diagonal is summed from shared memory in kSumChunk pieces.
constexpr int kRankChunk = 1024;
constexpr int kFinishThreads = 1024;
constexpr int kSumChunk = 8192;  // floats, 32 KiB of shared memory

using detail::round_tf32;

__global__ void split_tf32_kernel(const float* __restrict__ x, float* __restrict__ hi,
                                  float* __restrict__ lo, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float v = x[i];
    const float h = round_tf32(v);
    hi[i] = h;
    lo[i] = isfinite(v) ? __fsub_rn(v, h) : 0.0f;
  }
}

// dst [3 * rows, cols] = [hi; hi; lo] or, with lo_middle, [hi; lo; hi] of src [rows, cols] (ld).
__global__ void split_tf32_stack_kernel(const float* __restrict__ src, int64_t ld, int64_t rows,
                                        int64_t cols, float* __restrict__ dst, bool lo_middle) {
  const int64_t r = blockIdx.y;  // gridDim.y >= rows is checked by the launcher
  const int64_t plane = rows * cols;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = src[r * ld + c];
    const float h = round_tf32(v);
    const float l = isfinite(v) ? __fsub_rn(v, h) : 0.0f;
    float* d = dst + r * cols + c;
    d[0] = h;
    d[plane] = lo_middle ? l : h;
    d[2 * plane] = lo_middle ? h : l;
  }
}

// Tile (blockIdx.y, blockIdx.x) of h; the source tile is read in whichever orientation lies in
// the upper triangle (row <= column), through shared memory so both accesses are coalesced.
__global__ void mirror_scale_kernel(const float* __restrict__ sum, float* __restrict__ h,
                                    int64_t n, float scale) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t tr = blockIdx.y, tc = blockIdx.x;
  const bool below = tr > tc;
  const int64_t sr0 = (below ? tc : tr) * kTile, sc0 = (below ? tr : tc) * kTile;
  const int x = threadIdx.x;
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t r = sr0 + y, c = sc0 + x;
    if (r < n && c < n) tile[y][x] = sum[r * n + c];
  }
  __syncthreads();
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t r = tr * kTile + y, c = tc * kTile + x;
    if (r >= n || c >= n) continue;
    const bool transposed = below || (tr == tc && y > x);
    h[r * n + c] = (transposed ? tile[x][y] : tile[y][x]) * scale;
  }
}

__global__ void permute_symmetric_kernel(const float* __restrict__ src,
                                         const int32_t* __restrict__ perm, float* __restrict__ dst,
                                         int64_t n) {
  const int64_t r = blockIdx.x;  // gridDim.x allows 2^31 - 1 rows, gridDim.y only 65535
  const int64_t pr = perm[r];
  for (int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; c < n;
       c += static_cast<int64_t>(gridDim.y) * blockDim.x)
    dst[r * n + c] = src[pr * n + perm[c]];
}

__global__ void add_diagonal_kernel(float* __restrict__ a, int64_t n, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) a[i * (n + 1)] += value;
}

__global__ void add_diagonal_device_kernel(float* __restrict__ a, int64_t n,
                                           const float* __restrict__ value, int times) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float d = *value;
  float v = a[i * (n + 1)];
  for (int k = 0; k < times; ++k) v = __fadd_rn(v, d);
  a[i * (n + 1)] = v;
}

// A total order on floats that agrees with `>` on numbers (-0 == +0) and puts NaN below
// everything, so ranks always form a permutation.
__device__ __forceinline__ uint32_t order_key(float v) {
  if (isnan(v)) return 0u;
  uint32_t u = __float_as_uint(v);
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// diag[i] = h[i, i]; rank[i] = 0 (the rank kernel adds to it).
__global__ void take_diagonal_kernel(const float* __restrict__ h, int64_t n,
                                     float* __restrict__ diag, int32_t* __restrict__ rank) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    diag[i] = h[i * (n + 1)];
    rank[i] = 0;
  }
}

// Rank of i in a stable descending sort: entries greater, plus equal ones before i. Block
// (x, y) counts, for its kThreads entries i, the keys j of slice y ([y kRankChunk, ...)) that
// come before i, and adds the count to rank[i]: integer sums, so the order of the adds does not
// matter. O(n^2) comparisons in all (2.1e8 at n = 14336), spread over ceil(n / 256) x
// ceil(n / 1024) blocks.
__global__ void act_order_rank_kernel(const float* __restrict__ diag, int n,
                                      int32_t* __restrict__ rank) {
  __shared__ uint32_t tile[kRankChunk];
  const int j0 = static_cast<int>(blockIdx.y) * kRankChunk;
  const int m = min(kRankChunk, n - j0);
  for (int t = threadIdx.x; t < m; t += blockDim.x) tile[t] = order_key(diag[j0 + t]);
  __syncthreads();
  const int i = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t ki = order_key(diag[i]);
  int count = 0;
  if (j0 + m <= i) {  // every j of the slice is before i: ties count
#pragma unroll 8
    for (int t = 0; t < m; ++t) count += tile[t] >= ki ? 1 : 0;
  } else if (j0 > i) {  // every j is after i: ties do not
#pragma unroll 8
    for (int t = 0; t < m; ++t) count += tile[t] > ki ? 1 : 0;
  } else {
    for (int t = 0; t < m; ++t) {
      const uint32_t kj = tile[t];
      count += (kj > ki || (kj == ki && j0 + t < i)) ? 1 : 0;
    }
  }
  if (count != 0) atomicAdd(&rank[i], count);
}

// One block: the permutations from the ranks, then quant::prepare_hessian's damping from the
// sorted diagonal: the double sum in perm order by one thread (the order is the result), read
// from shared memory rather than from global memory one element at a time.
__global__ void act_order_finish_kernel(const float* __restrict__ diag,
                                        const int32_t* __restrict__ rank, int n, float percdamp,
                                        int32_t* __restrict__ perm, int32_t* __restrict__ invperm,
                                        int32_t* __restrict__ reversed, float* sorted,
                                        float* __restrict__ damp) {
  __shared__ float chunk[kSumChunk];
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = rank[i];
    perm[r] = i;
    invperm[i] = r;
    reversed[n - 1 - r] = i;
    sorted[r] = diag[i];
  }
  double sum = 0.0;
  for (int c0 = 0; c0 < n; c0 += kSumChunk) {
    const int m = min(kSumChunk, n - c0);
    __syncthreads();  // the scatter above is visible; the previous chunk has been summed
    for (int t = threadIdx.x; t < m; t += blockDim.x) chunk[t] = sorted[c0 + t];
    __syncthreads();
    if (threadIdx.x == 0)
      for (int t = 0; t < m; ++t) sum = __dadd_rn(sum, static_cast<double>(chunk[t]));
  }
  if (threadIdx.x != 0) return;
  const float d = __double2float_rn(
      __ddiv_rn(__dmul_rn(static_cast<double>(percdamp), sum), static_cast<double>(n)));
  *damp = d < 1e-5f ? 1e-5f : d;  // std::max(d, 1e-5f), NaN included
}

__global__ void clear_lower_kernel(float* __restrict__ u, int64_t n, int* __restrict__ flag) {
  const int64_t total = n * n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t r = i / n, c = i - r * n;
    if (r > c)
      u[i] = 0.0f;
    else if (!isfinite(u[i]))
      bad = true;
  }
  if (bad) *flag = 1;  // every writer stores the same value
}

// u[r, c] = src[n - 1 - c, n - 1 - r] for r <= c, else 0 (row-major): tile (blockIdx.y,
// blockIdx.x) of u from the mirrored tile of src, through shared memory so both sides coalesce.
__global__ void reverse_upper_kernel(const float* __restrict__ src, float* __restrict__ u,
                                     int64_t n) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int x = threadIdx.x;
  const bool below = r0 > c0 + kTile - 1;  // every element of the tile has r > c
  if (!below)
    for (int y = threadIdx.y; y < kTile; y += kTileRows) {
      const int64_t c = c0 + y, r = r0 + x;
      if (r < n && c < n) tile[y][x] = src[(n - 1 - c) * n + (n - 1 - r)];
    }
  __syncthreads();
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t r = r0 + y, c = c0 + x;
    if (r < n && c < n) u[r * n + c] = !below && r <= c ? tile[x][y] : 0.0f;
  }
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

void split_tf32_cuda(const float* x, float* hi, float* lo, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  split_tf32_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, hi, lo, n);
  CUDA_CHECK_LAUNCH();
}

void split_tf32_stack_cuda(const float* src, int64_t ld, int64_t rows, int64_t cols, float* dst,
                           bool lo_middle, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const int64_t col_blocks = (cols + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(col_blocks < 65535 ? col_blocks : 65535),
                  static_cast<unsigned>(rows));
  split_tf32_stack_kernel<<<grid, kThreads, 0, stream>>>(src, ld, rows, cols, dst, lo_middle);
  CUDA_CHECK_LAUNCH();
}

void mirror_scale_cuda(const float* sum, float* h, int64_t n, float scale, cudaStream_t stream) {
  if (n == 0) return;
  const dim3 grid(ceil_div(n, kTile), ceil_div(n, kTile));
  mirror_scale_kernel<<<grid, dim3(kTile, kTileRows), 0, stream>>>(sum, h, n, scale);
  CUDA_CHECK_LAUNCH();
}

void permute_symmetric_cuda(const float* src, const int32_t* perm, float* dst, int64_t n,
                            cudaStream_t stream) {
  if (n == 0) return;
  const int64_t col_blocks = (n + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(col_blocks < 65535 ? col_blocks : 65535));
  permute_symmetric_kernel<<<grid, kThreads, 0, stream>>>(src, perm, dst, n);
  CUDA_CHECK_LAUNCH();
}

void add_diagonal_cuda(float* a, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  add_diagonal_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, n, value);
  CUDA_CHECK_LAUNCH();
}

void add_diagonal_device_cuda(float* a, int64_t n, const float* value, int times,
                              cudaStream_t stream) {
  if (n == 0 || times <= 0) return;
  add_diagonal_device_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, n, value, times);
  CUDA_CHECK_LAUNCH();
}

void act_order_cuda(const float* h, int64_t n, float percdamp, int32_t* perm, int32_t* invperm,
                    int32_t* reversed, float* scratch, float* damp, cudaStream_t stream) {
  if (n == 0) return;
  float* diag = scratch;
  float* sorted = scratch + n;
  auto* rank = reinterpret_cast<int32_t*>(scratch + 2 * n);
  take_diagonal_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(h, n, diag, rank);
  CUDA_CHECK_LAUNCH();
  const dim3 grid(static_cast<unsigned>(ceil_div(n, kThreads)),
                  static_cast<unsigned>(ceil_div(n, kRankChunk)));
  act_order_rank_kernel<<<grid, kThreads, 0, stream>>>(diag, static_cast<int>(n), rank);
  CUDA_CHECK_LAUNCH();
  act_order_finish_kernel<<<1, kFinishThreads, 0, stream>>>(
      diag, rank, static_cast<int>(n), percdamp, perm, invperm, reversed, sorted, damp);
  CUDA_CHECK_LAUNCH();
}

void clear_lower_check_finite_cuda(float* u, int64_t n, int* flag, cudaStream_t stream) {
  if (n == 0) return;
  clear_lower_kernel<<<grid_for(n * n), kThreads, 0, stream>>>(u, n, flag);
  CUDA_CHECK_LAUNCH();
}

void reverse_upper_cuda(const float* src, float* u, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const dim3 grid(ceil_div(n, kTile), ceil_div(n, kTile));
  reverse_upper_kernel<<<grid, dim3(kTile, kTileRows), 0, stream>>>(src, u, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::quant::cuda
