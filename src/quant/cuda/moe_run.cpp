#include "quant/cuda/moe_run.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/norm.h"
#include "core/error.h"
#include "model/moe.h"
#include "quant/cuda/engine_kernels.h"
#include "quant/cuda/engine_plan.h"
#include "quant/cuda/moe_kernels.h"
#include "quant/cuda/table_errors.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::DeviceView;

float* f32(const DeviceTensor& t) { return static_cast<float*>(t.raw()); }
__half* f16(const DeviceTensor& t) { return static_cast<__half*>(t.raw()); }
int32_t* i32(const DeviceTensor& t) { return static_cast<int32_t*>(t.raw()); }
double* f64(const DeviceTensor& t) { return static_cast<double*>(t.raw()); }

ErrorReduce reduce_of(ErrorMetric metric) {
  return metric == ErrorMetric::kToken ? ErrorReduce::kToken
         : metric == ErrorMetric::kSkip0 ? ErrorReduce::kSkip0
                                         : ErrorReduce::kRow;
}

}  // namespace

MoeRun::MoeRun(EngineContext& ctx, const MoeSpec& spec, const TensorView& states, int64_t groups, float percdamp)
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
      gptq_ctx_{ctx.alloc.get(), ctx.compute.get(), &ctx.cublas, ctx.cusolver.get(),
                [&ctx](cudaStream_t s, const char* why) { ctx.host_sync(s, why); }} {
  EXQ_CHECK(static_cast<int64_t>(spec.experts.size()) == experts_, "{} experts given, the config has {}",
            spec.experts.size(), experts_);
  const MoeShape shape{rows_, tokens_, hidden_, experts_, k_, inter_, groups};
  plan_ = plan_moe(moe_footprint(shape, ctx.alloc->in_use()), ctx.alloc->budget(),
                   ctx.options.host_candidates && groups > 0);
  if (plan_.host_candidates && ctx.options.max_cache_groups > 0)
    plan_.cache_groups = std::clamp<int64_t>(ctx.options.max_cache_groups, 3, plan_.cache_groups);
  auto& a = *ctx_.alloc;
  const cudaStream_t s = ctx_.compute;
  auto make = [&](DType d, Shape shape) { return DeviceTensor(d, std::move(shape), a, s); };
  norm_ = exq::cuda::to_device(spec.norm, a, s);
  router_ = exq::cuda::to_device(spec.router, a, s);
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

void MoeRun::norm_row(int64_t r) {
  exq::cuda::rmsnorm(x_.view().slice0(r, r + 1).reshape({tokens_, hidden_}), norm_.view(), xn_.view(),
                     static_cast<float>(ctx_.config.rms_norm_eps), ctx_.compute);
}

void MoeRun::route(bool hessian) {
  const cudaStream_t s = ctx_.compute;
  const int64_t T = tokens_, H = hidden_, E = experts_;
  pass_spans_.begin(s);
  count_non_finite_cuda(f32(x_), x_.numel(), reinterpret_cast<unsigned long long*>(counters_.raw()) + 1, s);
  if (hessian) gate_hessian_ = std::make_unique<DeviceHessian>(H, gptq_ctx_);
  // Router logits of every row in f32 (the router stays fp16 in the output: its values are
  // exact in f32 here); the gate / up Hessian from the same normed rows.
  const float alpha = 1.0f, beta = 0.0f;
  for (int64_t r = 0; r < rows_; ++r) {
    norm_row(r);
    if (hessian) gate_hessian_->add_batch(xn_.view());
    ctx_.cublas.set_stream(s);
    CUBLAS_CHECK(cublasSgemm(ctx_.cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(E), static_cast<int>(T),
                             static_cast<int>(H), &alpha, f32(router_), static_cast<int>(H), f32(xn_),
                             static_cast<int>(H), &beta, f32(logits_) + r * T * E, static_cast<int>(E)));
  }
  pass_spans_.end(s);
  Tensor logits(DType::F32, {rows_ * T, E});
  exq::cuda::copy_to_host(logits_.view().reshape({rows_ * T, E}), logits, s);
  unsigned long long status[2] = {0, 0};
  CUDA_CHECK(cudaMemcpyAsync(status, counters_.raw(), sizeof(status), cudaMemcpyDeviceToHost, s));
  ctx_.host_sync(s, "MoE routes: router logits");
  EXQ_CHECK(status[1] == 0, "input states hold NaN/Inf ({} values)", status[1]);
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
    // granitemoe: the residual multiplier folded into the routing weights (the output is linear in them).
    const auto m = static_cast<float>(ctx_.config.residual_multiplier);
    std::transform(g.weight.begin(), g.weight.end(), weight.data<float>() + at, [m](float w) { return w * m; });
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

void MoeRun::expert_rows(int64_t r, int64_t e, const Views& w, DeviceHessian* h, float* out) {
  const int64_t n = count_[static_cast<size_t>(r)][static_cast<size_t>(e)];
  if (n == 0) return;
  const cudaStream_t s = ctx_.compute;
  const int64_t slot = r * tokens_ * k_ + first_[static_cast<size_t>(r)][static_cast<size_t>(e)];
  const int32_t* token = i32(route_token_) + slot;
  const int rows = static_cast<int>(n), H = static_cast<int>(hidden_);
  gather_rows_cuda(f32(xn_), token, f32(xg_), rows, H, s);
  scale_round_rows_cuda(f32(xg_), f16(xg16_), f32(xs_), rows, H, s);
  gemm(xg16_.view(), n, w[0], graw_.view());
  gemm(xg16_.view(), n, w[1], uraw_.view());
  // f32 act into graw (the down Hessian's input), fp16 row-scaled copy for the GEMM.
  swiglu_round_cuda(f32(graw_), f32(uraw_), f32(xs_), nullptr, nullptr, f32(graw_), f16(act16_), f32(as_), rows,
                    static_cast<int>(inter_), s);
  if (h) h->add_batch(graw_.view().slice0(0, n));
  gemm(act16_.view(), n, w[2], yraw_.view());
  scatter_add_rows_cuda(f32(yraw_), f32(as_), token, static_cast<const float*>(route_weight_.raw()) + slot, out, rows,
                        H, s);
}

void MoeRun::expert_sum(int64_t r, const WeightOf& w) {
  const cudaStream_t s = ctx_.compute;
  norm_row(r);
  CUDA_CHECK(cudaMemsetAsync(acc_.raw(), 0, acc_.nbytes(), s));
  for (int64_t e = 0; e < experts_; ++e) expert_rows(r, e, w[static_cast<size_t>(e)], nullptr, f32(acc_));
}

DevicePreparedHessian MoeRun::prepared(DeviceHessian* h, int64_t in) {
  if (h && h->batches() > 0) return prepare_hessian(h->hessian(), percdamp_, gptq_ctx_);
  // An expert no token reached has no statistics: the identity Hessian, i.e. round to nearest
  // (the CPU engine's identity_hessian; any diagonal Hessian gives GPTQ that).
  DeviceTensor eye(DType::F32, {in, in}, *ctx_.alloc, ctx_.compute);
  identity_cuda(f32(eye), in, ctx_.compute);
  return prepare_hessian(eye.view(), percdamp_, gptq_ctx_);
}

void MoeRun::run_experts(const std::vector<std::vector<QuantOption>>* options, bool want_packed) {
  const cudaStream_t s = ctx_.compute;
  const int64_t n = tokens_ * hidden_;
  auto& a = *ctx_.alloc;
  CUDA_CHECK(cudaMemsetAsync(target_.raw(), 0, target_.nbytes(), s));
  if (options) {
    prepare_spans_.begin(s);
    gate_prepared_.emplace(prepared(gate_hessian_.get(), hidden_));
    gate_hessian_.reset();
    prepare_spans_.end(s);
    results_.clear();
    results_.resize(static_cast<size_t>(experts_));
    host_.clear();
    host_.resize(static_cast<size_t>(experts_));
  }
  for (int64_t e = 0; e < experts_; ++e) {
    pass_spans_.begin(s);
    std::unique_ptr<DeviceHessian> down;
    if (options) down = std::make_unique<DeviceHessian>(inter_, gptq_ctx_);
    {
      // fp16 matmul copies of this expert, converted on the device from a transient f32 upload.
      std::array<DeviceTensor, 3> w16;
      Views v;
      for (size_t c = 0; c < 3; ++c) {
        const TensorView& host = spec_.experts[static_cast<size_t>(e)][c];
        const DeviceTensor w32 = exq::cuda::to_device(host, a, s);
        w16[c] = DeviceTensor(DType::F16, host.shape(), a, s);
        f32_to_f16_cuda(f32(w32), f16(w16[c]), w32.numel(), s);
        v[c] = w16[c].view();
      }
      for (int64_t r = 0; r < rows_; ++r) {
        if (count_[static_cast<size_t>(r)][static_cast<size_t>(e)] == 0) continue;
        norm_row(r);
        expert_rows(r, e, v, down.get(), f32(target_) + r * n);
      }
    }
    pass_spans_.end(s);
    if (options) gptq_expert(e, *options, want_packed, std::move(down));
  }
  gate_prepared_.reset();
  pass_spans_.begin(s);
  for (int64_t r = 0; r < rows_; ++r)
    residual_out_cuda(f32(target_) + r * n, nullptr, nullptr, f32(x_) + r * n, f32(target_) + r * n, n, hidden_,
                      reinterpret_cast<unsigned long long*>(counters_.raw()), s);
  pass_spans_.end(s);
}

void MoeRun::gptq_expert(int64_t e, const std::vector<std::vector<QuantOption>>& options, bool want_packed,
                         std::unique_ptr<DeviceHessian> down) {
  const cudaStream_t s = ctx_.compute;
  auto& a = *ctx_.alloc;
  const auto ei = static_cast<size_t>(e);
  for (size_t c = 0; c < 3; ++c) {
    const TensorView& host = spec_.experts[ei][c];
    const DeviceTensor w32 = exq::cuda::to_device(host, a, s);
    std::optional<DevicePreparedHessian> own;
    if (c == 2) {
      prepare_spans_.begin(s);
      own.emplace(prepared(down.get(), inter_));
      down.reset();  // this expert's [inter, inter] sums are no longer needed
      prepare_spans_.end(s);
    }
    GptqResultHook to_host;
    if (plan_.host_candidates)
      // Each result's weight goes to pinned memory in stream order and its device block is freed
      // (reused in the same stream order): two results on the device at most.
      to_host = [&, c](size_t k, DeviceGptqResult& res) {
        res.weight.view().expect(DType::F16, host.shape(), fmt::format("GPTQ result of expert {}", e));
        auto& dst = host_[ei][c];
        if (dst.size() <= k) dst.resize(k + 1);
        dst[k] = ctx_.pinned.get(pinned_next_++, res.weight.nbytes());
        CUDA_CHECK(cudaMemcpyAsync(dst[k], res.weight.raw(), res.weight.nbytes(), cudaMemcpyDeviceToHost, s));
        res.weight = {};
      };
    gptq_spans_.begin(s);
    results_[ei][c] = gptq_quantize_batch(w32.view(), c == 2 ? *own : *gate_prepared_, options[c], want_packed,
                                          gptq_ctx_, to_host);
    gptq_spans_.end(s);
    EXQ_CHECK(results_[ei][c].size() == options[c].size(), "GPTQ of expert {} returned {} results for {} options", e,
              results_[ei][c].size(), options[c].size());
    timing.gptq_runs += static_cast<int>(options[c].size());
  }
}

void MoeRun::check_counters(const char* what, bool outputs) {
  unsigned long long c[2] = {0, 0};
  CUDA_CHECK(cudaMemcpyAsync(c, counters_.raw(), sizeof(c), cudaMemcpyDeviceToHost, ctx_.compute));
  ctx_.host_sync(ctx_.compute, what);
  EXQ_CHECK(c[1] == 0, "input states hold NaN/Inf ({} values)", c[1]);
  EXQ_CHECK(!outputs || c[0] == 0, "the block's output holds NaN/Inf ({} values)", c[0]);
}

void MoeRun::read_timing() {
  timing.reference_s = pass_spans_.total_seconds();
  timing.prepare_s = prepare_spans_.total_seconds();
  timing.gptq_s = gptq_spans_.total_seconds();
  timing.test_s = test_spans_.total_seconds();
}

void MoeRun::reference_gptq(const std::vector<std::vector<QuantOption>>& options, bool want_packed) {
  EXQ_ASSERT(options.size() == 3);
  route(true);
  run_experts(&options, want_packed);
  check_counters("MoE reference and GPTQ: status", true);
  read_timing();
}

Tensor MoeRun::target_to_host() const {
  Tensor t(DType::F32, states_.shape());
  exq::cuda::copy_to_host(target_.view(), t, ctx_.compute);
  ctx_.host_sync(ctx_.compute, "MoE reference: target download");
  return t;
}

void MoeRun::ensure_groups(const std::vector<std::vector<size_t>>& pick, const std::vector<size_t>& rows) {
  std::set<std::pair<size_t, size_t>> need;
  for (size_t i : rows)
    for (size_t c = 0; c < 3; ++c) need.emplace(c, pick[i][c]);
  EXQ_ASSERT(static_cast<int64_t>(need.size()) <= plan_.cache_groups);
  const cudaStream_t s = ctx_.compute;
  const int64_t cand = inter_ * hidden_;
  for (const auto& key : need) {
    if (std::find(cache_key_.begin(), cache_key_.end(), key) != cache_key_.end()) continue;
    size_t slot = cache_.size();
    if (static_cast<int64_t>(slot) < plan_.cache_groups) {
      cache_.emplace_back(DType::F16, Shape{experts_, cand}, *ctx_.alloc, s);
      cache_key_.push_back(key);
    } else {
      slot = 0;
      while (need.count(cache_key_[slot])) ++slot;  // table_chunks keeps need within the cache
      cache_key_[slot] = key;
    }
    const size_t bytes = static_cast<size_t>(cand) * sizeof(uint16_t);
    for (int64_t e = 0; e < experts_; ++e)
      CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(cache_[slot].raw()) + static_cast<size_t>(e) * bytes,
                                 host_[static_cast<size_t>(e)][key.first].at(key.second), bytes,
                                 cudaMemcpyHostToDevice, s));
    ++group_uploads_;
  }
}

MoeRun::WeightOf MoeRun::result_weights(const std::vector<size_t>& picks) {
  WeightOf w(static_cast<size_t>(experts_));
  for (size_t c = 0; c < 3; ++c) {
    const Shape& shape = spec_.experts[0][c].shape();
    if (!plan_.host_candidates) {
      for (size_t e = 0; e < w.size(); ++e) w[e][c] = results_[e][c].at(picks[c]).weight.view();
      continue;
    }
    const auto it = std::find(cache_key_.begin(), cache_key_.end(), std::make_pair(c, picks[c]));
    EXQ_ASSERT(it != cache_key_.end());
    const DeviceView group = cache_[static_cast<size_t>(it - cache_key_.begin())].view();
    for (size_t e = 0; e < w.size(); ++e)
      w[e][c] = group.slice0(static_cast<int64_t>(e), static_cast<int64_t>(e) + 1).reshape(shape);
  }
  return w;
}

std::vector<double> MoeRun::test_table(const std::vector<std::vector<size_t>>& pick, ErrorMetric metric) {
  const cudaStream_t s = ctx_.compute;
  const int64_t n = tokens_ * hidden_;
  const size_t n_table = pick.size();
  const int blocks = error_blocks(n);
  auto doubles = [&](int64_t count) {
    return DeviceTensor(DType::U8, {count * static_cast<int64_t>(sizeof(double))}, *ctx_.alloc, s);
  };
  const DeviceTensor partials = doubles(static_cast<int64_t>(n_table) * blocks * 2);
  const DeviceTensor sums = doubles(static_cast<int64_t>(n_table) * rows_ * 2);
  std::vector<std::vector<size_t>> chunks;
  if (plan_.host_candidates) {
    chunks = table_chunks(pick, plan_.cache_groups);
  } else {
    chunks.emplace_back(n_table);
    std::iota(chunks[0].begin(), chunks[0].end(), size_t{0});
  }
  test_spans_.begin(s);
  for (const std::vector<size_t>& chunk : chunks) {
    if (plan_.host_candidates) ensure_groups(pick, chunk);
    std::vector<WeightOf> w;
    for (size_t i : chunk) w.push_back(result_weights(pick[i]));
    for (int64_t r = 0; r < rows_; ++r) {
      for (size_t j = 0; j < chunk.size(); ++j) {
        expert_sum(r, w[j]);
        error_partials_cuda(f32(acc_), nullptr, nullptr, f32(x_) + r * n, f32(target_) + r * n, nullptr, n, hidden_,
                            f64(partials) + chunk[j] * static_cast<size_t>(blocks) * 2, s, reduce_of(metric));
      }
      for (size_t i : chunk)
        error_finalize_cuda(f64(partials) + i * static_cast<size_t>(blocks) * 2, 1, blocks,
                            f64(sums) + (i * static_cast<size_t>(rows_) + static_cast<size_t>(r)) * 2, 2, s);
    }
  }
  test_spans_.end(s);
  std::vector<double> host(n_table * static_cast<size_t>(rows_) * 2);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), sums.raw(), host.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
  ctx_.host_sync(s, "MoE table errors");
  read_timing();
  return table_errors(host, n_table, rows_, metric);
}

double MoeRun::forward_quantized(const TensorView& output) {
  EXQ_ASSERT(output.dtype() == DType::F32 && output.shape() == states_.shape() && output.is_contiguous());
  const cudaStream_t s = ctx_.compute;
  const int64_t n = tokens_ * hidden_;
  const int blocks = error_blocks(n);
  const DeviceTensor partials(DType::U8, {blocks * 2 * static_cast<int64_t>(sizeof(double))}, *ctx_.alloc, s);
  const DeviceTensor sums(DType::U8, {rows_ * 2 * static_cast<int64_t>(sizeof(double))}, *ctx_.alloc, s);
  // One row on the device at a time, copied in stream order into pinned memory (the budget
  // holds the states once, not a third copy).
  const DeviceTensor out(DType::F32, {tokens_, hidden_}, *ctx_.alloc, s);
  auto* pinned = static_cast<float*>(ctx_.readback(output.nbytes()));
  const std::vector<std::vector<size_t>> first{{0, 0, 0}};
  test_spans_.begin(s);
  if (plan_.host_candidates) ensure_groups(first, {0});
  const WeightOf w = result_weights(first[0]);
  for (int64_t r = 0; r < rows_; ++r) {
    expert_sum(r, w);
    error_partials_cuda(f32(acc_), nullptr, nullptr, f32(x_) + r * n, f32(target_) + r * n, f32(out), n, hidden_,
                        f64(partials), s, ErrorReduce::kRow);
    error_finalize_cuda(f64(partials), 1, blocks, f64(sums) + r * 2, 2, s);
    CUDA_CHECK(cudaMemcpyAsync(pinned + r * n, out.raw(), out.nbytes(), cudaMemcpyDeviceToHost, s));
  }
  test_spans_.end(s);
  std::vector<double> host(static_cast<size_t>(rows_) * 2);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), sums.raw(), host.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
  ctx_.host_sync(s, "MoE quantized output");
  std::memcpy(output.raw(), pinned, output.nbytes());
  read_timing();
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows_; ++r) {
    num += host[static_cast<size_t>(2 * r)];
    den += host[static_cast<size_t>(2 * r + 1)];
  }
  return relative(num, den);
}

void MoeRun::forward(const TensorView& output) {
  route(false);
  run_experts(nullptr, false);
  exq::cuda::copy_to_host(target_.view(), output, ctx_.compute);
  // Outputs unchecked: the pipeline's state check clamps the rare Inf the original run clamped.
  check_counters("MoE forward: output and status", false);
}

}  // namespace exq::quant::cuda
