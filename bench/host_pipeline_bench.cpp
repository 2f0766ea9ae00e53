// Host-side pieces of a conversion step around the engine call, timed on the CPU:
// - load_layer_f32 (safetensors F16 -> LayerF32) on the pool and on one thread (the background
//   prefetch's path; also the old serial to_f32 loop), needs EXQ_HOST_BENCH_MODEL=<model dir>
//   (e.g. from make_random_model --hidden 2048 --inter 5632 ...);
// - check_states over a states tensor (rows x 2048 x hidden as args) and the old serial scan;
// - a fresh states tensor: allocation plus first touch (the page faults a new output costs) and
//   HostStore adopt + release.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "memory/host_store.h"
#include "quant/module_forward.h"
#include "quant/quantize.h"

namespace {

using namespace exq;

struct BenchModel {
  io::ModelConfig config;
  io::SafetensorsModel files;
};

const BenchModel* bench_model() {
  static std::optional<BenchModel> m = []() -> std::optional<BenchModel> {
    const char* dir = std::getenv("EXQ_HOST_BENCH_MODEL");
    if (dir == nullptr || *dir == 0) return std::nullopt;
    return BenchModel{io::load_model_config(dir), io::SafetensorsModel::open(dir)};
  }();
  return m ? &*m : nullptr;
}

void BM_LoadLayer(benchmark::State& state) {
  const BenchModel* m = bench_model();
  if (m == nullptr) {
    state.SkipWithError("set EXQ_HOST_BENCH_MODEL");
    return;
  }
  const bool pool = state.range(0) != 0;
  for (auto _ : state) {
    quant::LayerF32 l = quant::load_layer_f32(m->files, m->config, 0, pool);
    benchmark::DoNotOptimize(l.down.raw());
  }
  state.SetLabel(pool ? "pool" : "one thread");
}
BENCHMARK(BM_LoadLayer)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

Tensor states_tensor(int64_t rows, int64_t hidden) {
  Tensor t(DType::F32, {rows, 2048, hidden});
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f;
  return t;
}

void BM_CheckStates(benchmark::State& state) {
  Tensor t = states_tensor(state.range(0), state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(quant::check_states(t, "bench"));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(t.nbytes()));
}
BENCHMARK(BM_CheckStates)->Args({16, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();

// The scan check_states did before it used the pool (baseline).
void BM_CheckStatesSerial(benchmark::State& state) {
  Tensor t = states_tensor(state.range(0), state.range(1));
  for (auto _ : state) {
    const float* p = t.data<float>();
    int64_t inf = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (std::isnan(p[i])) state.SkipWithError("NaN");
      if (std::isinf(p[i])) ++inf;
    }
    benchmark::DoNotOptimize(inf);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(t.nbytes()));
}
BENCHMARK(BM_CheckStatesSerial)->Args({16, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();

// A new output tensor each module: allocation, first touch (page faults), adopt, release.
void BM_FreshStates(benchmark::State& state) {
  memory::HostStore store({});
  for (auto _ : state) {
    Tensor t(DType::F32, {state.range(0), 2048, state.range(1)});
    std::memset(t.raw(), 0, t.nbytes());
    memory::HostBuffer b = store.adopt(std::move(t));
    benchmark::DoNotOptimize(b.view().raw());
  }
}
BENCHMARK(BM_FreshStates)->Args({16, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();

// The same writes into a buffer already touched (what reusing buffers between modules costs).
void BM_ReusedStates(benchmark::State& state) {
  Tensor t(DType::F32, {state.range(0), 2048, state.range(1)});
  std::memset(t.raw(), 1, t.nbytes());
  for (auto _ : state) {
    std::memset(t.raw(), 0, t.nbytes());
    benchmark::DoNotOptimize(t.raw());
  }
}
BENCHMARK(BM_ReusedStates)->Args({16, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
