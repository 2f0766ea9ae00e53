#include "backend/cuda/pdl.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"

namespace exq::cuda {

bool decode_pdl_enabled() {
  static const bool off = [] {
    const char* v = std::getenv("EXQ_DECODE_NO_PDL");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  if (off) return false;
  int device = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 9;
}

}  // namespace exq::cuda
