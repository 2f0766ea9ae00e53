// GPTQ on the GPU (docs exl2.md section 3; CPU reference: quant/hessian.h, quant/gptq.h):
// Hessian accumulation with tensor-core GEMMs (f32 accumulation), act-order, damping and the
// Cholesky factor of H^-1 with cuSOLVER, and GPTQ of one linear under many options in one
// batched pass (they share H^-1 and the permutation). Results match the CPU reference in
// bits accounting exactly and in error closely (not bit for bit: summation order differs).
#pragma once

#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/device_tensor.h"
#include "io/exl2.h"
#include "quant/options.h"

namespace exq::quant::cuda {

using exq::cuda::CachingAllocator;
using exq::cuda::DeviceTensor;
using exq::cuda::DeviceView;

// Handles and scratch the GPU quantizer shares across calls (one per stream/thread).
struct GptqContext {
  CachingAllocator* allocator = nullptr;  // every device byte comes from here (VRAM budget)
  cudaStream_t stream = nullptr;
  exq::cuda::CublasHandle* cublas = nullptr;
  // Optional: prepare_hessian creates a handle per call when null. Bound to `stream` there.
  cusolverDnHandle_t cusolver = nullptr;
  // Optional: every host wait of prepare_hessian / gptq_quantize_batch goes through it (the
  // engine counts them: EngineContext::host_sync); null: cudaStreamSynchronize(stream).
  std::function<void(cudaStream_t stream, const char* why)> wait;
  // Optional: gptq_quantize_batch with want_packed adds the host seconds of the packed results'
  // copies to pageable host memory here (after a wait for the device, so the copies alone).
  double* packed_download_s = nullptr;
  // Optional, v2 with want_packed: option k's packed tensors and the act-order are copied on
  // `stream` to the pinned host memory packed_to(k, bytes) returns (packed_host_bytes), without
  // a wait, and DeviceGptqResult::packed says where; take_packed() fills `layer` from there
  // after the caller's own wait. The host perm is then not needed (prepare_hessian_async).
  std::function<void*(size_t option, size_t bytes)> packed_to;
};

// Where a result's packed tensors wait in pinned host memory (GptqContext::packed_to): codes
// [in * out], qs [groups * out], scale_max [groups] and perm [in] at packed_host_layout().
struct PackedHost {
  const void* data = nullptr;  // null: `layer` is complete already
  int64_t in = 0, out = 0, groups = 0;
};

// H = 2/B * sum_b X_b^T X_b over batches, like quant::HessianAccumulator (exllamav2 scaling).
// Tensor cores at f32-level accuracy (3-pass TF32 split, f32 accumulation: hessian_cuda.cpp);
// add_batch needs 2 * rows * in floats of scratch. Deterministic. in <= 65536.
class DeviceHessian {
 public:
  DeviceHessian(int64_t in, GptqContext& ctx);
  // x: F32 [rows, in] contiguous on the device: one calibration batch (a row of T tokens).
  void add_batch(const DeviceView& x);
  int64_t in() const { return in_; }
  int64_t batches() const { return batches_; }
  // Full symmetric F32 [in, in] on the device (valid until the next add_batch).
  DeviceView hessian();

 private:
  GptqContext* ctx_;
  int64_t in_;
  int64_t batches_ = 0;
  DeviceTensor sum_;  // F32 [in, in]
  DeviceTensor h_;    // F32 [in, in], scaled
};

// Like quant::PreparedHessian, on the device.
// The act-order is computed on the device; a preparation without waits (gptq_batch.h:
// prepare_hessian_async) leaves the host copies `perm` empty and `damp` 0.
struct DevicePreparedHessian {
  int64_t in = 0;
  std::vector<int32_t> perm;  // host copy [in]: act-order, diag(H) descending, stable
  DeviceTensor perm_d;        // I32 [in]
  DeviceTensor invperm_d;     // I32 [in], invperm_d[perm[i]] = i; may be empty (then from perm)
  DeviceTensor u;             // F32 [in, in] upper U with U^T U = inv(H_perm + damping)
  float damp = 0.0f;
  int dampings = 0;
};

// h: F32 [in, in] on the device. Damping and retries as quant::prepare_hessian (throws
// exq::Error after 10 failed steps): the same perm and damp, U equal up to f32 rounding
// (cuSOLVER; EXQ_GPTQ_IMPL=v1: potrf, potri, potrf as the CPU; v2, the default: potrf of the
// reversed matrix and trtri, gptq_batch.h). Waits for the device once per attempt (the first
// wait also brings perm and damp). Scratch: two [in, in] matrices.
DevicePreparedHessian prepare_hessian(const DeviceView& h, float percdamp, GptqContext& ctx);

// One option's result. `weight` is always filled; `layer` only when want_packed.
struct DeviceGptqResult {
  QuantOption option;
  DeviceTensor weight;  // F16 [out, in], HF layout, original channel order: the EXL2 kernel's
                        // fp16 reconstruction (what io::dequantize_exl2 gives for `layer`)
  io::Exl2Linear layer; // host, ready for io::pack_exl2 (bias left empty)
  PackedHost packed;    // with GptqContext::packed_to: layer's tensors, until take_packed()
};

// Byte offsets of PackedHost's tensors (16-byte aligned) and the bytes in all.
struct PackedHostLayout {
  size_t qs = 0, scale_max = 0, perm = 0, bytes = 0;
};
PackedHostLayout packed_host_layout(int64_t in, int64_t out, int64_t groups);
// Completes `layer` (q, qs, scale_max, perm, invperm) from `packed` once the copies there are
// done (after a wait for their stream); nothing when packed.data is null. Returns the host
// seconds it took. Bytes as gptq_quantize_batch's own downloads.
double take_packed(io::Exl2Linear& layer, const PackedHost& packed);

// GPTQ of w (device F32|F16|BF16 [out, in], HF layout) under every option at once.
// Results are in the order of `options`. Options are validated (group_layout) before anything
// is launched. Without want_packed nothing waits for the device: the weights are ready in
// stream order on ctx.stream; with it, one wait per batch of options for the downloads (none
// with ctx.packed_to, v2).
// Deterministic (same inputs, same bytes, whatever the VRAM budget); for the first group
// bit-identical to quant::gptq_quantize, later groups differ by f32 summation order (docs:
// gptq_cuda.cpp, gptq_batch.cpp). EXQ_GPTQ_IMPL picks the implementation (gptq_batch.h): v2
// (default) runs all options together in batches sized to the free VRAM (budget or device):
// per option of a batch 4 + 2 (+ 1 packed) bytes per weight, (2 * 128 + 3 * 128 + 97) * out
// floats, besides the results and 3 * 128 * in floats; v1 runs them one after another in
// 2 F32 + 1 F16 + 1 U8 [in, out] (+ 1 U8 per option while want_packed), 3 * 128 * (in + out)
// + 226 * out floats.
// on_weight (optional) gets each result as soon as its weight is queued on ctx.stream (v1:
// before the next option starts; v2: before the next batch starts), e.g. to move it to host
// memory and free the device copy; the computation is the same with or without it.
using GptqResultHook = std::function<void(size_t option, DeviceGptqResult& result)>;
std::vector<DeviceGptqResult> gptq_quantize_batch(const DeviceView& w,
                                                  const DevicePreparedHessian& h,
                                                  std::span<const QuantOption> options,
                                                  bool want_packed, GptqContext& ctx,
                                                  const GptqResultHook& on_weight = {});

}  // namespace exq::quant::cuda
