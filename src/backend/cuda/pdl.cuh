// Device side of programmatic dependent launch (pdl.h) and a launcher. Included only by .cu
// files.
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.h"

namespace exq::cuda {

// Waits until the previous kernel of the stream has finished and its writes are visible
// (a no-op when the kernel was launched without programmatic dependent launch).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel of the stream launch early (it still waits for this one in pdl_wait).
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic dependent launch when `pdl`
// and thread-block clusters of `cluster` blocks along x when cluster > 1.
template <typename... Params, typename... Args>
inline void launch_pdl_cluster(bool pdl, int cluster, void (*kernel)(Params...), dim3 grid,
                               dim3 block, size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  unsigned n = 0;
  if (pdl) {
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
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic dependent launch when `pdl`.
template <typename... Params, typename... Args>
inline void launch_pdl(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream, Args... args) {
  launch_pdl_cluster(pdl, 1, kernel, grid, block, smem, stream, args...);
}

}  // namespace exq::cuda
