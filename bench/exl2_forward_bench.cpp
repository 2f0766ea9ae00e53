// Batch-1 decode and prefill of an EXL2 SmolLM2-shaped model on the CPU against the fp16 model
// ($EXQ_TEST_MODEL). The EXL2 model is the fp16 one with every decoder linear replaced by
// exllamav2's 4.0 bpw layer-0 tensors (fixtures/exl2; same shapes in every layer): numbers
// are meaningless as text, representative as speed. The head stays the tied fp16 embedding.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/exl2_linear.h"
#include "model/llama.h"

namespace {

namespace fs = std::filesystem;
using exq::model::KvCache;
using exq::model::LlamaModel;

const fs::path kShared = fs::path(EXQ_SOURCE_DIR).parent_path() / "shared";

LlamaModel* model(bool exl2) {
  static const exq::io::SafetensorsFile fixture =
      exq::io::SafetensorsFile::open(kShared / "fixtures/exl2/smollm2_layer0_4.0bpw.safetensors");
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
  for (auto _ : state) {
    if (cache.length() == prompt + steps) cache.truncate(prompt);
    const int32_t next = ids[static_cast<size_t>(cache.length())];
    benchmark::DoNotOptimize(m->forward(std::span(&next, 1), cache).raw());
  }
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
  for (auto _ : state) {
    cache.reset();
    benchmark::DoNotOptimize(m->forward(ids, cache).raw());
  }
  state.SetLabel(state.range(0) == 1 ? "exl2 4.0bpw" : "fp16");
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = exq::num_threads();
}

BENCHMARK(BM_Exl2Decode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_Exl2Prefill)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
