// CUDA_CHECK / CUBLAS_CHECK: turn a failed CUDA runtime or cuBLAS call into an exq::Error that
// names the statement and file:line. Library code never exits on a device error.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace exq::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* statement, const char* file,
                                   int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* statement,
                                     const char* file, int line);
const char* cublas_status_name(cublasStatus_t status);

}  // namespace exq::cuda

#define CUDA_CHECK(statement)                                                    \
  do {                                                                           \
    const cudaError_t exq_cuda_status_ = (statement);                            \
    if (exq_cuda_status_ != cudaSuccess)                                         \
      ::exq::cuda::throw_cuda_error(exq_cuda_status_, #statement, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(statement)                                                    \
  do {                                                                             \
    const cublasStatus_t exq_cublas_status_ = (statement);                         \
    if (exq_cublas_status_ != CUBLAS_STATUS_SUCCESS)                               \
      ::exq::cuda::throw_cublas_error(exq_cublas_status_, #statement, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
