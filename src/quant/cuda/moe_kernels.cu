#include "quant/cuda/moe_kernels.h"

#include "backend/cuda/cuda_check.h"

namespace exq::quant::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void gather_kernel(const float* src, const int32_t* token, float* dst, int width) {
  const int r = blockIdx.y;
  const float* s = src + static_cast<int64_t>(token[r]) * width;
  float* d = dst + static_cast<int64_t>(r) * width;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < width; j += gridDim.x * blockDim.x) d[j] = s[j];
}

__global__ void scatter_add_kernel(const float* y, const float* y_scale, const int32_t* token, const float* weight,
                                   float* out, int width) {
  const int r = blockIdx.y;
  const float* src = y + static_cast<int64_t>(r) * width;
  float* o = out + static_cast<int64_t>(token[r]) * width;
  const float s = y_scale[r], w = weight[r];
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < width; j += gridDim.x * blockDim.x)
    o[j] = __fadd_rn(o[j], __fmul_rn(w, __fmul_rn(src[j], s)));
}

__global__ void identity_kernel(float* m, int64_t n) {
  const int64_t total = n * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    m[i] = i / n == i % n ? 1.0f : 0.0f;
}

dim3 row_grid(int rows, int width) { return dim3(static_cast<unsigned>((width + kThreads - 1) / kThreads), static_cast<unsigned>(rows)); }

}  // namespace

void gather_rows_cuda(const float* src, const int32_t* token, float* dst, int rows, int width,
                      cudaStream_t stream) {
  if (rows <= 0) return;
  gather_kernel<<<row_grid(rows, width), kThreads, 0, stream>>>(src, token, dst, width);
  CUDA_CHECK_LAUNCH();
}

void scatter_add_rows_cuda(const float* y, const float* y_scale, const int32_t* token, const float* weight,
                           float* out, int rows, int width, cudaStream_t stream) {
  if (rows <= 0) return;
  scatter_add_kernel<<<row_grid(rows, width), kThreads, 0, stream>>>(y, y_scale, token, weight, out, width);
  CUDA_CHECK_LAUNCH();
}

void identity_cuda(float* m, int64_t n, cudaStream_t stream) {
  const int64_t blocks = (n * n + kThreads - 1) / kThreads;
  identity_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(m, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::quant::cuda
