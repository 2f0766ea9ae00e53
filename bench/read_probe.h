// Streaming-read probe of exl2_gemv_bench (read_probe.cu): the timing method's read ceiling.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace exq::cuda::bench {

// Reads `bytes` (a multiple of 16) from `data` with blocks x threads threads, `unroll` (1, 4
// or 8) 16-byte loads in flight per thread.
void read_probe(const void* data, size_t bytes, int blocks, int threads, int unroll,
                uint32_t* sink, cudaStream_t stream);

// The GEMV's access pattern (2 KB steps of 4-bit weights) without its arithmetic: one block
// of `warps` warps per tile, the tile's steps split contiguously or interleaved over the warps,
// `depth` (1, 2 or 4) steps in flight per warp.
void pattern_probe(const void* data, int tiles, size_t tile_bytes, int step_bytes, int warps,
                   int depth, bool interleave, uint32_t* sink, cudaStream_t stream);

}  // namespace exq::cuda::bench
