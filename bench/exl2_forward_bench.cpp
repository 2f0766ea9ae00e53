// Batch-1 decode and prefill of an EXL2 SmolLM2-shaped model on the CPU against the fp16 model
// ($EXQ_TEST_MODEL). The EXL2 model is the fp16 one with every decoder linear replaced by
// exllamav2's 4.0 bpw layer-0 tensors (fixtures/exl2; same shapes in every layer): numbers
// are meaningless as text, representative as speed. The head stays the tied fp16 embedding.
// cpu_ms/token is the process CPU time (all threads) per token, for a machine shared with
// other work. BM_Exl2Layer times one fixture layer per exl2_matmul path against fp16.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>

#include "backend/cpu/exl2_matmul.h"
#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "model/exl2_linear.h"
#include "model/llama.h"

namespace {

namespace fs = std::filesystem;
using exq::model::KvCache;
using exq::model::LlamaModel;

const fs::path kShared = fs::path(EXQ_SOURCE_DIR).parent_path() / "shared";

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

const exq::io::SafetensorsFile& fixture_4bpw() {
  static const exq::io::SafetensorsFile f =
      exq::io::SafetensorsFile::open(kShared / "fixtures/exl2/smollm2_layer0_4.0bpw.safetensors");
  return f;
}

LlamaModel* model(bool exl2) {
  const exq::io::SafetensorsFile& fixture = fixture_4bpw();
  static std::unique_ptr<LlamaModel> models[2];
  const char* dir = std::getenv("EXQ_TEST_MODEL");
  if (!dir || !fs::exists(dir)) return nullptr;
  auto& m = models[exl2 ? 1 : 0];
  if (m) return m.get();
  exq::io::ModelConfig config = exq::io::load_model_config(dir);
  exq::model::LlamaWeights w = exq::model::load_llama_weights(config, dir);
  if (exl2) {
    auto packed = [&](const char* name, const auto& dense) {
      const std::string key = std::string("model.layers.0.") + name;
      return std::make_unique<exq::model::Exl2Linear>(exq::io::exl2_tensors(fixture, key), dense->in_features(),
                                                      dense->out_features(), key);
    };
    for (auto& L : w.layers) {
      L.q = packed("self_attn.q_proj", L.q);
      L.k = packed("self_attn.k_proj", L.k);
      L.v = packed("self_attn.v_proj", L.v);
      L.o = packed("self_attn.o_proj", L.o);
      L.gate = packed("mlp.gate_proj", L.gate);
      L.up = packed("mlp.up_proj", L.up);
      L.down = packed("mlp.down_proj", L.down);
    }
  }
  m = std::make_unique<LlamaModel>(std::move(config), std::move(w));
  return m.get();
}

std::vector<int32_t> tokens(size_t n) {
  static const exq::io::SafetensorsFile f =
      exq::io::SafetensorsFile::open(kShared / "fixtures/smollm2/ppl_ids.safetensors");
  auto ids = f.get("wiki").span<int32_t>();
  return {ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n)};
}

// range(0): 0 = fp16, 1 = EXL2 4.0 bpw.
void BM_Exl2Decode(benchmark::State& state) {
  LlamaModel* m = model(state.range(0) == 1);
  if (!m) return state.SkipWithError("EXQ_TEST_MODEL is not set");
  const int64_t prompt = 128, steps = 128;
  const std::vector<int32_t> ids = tokens(static_cast<size_t>(prompt + steps));
  KvCache cache = m->make_cache(prompt + steps);
  m->forward(std::span(ids).first(static_cast<size_t>(prompt)), cache);
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    if (cache.length() == prompt + steps) cache.truncate(prompt);
    const int32_t next = ids[static_cast<size_t>(cache.length())];
    benchmark::DoNotOptimize(m->forward(std::span(&next, 1), cache).raw());
  }
  state.counters["cpu_ms/token"] =
      1e3 * (process_cpu_seconds() - cpu0) / static_cast<double>(state.iterations());
  state.SetLabel(state.range(0) == 1 ? "exl2 4.0bpw" : "fp16");
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = exq::num_threads();
}

void BM_Exl2Prefill(benchmark::State& state) {
  LlamaModel* m = model(state.range(0) == 1);
  if (!m) return state.SkipWithError("EXQ_TEST_MODEL is not set");
  const int64_t T = 256;
  const std::vector<int32_t> ids = tokens(static_cast<size_t>(T));
  KvCache cache = m->make_cache(T);
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    cache.reset();
    benchmark::DoNotOptimize(m->forward(ids, cache).raw());
  }
  state.counters["cpu_ms/token"] =
      1e3 * (process_cpu_seconds() - cpu0) / static_cast<double>(state.iterations() * T);
  state.SetLabel(state.range(0) == 1 ? "exl2 4.0bpw" : "fp16");
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = exq::num_threads();
}

// One fixture layer: range(0) 0 = mlp.gate_proj (576 -> 1536), 1 = mlp.down_proj (1536 -> 576),
// 2 = self_attn.q_proj (576 -> 576), 3 = self_attn.k_proj (576 -> 192); range(1) tokens;
// range(2) 0 = fp16 cpu::matmul of the dequantized weight, 1 = fused, 2 = dequantized tiles.
// Picks the Auto threshold exl2_dequantize_min_tokens().
void BM_Exl2Layer(benchmark::State& state) {
  static const struct {
    const char* name;
    int64_t in, out;
  } kLayers[] = {{"mlp.gate_proj", 576, 1536},
                 {"mlp.down_proj", 1536, 576},
                 {"self_attn.q_proj", 576, 576},
                 {"self_attn.k_proj", 576, 192}};
  const auto& L = kLayers[state.range(0)];
  const int64_t in = L.in, out = L.out, T = state.range(1);
  const std::string key = std::string("model.layers.0.") + L.name;
  const exq::io::Exl2Tensors t = exq::io::exl2_tensors(fixture_4bpw(), key);
  const exq::model::Exl2Linear layer(t, in, out, key);
  const exq::Tensor w16 = exq::io::dequantize_exl2(t, in, out, key, exq::DType::F16);
  exq::Tensor x(exq::DType::F32, {T, in}), y(exq::DType::F32, {T, out});
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (float& v : x.span<float>()) v = nd(rng);
  const auto path =
      state.range(2) == 1 ? exq::cpu::Exl2Path::Fused : exq::cpu::Exl2Path::Dequantize;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    if (state.range(2) == 0)
      exq::cpu::matmul(x.view(), w16.view(), y.view());
    else
      exq::cpu::exl2_matmul(layer.matmul_weight(), x.data<float>(), T, y.data<float>(), path);
    benchmark::DoNotOptimize(y.raw());
  }
  state.SetLabel(state.range(2) == 0 ? "fp16" : state.range(2) == 1 ? "fused" : "dequantize");
  state.counters["cpu_us/token"] =
      1e6 * (process_cpu_seconds() - cpu0) / static_cast<double>(state.iterations() * T);
}

BENCHMARK(BM_Exl2Layer)
    ->ArgsProduct({{0, 1, 2, 3}, {1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 64, 256}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.3);
BENCHMARK(BM_Exl2Decode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_Exl2Prefill)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
