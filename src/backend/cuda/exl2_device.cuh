// Device and launch helpers shared by the EXL2 GEMV kernels (exl2_gemv.cu, exl2_stage.cu):
// programmatic dependent launch (griddepcontrol) and a launcher that sets it and clusters.
// Included only by .cu files.
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/cuda_check.h"

namespace exq::cuda::exl2 {

// Programmatic dependent launch on Hopper; EXQ_EXL2_NO_PDL=1 turns it off (A/B timing).
bool use_pdl();

// Waits until the kernels this one depends on have finished and their writes are visible;
// a no-op without programmatic dependent launch.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel in the stream start (it still waits in pdl_wait for this one).
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launch with programmatic dependent launch (when on) and an optional cluster along x.
template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, int cluster,
                   cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  unsigned n = 0;
  if (use_pdl()) {
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster > 1) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n].val.clusterDim.x = static_cast<unsigned>(cluster);
    attrs[n].val.clusterDim.y = 1;
    attrs[n].val.clusterDim.z = 1;
    ++n;
  }
  cfg.attrs = attrs;
  cfg.numAttrs = n;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...));
}

}  // namespace exq::cuda::exl2
