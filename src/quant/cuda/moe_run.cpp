#include "quant/cuda/moe_run.h"

#include <cublas_v2.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/norm.h"
#include "core/error.h"
#include "model/moe.h"
#include "quant/cuda/engine_kernels.h"
#include "quant/cuda/moe_kernels.h"
#include "quant/cuda/table_errors.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::DeviceView;
using Clock = std::chrono::steady_clock;

float* f32(const DeviceTensor& t) { return static_cast<float*>(t.raw()); }
__half* f16(const DeviceTensor& t) { return static_cast<__half*>(t.raw()); }
int32_t* i32(const DeviceTensor& t) { return static_cast<int32_t*>(t.raw()); }
double* f64(const DeviceTensor& t) { return static_cast<double*>(t.raw()); }

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

ErrorReduce reduce_of(ErrorMetric metric) {
  return metric == ErrorMetric::kToken ? ErrorReduce::kToken
         : metric == ErrorMetric::kSkip0 ? ErrorReduce::kSkip0
                                         : ErrorReduce::kRow;
}

}  // namespace

MoeRun::MoeRun(EngineContext& ctx, const MoeSpec& spec, const TensorView& states, bool hessians, float percdamp)
    : ctx_(ctx),
      spec_(spec),
      states_(states),
      rows_(states.dim(0)),
      tokens_(states.dim(1)),
      hidden_(states.dim(2)),
      experts_(ctx.config.num_experts),
      k_(ctx.config.experts_per_token),
      inter_(ctx.config.expert_intermediate),
      percdamp_(percdamp),
      hessians_(hessians),
      gptq_ctx_{ctx.alloc.get(), ctx.compute.get(), &ctx.cublas, ctx.cusolver.get(),
                [&ctx](cudaStream_t s, const char* why) { ctx.host_sync(s, why); }} {
  EXQ_CHECK(static_cast<int64_t>(spec.experts.size()) == experts_, "{} experts given, the config has {}",
            spec.experts.size(), experts_);
  auto& a = *ctx_.alloc;
  const cudaStream_t s = ctx_.compute;
  auto make = [&](DType d, Shape shape) { return DeviceTensor(d, std::move(shape), a, s); };
  norm_ = exq::cuda::to_device(spec.norm, a, s);
  router_ = exq::cuda::to_device(spec.router, a, s);
  // fp16 matmul copies, converted on the device from a transient f32 upload.
  for (const auto& e : spec.experts) {
    std::array<DeviceTensor, 3> w;
    for (size_t c = 0; c < 3; ++c) {
      const DeviceTensor w32 = exq::cuda::to_device(e[c], a, s);
      w[c] = make(DType::F16, e[c].shape());
      f32_to_f16_cuda(f32(w32), f16(w[c]), w32.numel(), s);
    }
    w16_.push_back(std::move(w));
  }
  x_ = exq::cuda::to_device(states, a, s);
  target_ = make(DType::F32, states.shape());
  const int64_t T = tokens_, H = hidden_;
  xn_ = make(DType::F32, {T, H});
  logits_ = make(DType::F32, {rows_, T, experts_});
  xg_ = make(DType::F32, {T, H});
  xg16_ = make(DType::F16, {T, H});
  xs_ = make(DType::F32, {T});
  graw_ = make(DType::F32, {T, inter_});
  uraw_ = make(DType::F32, {T, inter_});
  act16_ = make(DType::F16, {T, inter_});
  as_ = make(DType::F32, {T});
  yraw_ = make(DType::F32, {T, H});
  acc_ = make(DType::F32, {T, H});
  counters_ = make(DType::U8, {16});
  CUDA_CHECK(cudaMemsetAsync(counters_.raw(), 0, counters_.nbytes(), s));
  if (hessians_) {
    hess_.push_back(std::make_unique<DeviceHessian>(H, gptq_ctx_));
    for (int64_t e = 0; e < experts_; ++e) hess_.push_back(std::make_unique<DeviceHessian>(inter_, gptq_ctx_));
  }
}

MoeRun::~MoeRun() = default;

void MoeRun::gemm(const DeviceView& x16, int64_t rows, const DeviceView& w, const DeviceView& out) {
  const int n = static_cast<int>(w.dim(0)), k = static_cast<int>(w.dim(1));
  ctx_.cublas.set_stream(ctx_.compute);
  // Row-major out[rows, n] = x16[rows, k] w[n, k]^T, f32 accumulation, as BlockRunner's GEMMs.
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(ctx_.cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(rows), k, &alpha,
                            w.raw(), CUDA_R_16F, k, x16.raw(), CUDA_R_16F, k, &beta, out.raw(), CUDA_R_32F, n,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void MoeRun::route() {
  const cudaStream_t s = ctx_.compute;
  const int64_t T = tokens_, H = hidden_, E = experts_;
  count_non_finite_cuda(f32(x_), x_.numel(), reinterpret_cast<unsigned long long*>(counters_.raw()) + 1, s);
  // Router logits of every row in f32 (the router stays fp16 in the output: its values are
  // exact in f32 here).
  ctx_.cublas.set_stream(s);
  const float alpha = 1.0f, beta = 0.0f;
  for (int64_t r = 0; r < rows_; ++r) {
    exq::cuda::rmsnorm(x_.view().slice0(r, r + 1).reshape({T, H}), norm_.view(), xn_.view(), static_cast<float>(ctx_.config.rms_norm_eps),
                       s);
    CUBLAS_CHECK(cublasSgemm(ctx_.cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(E), static_cast<int>(T),
                             static_cast<int>(H), &alpha, f32(router_), static_cast<int>(H), f32(xn_),
                             static_cast<int>(H), &beta, f32(logits_) + r * T * E, static_cast<int>(E)));
  }
  Tensor logits(DType::F32, {rows_ * T, E});
  exq::cuda::copy_to_host(logits_.view().reshape({rows_ * T, E}), logits, s);
  ctx_.host_sync(s, "MoE routes: router logits");
  std::vector<int32_t> ids(static_cast<size_t>(rows_ * T * k_));
  std::vector<float> weights(ids.size());
  model::route_tokens(logits, k_, ctx_.config.norm_topk_prob, ids, weights);
  // Per row, slots grouped by expert, tokens ascending within: the CPU's gather order.
  Tensor token(DType::I32, {rows_, T * k_}), weight(DType::F32, {rows_, T * k_});
  first_.assign(static_cast<size_t>(rows_), std::vector<int64_t>(static_cast<size_t>(E), 0));
  count_ = first_;
  const auto slots = static_cast<size_t>(T * k_);
  for (int64_t r = 0; r < rows_; ++r) {
    const auto at = static_cast<size_t>(r) * slots;
    const model::ExpertGroups g = model::group_by_expert(std::span(ids).subspan(at, slots),
                                                         std::span(weights).subspan(at, slots), E, k_);
    std::copy(g.token.begin(), g.token.end(), token.data<int32_t>() + at);
    std::copy(g.weight.begin(), g.weight.end(), weight.data<float>() + at);
    for (int64_t e = 0; e < E; ++e) {
      first_[static_cast<size_t>(r)][static_cast<size_t>(e)] = g.first[static_cast<size_t>(e)];
      count_[static_cast<size_t>(r)][static_cast<size_t>(e)] = g.count(e);
    }
  }
  route_token_ = exq::cuda::to_device(token, *ctx_.alloc, s);  // pageable: staged at once
  route_weight_ = exq::cuda::to_device(weight, *ctx_.alloc, s);
}

std::vector<int64_t> MoeRun::expert_tokens() const {
  std::vector<int64_t> n(static_cast<size_t>(experts_), 0);
  for (const auto& row : count_)
    for (size_t e = 0; e < row.size(); ++e) n[e] += row[e];
  return n;
}

void MoeRun::expert_sum(int64_t r, const WeightOf& w, bool hessians) {
  const cudaStream_t s = ctx_.compute;
  const int64_t T = tokens_, H = hidden_, EI = inter_;
  exq::cuda::rmsnorm(x_.view().slice0(r, r + 1).reshape({T, H}), norm_.view(), xn_.view(), static_cast<float>(ctx_.config.rms_norm_eps), s);
  if (hessians) hess_[0]->add_batch(xn_.view());
  CUDA_CHECK(cudaMemsetAsync(acc_.raw(), 0, acc_.nbytes(), s));
  for (int64_t e = 0; e < experts_; ++e) {
    const int64_t n = count_[static_cast<size_t>(r)][static_cast<size_t>(e)];
    if (n == 0) continue;
    const int64_t slot = r * T * k_ + first_[static_cast<size_t>(r)][static_cast<size_t>(e)];
    const int32_t* token = i32(route_token_) + slot;
    const int rows = static_cast<int>(n);
    gather_rows_cuda(f32(xn_), token, f32(xg_), rows, static_cast<int>(H), s);
    scale_round_rows_cuda(f32(xg_), f16(xg16_), f32(xs_), rows, static_cast<int>(H), s);
    const auto& we = w[static_cast<size_t>(e)];
    gemm(xg16_.view(), n, we[0], graw_.view());
    gemm(xg16_.view(), n, we[1], uraw_.view());
    // f32 act into graw (the down Hessian's input), fp16 row-scaled copy for the GEMM.
    swiglu_round_cuda(f32(graw_), f32(uraw_), f32(xs_), nullptr, nullptr, f32(graw_), f16(act16_), f32(as_), rows,
                      static_cast<int>(EI), s);
    if (hessians) hess_[static_cast<size_t>(1 + e)]->add_batch(graw_.view().slice0(0, n));
    gemm(act16_.view(), n, we[2], yraw_.view());
    scatter_add_rows_cuda(f32(yraw_), f32(as_), token, static_cast<const float*>(route_weight_.raw()) + slot,
                          f32(acc_), rows, static_cast<int>(H), s);
  }
}

MoeRun::WeightOf MoeRun::original_weights() const {
  WeightOf w(static_cast<size_t>(experts_));
  for (size_t e = 0; e < w.size(); ++e)
    for (size_t c = 0; c < 3; ++c) w[e][c] = w16_[e][c].view();
  return w;
}

MoeRun::WeightOf MoeRun::result_weights(const std::vector<std::vector<size_t>>& pick, size_t i) const {
  WeightOf w(static_cast<size_t>(experts_));
  for (size_t e = 0; e < w.size(); ++e)
    for (size_t c = 0; c < 3; ++c) w[e][c] = results_[e][c][pick.empty() ? 0 : pick[i][c]].weight.view();
  return w;
}

void MoeRun::check_counters(const char* what, bool outputs) {
  unsigned long long c[2] = {0, 0};
  CUDA_CHECK(cudaMemcpyAsync(c, counters_.raw(), sizeof(c), cudaMemcpyDeviceToHost, ctx_.compute));
  ctx_.host_sync(ctx_.compute, what);
  EXQ_CHECK(c[1] == 0, "input states hold NaN/Inf ({} values)", c[1]);
  EXQ_CHECK(!outputs || c[0] == 0, "the block's output holds NaN/Inf ({} values)", c[0]);
}

void MoeRun::block_rows(const WeightOf& w, bool hessians) {
  const int64_t n = tokens_ * hidden_;
  for (int64_t r = 0; r < rows_; ++r) {
    expert_sum(r, w, hessians);
    residual_out_cuda(f32(acc_), nullptr, nullptr, f32(x_) + r * n, f32(target_) + r * n, n, hidden_,
                      reinterpret_cast<unsigned long long*>(counters_.raw()), ctx_.compute);
  }
}

void MoeRun::reference() {
  const auto t0 = Clock::now();
  route();
  const WeightOf w = original_weights();
  block_rows(w, hessians_);
  check_counters("MoE reference: status", true);
  timing.reference_s = seconds_since(t0);
}

Tensor MoeRun::target_to_host() const {
  Tensor t(DType::F32, states_.shape());
  exq::cuda::copy_to_host(target_.view(), t, ctx_.compute);
  ctx_.host_sync(ctx_.compute, "MoE reference: target download");
  return t;
}

void MoeRun::gptq(const std::vector<std::vector<QuantOption>>& options, bool want_packed) {
  EXQ_ASSERT(hessians_ && options.size() == 3);
  const auto t0 = Clock::now();
  const cudaStream_t s = ctx_.compute;
  auto& a = *ctx_.alloc;
  // An expert no token reached has no statistics: the identity Hessian, i.e. round to nearest
  // (the CPU engine's identity_hessian; any diagonal Hessian gives GPTQ that).
  auto prepared = [&](size_t g) {
    if (hess_[g]->batches() > 0) return prepare_hessian(hess_[g]->hessian(), percdamp_, gptq_ctx_);
    const int64_t in = hess_[g]->in();
    DeviceTensor eye(DType::F32, {in, in}, a, s);
    identity_cuda(f32(eye), in, s);
    return prepare_hessian(eye.view(), percdamp_, gptq_ctx_);
  };
  const DevicePreparedHessian h0 = prepared(0);
  timing.prepare_s += seconds_since(t0);
  results_.clear();
  results_.resize(static_cast<size_t>(experts_));
  for (int64_t e = 0; e < experts_; ++e) {
    const auto& host = spec_.experts[static_cast<size_t>(e)];
    for (int c = 0; c < 3; ++c) {
      const DeviceTensor w32 = exq::cuda::to_device(host[static_cast<size_t>(c)], a, s);
      std::optional<DevicePreparedHessian> own;
      if (c == 2) {
        const auto p0 = Clock::now();
        own.emplace(prepared(static_cast<size_t>(1 + e)));
        timing.prepare_s += seconds_since(p0);
      }
      results_[static_cast<size_t>(e)][static_cast<size_t>(c)] =
          gptq_quantize_batch(w32.view(), c == 2 ? *own : h0, options[static_cast<size_t>(c)], want_packed, gptq_ctx_);
      timing.gptq_runs += static_cast<int>(options[static_cast<size_t>(c)].size());
    }
    hess_[static_cast<size_t>(1 + e)].reset();  // its expert is done: free the [inter, inter] sums
  }
  hess_[0].reset();
  timing.gptq_s = seconds_since(t0) - timing.prepare_s;
}

std::vector<double> MoeRun::test_table(const std::vector<std::vector<size_t>>& pick, ErrorMetric metric) {
  const auto t0 = Clock::now();
  const cudaStream_t s = ctx_.compute;
  const int64_t n = tokens_ * hidden_;
  const size_t n_table = pick.size();
  const int blocks = error_blocks(n);
  auto doubles = [&](int64_t count) {
    return DeviceTensor(DType::U8, {count * static_cast<int64_t>(sizeof(double))}, *ctx_.alloc, s);
  };
  const DeviceTensor partials = doubles(static_cast<int64_t>(n_table) * blocks * 2);
  const DeviceTensor sums = doubles(static_cast<int64_t>(n_table) * rows_ * 2);
  for (int64_t r = 0; r < rows_; ++r) {
    for (size_t i = 0; i < n_table; ++i) {
      expert_sum(r, result_weights(pick, i), false);
      error_partials_cuda(f32(acc_), nullptr, nullptr, f32(x_) + r * n, f32(target_) + r * n, nullptr, n, hidden_,
                          f64(partials) + i * static_cast<size_t>(blocks) * 2, s, reduce_of(metric));
    }
    error_finalize_cuda(f64(partials), static_cast<int>(n_table), blocks, f64(sums) + r * 2, rows_ * 2, s);
  }
  std::vector<double> host(n_table * static_cast<size_t>(rows_) * 2);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), sums.raw(), host.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
  ctx_.host_sync(s, "MoE table errors");
  timing.test_s = seconds_since(t0);
  return table_errors(host, n_table, rows_, metric);
}

double MoeRun::forward_quantized(const TensorView& output) {
  const auto t0 = Clock::now();
  const cudaStream_t s = ctx_.compute;
  const int64_t n = tokens_ * hidden_;
  const int blocks = error_blocks(n);
  const DeviceTensor partials(DType::U8, {blocks * 2 * static_cast<int64_t>(sizeof(double))}, *ctx_.alloc, s);
  const DeviceTensor sums(DType::U8, {rows_ * 2 * static_cast<int64_t>(sizeof(double))}, *ctx_.alloc, s);
  const DeviceTensor out(DType::F32, states_.shape(), *ctx_.alloc, s);
  const WeightOf w = result_weights({}, 0);
  for (int64_t r = 0; r < rows_; ++r) {
    expert_sum(r, w, false);
    error_partials_cuda(f32(acc_), nullptr, nullptr, f32(x_) + r * n, f32(target_) + r * n, f32(out) + r * n, n,
                        hidden_, f64(partials), s, ErrorReduce::kRow);
    error_finalize_cuda(f64(partials), 1, blocks, f64(sums) + r * 2, 2, s);
  }
  std::vector<double> host(static_cast<size_t>(rows_) * 2);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), sums.raw(), host.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
  exq::cuda::copy_to_host(out.view(), output, s);
  ctx_.host_sync(s, "MoE quantized output");
  timing.test_s = seconds_since(t0);
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows_; ++r) {
    num += host[static_cast<size_t>(2 * r)];
    den += host[static_cast<size_t>(2 * r + 1)];
  }
  return relative(num, den);
}

void MoeRun::forward(const TensorView& output) {
  route();
  const WeightOf w = original_weights();
  block_rows(w, false);
  exq::cuda::copy_to_host(target_.view(), output, ctx_.compute);
  // Outputs unchecked: the pipeline's state check clamps the rare Inf the original run clamped.
  check_counters("MoE forward: output and status", false);
}

}  // namespace exq::quant::cuda
