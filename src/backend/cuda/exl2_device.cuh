// Launch helpers shared by the EXL2 kernels (exl2_gemv.cu, exl2_gemv_v2.cu, exl2_stage.cu):
// whether to use programmatic dependent launch, and a launcher that sets it and clusters. The
// device side (pdl_wait / pdl_trigger) is pdl.cuh's. Included only by .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/pdl.cuh"

namespace exq::cuda::exl2 {

// Programmatic dependent launch on Hopper; EXQ_EXL2_NO_PDL=1 turns it off (A/B timing).
bool use_pdl();

// Launch with programmatic dependent launch (when on) and an optional cluster along x.
template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, int cluster,
                   cudaStream_t stream, Args... args) {
  launch_pdl_cluster(use_pdl(), cluster, kernel, grid, block, smem, stream, args...);
}

// p moved by `shift` bytes when shift is set (a MoE expert's copy of the layout), else p.
template <typename T>
__device__ __forceinline__ const T* shifted(const T* p, const int64_t* shift) {
  if (shift == nullptr) return p;
  return reinterpret_cast<const T*>(reinterpret_cast<const char*>(p) + *shift);
}

}  // namespace exq::cuda::exl2
