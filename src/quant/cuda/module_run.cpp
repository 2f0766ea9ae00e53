#include "quant/cuda/module_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "quant/cuda/engine_kernels.h"
#include "quant/cuda/gptq_batch.h"
#include "quant/cuda/table_errors.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::Event;

constexpr int64_t kPrefetchRows = 2;             // rows staged ahead of the one computing
constexpr size_t kCheckChunk = size_t{1} << 20;  // bytes per thread-pool task while staging

size_t rounded(size_t bytes) { return CachingAllocator::round_size(bytes); }

// True when every value is exactly representable in fp16 (so an F16 copy loses nothing).
bool f16_exact(const float* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t ax = float_to_bits(p[i]) & 0x7fffffffu;
    const uint32_t exp = ax >> 23;
    if (ax == 0) continue;
    if (exp >= 113 && exp <= 142) {  // fp16 normal range [2^-14, 2^16)
      if ((ax & 0x1fffu) != 0 || ax > 0x477fe000u) return false;
    } else if (exp < 113) {  // fp16 subnormals: rare, exact round trip
      if (half_to_float(float_to_half(p[i])) != p[i]) return false;
    } else {
      return false;
    }
  }
  return true;
}

constexpr size_t kCounterBytes = 2 * sizeof(unsigned long long);  // outputs, inputs
constexpr size_t kStatusBytes = kCounterBytes + 2 * kPrepareStatusInts * sizeof(int);

double seconds_between(const Event& a, const Event& b) { return Event::elapsed_ms(a, b) * 1e-3; }

DeviceTensor doubles(int64_t n, EngineContext& ctx) {
  return DeviceTensor(DType::U8, {n * static_cast<int64_t>(sizeof(double))}, *ctx.alloc,
                      ctx.compute);
}

double* as_doubles(const DeviceTensor& t) { return static_cast<double*>(t.raw()); }

// The rotary table of the block (gemma3's sliding-window layers: the local one), cos or sin.
DeviceView rope_of(const EngineContext& ctx, const BlockSpec& spec, bool cos) {
  if (!spec.local_rope) return cos ? ctx.rope_cos.view() : ctx.rope_sin.view();
  EXQ_CHECK(!ctx.rope_local_cos.empty(), "a local rotary layer without rope_local_theta");
  return cos ? ctx.rope_local_cos.view() : ctx.rope_local_sin.view();
}

ErrorReduce reduce_of(ErrorMetric metric) {
  switch (metric) {
    case ErrorMetric::kRow: return ErrorReduce::kRow;
    case ErrorMetric::kSkip0: return ErrorReduce::kSkip0;
    case ErrorMetric::kToken: return ErrorReduce::kToken;
  }
  return ErrorReduce::kRow;
}

}  // namespace

ModuleRun::ModuleRun(EngineContext& ctx, const BlockSpec& spec, const TensorView& states,
                     const std::vector<int64_t>& results_per_linear, int64_t table_rows,
                     bool with_output, float percdamp)
    : ctx_(ctx),
      spec_(spec),
      states_(states),
      tokens_(states.dim(1)),
      hidden_(states.dim(2)),
      percdamp_(percdamp),
      gptq_ctx_{ctx.alloc.get(), ctx.compute.get(), &ctx.cublas, ctx.cusolver.get(),
                [&ctx](cudaStream_t s, const char* why) { ctx.host_sync(s, why); }},
      runner_(spec.shape, rope_of(ctx, spec, true), rope_of(ctx, spec, false), *ctx.alloc,
              ctx.compute, ctx.cublas),
      status_(DType::U8, {static_cast<int64_t>(kStatusBytes)}, *ctx.alloc, ctx.compute) {
  CUDA_CHECK(cudaMemsetAsync(status_.raw(), 0, status_.nbytes(), ctx_.compute));
  upload_weights(/*keep_f32=*/true);
  plan_ = make_plan(results_per_linear, table_rows, with_output);
  rows_ = std::make_unique<RowStore>(ctx_, states_, plan_.slots);
}

ModuleRun::ModuleRun(EngineContext& ctx, const BlockSpec& spec, const TensorView& states,
                     ForwardOnly)
    : ctx_(ctx),
      spec_(spec),
      states_(states),
      tokens_(states.dim(1)),
      hidden_(states.dim(2)),
      percdamp_(0.0f),
      gptq_ctx_{ctx.alloc.get(), ctx.compute.get(), &ctx.cublas, ctx.cusolver.get(),
                [&ctx](cudaStream_t s, const char* why) { ctx.host_sync(s, why); }},
      runner_(spec.shape, rope_of(ctx, spec, true), rope_of(ctx, spec, false), *ctx.alloc,
              ctx.compute, ctx.cublas),
      status_(DType::U8, {static_cast<int64_t>(kStatusBytes)}, *ctx.alloc, ctx.compute) {
  CUDA_CHECK(cudaMemsetAsync(status_.raw(), 0, status_.nbytes(), ctx_.compute));
  upload_weights(/*keep_f32=*/false);
  plan_ = plan_vram(footprint(), states_.dim(0), ctx_.alloc->budget(),
                    ctx_.options.max_rows_on_device);
  rows_ = std::make_unique<RowStore>(ctx_, states_, plan_.slots);
}

ModuleRun::~ModuleRun() {
  try {
    // After an error, pending downloads may point at host memory that is being unwound.
    ctx_.ring.discard();
  } catch (...) {  // the device failed; nothing more to order
  }
}

DeviceTensor ModuleRun::upload_f32(const TensorView& host, bool* exact) {
  DeviceTensor d(DType::F32, host.shape(), *ctx_.alloc, ctx_.compute);
  Event after(false), ready(false);
  after.record(ctx_.compute);  // a reused block's earlier users come first
  std::atomic<bool> ok{true};
  const char* src = static_cast<const char*>(host.raw());
  ctx_.ring.upload(
      d.raw(), host.nbytes(),
      [&](void* dst, size_t offset, size_t bytes) {
        const auto chunks = static_cast<int64_t>((bytes + kCheckChunk - 1) / kCheckChunk);
        parallel_for(chunks, [&](int64_t begin, int64_t end) {
          for (int64_t c = begin; c < end; ++c) {
            const size_t b = static_cast<size_t>(c) * kCheckChunk;
            const size_t n = std::min(kCheckChunk, bytes - b);
            std::memcpy(static_cast<char*>(dst) + b, src + offset + b, n);
            if (exact && ok.load(std::memory_order_relaxed) &&
                !f16_exact(reinterpret_cast<const float*>(src + offset + b), n / sizeof(float)))
              ok.store(false);
          }
        });
      },
      &after);
  ctx_.ring.record(ready);
  ready.wait_on(ctx_.compute);
  if (exact) *exact = ok.load();
  return d;
}

void ModuleRun::upload_weights(bool keep_f32) {
  norm_ = upload_f32(spec_.norm, nullptr);
  if (!spec_.q_norm.empty()) {
    q_norm_ = upload_f32(spec_.q_norm, nullptr);
    k_norm_ = upload_f32(spec_.k_norm, nullptr);
    runner_.set_qk_norm(q_norm_.view(), k_norm_.view());
  }
  if (!spec_.post_norm.empty()) post_norm_ = upload_f32(spec_.post_norm, nullptr);
  for (const LinearSpec& l : spec_.linears) {
    DeviceLinear d;
    bool exact = true;
    DeviceTensor w32 = upload_f32(l.weight, keep_f32 ? &exact : nullptr);
    d.w16 = DeviceTensor(DType::F16, l.weight.shape(), *ctx_.alloc, ctx_.compute);
    f32_to_f16_cuda(w32.view().data<float>(), static_cast<__half*>(d.w16.raw()), w32.numel(),
                    ctx_.compute);
    if (!exact) d.w32 = std::move(w32);  // GPTQ must see the weights as they are
    if (!l.bias.empty()) d.bias = upload_f32(l.bias, nullptr);
    weights_.push_back(std::move(d));
  }
}

ModuleFootprint ModuleRun::footprint() const {
  ModuleFootprint f;
  f.weights = ctx_.alloc->in_use();  // persistent buffers and the weights just uploaded
  f.persistent = ctx_.persistent_bytes();
  f.scratch = spec_.shape.scratch_bytes(tokens_);
  f.row_bytes = rounded(static_cast<size_t>(tokens_ * hidden_) * sizeof(float));
  return f;
}

VramPlan ModuleRun::make_plan(const std::vector<int64_t>& results_per_linear, int64_t table_rows,
                              bool with_output) const {
  EXQ_ASSERT(results_per_linear.size() == spec_.linears.size());
  const int64_t R = states_.dim(0);
  ModuleFootprint f = footprint();
  const int64_t in0 = spec_.shape.hidden, in1 = spec_.shape.mid;
  for (int64_t in : {in0, in1}) {
    const size_t sq = static_cast<size_t>(in) * static_cast<size_t>(in) * 4;
    f.hessians += 2 * rounded(sq);
    f.prepared += rounded(sq) + 2 * rounded(static_cast<size_t>(in) * 4);  // U, perm, invperm
  }
  for (size_t c = 0; c < spec_.linears.size(); ++c) {
    const int64_t out = spec_.linears[c].weight.dim(0), in = spec_.linears[c].weight.dim(1);
    const size_t one = rounded(static_cast<size_t>(out) * static_cast<size_t>(in) * 2);
    f.candidates += static_cast<size_t>(results_per_linear[c]) * one;
    f.candidate_max = std::max(f.candidate_max, one);
    f.candidate_count += results_per_linear[c];
    f.gptq = std::max(f.gptq, gptq_scratch_estimate(out, in));
  }
  f.linears = static_cast<int64_t>(spec_.linears.size());
  f.kept = rounded(static_cast<size_t>(spec_.norm.nbytes()));
  for (const TensorView* n : {&spec_.q_norm, &spec_.k_norm, &spec_.post_norm})  // qwen3, gemma
    f.kept += n->empty() ? 0 : rounded(static_cast<size_t>(n->nbytes()));
  for (const DeviceLinear& d : weights_) f.kept += d.bias.empty() ? 0 : rounded(d.bias.nbytes());
  const auto blocks = static_cast<size_t>(error_blocks(tokens_ * hidden_));
  const auto tables = static_cast<size_t>(std::max<int64_t>(table_rows, 1));
  f.scratch += rounded(tables * blocks * 16) + rounded(tables * static_cast<size_t>(R) * 16);
  if (with_output) f.outputs = 2 * f.row_bytes;
  return plan_vram(f, R, ctx_.alloc->budget(), ctx_.options.max_rows_on_device,
                   ctx_.options.host_candidates);
}

template <typename Body, typename After>
void ModuleRun::for_each_row(const Tensor* host_target, bool writes_target, Body&& body,
                             After&& after) {
  const int64_t R = rows_->rows();
  const int64_t depth = std::min(rows_->slots() - 1, kPrefetchRows);
  for (int64_t r = 0; r < R; ++r) {
    rows_->stage(r, host_target);
    rows_->acquire(r);
    ctx_.compute_spans.begin(ctx_.compute);
    body(r);
    ctx_.compute_spans.end(ctx_.compute);
    rows_->release_row(r, writes_target);
    after(r);
    for (int64_t j = r + 1; j <= std::min(r + depth, R - 1); ++j) rows_->stage(j, host_target);
  }
}

void ModuleRun::weight_views(std::vector<DeviceView>& w, std::vector<DeviceView>& bias,
                             DeviceView& w_last) const {
  for (size_t c = 0; c + 1 < weights_.size(); ++c) {
    w.push_back(weights_[c].w16.view());
    bias.push_back(weights_[c].bias.view());
  }
  w_last = weights_.back().w16.view();
}

ModuleRun::LastOut ModuleRun::last(const DeviceView& w_last, const float* bias_last) {
  runner_.last(w_last);
  const bool scaled = runner_.shape().residual_scale != 1.0f;  // granite
  if (post_norm_.empty() && !scaled) return {runner_.y().data<float>(), runner_.y_scale(), bias_last};
  if (!post_norm_.empty()) runner_.post_norm(post_norm_.view(), bias_last);
  if (scaled) runner_.scale_output(post_norm_.empty() ? bias_last : nullptr, !post_norm_.empty());
  return {runner_.y().data<float>(), nullptr, nullptr};
}

void ModuleRun::forward_row(const DeviceView& x, const DeviceView& t,
                            std::span<const DeviceView> w, std::span<const DeviceView> bias,
                            const DeviceView& w_last, unsigned long long* counter) {
  runner_.norm(x, norm_.view());
  runner_.prefix(w, bias, !ctx_.options.exact_attention, /*keep_mid=*/true);
  const DeviceView b = last_bias();
  const LastOut y = last(w_last, b.empty() ? nullptr : b.data<float>());
  residual_out_cuda(y.y, y.y_scale, y.bias, x.data<float>(), t.data<float>(), tokens_ * hidden_,
                    hidden_, counter, ctx_.compute);
}

void ModuleRun::begin_rows() {
  runner_.reserve(tokens_);
  rows_->allocate();
  CUDA_CHECK(cudaMemsetAsync(ctx_.non_finite.raw(), 0, ctx_.non_finite.nbytes(), ctx_.compute));
}

void ModuleRun::finish_rows() {
  CUDA_CHECK(cudaMemcpyAsync(status_.raw(), ctx_.output_counter(), kCounterBytes,
                             cudaMemcpyDeviceToDevice, ctx_.compute));
}

int* ModuleRun::factor_status(int g) const {
  return reinterpret_cast<int*>(static_cast<char*>(status_.raw()) + kCounterBytes) +
         g * kPrepareStatusInts;
}

void ModuleRun::check_status(const char* status, bool check_outputs) {
  unsigned long long bad[2];  // outputs, inputs
  std::memcpy(bad, status, sizeof(bad));
  if (bad[1] != 0) rows_->throw_non_finite();
  EXQ_CHECK(!check_outputs || bad[0] == 0, "reference output holds NaN/Inf ({} values)", bad[0]);
  int infos[2][kPrepareStatusInts];
  std::memcpy(infos, status + kCounterBytes, sizeof(infos));
  failed_ = 0;
  for (unsigned g = 0; g < 2; ++g)
    if (std::any_of(std::begin(infos[g]), std::end(infos[g]), [](int v) { return v != 0; }))
      failed_ |= 1u << g;
}

std::vector<double> ModuleRun::finish(const DeviceTensor* sums, const char* why,
                                      bool check_outputs) {
  const size_t sum_bytes = sums ? sums->nbytes() : 0;
  char* host = static_cast<char*>(ctx_.readback(sum_bytes + status_.nbytes()));
  if (sum_bytes > 0)
    CUDA_CHECK(cudaMemcpyAsync(host, sums->raw(), sum_bytes, cudaMemcpyDeviceToHost,
                               ctx_.compute));
  CUDA_CHECK(cudaMemcpyAsync(host + sum_bytes, status_.raw(), status_.nbytes(),
                             cudaMemcpyDeviceToHost, ctx_.compute));
  ctx_.finish_module(why);
  if (referenced_) {
    timing.reference_s = seconds_between(reference_begin_, reference_end_);
    timing.hessian_s = hessian_spans_.total_seconds();
  }
  timing.prepare_s = prepare_spans_.total_seconds();
  timing.gptq_s = gptq_spans_.total_seconds();
  if (tested_) timing.test_s = seconds_between(test_begin_, test_end_);
  std::vector<double> out(sum_bytes / sizeof(double));
  std::memcpy(out.data(), host, sum_bytes);
  check_status(host + sum_bytes, check_outputs);
  return out;
}

void ModuleRun::forward(const TensorView& output) {
  output.expect(DType::F32, states_.shape(), "module output");
  EXQ_CHECK(output.is_contiguous(), "module output must be contiguous");
  begin_rows();
  reference_begin_.record(ctx_.compute);
  std::vector<DeviceView> w, bias;
  DeviceView w_last;
  weight_views(w, bias, w_last);
  unsigned long long* counter = ctx_.output_counter();
  for_each_row(
      nullptr, true,
      [&](int64_t r) { forward_row(rows_->x(r), rows_->target(r), w, bias, w_last, counter); },
      [&](int64_t r) { rows_->download_target(r, output); });
  finish_rows();
  reference_end_.record(ctx_.compute);
  referenced_ = true;
  finish(nullptr, "forward: module end", /*check_outputs=*/false);
}

void ModuleRun::reference(Tensor* host_target) {
  const Tensor* dst = host_target;
  if (!dst && !plan_.resident) {
    own_target_ = Tensor(DType::F32, states_.shape());
    dst = &own_target_;
  }
  target_host_ = dst;
  hessians_[0] = std::make_unique<DeviceHessian>(spec_.shape.hidden, gptq_ctx_);
  hessians_[1] = std::make_unique<DeviceHessian>(spec_.shape.mid, gptq_ctx_);
  begin_rows();
  reference_begin_.record(ctx_.compute);
  std::vector<DeviceView> w, bias;
  DeviceView w_last;
  weight_views(w, bias, w_last);
  unsigned long long* counter = ctx_.output_counter();
  for_each_row(
      nullptr, true,
      [&](int64_t r) {
        forward_row(rows_->x(r), rows_->target(r), w, bias, w_last, counter);
        hessian_spans_.begin(ctx_.compute);
        hessians_[0]->add_batch(runner_.xn());
        hessians_[1]->add_batch(runner_.mid());
        hessian_spans_.end(ctx_.compute);
      },
      [&](int64_t r) {
        if (dst) rows_->download_target(r, *dst);
      });
  finish_rows();
  reference_end_.record(ctx_.compute);
  referenced_ = true;
  if (!plan_.resident && dst) {
    // Streamed states: later passes stage the targets from the host copy, so every download
    // must have landed there first (a wait the resident path does not need).
    Event copies(false);
    ctx_.ring.record(copies);
    ctx_.host_sync(copies, "streamed states: reference targets back on the host");
    ctx_.ring.flush();
  }
}

std::vector<double> ModuleRun::test_table(const std::vector<std::vector<size_t>>& pick,
                                          ErrorMetric metric) {
  if (plan_.host_candidates) return test_table_host(pick, metric);
  const ErrorReduce reduce = reduce_of(metric);
  test_begin_.record(ctx_.compute);
  const size_t L = spec_.linears.size(), n_table = pick.size();
  const int64_t R = rows_->rows(), n = tokens_ * hidden_;
  // Table rows grouped by the options of every linear but the last, first-seen order.
  std::vector<std::vector<size_t>> groups;
  std::map<std::vector<size_t>, size_t> group_of;
  for (size_t i = 0; i < n_table; ++i) {
    EXQ_ASSERT(pick[i].size() == L);
    const std::vector<size_t> key(pick[i].begin(), pick[i].end() - 1);
    const auto [it, added] = group_of.try_emplace(key, groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  const int blocks = error_blocks(n);
  const DeviceTensor partials = doubles(static_cast<int64_t>(n_table) * blocks * 2, ctx_);
  const DeviceTensor sums = doubles(static_cast<int64_t>(n_table) * R * 2, ctx_);
  const DeviceView b = last_bias();
  const float* bias_last = b.empty() ? nullptr : b.data<float>();
  std::vector<DeviceView> w(L - 1), bias(L - 1);
  for (size_t c = 0; c + 1 < L; ++c) bias[c] = weights_[c].bias.view();

  for_each_row(
      target_host_, false,
      [&](int64_t r) {
        const DeviceView x = rows_->x(r), t = rows_->target(r);
        runner_.norm(x, norm_.view());
        for (const std::vector<size_t>& group : groups) {
          for (size_t c = 0; c + 1 < L; ++c) w[c] = results_[c][pick[group[0]][c]].weight.view();
          runner_.prefix(w, bias, /*fast=*/true, /*keep_mid=*/false);
          for (size_t i : group) {
            const LastOut y = last(results_[L - 1][pick[i][L - 1]].weight.view(), bias_last);
            error_partials_cuda(y.y, y.y_scale, y.bias, x.data<float>(), t.data<float>(), nullptr,
                                n, hidden_,
                                as_doubles(partials) + i * static_cast<size_t>(blocks) * 2,
                                ctx_.compute, reduce);
          }
        }
        error_finalize_cuda(as_doubles(partials), static_cast<int>(n_table), blocks,
                            as_doubles(sums) + r * 2, R * 2, ctx_.compute);
      },
      [](int64_t) {});
  test_end_.record(ctx_.compute);
  tested_ = true;
  return table_errors(finish(&sums, "module end: table errors and status", true), n_table, R,
                      metric);
}

DeviceView ModuleRun::result_view(size_t linear, const DeviceTensor& buffer) const {
  return DeviceView(buffer.raw(), DType::F16, spec_.linears[linear].weight.shape());
}

std::vector<double> ModuleRun::test_table_host(const std::vector<std::vector<size_t>>& pick,
                                               ErrorMetric metric) {
  const ErrorReduce reduce = reduce_of(metric);
  test_begin_.record(ctx_.compute);
  const size_t L = spec_.linears.size(), n_table = pick.size();
  const int64_t R = rows_->rows(), n = tokens_ * hidden_;
  size_t total = 0, max_bytes = 0;
  for (size_t c = 0; c < L; ++c) {
    total += host_results_[c].size();
    max_bytes = std::max(max_bytes, static_cast<size_t>(spec_.linears[c].weight.numel()) * 2);
  }
  for (const std::vector<size_t>& p : pick) {
    EXQ_ASSERT(p.size() == L);
    for (size_t c = 0; c < L; ++c) EXQ_ASSERT(p[c] < host_results_[c].size());
  }
  using Key = std::pair<size_t, size_t>;  // (linear, option)
  const auto slots = static_cast<size_t>(
      std::min<int64_t>(plan_.cache_slots, static_cast<int64_t>(std::max(total, L))));
  const std::vector<std::vector<size_t>> chunks =
      table_chunks(pick, static_cast<int64_t>(slots));
  const int blocks = error_blocks(n);
  const DeviceTensor partials = doubles(static_cast<int64_t>(n_table) * blocks * 2, ctx_);
  const DeviceTensor sums = doubles(static_cast<int64_t>(n_table) * R * 2, ctx_);
  // Fixed-size buffers, so swapping candidates never fragments the budget.
  std::vector<DeviceTensor> cache;
  for (size_t s = 0; s < slots; ++s)
    cache.emplace_back(DType::U8, Shape{static_cast<int64_t>(max_bytes)}, *ctx_.alloc,
                       ctx_.compute);
  std::vector<Key> holder(slots, Key{SIZE_MAX, SIZE_MAX});
  std::map<Key, size_t> slot_of;
  const DeviceView b = last_bias();
  const float* bias_last = b.empty() ? nullptr : b.data<float>();
  std::vector<DeviceView> w(L - 1), bias(L - 1);
  for (size_t c = 0; c + 1 < L; ++c) bias[c] = weights_[c].bias.view();

  for (const std::vector<size_t>& chunk : chunks) {
    std::set<Key> need;
    for (size_t i : chunk)
      for (size_t c = 0; c < L; ++c) need.emplace(c, pick[i][c]);
    for (size_t s = 0; s < slots; ++s)
      if (holder[s].first != SIZE_MAX && !need.count(holder[s])) {
        slot_of.erase(holder[s]);
        holder[s] = Key{SIZE_MAX, SIZE_MAX};
      }
    size_t free_slot = 0;
    for (const Key& key : need) {
      if (slot_of.count(key)) continue;
      while (holder[free_slot].first != SIZE_MAX) ++free_slot;  // need.size() <= slots
      const void* src = host_results_[key.first][key.second];
      // Stream order: earlier chunks' kernels reading this buffer come first.
      CUDA_CHECK(cudaMemcpyAsync(cache[free_slot].raw(), src,
                                 static_cast<size_t>(spec_.linears[key.first].weight.numel()) * 2,
                                 cudaMemcpyHostToDevice, ctx_.compute));
      holder[free_slot] = key;
      slot_of[key] = free_slot;
    }
    const auto view = [&](size_t c, size_t k) { return result_view(c, cache[slot_of.at({c, k})]); };
    for_each_row(
        target_host_, false,
        [&](int64_t r) {
          const DeviceView x = rows_->x(r), t = rows_->target(r);
          runner_.norm(x, norm_.view());
          // The chunk is sorted by picks: equal prefixes are neighbours and share one pass.
          for (size_t j = 0; j < chunk.size(); ++j) {
            const std::vector<size_t>& p = pick[chunk[j]];
            if (j == 0 || !std::equal(p.begin(), p.end() - 1, pick[chunk[j - 1]].begin())) {
              for (size_t c = 0; c + 1 < L; ++c) w[c] = view(c, p[c]);
              runner_.prefix(w, bias, /*fast=*/true, /*keep_mid=*/false);
            }
            const LastOut y = last(view(L - 1, p[L - 1]), bias_last);
            error_partials_cuda(y.y, y.y_scale, y.bias, x.data<float>(), t.data<float>(), nullptr,
                                n, hidden_,
                                as_doubles(partials) + chunk[j] * static_cast<size_t>(blocks) * 2,
                                ctx_.compute, reduce);
          }
          for (size_t i : chunk)
            error_finalize_cuda(
                as_doubles(partials) + i * static_cast<size_t>(blocks) * 2, 1, blocks,
                as_doubles(sums) + (i * static_cast<size_t>(R) + static_cast<size_t>(r)) * 2, 2,
                ctx_.compute);
        },
        [](int64_t) {});
  }
  test_end_.record(ctx_.compute);
  tested_ = true;
  return table_errors(finish(&sums, "module end: table errors and status", true), n_table, R,
                      metric);
}

double ModuleRun::forward_quantized(Tensor& output) {
  test_begin_.record(ctx_.compute);
  const size_t L = spec_.linears.size();
  const int64_t R = rows_->rows(), n = tokens_ * hidden_;
  output.view().expect(DType::F32, states_.shape(), "quantized module output");
  const int blocks = error_blocks(n);
  const DeviceTensor partials = doubles(static_cast<int64_t>(blocks) * 2, ctx_);
  const DeviceTensor sums = doubles(R * 2, ctx_);
  DeviceTensor out[2] = {DeviceTensor(DType::F32, {tokens_, hidden_}, *ctx_.alloc, ctx_.compute),
                         DeviceTensor(DType::F32, {tokens_, hidden_}, *ctx_.alloc, ctx_.compute)};
  Event copied[2] = {Event(false), Event(false)};
  for (Event& e : copied) ctx_.ring.record(e);
  const DeviceView b = last_bias();
  const float* bias_last = b.empty() ? nullptr : b.data<float>();
  for (size_t c = 0; plan_.host_candidates && c < L; ++c) {  // bring back option 0
    EXQ_ASSERT(!results_[c].empty() && !host_results_[c].empty());
    DeviceTensor& wq = results_[c][0].weight;
    if (!wq.empty()) continue;
    wq = DeviceTensor(DType::F16, spec_.linears[c].weight.shape(), *ctx_.alloc, ctx_.compute);
    CUDA_CHECK(cudaMemcpyAsync(wq.raw(), host_results_[c][0], wq.nbytes(),
                               cudaMemcpyHostToDevice, ctx_.compute));
  }
  std::vector<DeviceView> w, bias;
  for (size_t c = 0; c + 1 < L; ++c) {
    EXQ_ASSERT(!results_[c].empty());
    w.push_back(results_[c][0].weight.view());
    bias.push_back(weights_[c].bias.view());
  }
  const DeviceView w_last = results_[L - 1].at(0).weight.view();
  const size_t row_bytes = static_cast<size_t>(n) * sizeof(float);

  for_each_row(
      target_host_, false,
      [&](int64_t r) {
        const DeviceView x = rows_->x(r), t = rows_->target(r);
        copied[r % 2].wait_on(ctx_.compute);  // the buffer's previous row has left
        runner_.norm(x, norm_.view());
        // keep_mid as in forward_row(): the MLP's stored and recomputed activations need not
        // round alike, and forward() must reproduce this output bit for bit.
        runner_.prefix(w, bias, !ctx_.options.exact_attention, /*keep_mid=*/true);
        const LastOut y = last(w_last, bias_last);
        error_partials_cuda(y.y, y.y_scale, y.bias, x.data<float>(), t.data<float>(),
                            out[r % 2].view().data<float>(), n, hidden_, as_doubles(partials),
                            ctx_.compute);
        error_finalize_cuda(as_doubles(partials), 1, blocks, as_doubles(sums) + r * 2, 2,
                            ctx_.compute);
      },
      [&](int64_t r) {
        Event written(false);
        written.record(ctx_.compute);
        ctx_.ring.download(out[r % 2].raw(),
                           static_cast<char*>(output.raw()) + static_cast<size_t>(r) * row_bytes,
                           row_bytes, &written);
        ctx_.ring.record(copied[r % 2]);
      });
  test_end_.record(ctx_.compute);
  tested_ = true;
  const std::vector<double> s = finish(&sums, "quantize: module end", true);
  double num = 0.0, den = 0.0;
  for (int64_t r = 0; r < R; ++r) {
    num += s[static_cast<size_t>(2 * r)];
    den += s[static_cast<size_t>(2 * r + 1)];
  }
  return relative(num, den);
}

}  // namespace exq::quant::cuda
