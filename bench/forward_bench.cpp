// Forward-pass throughput of the real model ($EXQ_TEST_MODEL, e.g. the fp16 SmolLM2 folder):
// prefill of 512 tokens, and batch-1 decode after a 128-token prompt. Token ids are the wiki
// window of fixtures/smollm2/ppl_ids.safetensors (any ids would do; these are realistic).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/llama.h"

namespace {

using exq::model::KvCache;
using exq::model::LlamaModel;

LlamaModel* model() {
  static std::unique_ptr<LlamaModel> m = [] {
    const char* dir = std::getenv("EXQ_TEST_MODEL");
    if (!dir || !std::filesystem::exists(dir)) return std::unique_ptr<LlamaModel>();
    return std::make_unique<LlamaModel>(LlamaModel::load(dir));
  }();
  return m.get();
}

std::vector<int32_t> tokens(size_t n) {
  static const exq::io::SafetensorsFile f = exq::io::SafetensorsFile::open(
      std::filesystem::path(EXQ_SOURCE_DIR).parent_path() / "shared/fixtures/smollm2/ppl_ids.safetensors");
  auto ids = f.get("wiki").span<int32_t>();
  return {ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n)};
}

void BM_Prefill(benchmark::State& state) {
  LlamaModel* m = model();
  if (!m) return state.SkipWithError("EXQ_TEST_MODEL is not set");
  const int64_t T = state.range(0);
  const std::vector<int32_t> ids = tokens(static_cast<size_t>(T));
  KvCache cache = m->make_cache(T);
  for (auto _ : state) {
    cache.reset();
    benchmark::DoNotOptimize(m->forward(ids, cache).raw());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = exq::num_threads();
}

void BM_Decode(benchmark::State& state) {
  LlamaModel* m = model();
  if (!m) return state.SkipWithError("EXQ_TEST_MODEL is not set");
  const int64_t prompt = state.range(0), steps = 128;
  const std::vector<int32_t> ids = tokens(static_cast<size_t>(prompt + steps));
  KvCache cache = m->make_cache(prompt + steps);
  m->forward(std::span(ids).first(static_cast<size_t>(prompt)), cache);
  for (auto _ : state) {
    if (cache.length() == prompt + steps) cache.truncate(prompt);  // decode positions 128..255
    const int32_t next = ids[static_cast<size_t>(cache.length())];
    benchmark::DoNotOptimize(m->forward(std::span(&next, 1), cache).raw());
  }
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = exq::num_threads();
}

BENCHMARK(BM_Prefill)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_Decode)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
