#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kElementThreads = 256;
// Grid-stride loops cap the grid; enough blocks to fill any current GPU several times.
constexpr int64_t kMaxElementBlocks = 4096;

unsigned element_blocks(int64_t n) {
  const int64_t blocks = (n + kElementThreads - 1) / kElementThreads;
  return static_cast<unsigned>(blocks < kMaxElementBlocks ? blocks : kMaxElementBlocks);
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = swiglu_value(gate[i], up[i]);
  }
}

__global__ void geglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = geglu_value(gate[i], up[i]);
  }
}

__global__ void residual_add_kernel(float* residual, const float* delta, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    residual[i] += delta[i];
}

template <typename T>
__global__ void to_f32_kernel(const T* __restrict__ src, float* __restrict__ dst, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = to_float(src[i]);
}

}  // namespace

void swiglu_cuda(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_kernel<<<element_blocks(n), kElementThreads, 0, stream>>>(gate, up, out, n);
  CUDA_CHECK_LAUNCH();
}

void geglu_cuda(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  geglu_kernel<<<element_blocks(n), kElementThreads, 0, stream>>>(gate, up, out, n);
  CUDA_CHECK_LAUNCH();
}

void residual_add_cuda(float* residual, const float* delta, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  residual_add_kernel<<<element_blocks(n), kElementThreads, 0, stream>>>(residual, delta, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void to_f32_cuda(const T* src, float* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  to_f32_kernel<T><<<element_blocks(n), kElementThreads, 0, stream>>>(src, dst, n);
  CUDA_CHECK_LAUNCH();
}

template void to_f32_cuda<float>(const float*, float*, int64_t, cudaStream_t);
template void to_f32_cuda<__half>(const __half*, float*, int64_t, cudaStream_t);
template void to_f32_cuda<__nv_bfloat16>(const __nv_bfloat16*, float*, int64_t, cudaStream_t);

}  // namespace exq::cuda
