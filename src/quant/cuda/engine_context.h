// What the CUDA engine keeps between modules: the budgeted allocator every device byte comes
// from, the compute stream with its cuBLAS handle, the staging ring (pinned buffers + copy
// stream), rotary tables, and the timing events of the module in progress.
#pragma once

#include <cusolverDn.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/memory.h"
#include "backend/cuda/stream.h"
#include "io/hf_config.h"
#include "memory/cuda/span_recorder.h"
#include "memory/cuda/staging.h"
#include "quant/cuda/cuda_engine.h"

namespace exq::quant::cuda {

// RAII cuSOLVER handle, shared by every prepare_hessian call of the engine.
class CusolverHandle {
 public:
  CusolverHandle();
  ~CusolverHandle();
  CusolverHandle(const CusolverHandle&) = delete;
  CusolverHandle& operator=(const CusolverHandle&) = delete;
  cusolverDnHandle_t get() const { return handle_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
};

// Pinned host buffers kept across modules for GPTQ results in host-candidate mode: pinning
// memory runs at a few GB/s, so a 70B MLP's 40 results (19 GB) would cost seconds per module.
class PinnedPool {
 public:
  // Buffer i, at least `bytes` long (reallocated when shorter). The caller keeps its work on
  // buffer i ordered before the next get(i).
  void* get(size_t i, size_t bytes);
  size_t bytes() const;  // pinned in total

 private:
  std::vector<exq::cuda::PinnedBuffer> buffers_;
};

struct EngineContext {
  // options.vram_budget_bytes == 0: default_vram_budget(options.device).
  EngineContext(const io::ModelConfig& config, int64_t max_tokens,
                const CudaEngineOptions& options);
  EngineContext(const EngineContext&) = delete;
  EngineContext& operator=(const EngineContext&) = delete;

  // Device bytes held for the engine's lifetime (rotary tables, counters).
  size_t persistent_bytes() const;

  // Every wait of the engine's host for the device goes through these (the staging ring's
  // slot recycling aside: ring.waits()), counted since reset_syncs() with the reasons.
  void host_sync(cudaStream_t stream, const char* why);
  void host_sync(const exq::cuda::Event& event, const char* why);
  void reset_syncs();
  // The module's end, its one wait in the normal path: the compute stream joins the ring's
  // copies, `finish` is recorded and waited for; then the ring's downloads are drained (done
  // by then, so without another wait).
  void finish_module(const char* why);
  // Pinned host memory of at least `bytes` for a module's one download (kept between modules;
  // the previous contents must no longer be needed).
  void* readback(size_t bytes);
  unsigned long long* output_counter() const;
  unsigned long long* input_counter() const;

  io::ModelConfig config;
  int64_t max_tokens;
  CudaEngineOptions options;  // budget resolved
  // Declared first so it is destroyed last: every DeviceTensor below returns memory to it.
  std::unique_ptr<exq::cuda::CachingAllocator> alloc;
  exq::cuda::Stream compute;
  exq::cuda::CublasHandle cublas;
  CusolverHandle cusolver;
  memory::cuda::StagingRing ring;
  exq::cuda::Stream side;     // GPTQ result downloads beside the compute (host-candidate mode)
  PinnedPool pinned;          // their destinations
  // The quantization pass's packed GPTQ results, one buffer per result (ModuleRun::gptq),
  // copied on the compute stream and read by the packing threads after the module's wait.
  PinnedPool packed;
  exq::cuda::DeviceTensor rope_cos, rope_sin;  // F32 [max_tokens, head_dim / 2]
  // gemma3's sliding-window layers (rope_local_theta), else empty.
  exq::cuda::DeviceTensor rope_local_cos, rope_local_sin;
  exq::cuda::DeviceTensor non_finite;          // U8 [16]: uint64 counts of non-finite
                                               // reference outputs [0] and inputs [1]
  // Timeline of the module in progress: origin/finish on the compute stream, compute spans.
  memory::cuda::SpanRecorder compute_spans;
  exq::cuda::Event origin{true}, finish{true};
  int host_syncs = 0;                     // since reset_syncs()
  std::vector<const char*> sync_reasons;  // string literals, one per host_sync()

 private:
  exq::cuda::PinnedBuffer readback_;
};

}  // namespace exq::quant::cuda
