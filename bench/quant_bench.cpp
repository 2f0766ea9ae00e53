// CPU quantization timings at SmolLM2-135M shapes, synthetic data (fixed seeds):
// - GPTQ of a gate/up-shaped linear (in 576 -> out 1536) under every distinct gate/up option of
//   the MLP table, and of a down-shaped one (1536 -> 576) under every down option; one
//   iteration = all options; the per-group scale search alone;
// - Hessian accumulation (one 2048-token batch) and its preparation (act-order, Cholesky);
// - one whole module measurement (attention block, MLP block; full option table) at a small
//   calibration size (rows x tokens as args).
#include <benchmark/benchmark.h>

#include <random>

#include "core/thread_pool.h"
#include "quant/gptq.h"
#include "quant/hessian.h"
#include "quant/measure.h"

namespace {

using namespace exq;
using namespace exq::quant;

std::vector<float> normal(int64_t n, float sd, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

// Layer inputs whose channels differ in scale (as real activations do), so act-order matters.
std::vector<float> inputs(int64_t tokens, int64_t in, uint32_t seed) {
  std::vector<float> x = normal(tokens * in, 1.0f, seed);
  std::mt19937 rng(seed + 1);
  std::lognormal_distribution<float> ln(0.0f, 0.8f);
  std::vector<float> scale(static_cast<size_t>(in));
  for (float& s : scale) s = ln(rng);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < in; ++i) x[t * in + i] *= scale[i];
  return x;
}

PreparedHessian synthetic_hessian(int64_t in) {
  const std::vector<float> x = inputs(2048, in, 7);
  HessianAccumulator acc(in);
  acc.add_batch(x.data(), 2048);
  return prepare_hessian(acc.hessian(), in);
}

// Distinct options of the MLP table's columns `cols`.
std::vector<QuantOption> mlp_options(std::initializer_list<size_t> cols) {
  std::vector<QuantOption> out;
  for (const MlpOptions& row : mlp_option_table())
    for (size_t c : cols)
      if (std::find(out.begin(), out.end(), row[c]) == out.end()) out.push_back(row[c]);
  return out;
}

// Args: in, out. in 576 -> gate/up options, in 1536 -> down options.
void BM_GptqAllOptions(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1);
  const std::vector<QuantOption> options = in == 576 ? mlp_options({0, 1}) : mlp_options({2});
  const PreparedHessian h = synthetic_hessian(in);
  const std::vector<float> w = normal(out * in, 0.05f, 3);
  for (auto _ : state)
    for (const QuantOption& o : options) benchmark::DoNotOptimize(gptq_quantize(w.data(), out, in, h, o));
  state.counters["options"] = static_cast<double>(options.size());
  state.counters["s/option"] = benchmark::Counter(
      static_cast<double>(options.size()),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_GptqAllOptions)->Args({576, 1536})->Args({1536, 576})->ArgNames({"in", "out"})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// One group's scale search: Args rows, out, bits.
void BM_ScaleSearch(benchmark::State& state) {
  const int64_t rows = state.range(0), out = state.range(1);
  const int bits = static_cast<int>(state.range(2));
  const std::vector<float> w = normal(rows * out, 0.05f, 5);
  for (auto _ : state) benchmark::DoNotOptimize(search_group_scales(w.data(), rows, out, bits));
}
BENCHMARK(BM_ScaleSearch)->Args({128, 1536, 4})->Args({32, 1536, 4})->Args({128, 576, 4})
    ->ArgNames({"rows", "out", "bits"})->Unit(benchmark::kMillisecond)->UseRealTime();

// Args: in, tokens.
void BM_HessianAccumulate(benchmark::State& state) {
  const int64_t in = state.range(0), tokens = state.range(1);
  const std::vector<float> x = inputs(tokens, in, 11);
  HessianAccumulator acc(in);
  for (auto _ : state) acc.add_batch(x.data(), tokens);
  state.counters["GFLOP/s"] = benchmark::Counter(
      static_cast<double>(tokens * in * in), benchmark::Counter::kIsIterationInvariantRate,
      benchmark::Counter::kIs1000);
}
BENCHMARK(BM_HessianAccumulate)->Args({576, 2048})->Args({1536, 2048})
    ->ArgNames({"in", "tokens"})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_PrepareHessian(benchmark::State& state) {
  const int64_t in = state.range(0);
  const std::vector<float> x = inputs(2048, in, 13);
  HessianAccumulator acc(in);
  acc.add_batch(x.data(), 2048);
  const std::vector<float> h = acc.hessian();
  for (auto _ : state) benchmark::DoNotOptimize(prepare_hessian(h, in));
}
BENCHMARK(BM_PrepareHessian)->Arg(576)->Arg(1536)->ArgName("in")->Unit(benchmark::kMillisecond)
    ->UseRealTime();

io::ModelConfig smollm2_shape() {
  io::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 576;
  c.intermediate_size = 1536;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 9;
  c.num_key_value_heads = 3;
  c.head_dim = 64;
  c.vocab_size = 49152;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 100000.0;
  return c;
}

Tensor tensor_of(const std::vector<float>& v, Shape shape) {
  Tensor t(DType::F32, std::move(shape));
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

LayerF32 synthetic_layer(const io::ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  LayerF32 l;
  l.attn_norm = tensor_of(std::vector<float>(static_cast<size_t>(h), 1.0f), {h});
  l.ffn_norm = tensor_of(std::vector<float>(static_cast<size_t>(h), 1.0f), {h});
  l.q = tensor_of(normal(q * h, 0.05f, 21), {q, h});
  l.k = tensor_of(normal(kv * h, 0.05f, 22), {kv, h});
  l.v = tensor_of(normal(kv * h, 0.05f, 23), {kv, h});
  l.o = tensor_of(normal(h * q, 0.05f, 24), {h, q});
  l.gate = tensor_of(normal(f * h, 0.05f, 25), {f, h});
  l.up = tensor_of(normal(f * h, 0.05f, 26), {f, h});
  l.down = tensor_of(normal(h * f, 0.05f, 27), {h, f});
  return l;
}

// Args: module (0 attention, 1 MLP), rows, tokens. Full option table (19 / 17 rows).
void BM_MeasureModule(benchmark::State& state) {
  const bool mlp = state.range(0) == 1;
  const int64_t rows = state.range(1), tokens = state.range(2);
  const io::ModelConfig c = smollm2_shape();
  const LayerF32 layer = synthetic_layer(c);
  const Tensor states = tensor_of(inputs(rows * tokens, c.hidden_size, 31),
                                  {rows, tokens, c.hidden_size});
  ModuleForward fwd(c, tokens);
  MeasureTiming t;
  for (auto _ : state) {
    ModuleResult r = mlp ? measure_mlp(fwd, layer, states, "m") : measure_attention(fwd, layer, states, "m");
    t = r.timing;
  }
  state.counters["reference_s"] = t.reference_s;
  state.counters["prepare_s"] = t.prepare_s;
  state.counters["gptq_s"] = t.gptq_s;
  state.counters["gptq_runs"] = t.gptq_runs;
  state.counters["test_s"] = t.test_s;
}
BENCHMARK(BM_MeasureModule)->Args({0, 4, 256})->Args({1, 4, 256})
    ->ArgNames({"mlp", "rows", "tokens"})->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
