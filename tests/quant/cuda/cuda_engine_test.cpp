// The CUDA engine against the CPU engine on SmolLM2 (layers 0 and 15, 4 rows x 256 tokens of
// the calibration mix): every table row's accuracy within 0.002, identical bits, targets within
// 1e-3; the quantization step at a fixed option gives valid EXL2 tensors and an rfn close to
// the CPU's. Then the engine against itself: states streamed through 2 or 1 row slots under a
// tight budget give byte-identical results, a budget below one module is a clear error, and
// NaN in the states names the module. Needs a GPU and EXQ_TEST_MODEL.
#include "quant/cuda/cuda_engine.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "engine_test_util.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "quant/calibration.h"
#include "quant/engine.h"
#include "quant/module_forward.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant::cuda {
namespace {

using test::expect_measurements_close;
using test::expect_measurements_identical;
using test::expect_packed_identical;

constexpr int64_t kRows = 4, kTokens = 256;
constexpr int64_t kLayers[] = {0, 15};

// Inputs of the measured blocks and the CPU engine's results, built once (the CPU measurement
// of two layers is the slow part of this suite).
struct Smol {
  io::ModelConfig config;
  std::map<int64_t, LayerF32> layer;
  std::map<int64_t, Tensor> attn_in;  // states entering layer l's attention block
  std::map<int64_t, ModuleResult> cpu_attn, cpu_mlp;
};

const Smol& smol() {
  static const std::unique_ptr<Smol> s = [] {
    auto out = std::make_unique<Smol>();
    const auto model = exq::test::test_model();
    out->config = io::load_model_config(model);
    const io::SafetensorsModel files = io::SafetensorsModel::open(model);
    const auto tok = tokenizer::Tokenizer::from_file(model / "tokenizer.json");
    const CalibrationRows cal =
        calibration_rows(tok, exq::test::shared_dir() / "data", kRows, kTokens,
                         static_cast<int32_t>(out->config.vocab_size));
    Tensor states = embed_rows(files.get("model.embed_tokens.weight"), cal.ids, kRows, kTokens);
    Tensor mid(DType::F32, states.shape());
    ModuleForward fwd(out->config, kTokens);
    const auto cpu = make_cpu_engine(out->config, kTokens);
    for (int64_t l = 0; l <= 15; ++l) {
      LayerF32 layer = load_layer_f32(files, out->config, l);
      if (l != 0 && l != 15) {
        fwd.attention_rows(attn_weights(layer), states, mid);
        fwd.mlp_rows(mlp_weights(layer), mid, states);
        continue;
      }
      out->attn_in[l] = Tensor::copy_of(states);
      ModuleResult a =
          cpu->measure_attention(layer, states, fmt::format("model.layers.{}.self_attn", l), {});
      ModuleResult m = cpu->measure_mlp(layer, a.target, fmt::format("model.layers.{}.mlp", l), {});
      states = Tensor::copy_of(m.target);
      out->cpu_attn.emplace(l, std::move(a));
      out->cpu_mlp.emplace(l, std::move(m));
      out->layer.emplace(l, std::move(layer));
    }
    return out;
  }();
  return *s;
}

// Progress on stderr, flushed: a crash report then names the last step reached (stdout is
// block-buffered when piped, so its last lines lag behind).
void step(const std::string& what) {
  std::fprintf(stderr, "[cuda_engine_test] %s\n", what.c_str());
  std::fflush(stderr);
}

std::string attn_key(int64_t l) { return fmt::format("model.layers.{}.self_attn", l); }
std::string mlp_key(int64_t l) { return fmt::format("model.layers.{}.mlp", l); }

#define REQUIRE_GPU_AND_MODEL() \
  do {                          \
    EXQ_REQUIRE_GPU();          \
    EXQ_REQUIRE_MODEL();        \
  } while (0)

TEST(CudaEngineSmolLM2, MeasurementMatchesTheCpuEngine) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  const auto gpu = make_cuda_engine(s.config, kTokens, {});
  EXPECT_EQ(gpu->name(), "cuda");
  for (int64_t l : kLayers) {
    step(fmt::format("Measurement: layer {} attention", l));
    const ModuleResult a = gpu->measure_attention(s.layer.at(l), s.attn_in.at(l), attn_key(l), {});
    std::printf("%s\n", gpu->module_stats().dump().c_str());
    expect_measurements_close(a, s.cpu_attn.at(l), 0.002, 1e-3);
    EXPECT_EQ(a.measurement.rows->size(), attn_option_table().size());
    // Same input as the CPU's MLP measurement: the CPU attention target.
    step(fmt::format("Measurement: layer {} MLP", l));
    const ModuleResult m = gpu->measure_mlp(s.layer.at(l), s.cpu_attn.at(l).target, mlp_key(l), {});
    std::printf("%s\n", gpu->module_stats().dump().c_str());
    std::fflush(stdout);
    step(fmt::format("Measurement: layer {} MLP compare", l));
    expect_measurements_close(m, s.cpu_mlp.at(l), 0.002, 1e-3);
    EXPECT_EQ(m.measurement.rows->size(), mlp_option_table().size());
    const auto stats = gpu->module_stats();
    EXPECT_TRUE(stats.at("states_resident").get<bool>());
    EXPECT_EQ(stats.at("rows_per_chunk").get<int64_t>(), kRows);
    EXPECT_GT(stats.at("gpu_s").get<double>(), 0.0);
    EXPECT_GE(stats.at("bytes_h2d").get<size_t>(), static_cast<size_t>(kRows * kTokens * 576 * 4));
    EXPECT_LE(stats.at("peak_vram_bytes").get<size_t>(),
              stats.at("vram_budget_bytes").get<size_t>());
    step(fmt::format("Measurement: layer {} done", l));
  }
  step("Measurement: destroying the engine");
}

TEST(CudaEngineSmolLM2, TokenAndSkip0MetricsMatchTheCpuEngine) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  const auto gpu = make_cuda_engine(s.config, kTokens, {});
  const auto cpu = make_cpu_engine(s.config, kTokens);
  const int64_t l = 15;
  for (ErrorMetric metric : {ErrorMetric::kToken, ErrorMetric::kSkip0}) {
    SCOPED_TRACE(error_metric_name(metric));
    MeasureOptions o;  // every third row of each table: the CPU side is the slow one
    o.metric = metric;
    for (size_t i = 0; i < attn_option_table().size(); i += 3)
      o.attn_table.push_back(attn_option_table()[i]);
    for (size_t i = 0; i < mlp_option_table().size(); i += 3)
      o.mlp_table.push_back(mlp_option_table()[i]);
    step(fmt::format("Metric {}: attention", error_metric_name(metric)));
    const ModuleResult ga = gpu->measure_attention(s.layer.at(l), s.attn_in.at(l), attn_key(l), o);
    const ModuleResult ca = cpu->measure_attention(s.layer.at(l), s.attn_in.at(l), attn_key(l), o);
    expect_measurements_close(ga, ca, 0.002, 1e-3);
    step(fmt::format("Metric {}: MLP", error_metric_name(metric)));
    const ModuleResult gm = gpu->measure_mlp(s.layer.at(l), ca.target, mlp_key(l), o);
    const ModuleResult cm = cpu->measure_mlp(s.layer.at(l), ca.target, mlp_key(l), o);
    expect_measurements_close(gm, cm, 0.002, 1e-3);
    // The metric is really applied: it moves some accuracy away from the row metric's.
    double moved = 0.0;
    const auto& row_rows = *s.cpu_attn.at(l).measurement.rows;
    const auto& got_rows = *ga.measurement.rows;
    for (size_t i = 0; i < got_rows.size(); ++i)
      moved = std::max(moved, std::fabs(got_rows[i].accuracy - row_rows[3 * i].accuracy));
    std::printf("metric %s: largest accuracy change vs row metric %.5f\n",
                error_metric_name(metric), moved);
    EXPECT_GT(moved, 0.002);
  }
}

TEST(CudaEngineSmolLM2, QuantizeStepMatchesTheCpuEngine) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  const auto gpu = make_cuda_engine(s.config, kTokens, {});
  const auto cpu = make_cpu_engine(s.config, kTokens);
  const AttnOptions attn = attn_option_table()[6];  // 1:4b_128g everywhere
  const MlpOptions mlp = mlp_option_table()[7];     // 4-bit, 8-bit head of down
  const int64_t l = 15;
  const std::vector<std::pair<int64_t, int64_t>> dims_a = {
      {s.config.q_dim(), s.config.hidden_size},
      {s.config.kv_dim(), s.config.hidden_size},
      {s.config.kv_dim(), s.config.hidden_size},
      {s.config.hidden_size, s.config.q_dim()}};
  const std::vector<std::pair<int64_t, int64_t>> dims_m = {
      {s.config.intermediate_size, s.config.hidden_size},
      {s.config.intermediate_size, s.config.hidden_size},
      {s.config.hidden_size, s.config.intermediate_size}};
  step("Quantize: gpu attention");
  const QuantStep ga = gpu->quantize_attention(s.layer.at(l), l, s.attn_in.at(l), attn);
  step("Quantize: cpu attention");
  const QuantStep ca = cpu->quantize_attention(s.layer.at(l), l, s.attn_in.at(l), attn);
  step("Quantize: attention packed valid");
  test::expect_packed_valid(ga, ca, dims_a);
  step("Quantize: attention step close");
  test::expect_step_close(ga, ca);
  step("Quantize: gpu MLP");
  const QuantStep gm = gpu->quantize_mlp(s.layer.at(l), l, ca.output, mlp);
  step("Quantize: cpu MLP");
  const QuantStep cm = cpu->quantize_mlp(s.layer.at(l), l, ca.output, mlp);
  step("Quantize: MLP packed valid");
  test::expect_packed_valid(gm, cm, dims_m);
  step("Quantize: MLP step close");
  test::expect_step_close(gm, cm);
  std::printf("%s\n", gpu->module_stats().dump().c_str());
}

// SmolLM2's head is tied; its embedding stands in for an untied head of the same shape.
TEST(CudaEngineSmolLM2, HeadStepMatchesTheCpuStep) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  const io::SafetensorsModel files = io::SafetensorsModel::open(exq::test::test_model());
  const TensorView head = files.get("model.embed_tokens.weight");
  const TensorView norm = files.get("model.norm.weight");
  const TensorView x = s.attn_in.at(15);
  const auto eps = static_cast<float>(s.config.rms_norm_eps);
  const auto gpu = make_cuda_engine(s.config, kTokens, {});
  const auto cpu = make_cpu_engine(s.config, kTokens);
  step("Head: gpu");
  const QuantStep g = gpu->quantize_head(x, norm, head, eps, 6);
  const auto stats = gpu->module_stats();
  std::printf("%s\n", stats.dump().c_str());
  EXPECT_LE(stats.at("peak_vram_bytes").get<size_t>(), stats.at("vram_budget_bytes").get<size_t>());
  step("Head: cpu");
  const QuantStep c = cpu->quantize_head(x, norm, head, eps, 6);
  test::expect_packed_valid(g, c, {{head.dim(0), head.dim(1)}});
  EXPECT_NEAR(g.rfn, c.rfn, 0.1 * c.rfn + 1e-4);
  EXPECT_TRUE(g.output.empty());
  const Tensor& qg = g.packed.at(0).second.q_weight;
  const Tensor& qc = c.packed.at(0).second.q_weight;
  ASSERT_EQ(qg.nbytes(), qc.nbytes());
  const auto* a = static_cast<const uint32_t*>(qg.raw());
  const auto* b = static_cast<const uint32_t*>(qc.raw());
  int64_t same = 0;
  const int64_t words = static_cast<int64_t>(qg.nbytes() / 4);
  for (int64_t i = 0; i < words; ++i) same += a[i] == b[i];
  std::printf("head: rfn %.6f (cpu %.6f), q_weight words equal %.4f %%\n", g.rfn, c.rfn,
              100.0 * static_cast<double>(same) / static_cast<double>(words));
  EXPECT_GE(static_cast<double>(same), 0.98 * static_cast<double>(words));
  // NaN in the states is an error.
  Tensor bad = Tensor::copy_of(x);
  bad.data<float>()[5] = NAN;
  EXPECT_THROW(gpu->quantize_head(bad, norm, head, eps, 6), Error);
  // A budget too small for the head step: the CPU step runs instead, with its exact bytes.
  CudaEngineOptions small;
  small.vram_budget_bytes = size_t{64} << 20;
  const auto tight = make_cuda_engine(s.config, kTokens, small);
  step("Head: over budget");
  test::expect_packed_identical(tight->quantize_head(x, norm, head, eps, 6), c);
  EXPECT_EQ(tight->module_stats().at("engine"), "cpu");
}

TEST(CudaEngineSmolLM2, StreamingUnderATightBudgetGivesIdenticalResults) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  const int64_t l = 0;
  const LayerF32& layer = s.layer.at(l);
  const TensorView x = s.attn_in.at(l);
  MeasureOptions few;  // a third of each table keeps this test short
  for (size_t i = 0; i < attn_option_table().size(); i += 3)
    few.attn_table.push_back(attn_option_table()[i]);
  for (size_t i = 0; i < mlp_option_table().size(); i += 3)
    few.mlp_table.push_back(mlp_option_table()[i]);
  const AttnOptions qa = attn_option_table()[4];
  const MlpOptions qm = mlp_option_table()[4];

  step("Streaming: reference engine");
  const auto ref = make_cuda_engine(s.config, kTokens, {});
  const ModuleResult a0 = ref->measure_attention(layer, x, attn_key(l), few);
  const ModuleResult m0 = ref->measure_mlp(layer, a0.target, mlp_key(l), few);
  const size_t peak = ref->module_stats().at("peak_vram_bytes").get<size_t>();
  const QuantStep qa0 = ref->quantize_attention(layer, l, x, qa);
  const QuantStep qm0 = ref->quantize_mlp(layer, l, qa0.output, qm);

  for (int64_t slots : {2, 1}) {
    SCOPED_TRACE(fmt::format("{} row slot(s)", slots));
    CudaEngineOptions o;
    o.vram_budget_bytes = peak;  // what the resident run held at most
    o.max_rows_on_device = slots;
    step(fmt::format("Streaming: {} slot(s)", slots));
    const auto tight = make_cuda_engine(s.config, kTokens, o);
    const ModuleResult a1 = tight->measure_attention(layer, x, attn_key(l), few);
    auto stats = tight->module_stats();
    std::printf("%s\n", stats.dump().c_str());
    EXPECT_EQ(stats.at("rows_per_chunk").get<int64_t>(), slots);
    EXPECT_FALSE(stats.at("states_resident").get<bool>());
    EXPECT_LE(stats.at("peak_vram_bytes").get<size_t>(), peak);
    expect_measurements_identical(a1, a0);
    step(fmt::format("Streaming: {} slot(s) MLP", slots));
    const ModuleResult m1 = tight->measure_mlp(layer, a0.target, mlp_key(l), few);
    expect_measurements_identical(m1, m0);
    step(fmt::format("Streaming: {} slot(s) quantize", slots));
    const QuantStep qa1 = tight->quantize_attention(layer, l, x, qa);
    expect_packed_identical(qa1, qa0);
    const QuantStep qm1 = tight->quantize_mlp(layer, l, qa0.output, qm);
    expect_packed_identical(qm1, qm0);
    stats = tight->module_stats();
    EXPECT_GT(stats.at("bytes_h2d").get<size_t>(), 2 * x.nbytes());  // x and targets again
  }
  // A second run of the same engine repeats itself too.
  expect_measurements_identical(ref->measure_attention(layer, x, attn_key(l), few), a0);
}

TEST(CudaEngineSmolLM2, BudgetBelowOneModuleIsAClearError) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  for (size_t budget : {size_t{1} << 20, size_t{40} << 20}) {
    step(fmt::format("Budget: {} bytes", budget));
    CudaEngineOptions o;
    o.vram_budget_bytes = budget;
    const auto gpu = make_cuda_engine(s.config, kTokens, o);
    try {
      gpu->measure_mlp(s.layer.at(0), s.cpu_attn.at(0).target, mlp_key(0), {});
      ADD_FAILURE() << "expected exq::Error for a budget of " << budget;
    } catch (const Error& e) {
      const std::string m = e.what();
      std::printf("%s\n", m.c_str());
      EXPECT_NE(m.find("measure model.layers.0.mlp"), std::string::npos) << m;
      EXPECT_NE(m.find("VRAM budget of"), std::string::npos) << m;
    }
  }
}

TEST(CudaEngineSmolLM2, NonFiniteStatesNameTheModule) {
  REQUIRE_GPU_AND_MODEL();
  const Smol& s = smol();
  const auto gpu = make_cuda_engine(s.config, kTokens, {});
  step("NonFinite: measuring bad states");
  Tensor bad = Tensor::copy_of(s.attn_in.at(15));
  bad.data<float>()[3 * kTokens * 576 + 17] = NAN;
  try {
    gpu->measure_attention(s.layer.at(15), bad, attn_key(15), {});
    ADD_FAILURE() << "expected exq::Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("measure model.layers.15.self_attn"), std::string::npos) << m;
    EXPECT_NE(m.find("NaN"), std::string::npos) << m;
    EXPECT_NE(m.find(std::to_string(3 * kTokens * 576 + 17)), std::string::npos) << m;
  }
  step("NonFinite: measuring again");
  // The engine is still usable afterwards.
  const ModuleResult a = gpu->measure_attention(s.layer.at(15), s.attn_in.at(15), attn_key(15), {});
  expect_measurements_close(a, s.cpu_attn.at(15), 0.002, 1e-3);
}

}  // namespace
}  // namespace exq::quant::cuda
