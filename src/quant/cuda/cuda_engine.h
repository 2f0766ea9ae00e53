// The converter's per-module engine on one GPU (quant/engine.h): the measurement and the
// quantization pass of attention and MLP blocks with the semantics of the CPU engine
// (quant/measure.h, quant/quantize.h), with every device byte drawn from one budgeted
// allocator. Calibration states stay host tensors; they are copied through pinned staging
// buffers on a copy stream, overlapping compute, and stay on the device when the budget allows.
// Results do not depend on the budget (fixed reduction orders, one row at a time).
// forward_attention / forward_mlp (resume replay) run the reference pass's kernels with the
// given weights: bit for bit measure_*().target with the layer's weights and quantize_*().output
// with the dequantized EXL2 weights.
// module_stats() reports gpu_s, copy_s, copy_hidden, bytes_h2d, bytes_d2h, peak_vram_bytes,
// vram_budget_bytes, how the states were held, host_syncs (the host's waits for the device:
// 1 per measured or quantized module in the normal path, module_run.h; the head step waits
// more) and staging_waits (waits for a pinned staging buffer of the copy ring); after a
// quantization step also "timing" (device phases from events: reference_s, hessian_s,
// prepare_s, gptq_s, forward_s; host phases: host_setup_s, host_reference_s, host_gptq_s,
// host_forward_s, packed_download_s, pack_s, pack_wait_s, wall_s), "sync_reasons" (host waits
// by reason) and, after a failed factorization, damping_retries. One thread drives an engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "io/hf_config.h"
#include "quant/engine.h"

namespace exq::quant::cuda {

struct CudaEngineOptions {
  size_t vram_budget_bytes = 0;  // 0: default_vram_budget(device)
  int device = 0;
  // Caps the calibration rows held on the device at once (0: the budget decides). Tests use it
  // to force streaming on models whose states are small next to their GPTQ working memory.
  int64_t max_rows_on_device = 0;
  // Attention of the reference and quantized forwards in f32 on CUDA cores instead of fp16
  // tensor cores (several times slower; for comparisons). Candidate tests always use tensor
  // cores where the head size allows.
  bool exact_attention = false;
  // Keep GPTQ results in pinned host memory even when they fit on the device (tests; the
  // budget alone picks this mode otherwise: engine_plan.h).
  bool host_candidates = false;
  // Caps the device cache of a MoE block's results in host memory (moe_plan.h) to this many
  // groups, at least 3 (tests of the cache's eviction; 0: the budget decides).
  int64_t max_cache_groups = 0;
  // Tests of the damping retry. fail_first_factorization: bit g (0: the linears' input
  // Hessian, 1: o_proj / down_proj's) makes the first factorization of every measured or
  // quantized module count as failed, so the module runs again with one damping step more.
  // extra_damping_steps: every such Hessian's first attempt has this many steps more.
  unsigned fail_first_factorization = 0;
  int extra_damping_steps = 0;
};

// Free memory of `device` now minus a margin of max(1 GiB, 5 % of its total) for the CUDA
// context, cuBLAS/cuSOLVER workspaces and anything else on the GPU.
size_t default_vram_budget(int device = 0);

// For rows of up to max_tokens tokens. Throws exq::Error without a usable device.
std::unique_ptr<Engine> make_cuda_engine(const io::ModelConfig& config, int64_t max_tokens,
                                         const CudaEngineOptions& options);

}  // namespace exq::quant::cuda
