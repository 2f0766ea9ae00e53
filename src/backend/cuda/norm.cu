#include "backend/cuda/launchers.h"

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace {

constexpr int kNormThreads = 256;

// One block per row. Two passes over the row (the row is small and L1/L2-resident).
template <typename W>
__global__ void rmsnorm_kernel(const float* x, const W* __restrict__ weight,
                               float* out, int dim, float eps) {
  __shared__ float scratch[32];
  const size_t row = blockIdx.x;
  const float* xr = x + row * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  float* orow = out + row * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * inv * to_float(weight[i]);
}

}  // namespace

template <typename W>
void rmsnorm_cuda(const float* x, const W* weight, float* out, int rows, int dim, float eps,
                  cudaStream_t stream) {
  if (rows == 0 || dim == 0) return;
  rmsnorm_kernel<W><<<rows, kNormThreads, 0, stream>>>(x, weight, out, dim, eps);
  CUDA_CHECK_LAUNCH();
}

template void rmsnorm_cuda<float>(const float*, const float*, float*, int, int, float, cudaStream_t);
template void rmsnorm_cuda<__half>(const float*, const __half*, float*, int, int, float, cudaStream_t);
template void rmsnorm_cuda<__nv_bfloat16>(const float*, const __nv_bfloat16*, float*, int, int,
                                          float, cudaStream_t);

}  // namespace exq::cuda
