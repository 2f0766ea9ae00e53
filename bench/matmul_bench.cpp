// Matmul GFLOP/s at SmolLM2-135M shapes (decode T=1, prefill T=512) for each implementation
// and weight dtype: exq's kernel vs OpenBLAS (tiled by exq, or threaded by OpenBLAS itself).
// Args: impl (0 Kernel, 1 Blas, 2 BlasThreaded), dtype (0 f32, 1 f16), T, out, in.
#include <benchmark/benchmark.h>

#include <random>

#include "backend/cpu/matmul.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace {

using exq::DType;
using exq::Tensor;
using exq::cpu::MatmulImpl;

void BM_Matmul(benchmark::State& state) {
  const MatmulImpl impls[] = {MatmulImpl::Kernel, MatmulImpl::Blas, MatmulImpl::BlasThreaded};
  const MatmulImpl impl = impls[state.range(0)];
  const DType dt = state.range(1) == 0 ? DType::F32 : DType::F16;
  const int64_t T = state.range(2), out = state.range(3), in = state.range(4);
  if (impl == MatmulImpl::BlasThreaded && dt != DType::F32) {
    state.SkipWithError("f32 weights only");
    return;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  Tensor w(dt, {out, in});
  if (dt == DType::F32) {
    for (float& v : w.span<float>()) v = nd(rng);
  } else {
    for (uint16_t& v : w.span<uint16_t>()) v = exq::float_to_half(nd(rng));
  }
  Tensor x(DType::F32, {T, in});
  for (float& v : x.span<float>()) v = nd(rng);
  Tensor y(DType::F32, {T, out});
  for (auto _ : state) {
    exq::cpu::matmul(x, w, y, impl);
    benchmark::DoNotOptimize(y.raw());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(T * out * in),
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
  state.counters["GB/s_w"] = benchmark::Counter(static_cast<double>(w.nbytes()),
                                                benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
  state.SetLabel(exq::cpu::matmul_isa());
}

void shapes(benchmark::internal::Benchmark* b) {
  const int64_t kShapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
  for (int64_t T : {1, 512})
    for (const auto& s : kShapes)
      for (int impl = 0; impl < 3; ++impl)
        for (int dt = 0; dt < 2; ++dt)
          if (!(impl == 2 && dt == 1)) b->Args({impl, dt, T, s[0], s[1]});
}

BENCHMARK(BM_Matmul)->Apply(shapes)->ArgNames({"impl", "f16", "T", "out", "in"})->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
