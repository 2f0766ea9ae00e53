// The GPU quantizer's two implementations behind gptq_cuda.h (internal to quant/cuda, tests and
// benchmarks). v1 (gptq_cuda.cpp) runs the options of a linear one after another, each with its
// own lazy-update blocks; prepare_hessian v1 is cuSOLVER potrf, potri, potrf. v2 runs all the
// options in one pass over fixed blocks (gptq_batch.cpp, gptq_plan.h): one launch per step for
// every option instead of one per option, U's TF32 split shared; prepare_hessian v2 factors the
// reversed matrix once and inverts the factor (potrf, trtri: half the arithmetic). The public
// calls take EXQ_GPTQ_IMPL=v1|v2 (default v2).
#pragma once

#include <string>
#include <vector>

#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/gptq_plan.h"

namespace exq::quant::cuda {

enum class GptqImpl { kV1, kV2 };

// EXQ_GPTQ_IMPL: unset or "v2" -> kV2, "v1" -> kV1; anything else throws exq::Error.
GptqImpl gptq_impl_from_env();
const char* gptq_impl_name(GptqImpl impl);

// Rows of v2's fixed blocks: EXQ_GPTQ_BLOCK (a power of two in [32, 1024]) or
// kGptqBatchBlockRows.
// Options with a larger group run through v1.
int64_t gptq_batch_block_rows();
// Rows of v2's super-blocks (far flushes): EXQ_GPTQ_SUPER (a power of two in [32, 8192], at
// least the block) or kGptqBatchSuperRows.
int64_t gptq_batch_super_rows();

// Device bytes v2 allocates at least (a batch of one option, results not counted): what a VRAM
// plan must leave for it beside everything else.
size_t gptq_batch_min_bytes(int64_t out, int64_t in, bool want_packed);

std::vector<DeviceGptqResult> gptq_quantize_batch(const DeviceView& w,
                                                  const DevicePreparedHessian& h,
                                                  std::span<const QuantOption> options,
                                                  bool want_packed, GptqContext& ctx,
                                                  const GptqResultHook& on_weight, GptqImpl impl);
// skip_dampings: damping steps already known to fail (a retry after prepare_hessian_async): the
// first attempt adds skip_dampings + 1 steps, and the result equals a call without it.
DevicePreparedHessian prepare_hessian(const DeviceView& h, float percdamp, GptqContext& ctx,
                                      GptqImpl impl, int skip_dampings = 0);

// Ints of device status prepare_hessian_async writes.
inline constexpr int kPrepareStatusInts = 4;
// prepare_hessian without a host wait: act-order, damping and one factorization attempt with
// `steps` damping steps, all queued on ctx.stream. status (device, kPrepareStatusInts ints) is
// all zero once the attempt succeeded; otherwise U is not valid and the caller redoes the work
// with prepare_hessian(..., skip_dampings = steps). perm (host) stays empty and damp 0:
// gptq_quantize_batch then uses perm_d / invperm_d and cannot pack.
DevicePreparedHessian prepare_hessian_async(const DeviceView& h, float percdamp, GptqContext& ctx,
                                            GptqImpl impl, int* status, int steps = 1);

// ctx.wait, or a plain stream synchronize.
void host_wait(const GptqContext& ctx, const char* why);

// One result's packed tensors (codes [in * out], qs [groups * out], scale_max [groups]) into
// l's vectors, sized already. Call after a host_wait for the work that wrote them: the copies to
// pageable memory return once done; their host seconds go to ctx.packed_download_s.
void download_packed(const GptqContext& ctx, io::Exl2Linear& l, const void* codes,
                     const void* qs, const void* scale_max);
// The same tensors and the act-order perm_d (device [in]) copied on ctx.stream to
// ctx.packed_to(option, packed_host_layout(...).bytes), without a wait (take_packed reads them).
PackedHost download_packed_async(const GptqContext& ctx, size_t option, int64_t in, int64_t out,
                                 int64_t groups, const void* codes, const void* qs,
                                 const void* scale_max, const int32_t* perm_d);

// ---- shared by both implementations ----------------------------------------------------------

// Checks every argument of gptq_quantize_batch (throws exq::Error) and gives the options'
// group layouts and the inverse permutation.
struct GptqInputs {
  int64_t out = 0, in = 0;
  std::vector<std::vector<GroupSpan>> layouts;
  std::vector<int32_t> invperm;
};
// invperm is empty when h has no host perm (prepare_hessian_async); want_packed then throws,
// unless deferred_packed (packed results through ctx.packed_to, which bring perm_d along).
GptqInputs check_gptq_inputs(const DeviceView& w, const DevicePreparedHessian& h,
                             std::span<const QuantOption> options, bool want_packed,
                             const GptqContext& ctx, bool deferred_packed = false);
// h.invperm_d, or `scratch` filled from the host invperm.
const int32_t* invperm_device(const DevicePreparedHessian& h, const GptqInputs& inputs,
                              DeviceTensor& scratch, GptqContext& ctx);

// 0 f32, 1 f16, 2 bf16: the launchers' dtype code.
int gptq_dtype_code(DType t);

// What both implementations launch with: ctx's stream, allocator and cuBLAS handle (bound to
// the stream here), the scale grid and the column-maxima blocks of `out` columns.
struct GptqLaunch {
  cudaStream_t stream;
  CachingAllocator& alloc;
  cublasHandle_t handle;
  GptqGrid grid;
  int64_t parts;
};
GptqLaunch gptq_launch(GptqContext& ctx, int64_t out);

std::vector<DeviceGptqResult> gptq_quantize_batch_v1(const DeviceView& w,
                                                     const DevicePreparedHessian& h,
                                                     std::span<const QuantOption> options,
                                                     bool want_packed, GptqContext& ctx,
                                                     const GptqResultHook& on_weight);
std::vector<DeviceGptqResult> gptq_quantize_batch_v2(const DeviceView& w,
                                                     const DevicePreparedHessian& h,
                                                     std::span<const QuantOption> options,
                                                     bool want_packed, GptqContext& ctx,
                                                     const GptqResultHook& on_weight);

}  // namespace exq::quant::cuda
