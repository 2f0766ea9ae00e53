// Probe of a persistent decode design (persistent_probe.cu): one launch streams every weight
// byte of a token's layers, with a grid barrier between phases (the activations a phase reads
// exist only after the one before it), through one of: a per-thread shared-memory ring of
// 16-byte cp.async copies, per-warp bulk (TMA) copies, a producer warp issuing one bulk copy per
// stage (full / empty mbarriers), all of which run ahead across phase boundaries; or plain loads
// into registers (nothing crosses a boundary). No real GEMV: each 16-byte chunk gets either one
// integer operation or a 4-bit decode and half2 FMAs of about the EXL2 kernel's count. What it
// measures is how close such a design can get to the bandwidth floor, before any real kernel.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace exq::cuda::bench {

struct ProbePhase {
  const uint8_t* data = nullptr;  // bytes streamed (weights, or the KV cache for attention)
  uint64_t bytes = 0;             // a multiple of 16
  int in_floats = 0;              // activations read from the previous phase after the barrier
  int out_floats = 0;             // activations written for the next phase
};

struct ProbeConfig {
  int blocks = 0;        // co-resident: at most one per multiprocessor
  int threads = 512;
  int stage_bytes = 0;   // per block, a multiple of 16 * threads
  int stages = 6;        // ring depth (2..8)
  int work = 1;          // 0: one XOR per word; 1: 4-bit decode + HFMA2 per weight pair
  bool barrier = true;   // false: phases do not wait for each other (timing bound only)
  int align = 16;        // contiguous shares start at multiples of this (bytes, power of two >= 16)
  bool interleave = false;  // the block takes the phase's stages b, b + blocks, ... instead of a share
  bool bulk = false;     // one bulk (TMA) copy per warp and stage instead of 16-byte cp.async per thread
  bool tma = false;      // a producer warp, one bulk copy per stage, full / empty mbarriers
  bool direct = false;   // no ring: loads straight into registers (stage_bytes <= 64 * threads)
};

// Whole run of phases [first, last) as one launch (persistent) on `stream`. `act` holds two
// buffers of max(in/out floats) each; `counter` is one zeroed uint32 (reset it between launches).
void persistent_probe(const ProbePhase* phases_dev, int first, int last, const ProbeConfig& c, float* act,
                      int act_floats, unsigned* counter, float* sink, cudaStream_t stream);

// Shared memory per block the config needs, and the largest the device allows a block.
size_t persistent_probe_smem(const ProbeConfig& c);
size_t persistent_probe_smem_limit();

}  // namespace exq::cuda::bench
