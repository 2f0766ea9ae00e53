// ModuleRun::gptq(), phase 2 of module_run.h: the Hessians' act-order and factorization, then
// GPTQ of every linear under all its options; in host-candidate mode each result moves to
// pinned host memory on the side stream while the next one is computed; in the quantization
// pass the packed results go to pinned memory on the compute stream (ctx.packed).
#include <fmt/format.h>

#include <optional>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "quant/cuda/gptq_batch.h"
#include "quant/cuda/gptq_plan.h"
#include "quant/cuda/module_run.h"

namespace exq::quant::cuda {

using exq::cuda::Event;

bool ModuleRun::reserve_packed(const std::vector<std::vector<QuantOption>>& options) {
  EXQ_ASSERT(options.size() == spec_.linears.size());
  packed_base_.clear();
  if (gptq_impl_from_env() != GptqImpl::kV2) return false;
  const int64_t block_rows = gptq_batch_block_rows();
  std::vector<std::vector<size_t>> bytes(options.size());
  for (size_t c = 0; c < options.size(); ++c) {
    const int64_t out = spec_.linears[c].weight.dim(0), in = spec_.linears[c].weight.dim(1);
    for (const QuantOption& o : options[c]) {
      const std::vector<GroupSpan> layout = group_layout(o, in);
      if (!batchable(layout, block_rows)) return false;  // v1 packs with the host perm
      bytes[c].push_back(
          packed_host_layout(in, out, static_cast<int64_t>(layout.size())).bytes);
    }
  }
  size_t index = 0;
  for (size_t c = 0; c < options.size(); ++c) {
    packed_base_.push_back(index);
    for (size_t b : bytes[c]) ctx_.packed.get(index++, b);
  }
  return true;
}

void ModuleRun::gptq(const std::vector<std::vector<QuantOption>>& options, bool want_packed) {
  const size_t L = spec_.linears.size();
  EXQ_ASSERT(options.size() == L && hessians_[0] && hessians_[1]);
  if (!plan_.resident) rows_->release();  // streamed rows are copied again for the tests
  runner_.release();
  ctx_.compute_spans.begin(ctx_.compute);
  results_.clear();
  results_.resize(L);
  host_results_.clear();
  host_results_.resize(L);
  size_t pinned_index = 0;
  const GptqImpl impl = gptq_impl_from_env();
  // The quantization pass as the measurement when v2 batches every option (packed results to
  // pinned memory, read after the module's wait); else checked, waiting for each step.
  const bool defer = want_packed && reserve_packed(options);
  const bool checked = damping_.checked || (want_packed && !defer);
  packed_download_s = 0;
  gptq_ctx_.packed_download_s = want_packed ? &packed_download_s : nullptr;
  if (want_packed && !defer) {  // NaN/Inf errors before the checked factorizations
    char* host = static_cast<char*>(ctx_.readback(status_.nbytes()));
    CUDA_CHECK(cudaMemcpyAsync(host, status_.raw(), status_.nbytes(), cudaMemcpyDeviceToHost,
                               ctx_.compute));
    ctx_.host_sync(ctx_.compute, "reference status before checked factorizations");
    check_status(host, /*check_outputs=*/true);
  }
  // Timed with events, read after the module's wait.
  for (int g = 0; g < 2; ++g) {
    prepare_spans_.begin(ctx_.compute);
    const int steps = damping_.steps[static_cast<size_t>(g)];
    const DevicePreparedHessian prepared =
        checked ? prepare_hessian(hessians_[g]->hessian(), percdamp_, gptq_ctx_, impl, steps - 1)
                : prepare_hessian_async(hessians_[g]->hessian(), percdamp_, gptq_ctx_, impl,
                                        factor_status(g), steps);
    if (!checked && ((damping_.fail_first >> g) & 1u))
      CUDA_CHECK(cudaMemsetAsync(factor_status(g), 1, sizeof(int), ctx_.compute));
    hessians_[g].reset();
    prepare_spans_.end(ctx_.compute);
    for (size_t c = 0; c < L; ++c) {
      if (spec_.linears[c].hessian != g) continue;
      DeviceLinear& d = weights_[c];
      const DeviceView input = d.w32.empty() ? d.w16.view() : d.w32.view();
      const size_t bytes = static_cast<size_t>(d.w16.numel()) * sizeof(uint16_t);
      std::vector<void*>& host = host_results_[c];
      GptqResultHook to_host;
      // The download of result k runs on the side stream while GPTQ computes result k + 1;
      // result k's device block is freed (compute-stream order) once its copy is done.
      std::optional<DeviceTensor> copying;
      Event copied(false);
      const auto retire = [&] {
        if (!copying) return;
        copied.wait_on(ctx_.compute);
        copying.reset();
      };
      if (plan_.host_candidates) {
        host.resize(options[c].size());
        to_host = [&](size_t k, DeviceGptqResult& res) {
          res.weight.view().expect(DType::F16, d.w16.shape(),
                                   fmt::format("GPTQ result of {}", spec_.linears[c].name));
          host[k] = ctx_.pinned.get(pinned_index++, bytes);
          Event ready(false);
          ready.record(ctx_.compute);
          ready.wait_on(ctx_.side);
          CUDA_CHECK(cudaMemcpyAsync(host[k], res.weight.raw(), bytes, cudaMemcpyDeviceToHost,
                                     ctx_.side));
          retire();
          copying = std::move(res.weight);
          res.weight = {};
          copied.record(ctx_.side);
        };
      }
      gptq_ctx_.packed_to = nullptr;
      if (defer)
        gptq_ctx_.packed_to = [this, c](size_t k, size_t bytes) {
          return ctx_.packed.get(packed_base_[c] + k, bytes);
        };
      gptq_spans_.begin(ctx_.compute);
      results_[c] =
          gptq_quantize_batch(input, prepared, options[c], want_packed, gptq_ctx_, to_host);
      retire();
      gptq_spans_.end(ctx_.compute);
      EXQ_CHECK(results_[c].size() == options[c].size(),
                "GPTQ of {} returned {} results for {} options", spec_.linears[c].name,
                results_[c].size(), options[c].size());
      if (!plan_.host_candidates)
        for (const DeviceGptqResult& res : results_[c])
          res.weight.view().expect(DType::F16, d.w16.shape(),
                                   fmt::format("GPTQ result of {}", spec_.linears[c].name));
      d.w16 = {};
      d.w32 = {};
      timing.gptq_runs += static_cast<int>(options[c].size());
    }
  }
  gptq_ctx_.packed_download_s = nullptr;
  gptq_ctx_.packed_to = nullptr;
  // No wait here: host-candidate results are only read by later copies on the compute stream
  // (retire() ordered it after every side-stream download).
  ctx_.compute_spans.end(ctx_.compute);
  runner_.reserve(tokens_);
  rows_->allocate();
}

}  // namespace exq::quant::cuda
