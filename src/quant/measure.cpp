#include "quant/measure.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string_view>

#include "core/error.h"
#include "core/half.h"
#include "model/llama_weights.h"
#include "quant/hessian.h"

namespace exq::quant {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct LinearSpec {
  std::string_view name;  // "q_proj", ...
  const Tensor* weight;   // [out, in] F32
  bool has_bias;
  int hessian;            // index of the Hessian of its input
  int column = -1;        // its option table column (-1: its own index; MoE: w1 / w3 / w2)
  std::string key;        // MoE: the expert's tensor key (model::expert_key), else empty
};

size_t column_of(const LinearSpec& l, size_t index) {
  return l.column < 0 ? index : static_cast<size_t>(l.column);
}

// What differs between the attention and the MLP block; measure_module does the rest.
struct ModuleSpec {
  std::vector<LinearSpec> linears;
  std::vector<int64_t> hessian_in;                 // input width per Hessian
  std::vector<std::vector<QuantOption>> table;     // [table row][column]
  std::vector<std::string_view> columns;           // names of the columns (empty: the linears')
  // One row through the module with the given weights (one view per linear, in order).
  std::function<void(const std::vector<TensorView>&, const TensorView&, const TensorView&)> forward;
  // After a forward: the input of each Hessian's linears, [rows, hessian_in[g]] (MoE: an
  // expert's down_proj input has the rows of the tokens routed to it, maybe none).
  std::function<std::vector<TensorView>()> linear_inputs;
  // Optional, after the reference pass: what the Hessians saw (MoE: warns about experts that
  // got few tokens). rows_seen[g]: the input rows (tokens) Hessian g accumulated.
  std::function<void(const std::vector<int64_t>& rows_seen)> after_reference;
};

const QuantOption& option_of(const ModuleSpec& spec, size_t row, size_t linear) {
  return spec.table[row][column_of(spec.linears[linear], linear)];
}

TensorView row_of(const TensorView& t, int64_t r) {
  return t.slice0(r, r + 1).reshape({t.dim(1), t.dim(2)});
}

// Reference forward over all rows (target states, Hessians), then the prepared Hessians.
struct Reference {
  Tensor target;                        // [rows, T, hidden]
  std::vector<PreparedHessian> hessians;
};

Reference reference_pass(const ModuleSpec& spec, const TensorView& states,
                         const std::string& key, float percdamp, MeasureTiming& timing) {
  EXQ_CHECK(states.rank() == 3 && states.dtype() == DType::F32 && states.is_contiguous() &&
                states.dim(0) > 0 && states.dim(1) > 0,
            "{}: states must be contiguous F32 [rows, T, hidden], got {} {}", key,
            dtype_name(states.dtype()), shape_str(states.shape()));
  int64_t bad = 0;
  EXQ_CHECK(!has_non_finite(states, &bad), "{}: input states hold NaN/Inf (element {})", key,
            bad);
  const int64_t R = states.dim(0), T = states.dim(1), hidden = states.dim(2);
  Reference ref;
  ref.target = Tensor(DType::F32, {R, T, hidden});
  auto t0 = Clock::now();
  std::vector<HessianAccumulator> acc;
  for (int64_t in : spec.hessian_in) acc.emplace_back(in);
  std::vector<int64_t> seen(acc.size(), 0);
  std::vector<TensorView> original;
  for (const LinearSpec& l : spec.linears) original.push_back(l.weight->view());
  for (int64_t r = 0; r < R; ++r) {
    spec.forward(original, row_of(states, r), row_of(ref.target, r));
    const auto h0 = Clock::now();
    const std::vector<TensorView> inputs = spec.linear_inputs();
    for (size_t g = 0; g < acc.size(); ++g) {
      const int64_t n = inputs[g].rank() == 2 ? inputs[g].dim(0) : 0;
      if (n > 0) acc[g].add_batch(inputs[g].data<float>(), n);
      seen[g] += n;
    }
    timing.hessian_s += seconds_since(h0);
  }
  EXQ_CHECK(!has_non_finite(ref.target, &bad), "{}: reference output holds NaN/Inf", key);
  timing.reference_s = seconds_since(t0);
  if (spec.after_reference) spec.after_reference(seen);

  t0 = Clock::now();
  for (size_t g = 0; g < acc.size(); ++g) {
    // An expert no calibration token was routed to has no statistics: the identity Hessian
    // (plain round to nearest, what GPTQ does with any diagonal H) keeps it deterministic
    // without weighing channels by inputs it never saw.
    if (acc[g].batches() == 0) {
      ref.hessians.push_back(identity_hessian(spec.hessian_in[g]));
      continue;
    }
    try {
      ref.hessians.push_back(prepare_hessian(acc[g].hessian(), spec.hessian_in[g], percdamp));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", key, e.message()));
    }
  }
  timing.prepare_s = seconds_since(t0);
  return ref;
}

ModuleResult measure_module(const ModuleSpec& spec, const TensorView& states,
                            const std::string& key, float percdamp, ErrorMetric metric) {
  ModuleResult res;
  res.measurement.key = key;
  Reference ref = reference_pass(spec, states, "measure " + key, percdamp, res.timing);
  res.target = std::move(ref.target);
  const std::vector<PreparedHessian>& prepared = ref.hessians;
  const int64_t R = states.dim(0), T = states.dim(1), hidden = states.dim(2);
  const size_t L = spec.linears.size();

  // GPTQ of every distinct option of each linear's column.
  auto t0 = Clock::now();
  std::vector<std::vector<QuantOption>> distinct(L);
  std::vector<std::vector<size_t>> pick(spec.table.size(), std::vector<size_t>(L));
  for (size_t i = 0; i < spec.table.size(); ++i) {
    for (size_t c = 0; c < L; ++c) {
      auto& d = distinct[c];
      const QuantOption& o = option_of(spec, i, c);
      const auto it = std::find(d.begin(), d.end(), o);
      pick[i][c] = static_cast<size_t>(it - d.begin());
      if (it == d.end()) d.push_back(o);
    }
  }
  // [linear][distinct option] F16 [out, in]: dequantized EXL2 weights are fp16 values, so
  // half the memory of F32 at no loss (cpu::matmul widens them tile by tile).
  std::vector<std::vector<Tensor>> candidates(L);
  std::vector<std::vector<int64_t>> bits(L);
  for (size_t c = 0; c < L; ++c) {
    const LinearSpec& l = spec.linears[c];
    const int64_t out = l.weight->dim(0), in = l.weight->dim(1);
    for (const QuantOption& option : distinct[c]) {
      GptqResult q = gptq_quantize(l.weight->data<float>(), out, in, prepared[l.hessian], option);
      Tensor w(DType::F16, {out, in});
      uint16_t* wp = w.data<uint16_t>();
      for (size_t i = 0; i < q.weight.size(); ++i) wp[i] = float_to_half(q.weight[i]);
      candidates[c].push_back(std::move(w));
      bits[c].push_back(total_bits(option, in, out, l.has_bias));
      ++res.timing.gptq_runs;
    }
  }
  res.timing.gptq_s = seconds_since(t0);

  // Every table row on every calibration row.
  t0 = Clock::now();
  Tensor yq(DType::F32, {T, hidden});
  std::vector<MeasuredRow> rows;
  for (size_t i = 0; i < spec.table.size(); ++i) {
    std::vector<TensorView> weights;
    MeasuredRow row;
    for (size_t c = 0; c < L; ++c) {
      weights.push_back(candidates[c][pick[i][c]].view());
      row.total_bits += bits[c][pick[i][c]];
      if (spec.columns.empty()) row.linears.emplace_back(std::string(spec.linears[c].name), spec.table[i][c]);
    }
    for (size_t c = 0; c < spec.columns.size(); ++c)
      row.linears.emplace_back(std::string(spec.columns[c]), spec.table[i][c]);
    double err = 0.0;
    for (int64_t r = 0; r < R; ++r) {
      spec.forward(weights, row_of(states, r), yq);
      err += output_error(yq, row_of(res.target, r), metric);
    }
    err /= static_cast<double>(R);
    EXQ_CHECK(std::isfinite(err), "measure {}: table row {} gives a non-finite error", key, i);
    row.accuracy = std::max(1e-6, 1.0 - err);
    res.errors.push_back(err);
    rows.push_back(std::move(row));
  }
  res.measurement.rows = std::move(rows);
  res.timing.test_s = seconds_since(t0);
  return res;
}

ModuleSpec attention_spec(ModuleForward& fwd, const LayerF32& layer, bool causal = true) {
  ModuleSpec spec;
  spec.linears = {{kAttnLinears[0], &layer.q, !layer.q_bias.empty(), 0},
                  {kAttnLinears[1], &layer.k, !layer.k_bias.empty(), 0},
                  {kAttnLinears[2], &layer.v, !layer.v_bias.empty(), 0},
                  {kAttnLinears[3], &layer.o, !layer.o_bias.empty(), 1}};
  spec.hessian_in = {fwd.config().hidden_size, fwd.config().q_dim()};
  spec.forward = [&fwd, base = attn_weights(layer), causal](const std::vector<TensorView>& w,
                                                            const TensorView& x,
                                                            const TensorView& y) {
    AttnWeights a = base;
    a.q = w[0];
    a.k = w[1];
    a.v = w[2];
    a.o = w[3];
    fwd.attention(a, x, y, causal);
  };
  spec.linear_inputs = [&fwd] { return std::vector<TensorView>{fwd.normed(), fwd.attn_out()}; };
  return spec;
}

ModuleSpec mlp_spec(ModuleForward& fwd, const LayerF32& layer) {
  ModuleSpec spec;
  spec.linears = {{kMlpLinears[0], &layer.gate, !layer.gate_bias.empty(), 0},
                  {kMlpLinears[1], &layer.up, !layer.up_bias.empty(), 0},
                  {kMlpLinears[2], &layer.down, !layer.down_bias.empty(), 1}};
  spec.hessian_in = {fwd.config().hidden_size, fwd.config().intermediate_size};
  spec.forward = [&fwd, base = mlp_weights(layer)](const std::vector<TensorView>& w,
                                                   const TensorView& x, const TensorView& y) {
    MlpWeights m = base;
    m.gate = w[0];
    m.up = w[1];
    m.down = w[2];
    fwd.mlp(m, x, y);
  };
  spec.linear_inputs = [&fwd] { return std::vector<TensorView>{fwd.normed(), fwd.act()}; };
  return spec;
}

// Linears by expert (w1, w3, w2 of expert 0, then expert 1, ...): w1 / w3 share Hessian 0 (the
// normed states of every token), expert e's w2 has Hessian 1 + e (its act rows). index: the
// layer, for the tensor keys (quantization pass).
ModuleSpec moe_spec(ModuleForward& fwd, const LayerF32& layer, int64_t index, const std::string& key) {
  const io::ModelConfig& c = fwd.config();
  const int64_t E = c.num_experts;
  EXQ_CHECK(static_cast<int64_t>(layer.experts.size()) == E && E > 0, "{}: a MoE layer without its {} experts", key, E);
  const model::MoeNames mn = model::moe_names(c);
  ModuleSpec spec;
  for (int64_t e = 0; e < E; ++e) {
    const LayerF32::Expert& x = layer.experts[static_cast<size_t>(e)];
    const auto k = [&](const char* part) { return index < 0 ? std::string() : model::expert_key(c, index, e, part); };
    spec.linears.push_back({kMoeLinears[0], &x.gate, false, 0, 0, k(mn.gate)});
    spec.linears.push_back({kMoeLinears[1], &x.up, false, 0, 1, k(mn.up)});
    spec.linears.push_back({kMoeLinears[2], &x.down, false, static_cast<int>(1 + e), 2, k(mn.down)});
  }
  spec.columns.assign(kMoeLinears.begin(), kMoeLinears.end());
  spec.hessian_in.assign(static_cast<size_t>(1 + E), c.expert_intermediate);
  spec.hessian_in[0] = c.hidden_size;
  spec.forward = [&fwd, base = moe_weights(layer)](const std::vector<TensorView>& w, const TensorView& x,
                                                   const TensorView& y) {
    MoeWeights m = base;
    for (size_t e = 0; e < m.experts.size(); ++e) m.experts[e] = {w[3 * e], w[3 * e + 1], w[3 * e + 2]};
    fwd.moe(m, x, y);
  };
  spec.linear_inputs = [&fwd, E] {
    std::vector<TensorView> in{fwd.normed()};
    for (int64_t e = 0; e < E; ++e) in.push_back(fwd.expert_act(e));
    return in;
  };
  spec.after_reference = [key, E](const std::vector<int64_t>& seen) {
    warn_sparse_experts(key, std::vector<int64_t>(seen.begin() + 1, seen.begin() + 1 + E), seen[0]);
  };
  return spec;
}

QuantizedModule quantize_module(const ModuleSpec& spec, const TensorView& states,
                                const std::string& key, const std::vector<QuantOption>& options,
                                float percdamp) {
  const size_t columns = spec.columns.empty() ? spec.linears.size() : spec.columns.size();
  EXQ_CHECK(options.size() == columns, "quantize {}: {} options for {} linears", key,
            options.size(), columns);
  QuantizedModule q;
  Reference ref = reference_pass(spec, states, "quantize " + key, percdamp, q.timing);
  q.target = std::move(ref.target);
  const auto t0 = Clock::now();
  for (size_t c = 0; c < spec.linears.size(); ++c) {
    const LinearSpec& l = spec.linears[c];
    const QuantOption& o = options[column_of(l, c)];
    q.linears.push_back({l.key.empty() ? std::string(l.name) : l.key, o,
                         gptq_quantize(l.weight->data<float>(), l.weight->dim(0),
                                       l.weight->dim(1), ref.hessians[l.hessian], o)});
    ++q.timing.gptq_runs;
  }
  q.timing.gptq_s = seconds_since(t0);
  return q;
}

}  // namespace

ModuleResult measure_attention(ModuleForward& fwd, const LayerF32& layer,
                               const TensorView& states, const std::string& key,
                               const MeasureOptions& options) {
  ModuleSpec spec = attention_spec(fwd, layer, options.causal);
  spec.table = table_rows(options.attn_table, attn_option_table());
  return measure_module(spec, states, key, options.percdamp, options.metric);
}

ModuleResult measure_mlp(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                         const std::string& key, const MeasureOptions& options) {
  ModuleSpec spec = mlp_spec(fwd, layer);
  spec.table = table_rows(options.mlp_table, mlp_option_table());
  return measure_module(spec, states, key, options.percdamp, options.metric);
}

QuantizedModule quantize_attention(ModuleForward& fwd, const LayerF32& layer,
                                   const TensorView& states, const std::string& key,
                                   const AttnOptions& options, float percdamp) {
  return quantize_module(attention_spec(fwd, layer), states, key,
                         std::vector<QuantOption>(options.begin(), options.end()), percdamp);
}

QuantizedModule quantize_mlp(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                             const std::string& key, const MlpOptions& options, float percdamp) {
  return quantize_module(mlp_spec(fwd, layer), states, key,
                         std::vector<QuantOption>(options.begin(), options.end()), percdamp);
}

ModuleResult measure_moe(ModuleForward& fwd, const LayerF32& layer, const TensorView& states,
                         const std::string& key, const MeasureOptions& options) {
  ModuleSpec spec = moe_spec(fwd, layer, -1, key);
  spec.table = table_rows(options.mlp_table, mlp_option_table());
  return measure_module(spec, states, key, options.percdamp, options.metric);
}

QuantizedModule quantize_moe(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                             const TensorView& states, const std::string& key,
                             const MlpOptions& options, float percdamp) {
  return quantize_module(moe_spec(fwd, layer, index, key), states, key,
                         std::vector<QuantOption>(options.begin(), options.end()), percdamp);
}

void warn_sparse_experts(const std::string& key, const std::vector<int64_t>& tokens, int64_t total) {
  for (size_t e = 0; e < tokens.size(); ++e)
    if (total > 0 && 10 * tokens[e] < total)
      std::fprintf(stderr, " !! %s: expert %zu got %lld of %lld calibration tokens (%.1f %%)%s\n", key.c_str(), e,
                   static_cast<long long>(tokens[e]), static_cast<long long>(total),
                   100.0 * static_cast<double>(tokens[e]) / static_cast<double>(total),
                   tokens[e] == 0 ? ", quantized without statistics (round to nearest)" : "");
}

TablePicks table_picks(const std::vector<std::vector<QuantOption>>& table, size_t columns) {
  TablePicks t;
  t.distinct.resize(columns);
  t.pick.assign(table.size(), std::vector<size_t>(columns));
  for (size_t i = 0; i < table.size(); ++i) {
    EXQ_CHECK(table[i].size() == columns, "table row {} has {} options for {} linears", i, table[i].size(),
              columns);
    for (size_t c = 0; c < columns; ++c) {
      auto& d = t.distinct[c];
      const auto it = std::find(d.begin(), d.end(), table[i][c]);
      t.pick[i][c] = static_cast<size_t>(it - d.begin());
      if (it == d.end()) d.push_back(table[i][c]);
    }
  }
  return t;
}

int64_t TablePicks::groups() const {
  int64_t n = 0;
  for (const auto& d : distinct) n += static_cast<int64_t>(d.size());
  return n;
}

ErrorMetric parse_error_metric(std::string_view name, std::string_view what) {
  if (name == "row") return ErrorMetric::kRow;
  if (name == "skip0") return ErrorMetric::kSkip0;
  if (name == "token") return ErrorMetric::kToken;
  throw Error(fmt::format("{}: expected row, skip0 or token, got '{}'", what, name));
}

const char* error_metric_name(ErrorMetric metric) {
  switch (metric) {
    case ErrorMetric::kRow: return "row";
    case ErrorMetric::kSkip0: return "skip0";
    case ErrorMetric::kToken: return "token";
  }
  return "row";
}

double output_error(const TensorView& a, const TensorView& b, ErrorMetric metric) {
  if (metric == ErrorMetric::kRow) return relative_error(a, b);
  EXQ_CHECK(a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.rank() == 2 &&
                a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous(),
            "output_error: expected contiguous F32 [T, hidden] of equal shape, got {} and {}",
            shape_str(a.shape()), shape_str(b.shape()));
  const int64_t T = a.dim(0), H = a.dim(1);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  double num = 0.0, den = 0.0, token_sum = 0.0;
  int64_t tokens = 0;
  for (int64_t t = metric == ErrorMetric::kSkip0 ? 1 : 0; t < T; ++t) {
    double n = 0.0, d = 0.0;
    for (int64_t i = t * H; i < (t + 1) * H; ++i) {
      const double diff = static_cast<double>(pa[i]) - pb[i];
      n += diff * diff;
      d += static_cast<double>(pb[i]) * pb[i];
    }
    num += n;
    den += d;
    if (d > 0.0) {
      token_sum += std::sqrt(n / d);
      ++tokens;
    }
  }
  if (metric == ErrorMetric::kToken) return tokens == 0 ? 0.0 : token_sum / tokens;
  if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

double relative_error(const TensorView& a, const TensorView& b) {
  EXQ_CHECK(a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.numel() == b.numel() &&
                a.is_contiguous() && b.is_contiguous(),
            "relative_error: expected contiguous F32 of equal size, got {} and {}",
            shape_str(a.shape()), shape_str(b.shape()));
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(pa[i]) - pb[i];
    num += d * d;
    den += static_cast<double>(pb[i]) * pb[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

namespace {

std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double avg = 0.5 * static_cast<double>(i + j);
    for (size_t k = i; k <= j; ++k) rank[idx[k]] = avg;
    i = j + 1;
  }
  return rank;
}

}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  EXQ_CHECK(a.size() == b.size() && a.size() >= 2, "spearman: sizes {} and {}", a.size(),
            b.size());
  const std::vector<double> ra = average_ranks(a), rb = average_ranks(b);
  const double n = static_cast<double>(a.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n;
  const double mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return saa == 0 || sbb == 0 ? 0.0 : sab / std::sqrt(saa * sbb);
}

MeasureComparison compare_measurements(const ModuleMeasurement& ours,
                                       const ModuleMeasurement& ref) {
  EXQ_CHECK(ours.rows && ref.rows && ours.rows->size() == ref.rows->size() &&
                ours.rows->size() >= 2,
            "compare {}: {} rows against {} in the reference", ours.key,
            ours.rows ? ours.rows->size() : 0, ref.rows ? ref.rows->size() : 0);
  std::vector<double> a, b;
  for (size_t i = 0; i < ours.rows->size(); ++i) {
    const MeasuredRow& x = (*ours.rows)[i];
    const MeasuredRow& y = (*ref.rows)[i];
    for (const auto& [name, option] : x.linears) {
      const QuantOption* o = y.find(name);
      EXQ_CHECK(o && *o == option, "compare {}: row {} {} is {} here, {} in the reference",
                ours.key, i, name, option.desc(), o ? o->desc() : "missing");
    }
    a.push_back(1.0 - x.accuracy);
    b.push_back(1.0 - y.accuracy);
  }
  MeasureComparison c;
  c.mean_error = std::accumulate(a.begin(), a.end(), 0.0) / static_cast<double>(a.size());
  c.ref_mean_error = std::accumulate(b.begin(), b.end(), 0.0) / static_cast<double>(b.size());
  c.ratio = c.ref_mean_error > 0 ? c.mean_error / c.ref_mean_error : INFINITY;
  c.spearman = spearman(a, b);
  return c;
}

}  // namespace exq::quant
