// RAII cuBLAS handle. One per stream/thread: a handle is not safe to share across threads.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace exq::cuda {

class CublasHandle {
 public:
  CublasHandle();
  ~CublasHandle();
  CublasHandle(CublasHandle&& other) noexcept;
  CublasHandle& operator=(CublasHandle&& other) noexcept;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;

  cublasHandle_t get() const { return handle_; }
  // Binds later calls to `stream` (no-op when already bound).
  void set_stream(cudaStream_t stream);
  // A caller-owned workspace makes cuBLAS allocation-free, as CUDA graph capture needs.
  void set_workspace(void* workspace, size_t bytes);

 private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace exq::cuda
