#include "quant/cuda/cuda_engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "core/error.h"
#include "core/half.h"
#include "memory/cuda/overlap.h"
#include "quant/cuda/engine_context.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/head_step.h"
#include "quant/cuda/module_run.h"
#include "quant/cuda/moe_run.h"
#include "model/llama_weights.h"

namespace exq::quant::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs f, prefixing any exq::Error with the module ("measure model.layers.0.mlp: ...").
template <typename F>
auto in_module(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", what, e.message()), e.context());
  }
}

io::Exl2Packed pack_with_bias(io::Exl2Linear layer, const TensorView& bias) {
  if (!bias.empty()) {
    layer.bias.resize(static_cast<size_t>(bias.numel()));
    const float* b = bias.data<float>();
    for (size_t i = 0; i < layer.bias.size(); ++i) layer.bias[i] = float_to_half(b[i]);
  }
  return io::pack_exl2(layer);
}

// `v` as a contiguous F32 view: itself, or a widened copy kept in `keep` (F16/BF16 weights
// widen exactly, as the layer loader widens them).
TensorView as_f32(const TensorView& v, std::vector<Tensor>& keep) {
  if (v.empty() || (v.dtype() == DType::F32 && v.is_contiguous())) return v;
  keep.push_back(to_f32(v));  // moving a Tensor keeps its data where it is
  return keep.back().view();
}

// After a module's pass: false when every factorization held; else true, with `damping` the
// checked rerun's (one step further for each Hessian whose factorization failed).
bool retry_damping(const ModuleRun& run, ModuleRun::Damping& damping, int& retries) {
  const unsigned failed = run.failed_factorizations();
  if (failed == 0) return false;
  EXQ_ASSERT(!damping.checked);
  damping.checked = true;
  for (unsigned g = 0; g < 2; ++g) damping.steps[g] += (failed >> g) & 1u;
  ++retries;
  return true;
}

class CudaEngine final : public Engine {
 public:
  CudaEngine(const io::ModelConfig& config, int64_t max_tokens, const CudaEngineOptions& options)
      : ctx_(config, max_tokens, options) {}

  std::string name() const override { return "cuda"; }

  ModuleResult measure_attention(const LayerF32& layer, const TensorView& states,
                                 const std::string& key, const MeasureOptions& options) override {
    if (!options.causal)  // MeasureOptions::causal = false is a CPU-only exllamav2 reproduction
      throw Error(fmt::format("{}: the CUDA engine measures causal attention only; "
                              "MeasureOptions::causal = false needs the CPU engine", key));
    return measure(attention_spec(layer), states, key,
                   table_rows(options.attn_table, attn_option_table()), options);
  }
  ModuleResult measure_mlp(const LayerF32& layer, const TensorView& states, const std::string& key,
                           const MeasureOptions& options) override {
    return measure(mlp_spec(layer), states, key, table_rows(options.mlp_table, mlp_option_table()),
                   options);
  }
  QuantStep quantize_attention(const LayerF32& layer, int64_t index, const TensorView& states,
                               const AttnOptions& options) override {
    return quantize(attention_spec(layer), states, fmt::format("model.layers.{}.self_attn", index),
                    std::vector<QuantOption>(options.begin(), options.end()));
  }
  QuantStep quantize_mlp(const LayerF32& layer, int64_t index, const TensorView& states,
                         const MlpOptions& options) override {
    return quantize(mlp_spec(layer), states, fmt::format("model.layers.{}.mlp", index),
                    std::vector<QuantOption>(options.begin(), options.end()));
  }

  QuantStep quantize_head(const TensorView& states, const TensorView& final_norm,
                          const TensorView& head_weight, float eps, int head_bits) override {
    // A head too large for what the budget leaves runs on the CPU, as an engine without a
    // head step would (slow for big vocabularies, but within the budget).
    if (head_weight.rank() == 2 && states.rank() == 3 &&
        ctx_.alloc->in_use() + head_step_bytes(head_weight.dim(0), head_weight.dim(1),
                                               states.dim(1)) > ctx_.alloc->budget()) {
      stats_ = {{"engine", "cpu"}, {"reason", "head step exceeds the VRAM budget"}};
      return Engine::quantize_head(states, final_norm, head_weight, eps, head_bits);
    }
    return in_module("quantize lm_head", [&] {
      begin_module();
      QuantStep out = quantize_head_cuda(ctx_, states, final_norm, head_weight, eps, head_bits);
      end_module(nullptr);
      return out;
    });
  }

  void forward_attention(const AttnWeights& w, const TensorView& x, const TensorView& y) override {
    std::vector<Tensor> keep;
    const BlockSpec spec{BlockShape::of(ctx_.config, true),
                         as_f32(w.norm, keep),
                         {{kAttnLinears[0], as_f32(w.q, keep), as_f32(w.q_bias, keep), 0},
                          {kAttnLinears[1], as_f32(w.k, keep), as_f32(w.k_bias, keep), 0},
                          {kAttnLinears[2], as_f32(w.v, keep), as_f32(w.v_bias, keep), 0},
                          {kAttnLinears[3], as_f32(w.o, keep), as_f32(w.o_bias, keep), 1}},
                         as_f32(w.q_norm, keep),
                         as_f32(w.k_norm, keep),
                         as_f32(w.post_norm, keep),
                         w.local_rope};
    forward("forward_attention", spec, x, y);
  }
  void forward_mlp(const MlpWeights& w, const TensorView& x, const TensorView& y) override {
    std::vector<Tensor> keep;
    const BlockSpec spec{BlockShape::of(ctx_.config, false),
                         as_f32(w.norm, keep),
                         {{kMlpLinears[0], as_f32(w.gate, keep), as_f32(w.gate_bias, keep), 0},
                          {kMlpLinears[1], as_f32(w.up, keep), as_f32(w.up_bias, keep), 0},
                          {kMlpLinears[2], as_f32(w.down, keep), as_f32(w.down_bias, keep), 1}},
                         {},
                         {},
                         as_f32(w.post_norm, keep)};
    forward("forward_mlp", spec, x, y);
  }

  ModuleResult measure_moe(const LayerF32& layer, const TensorView& states, const std::string& key,
                           const MeasureOptions& options) override {
    return in_module("measure " + key, [&] {
      std::vector<Tensor> keep;
      const MoeSpec spec = moe_spec(moe_weights(layer), keep);
      check_moe(spec, states);
      const auto table = table_rows(options.mlp_table, mlp_option_table());
      EXQ_CHECK(!table.empty(), "empty option table");
      // A column's options apply to every expert.
      const TablePicks picks = table_picks(table, 3);
      begin_module();
      ModuleResult res;
      res.measurement.key = key;
      MoeRun run(ctx_, spec, states, picks.groups(), options.percdamp);
      run.reference_gptq(picks.distinct, false);
      warn_sparse_experts(key, run.expert_tokens(), run.tokens());
      res.errors = run.test_table(picks.pick, options.metric);
      res.target = run.target_to_host();
      const int64_t h = ctx_.config.hidden_size, ei = ctx_.config.expert_intermediate, E = ctx_.config.num_experts;
      std::vector<MeasuredRow> rows;
      for (size_t i = 0; i < table.size(); ++i) {
        MeasuredRow row;
        for (size_t c = 0; c < 3; ++c) {
          row.total_bits += E * total_bits(table[i][c], c == 2 ? ei : h, c == 2 ? h : ei, false);
          row.linears.emplace_back(std::string(kMoeLinears[c]), table[i][c]);
        }
        EXQ_CHECK(std::isfinite(res.errors[i]), "table row {} gives a non-finite error", i);
        row.accuracy = std::max(1e-6, 1.0 - res.errors[i]);
        rows.push_back(std::move(row));
      }
      res.measurement.rows = std::move(rows);
      res.timing = run.timing;
      end_module(nullptr, "MoE measurement: module end");
      stats_["moe"] = moe_stats(run);
      res.timing.host_syncs = ctx_.host_syncs;
      return res;
    });
  }
  QuantStep quantize_moe(const LayerF32& layer, int64_t index, const TensorView& states,
                         const MlpOptions& options) override {
    const std::string key = moe_module_key(index);
    return in_module("quantize " + key, [&] {
      std::vector<Tensor> keep;
      const MoeSpec spec = moe_spec(moe_weights(layer), keep);
      check_moe(spec, states);
      begin_module();
      MoeRun run(ctx_, spec, states, 3, 0.12f);
      run.reference_gptq({{options[0]}, {options[1]}, {options[2]}}, true);
      warn_sparse_experts(key, run.expert_tokens(), run.tokens());
      QuantStep out;
      out.output = Tensor(DType::F32, states.shape());
      out.rfn = run.forward_quantized(out.output);
      const model::MoeNames mn = model::moe_names(ctx_.config);
      const char* parts[3] = {mn.gate, mn.up, mn.down};
      for (int64_t e = 0; e < ctx_.config.num_experts; ++e)
        for (int c = 0; c < 3; ++c)
          out.packed.emplace_back(model::expert_key(ctx_.config, index, e, parts[c]),
                                  io::pack_exl2(run.results(e, c).at(0).layer));
      end_module(nullptr, "MoE quantization: module end");
      stats_["moe"] = moe_stats(run);
      stats_["timing"] = {{"reference_s", run.timing.reference_s}, {"prepare_s", run.timing.prepare_s},
                          {"gptq_s", run.timing.gptq_s}, {"forward_s", run.timing.test_s},
                          {"gptq_runs", run.timing.gptq_runs}};
      return out;
    });
  }
  void forward_moe(const MoeWeights& w, const TensorView& x, const TensorView& y) override {
    in_module("forward_moe", [&] {
      std::vector<Tensor> keep;
      const MoeSpec spec = moe_spec(w, keep);
      check_moe(spec, x);
      EXQ_CHECK(y.dtype() == DType::F32 && y.shape() == x.shape() && y.is_contiguous() && y.raw() != x.raw(),
                "output must be contiguous F32 {} apart from the input, got {} {}", shape_str(x.shape()),
                dtype_name(y.dtype()), shape_str(y.shape()));
      begin_module();
      MoeRun run(ctx_, spec, x, 0, 0.0f);
      run.forward(y);
      end_module(nullptr, "MoE forward: module end");
    });
  }

  nlohmann::ordered_json module_stats() override { return stats_; }

 private:
  static nlohmann::ordered_json moe_stats(const MoeRun& run) {
    return {{"results_in_host_memory", run.plan().host_candidates},
            {"cache_groups", run.plan().cache_groups},
            {"group_uploads", run.group_uploads()},
            {"estimate_bytes", run.plan().estimate}};
  }

  static MoeSpec moe_spec(const MoeWeights& w, std::vector<Tensor>& keep) {
    MoeSpec spec{as_f32(w.norm, keep), as_f32(w.router, keep), {}};
    for (const MoeWeights::Expert& e : w.experts)
      spec.experts.push_back({as_f32(e.gate, keep), as_f32(e.up, keep), as_f32(e.down, keep)});
    return spec;
  }

  void check_moe(const MoeSpec& spec, const TensorView& states) const {
    const io::ModelConfig& c = ctx_.config;
    EXQ_CHECK(states.rank() == 3 && states.dtype() == DType::F32 && states.is_contiguous() && states.dim(0) > 0 &&
                  states.dim(1) > 0 && states.dim(1) <= ctx_.max_tokens && states.dim(2) == c.hidden_size,
              "states must be contiguous F32 [rows, <= {}, {}], got {} {}", ctx_.max_tokens, c.hidden_size,
              dtype_name(states.dtype()), shape_str(states.shape()));
    EXQ_CHECK(c.num_experts > 0 && static_cast<int64_t>(spec.experts.size()) == c.num_experts,
              "{} experts given, the config has {}", spec.experts.size(), c.num_experts);
    const auto expect = [](const TensorView& v, const Shape& shape, const std::string& what) {
      EXQ_CHECK(!v.empty(), "{} is missing", what);
      v.expect(DType::F32, shape, what);
      EXQ_CHECK(v.is_contiguous(), "{} must be contiguous", what);
    };
    const int64_t h = c.hidden_size, ei = c.expert_intermediate;
    expect(spec.norm, {h}, "norm weight");
    expect(spec.router, {c.num_experts, h}, "router weight");
    for (const auto& e : spec.experts) {
      expect(e[0], {ei, h}, "expert gate");
      expect(e[1], {ei, h}, "expert up");
      expect(e[2], {h, ei}, "expert down");
    }
  }

  BlockSpec attention_spec(const LayerF32& l) const {
    return {BlockShape::of(ctx_.config, true),
            l.attn_norm,
            {{kAttnLinears[0], l.q, l.q_bias, 0},
             {kAttnLinears[1], l.k, l.k_bias, 0},
             {kAttnLinears[2], l.v, l.v_bias, 0},
             {kAttnLinears[3], l.o, l.o_bias, 1}},
            l.q_norm,
            l.k_norm,
            l.post_attn_norm,
            l.local_rope};
  }
  BlockSpec mlp_spec(const LayerF32& l) const {
    return {BlockShape::of(ctx_.config, false),
            l.ffn_norm,
            {{kMlpLinears[0], l.gate, l.gate_bias, 0},
             {kMlpLinears[1], l.up, l.up_bias, 0},
             {kMlpLinears[2], l.down, l.down_bias, 1}},
            {},
            {},
            l.post_ffn_norm};
  }

  void check_inputs(const BlockSpec& spec, const TensorView& states) const {
    EXQ_CHECK(states.rank() == 3 && states.dtype() == DType::F32 && states.is_contiguous() &&
                  states.dim(0) > 0 && states.dim(1) > 0,
              "states must be contiguous F32 [rows, T, hidden], got {} {}",
              dtype_name(states.dtype()), shape_str(states.shape()));
    EXQ_CHECK(states.dim(1) <= ctx_.max_tokens && states.dim(2) == spec.shape.hidden,
              "states {} do not fit [rows, <= {}, {}]", shape_str(states.shape()), ctx_.max_tokens,
              spec.shape.hidden);
    // Views of the caller's: contiguous F32 (the uploads copy them as flat arrays).
    const auto expect = [](const TensorView& v, const Shape& shape, const std::string& what) {
      EXQ_CHECK(!v.empty(), "{} is missing", what);
      v.expect(DType::F32, shape, what);
      EXQ_CHECK(v.is_contiguous(), "{} must be contiguous", what);
    };
    expect(spec.norm, {spec.shape.hidden}, "norm weight");
    if (!spec.post_norm.empty()) expect(spec.post_norm, {spec.shape.hidden}, "post norm weight");
    const auto dims = spec.shape.linear_dims();
    for (size_t c = 0; c < spec.linears.size(); ++c) {
      const LinearSpec& l = spec.linears[c];
      expect(l.weight, {dims[c].first, dims[c].second}, std::string(l.name));
      if (!l.bias.empty()) expect(l.bias, {dims[c].first}, std::string(l.name) + " bias");
    }
  }

  // A module's first pass: optimistic, with the test options' extra steps and failures.
  ModuleRun::Damping first_damping() const {
    ModuleRun::Damping d;
    d.steps.fill(1 + ctx_.options.extra_damping_steps);
    d.fail_first = ctx_.options.fail_first_factorization;
    return d;
  }

  void begin_module() {
    CUDA_CHECK(cudaSetDevice(ctx_.options.device));
    ctx_.ring.reset_stats();
    ctx_.reset_syncs();
    ctx_.compute_spans.clear();
    ctx_.alloc->reset_peaks();
    ctx_.origin.record(ctx_.compute);
    stats_ = nlohmann::ordered_json::object();
  }

  // run: the module's plan for the stats; its last call waited for the module
  // (EngineContext::finish_module). Null for the head step, which has no plan: waited for here.
  void end_module(const ModuleRun* run, const char* why = "head step: module end") {
    if (!run) ctx_.finish_module(why);
    const auto copies = ctx_.ring.copy_spans().intervals(ctx_.origin);
    const auto compute = ctx_.compute_spans.intervals(ctx_.origin);
    stats_ = {
        {"engine", "cuda"},
        {"gpu_s", exq::cuda::Event::elapsed_ms(ctx_.origin, ctx_.finish) * 1e-3},
        {"copy_s", ctx_.ring.copy_spans().total_seconds()},
        {"copy_hidden", memory::cuda::hidden_fraction(copies, compute)},
        {"bytes_h2d", ctx_.ring.bytes_h2d()},
        {"bytes_d2h", ctx_.ring.bytes_d2h()},
        {"host_staging_s", ctx_.ring.host_seconds()},
        {"peak_vram_bytes", ctx_.alloc->peak_reserved()},
        {"peak_vram_in_use_bytes", ctx_.alloc->peak_in_use()},
        {"vram_budget_bytes", ctx_.alloc->budget()},
        {"host_syncs", ctx_.host_syncs},
        {"staging_waits", ctx_.ring.waits()},
    };
    if (!run) return;
    stats_["rows_per_chunk"] = run->plan().slots;
    stats_["states_resident"] = run->plan().resident;
    stats_["vram_plan_bytes"] = run->plan().estimate;
    stats_["host_candidates"] = run->plan().host_candidates;
    stats_["candidate_cache_slots"] = run->plan().cache_slots;
  }

  ModuleResult measure(const BlockSpec& spec, const TensorView& states, const std::string& key,
                       const std::vector<std::vector<QuantOption>>& table,
                       const MeasureOptions& options) {
    return in_module("measure " + key, [&] {
      check_inputs(spec, states);
      const size_t L = spec.linears.size();
      EXQ_CHECK(!table.empty(), "empty option table");
      const TablePicks picks = table_picks(table, L);
      std::vector<int64_t> counts;
      for (const auto& d : picks.distinct) counts.push_back(static_cast<int64_t>(d.size()));

      begin_module();
      ModuleResult res;
      res.measurement.key = key;
      res.target = Tensor(DType::F32, states.shape());
      ModuleRun::Damping damping = first_damping();
      int retries = 0;
      // Optimistic: the factorizations are checked with the module's one download. A failed
      // one (rare) runs the module again, checked, from the next damping step: the same
      // result as checking each attempt before GPTQ, at the cost of a second pass.
      std::optional<ModuleRun> run;
      for (;;) {
        run.reset();
        run.emplace(ctx_, spec, states, counts, static_cast<int64_t>(table.size()), false,
                    options.percdamp);
        run->set_damping(damping);
        run->reference(&res.target);
        run->gptq(picks.distinct, false);
        res.errors = run->test_table(picks.pick, options.metric);
        if (!retry_damping(*run, damping, retries)) break;
      }
      std::vector<MeasuredRow> rows;
      for (size_t i = 0; i < table.size(); ++i) {
        MeasuredRow row;
        for (size_t c = 0; c < L; ++c) {
          const LinearSpec& l = spec.linears[c];
          row.total_bits +=
              total_bits(table[i][c], l.weight.dim(1), l.weight.dim(0), !l.bias.empty());
          row.linears.emplace_back(std::string(l.name), table[i][c]);
        }
        const double err = res.errors[i];
        EXQ_CHECK(std::isfinite(err), "table row {} gives a non-finite error", i);
        row.accuracy = std::max(1e-6, 1.0 - err);
        rows.push_back(std::move(row));
      }
      res.measurement.rows = std::move(rows);
      res.timing = run->timing;
      end_module(&*run);
      if (retries > 0) stats_["damping_retries"] = retries;
      res.timing.host_syncs = ctx_.host_syncs;
      res.timing.staging_waits = ctx_.ring.waits();
      return res;
    });
  }

  QuantStep quantize(const BlockSpec& spec, const TensorView& states, const std::string& key,
                     const std::vector<QuantOption>& options) {
    return in_module("quantize " + key, [&] {
      check_inputs(spec, states);
      const size_t L = spec.linears.size();
      EXQ_CHECK(options.size() == L, "{} options for {} linears", options.size(), L);
      // Host phases (steady clock; the device phases come from events, ModuleRun::timing),
      // summed over the passes of a damping retry.
      const auto t0 = Clock::now();
      const size_t reserved_before = ctx_.alloc->reserved();
      begin_module();
      std::vector<std::vector<QuantOption>> one;
      for (const QuantOption& o : options) one.push_back({o});
      QuantStep out;
      out.output = Tensor(DType::F32, states.shape());
      double setup_s = 0, reference_host_s = 0, gptq_host_s = 0, forward_host_s = 0;
      ModuleRun::Damping damping = first_damping();
      int retries = 0;
      // As the measurement: one wait, at the end of forward_quantized(), which also reads the
      // factorizations' status; a failed one reruns the module checked (measure()).
      std::optional<ModuleRun> run;
      for (auto t = t0;; t = Clock::now()) {
        run.reset();
        run.emplace(ctx_, spec, states, std::vector<int64_t>(L, 1), 1, true, 0.12f);
        run->set_damping(damping);
        run->reserve_packed(one);  // before any queued work: growing it waits for the device
        setup_s += seconds_since(t);
        t = Clock::now();
        run->reference(nullptr);
        reference_host_s += seconds_since(t);
        t = Clock::now();
        run->gptq(one, true);
        gptq_host_s += seconds_since(t);
        t = Clock::now();
        out.rfn = run->forward_quantized(out.output);
        forward_host_s += seconds_since(t);
        if (!retry_damping(*run, damping, retries)) break;
      }
      // Packing is host work on the packed results, in pinned memory until take_packed(): only
      // after the module's wait (in forward_quantized()), one thread per linear.
      std::vector<double> pack_s(L, 0.0), take_s(L, 0.0);
      std::vector<std::future<io::Exl2Packed>> packs;
      auto t = Clock::now();
      for (size_t c = 0; c < L; ++c) {
        DeviceGptqResult& res = run->results(c).at(0);
        packs.push_back(std::async(
            std::launch::async,
            [&pack_s, &take_s, c](io::Exl2Linear layer, PackedHost packed, TensorView bias) {
              const auto p0 = Clock::now();
              take_s[c] = take_packed(layer, packed);
              io::Exl2Packed p = pack_with_bias(std::move(layer), bias);
              pack_s[c] = seconds_since(p0);
              return p;
            },
            std::move(res.layer), res.packed, spec.linears[c].bias));
      }
      for (size_t c = 0; c < L; ++c)
        out.packed.emplace_back(key + "." + std::string(spec.linears[c].name), packs[c].get());
      const double pack_wait_s = seconds_since(t);
      end_module(&*run);
      if (retries > 0) stats_["damping_retries"] = retries;
      double pack_total = 0.0, take_total = 0.0;
      for (double p : pack_s) pack_total += p;
      for (double p : take_s) take_total += p;
      // Device phases (events): reference (Hessians included), prepare (act-order and the
      // factorizations), gptq (packed copies included), forward (the quantized module on every
      // row, output downloads, rfn). Host phases: the wall time of each call on the engine's
      // thread; packed_download_s: the host copies of the packed results (in the packing
      // threads, part of pack_s, or after a wait in gptq()'s checked path); pack_s the packing
      // threads' total, pack_wait_s the engine's wait for them (after the module's wait).
      stats_["timing"] = {
          {"reference_s", run->timing.reference_s},
          {"hessian_s", run->timing.hessian_s},
          {"prepare_s", run->timing.prepare_s},
          {"gptq_s", run->timing.gptq_s},
          {"packed_download_s", run->packed_download_s + take_total},
          {"forward_s", run->timing.test_s},
          {"gptq_runs", run->timing.gptq_runs},
          {"host_setup_s", setup_s},
          {"host_reference_s", reference_host_s},
          {"host_gptq_s", gptq_host_s},
          {"host_forward_s", forward_host_s},
          {"pack_s", pack_total},
          {"pack_wait_s", pack_wait_s},
          {"wall_s", seconds_since(t0)},
          // Device memory the allocator had to obtain (cudaMalloc) during the step, net of any
          // cache it emptied: nonzero means the step did not run from the cached blocks alone.
          {"reserved_growth_bytes", static_cast<double>(ctx_.alloc->reserved()) -
                                        static_cast<double>(reserved_before)},
      };
      nlohmann::ordered_json reasons = nlohmann::ordered_json::object();
      for (const char* why : ctx_.sync_reasons) reasons[why] = reasons.value(why, 0) + 1;
      stats_["sync_reasons"] = std::move(reasons);
      return out;
    });
  }

  // The reference pass's per-row forward with the given weights (ModuleRun::forward()).
  void forward(const std::string& what, const BlockSpec& spec, const TensorView& x,
               const TensorView& y) {
    in_module(what, [&] {
      check_inputs(spec, x);
      EXQ_CHECK(y.dtype() == DType::F32 && y.shape() == x.shape() && y.is_contiguous(),
                "output must be contiguous F32 {}, got {} {}", shape_str(x.shape()),
                dtype_name(y.dtype()), shape_str(y.shape()));
      EXQ_CHECK(y.raw() != x.raw(), "output must not alias the input states");
      begin_module();
      ModuleRun run(ctx_, spec, x, ForwardOnly{});
      run.forward(y);
      end_module(&run);
    });
  }

  EngineContext ctx_;
  nlohmann::ordered_json stats_ = nlohmann::ordered_json::object();
};

}  // namespace

size_t default_vram_budget(int device) {
  const exq::cuda::DeviceInfo info = exq::cuda::require_device(device);
  const size_t margin = std::max<size_t>(size_t{1} << 30, info.total_memory / 20);
  return info.free_memory > margin ? info.free_memory - margin : 0;
}

std::unique_ptr<Engine> make_cuda_engine(const io::ModelConfig& config, int64_t max_tokens,
                                         const CudaEngineOptions& options) {
  return std::make_unique<CudaEngine>(config, max_tokens, options);
}

}  // namespace exq::quant::cuda
