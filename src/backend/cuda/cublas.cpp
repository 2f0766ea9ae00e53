#include "backend/cuda/cublas.h"

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace exq::cuda {

CublasHandle::CublasHandle() {
  CUBLAS_CHECK(cublasCreate(&handle_));
  // Results must not depend on atomics-based split-K choices between runs.
  CUBLAS_CHECK(cublasSetAtomicsMode(handle_, CUBLAS_ATOMICS_NOT_ALLOWED));
  CUBLAS_CHECK(cublasSetStream(handle_, stream_));
}

CublasHandle::~CublasHandle() {
  if (handle_) cublasDestroy(handle_);
}

CublasHandle::CublasHandle(CublasHandle&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)),
      stream_(std::exchange(other.stream_, nullptr)) {}

CublasHandle& CublasHandle::operator=(CublasHandle&& other) noexcept {
  if (this != &other) {
    if (handle_) cublasDestroy(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void CublasHandle::set_stream(cudaStream_t stream) {
  if (stream == stream_) return;
  CUBLAS_CHECK(cublasSetStream(handle_, stream));
  stream_ = stream;
}

void CublasHandle::set_workspace(void* workspace, size_t bytes) {
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace, bytes));
}

}  // namespace exq::cuda
