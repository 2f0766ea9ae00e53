// Optimizer on exllamav2's own SmolLM2 measurement: time per solve plus the quality counters
// (sum of log errors, max error, bpw) that the issue compares against exllamav2's optimizer.
#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "quant/optimize.h"

namespace {

std::vector<exq::quant::ModuleCandidates> load() {
  const char* env = std::getenv("EXQ_SHARED");
  const std::filesystem::path shared =
      env ? env : std::filesystem::path(EXQ_SOURCE_DIR).parent_path() / "shared";
  std::ifstream f(shared / "fixtures/exl2/smollm2_measurement.json");
  const auto j = nlohmann::json::parse(f);
  std::vector<exq::quant::ModuleCandidates> mods;
  for (const auto& [name, rows] : j.at("measurement").items()) {
    if (name.rfind("model.layers.", 0) != 0) continue;
    exq::quant::ModuleCandidates m{name, {}};
    for (const auto& r : rows)
      m.rows.push_back({r.at("total_bits").get<int64_t>(), 1.0 - r.at("accuracy").get<double>()});
    mods.push_back(std::move(m));
  }
  return mods;
}

void BM_OptimizeSmolLM2(benchmark::State& state) {
  const auto mods = load();
  const double bpw = static_cast<double>(state.range(0)) / 10.0;
  constexpr int64_t kWeights = 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576);
  exq::quant::OptimizeResult res;
  for (auto _ : state) {
    res = exq::quant::optimize(mods, {.target_bpw = bpw, .decoder_weights = kWeights});
    benchmark::DoNotOptimize(res.total_bits);
  }
  state.counters["bpw"] = res.bpw;
  state.counters["sum_log_err"] = res.sum_log_err;
  state.counters["max_err"] = res.max_err;
}
BENCHMARK(BM_OptimizeSmolLM2)->Arg(40)->Arg(25)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
