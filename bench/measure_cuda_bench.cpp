// The CUDA engine on one random decoder layer of Llama-3-8B's shape (hidden 4096, intermediate
// 14336, 32/8 heads of 128, rope theta 500000; fp16 weights ~N(0, 0.02), states ~N(0, 1)):
// measurement of the attention and MLP block on --rows x --length states (exllamav2's default
// 16 x 2048) with the full option tables, and the quantization step of each at 100 x 2048 rows
// (--quant-rows). --hidden 8192 --inter 28672 --heads 64 --kv-heads 8 gives Llama-3-70B's
// layer. Reports wall seconds per module (after a warm-up module), the engine's phase times and
// its status fields (gpu_s, copy_s, copy_hidden, peak VRAM); for the quantization steps the
// engine's breakdown (stats "timing": device phases from events, host phases, packing, the
// host waits by reason), also under "timing" in the JSON. exllamav2 on the H100: 6.8 s for
// an 8B attention measurement, 15.0 s for an MLP; exq's goal is a tenth of that.
// Usage: measure_cuda_bench [--rows 16] [--length 2048] [--quant-rows 100] [--hidden 4096]
//   [--inter 14336] [--heads 32] [--kv-heads 8] [--head-dim 128] [--vram-budget GB]
//   [--no-quantize] [--pin-states] [--metric token|row|skip0] [--json FILE]
//   (plain program, needs a GPU; --metric as exq quantize's --error-metric, default token)
// --pin-states page-locks the input states before timing, as a pinned host store would hand
// them over: the engine then copies them without staging.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "backend/cuda/device.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "quant/cuda/cuda_engine.h"
#include "quant/engine.h"

namespace exq::quant {
namespace {

constexpr double kExllamav2AttnS = 6.8, kExllamav2MlpS = 15.0;  // H100, 8B layer (docs)

struct Args {
  int64_t rows = 16, length = 2048, quant_rows = 100;
  int64_t hidden = 4096, inter = 14336, heads = 32, kv_heads = 8, head_dim = 128;
  double budget_gb = 0;  // GB = 1e9 bytes, as exq quantize --vram-budget; 0: the engine's default
  bool quantize = true;
  bool pin = false;  // page-lock the states first (as a pinned host store would hand them over)
  std::string json;
  std::string metric = "token";  // as exq quantize's default
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> const char* {
      EXQ_CHECK(i + 1 < argc, "{} needs a value", k);
      return argv[++i];
    };
    if (k == "--rows")
      a.rows = std::atoll(next());
    else if (k == "--length")
      a.length = std::atoll(next());
    else if (k == "--quant-rows")
      a.quant_rows = std::atoll(next());
    else if (k == "--hidden")
      a.hidden = std::atoll(next());
    else if (k == "--inter")
      a.inter = std::atoll(next());
    else if (k == "--heads")
      a.heads = std::atoll(next());
    else if (k == "--kv-heads")
      a.kv_heads = std::atoll(next());
    else if (k == "--head-dim")
      a.head_dim = std::atoll(next());
    else if (k == "--vram-budget")
      a.budget_gb = std::atof(next());
    else if (k == "--no-quantize")
      a.quantize = false;
    else if (k == "--pin-states")
      a.pin = true;
    else if (k == "--json")
      a.json = next();
    else if (k == "--metric")
      a.metric = next();
    else
      throw Error(fmt::format("unknown argument {}", k));
  }
  EXQ_CHECK(a.rows > 0 && a.length > 0 && a.quant_rows > 0, "rows and length must be positive");
  return a;
}

// Deterministic ~N(mean, sd) values (sum of 4 uniforms, enough for a benchmark), filled in
// parallel chunks with their own seeds; fp16-rounded when asked (the model's weights).
Tensor random_tensor(Shape shape, uint64_t seed, float sd, float mean, bool f16) {
  Tensor t(DType::F32, std::move(shape));
  float* p = t.data<float>();
  constexpr int64_t kChunk = int64_t{1} << 16;
  const int64_t n = t.numel();
  parallel_for((n + kChunk - 1) / kChunk, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      uint64_t s =
          (seed + 1) * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(c) * 0xbf58476d1ce4e5b9ull;
      auto uniform = [&s] {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
      };
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const float z = (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f;
        const float v = mean + sd * z;
        p[i] = f16 ? half_to_float(float_to_half(v)) : v;
      }
    }
  });
  return t;
}

LayerF32 random_layer(const io::ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), in = c.intermediate_size;
  LayerF32 l;
  l.attn_norm = random_tensor({h}, 1, 0.05f, 1.0f, true);
  l.q = random_tensor({q, h}, 2, 0.02f, 0.0f, true);
  l.k = random_tensor({kv, h}, 3, 0.02f, 0.0f, true);
  l.v = random_tensor({kv, h}, 4, 0.02f, 0.0f, true);
  l.o = random_tensor({h, q}, 5, 0.02f, 0.0f, true);
  l.ffn_norm = random_tensor({h}, 6, 0.05f, 1.0f, true);
  l.gate = random_tensor({in, h}, 7, 0.02f, 0.0f, true);
  l.up = random_tensor({in, h}, 8, 0.02f, 0.0f, true);
  l.down = random_tensor({h, in}, 9, 0.02f, 0.0f, true);
  return l;
}

double seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

nlohmann::ordered_json timing_json(const MeasureTiming& t) {
  return {{"reference_s", t.reference_s}, {"hessian_s", t.hessian_s}, {"prepare_s", t.prepare_s},
          {"gptq_s", t.gptq_s},           {"test_s", t.test_s},       {"gptq_runs", t.gptq_runs},
          {"host_syncs", t.host_syncs},   {"staging_waits", t.staging_waits}};
}

nlohmann::ordered_json report(const char* what, double wall, Engine& engine,
                              const MeasureTiming* timing, double goal) {
  nlohmann::ordered_json j = {{"module", what}, {"seconds", wall}};
  if (timing) j["timing"] = timing_json(*timing);
  j["stats"] = engine.module_stats();
  const auto& s = j["stats"];
  std::printf("%-18s %8.3f s", what, wall);
  if (goal > 0) std::printf("  (goal %.2f s, exllamav2 %.1f s)", goal / 10.0, goal);
  std::printf(
      "\n    gpu %.3f s  copy %.3f s (%.0f %% hidden)  h2d %.2f GB  d2h %.2f GB  peak VRAM "
      "%.2f GB\n",
      s.value("gpu_s", 0.0), s.value("copy_s", 0.0), 100.0 * s.value("copy_hidden", 0.0),
      s.value("bytes_h2d", 0.0) / 1e9, s.value("bytes_d2h", 0.0) / 1e9,
      s.value("peak_vram_bytes", 0.0) / 1e9);
  if (timing)
    std::printf(
        "    reference %.3f s (Hessians %.3f)  prepare %.3f s  gptq %.3f s (%d runs)  "
        "test %.3f s  host syncs %d (staging %d)\n",
        timing->reference_s, timing->hessian_s, timing->prepare_s, timing->gptq_s,
        timing->gptq_runs, timing->test_s, timing->host_syncs, timing->staging_waits);
  if (!timing && s.contains("timing")) {  // the quantization pass's breakdown (CUDA engine)
    nlohmann::ordered_json q = s["timing"];
    q["host_syncs"] = s.value("host_syncs", 0);
    q["staging_waits"] = s.value("staging_waits", 0);
    q["host_staging_s"] = s.value("host_staging_s", 0.0);
    const auto v = [&q](const char* k) { return q.value(k, 0.0); };
    std::printf(
        "    device: reference %.3f s (Hessians %.3f)  prepare %.3f s  gptq %.3f s (%d runs)  "
        "forward %.3f s  host syncs %d (staging %d)\n"
        "    host: setup %.3f s  reference %.3f s  gptq %.3f s  forward %.3f s  staging %.3f s  "
        "packing %.3f s (threads; packed copies %.3f s), %.3f s waited for it; cudaMalloc'd "
        "%.2f GB\n",
        v("reference_s"), v("hessian_s"), v("prepare_s"), v("gptq_s"), q.value("gptq_runs", 0),
        v("forward_s"), q.value("host_syncs", 0), q.value("staging_waits", 0), v("host_setup_s"),
        v("host_reference_s"), v("host_gptq_s"), v("host_forward_s"), v("host_staging_s"),
        v("pack_s"), v("packed_download_s"), v("pack_wait_s"), v("reserved_growth_bytes") / 1e9);
    if (s.contains("sync_reasons")) {
      std::printf("    waits:");
      for (const auto& [why, n] : s["sync_reasons"].items())
        std::printf(" %s x%d;", why.c_str(), n.get<int>());
      std::printf("\n");
    }
    j["timing"] = std::move(q);
  }
  std::fflush(stdout);
  return j;
}

int run(int argc, char** argv) {
  const Args a = parse(argc, argv);
  io::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = a.hidden;
  c.intermediate_size = a.inter;
  c.num_hidden_layers = 1;
  c.num_attention_heads = a.heads;
  c.num_key_value_heads = a.kv_heads;
  c.head_dim = a.head_dim;
  c.vocab_size = 128256;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  const exq::cuda::DeviceInfo dev = exq::cuda::require_device(0);
  std::printf(
      "%s, layer hidden %lld inter %lld heads %lld/%lld x %lld; measure %lld x %lld, "
      "quantize %lld x %lld\n",
      dev.name.c_str(), static_cast<long long>(a.hidden), static_cast<long long>(a.inter),
      static_cast<long long>(a.heads), static_cast<long long>(a.kv_heads),
      static_cast<long long>(a.head_dim), static_cast<long long>(a.rows),
      static_cast<long long>(a.length), static_cast<long long>(a.quant_rows),
      static_cast<long long>(a.length));
  const LayerF32 layer = random_layer(c);
  const Tensor states = random_tensor({a.rows, a.length, a.hidden}, 10, 1.0f, 0.0f, false);
  auto pin = [&](const Tensor& t) {
    if (a.pin)
      EXQ_CHECK(cudaHostRegister(t.raw(), t.nbytes(), cudaHostRegisterDefault) == cudaSuccess,
                "cudaHostRegister of {} bytes failed", t.nbytes());
  };
  pin(states);
  cuda::CudaEngineOptions o;
  if (a.budget_gb > 0) o.vram_budget_bytes = static_cast<size_t>(a.budget_gb * 1e9);
  const auto engine = cuda::make_cuda_engine(c, a.length, o);

  // Warm-up: the full tables on one calibration row load every kernel and library handle and
  // fill the engine's pinned pool (host-candidate mode), which a conversion fills once.
  {
    MeasureOptions w;
    const TensorView one = states.view().slice0(0, 1);
    const ModuleResult r = engine->measure_attention(layer, one, "warmup.self_attn", w);
    engine->measure_mlp(layer, r.target, "warmup.mlp", w);
  }
  nlohmann::ordered_json out = {{"device", dev.name},
                                {"pinned_states", a.pin},
                                {"config",
                                 {{"hidden", a.hidden},
                                  {"intermediate", a.inter},
                                  {"heads", a.heads},
                                  {"kv_heads", a.kv_heads},
                                  {"head_dim", a.head_dim},
                                  {"rows", a.rows},
                                  {"length", a.length},
                                  {"quant_rows", a.quant_rows}}},
                                {"results", nlohmann::ordered_json::array()}};
  const bool is_8b = a.hidden == 4096 && a.inter == 14336;
  auto t0 = std::chrono::steady_clock::now();
  MeasureOptions measure;
  measure.metric = parse_error_metric(a.metric, "--metric");
  out["config"]["metric"] = a.metric;
  ModuleResult attn = engine->measure_attention(layer, states, "model.layers.0.self_attn", measure);
  double s = seconds(t0);
  out["results"].push_back(
      report("measure attention", s, *engine, &attn.timing, is_8b ? kExllamav2AttnS : 0));
  t0 = std::chrono::steady_clock::now();
  const ModuleResult mlp = engine->measure_mlp(layer, attn.target, "model.layers.0.mlp", measure);
  s = seconds(t0);
  out["results"].push_back(
      report("measure MLP", s, *engine, &mlp.timing, is_8b ? kExllamav2MlpS : 0));
  out["results"].back()["mean_error"] = [&] {
    double e = 0;
    for (double x : mlp.errors) e += x;
    return e / static_cast<double>(mlp.errors.size());
  }();

  if (a.quantize) {
    attn = ModuleResult();
    const Tensor qstates = random_tensor({a.quant_rows, a.length, a.hidden}, 11, 1.0f, 0.0f, false);
    pin(qstates);
    t0 = std::chrono::steady_clock::now();
    const QuantStep qa = engine->quantize_attention(layer, 0, qstates, attn_option_table()[6]);
    s = seconds(t0);
    out["results"].push_back(report("quantize attention", s, *engine, nullptr, 0));
    out["results"].back()["rfn"] = qa.rfn;
    t0 = std::chrono::steady_clock::now();
    const QuantStep qm = engine->quantize_mlp(layer, 0, qa.output, mlp_option_table()[7]);
    s = seconds(t0);
    out["results"].push_back(report("quantize MLP", s, *engine, nullptr, 0));
    out["results"].back()["rfn"] = qm.rfn;
  }
  if (!a.json.empty()) {
    std::ofstream f(a.json);
    f << out.dump(2) << "\n";
    EXQ_CHECK(f.good(), "cannot write {}", a.json);
  }
  return 0;
}

}  // namespace
}  // namespace exq::quant

int main(int argc, char** argv) {
  try {
    return exq::quant::run(argc, argv);
  } catch (const exq::Error& e) {
    std::fprintf(stderr, "measure_cuda_bench: %s\n", e.what());
    return 1;
  }
}
