#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kEmbeddingThreads = 256;

// One block per token: a row gather, converted to f32.
template <typename T>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table,
                                 float* __restrict__ out, int vocab, int dim) {
  const int id = ids[blockIdx.x];
  float* o = out + static_cast<size_t>(blockIdx.x) * dim;
  if (id < 0 || id >= vocab) {
    for (int d = threadIdx.x; d < dim; d += blockDim.x) o[d] = __int_as_float(0x7fc00000);
    return;
  }
  const T* row = table + static_cast<size_t>(id) * dim;
  for (int d = threadIdx.x; d < dim; d += blockDim.x) o[d] = to_float(row[d]);
}

}  // namespace

template <typename T>
void embedding_cuda(const int32_t* ids, const T* table, float* out, int tokens, int vocab,
                    int dim, cudaStream_t stream) {
  if (tokens == 0 || dim == 0) return;
  embedding_kernel<T><<<tokens, kEmbeddingThreads, 0, stream>>>(ids, table, out, vocab, dim);
  CUDA_CHECK_LAUNCH();
}

template void embedding_cuda<float>(const int32_t*, const float*, float*, int, int, int, cudaStream_t);
template void embedding_cuda<__half>(const int32_t*, const __half*, float*, int, int, int, cudaStream_t);
template void embedding_cuda<__nv_bfloat16>(const int32_t*, const __nv_bfloat16*, float*, int, int,
                                            int, cudaStream_t);

}  // namespace exq::cuda
