// The CUDA engine against the CPU engine on a small random Llama-shaped layer with biases on
// every linear (paths SmolLM2 lacks), attention weights exact in fp16 and MLP weights that are
// not (GPTQ then reads an F32 copy), and T not a multiple of the kernels' tiles; streaming,
// budgets, host waits and errors. The forward-only calls are cuda_engine_forward_test.cpp's.
// Needs a GPU, not the test model.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine_test_util.h"
#include "quant/cuda/cuda_engine.h"
#include "quant/engine.h"
#include "quant/module_forward.h"
#include "synthetic_inputs.h"

namespace exq::quant::cuda {
namespace {

using namespace test::synthetic;

TEST(CudaEngineSynthetic, MeasurementWithBiasesMatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 11);
  const Tensor x = random_states(c, 5);
  const MeasureOptions opts = some_rows();
  const auto cpu = make_cpu_engine(c, 128);
  const auto gpu = make_cuda_engine(c, 128, {});
  const ModuleResult ca = cpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  const ModuleResult ga = gpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  std::printf("%s\n", gpu->module_stats().dump().c_str());
  test::expect_measurements_close(ga, ca, 0.002, 1e-3);
  const ModuleResult cm = cpu->measure_mlp(layer, ca.target, "model.layers.0.mlp", opts);
  const ModuleResult gm = gpu->measure_mlp(layer, ca.target, "model.layers.0.mlp", opts);
  std::printf("%s\n", gpu->module_stats().dump().c_str());
  test::expect_measurements_close(gm, cm, 0.002, 1e-3);
  for (double e : gm.errors) EXPECT_GT(e, 0.0);
}

TEST(CudaEngineSynthetic, QuantizeWithBiasesMatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 12);
  const Tensor x = random_states(c, 6);
  const auto cpu = make_cpu_engine(c, 128);
  const auto gpu = make_cuda_engine(c, 128, {});
  const AttnOptions ao = attn_option_table()[10];
  const MlpOptions mo = mlp_option_table()[9];
  const QuantStep ca = cpu->quantize_attention(layer, 0, x, ao);
  const QuantStep ga = gpu->quantize_attention(layer, 0, x, ao);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), in = c.intermediate_size;
  test::expect_packed_valid(ga, ca, {{q, h}, {kv, h}, {kv, h}, {h, q}});
  test::expect_step_close(ga, ca);
  for (size_t i = 0; i < ga.packed.size(); ++i)  // fp16 of the F32 bias, like the CPU
    EXPECT_TRUE(test::same_bytes(ga.packed[i].second.bias, ca.packed[i].second.bias))
        << ga.packed[i].first;
  const QuantStep cm = cpu->quantize_mlp(layer, 0, ca.output, mo);
  const QuantStep gm = gpu->quantize_mlp(layer, 0, ca.output, mo);
  test::expect_packed_valid(gm, cm, {{in, h}, {in, h}, {h, in}});
  test::expect_step_close(gm, cm);
  // Streaming one row at a time changes nothing.
  CudaEngineOptions o;
  o.max_rows_on_device = 1;
  const auto one = make_cuda_engine(c, 128, o);
  test::expect_packed_identical(one->quantize_mlp(layer, 0, ca.output, mo), gm);
  EXPECT_EQ(one->module_stats().at("rows_per_chunk").get<int64_t>(), 1);
}

// qwen3: each head of q and k RMS-normed before rotary, in the tensor-core attention path and
// in the exact f32 one; measurement, quantization and the forward match the CPU engine.
TEST(CudaEngineSynthetic, Qwen3QkNormMatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  io::ModelConfig c = test::tiny_config(/*out_bias=*/false);
  c.model_type = "qwen3";
  c.qk_norm = true;
  c.attention_qkv_bias = false;
  auto no_qkv_bias = [](LayerF32 l) {
    l.q_bias = Tensor();
    l.k_bias = Tensor();
    l.v_bias = Tensor();
    return l;
  };
  LayerF32 layer = no_qkv_bias(random_layer(c, 13));
  std::mt19937 rng(77);
  layer.q_norm = random({c.head_dim}, rng, 0.2f, 1.0f, true);
  layer.k_norm = random({c.head_dim}, rng, 0.2f, 1.0f, true);
  const Tensor x = random_states(c, 7);
  const MeasureOptions opts = some_rows();
  const auto cpu = make_cpu_engine(c, 128);
  const ModuleResult ca = cpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  // Without the norms the target differs: the test sees them.
  const LayerF32 plain = no_qkv_bias(random_layer(c, 13));
  io::ModelConfig pc = c;
  pc.qk_norm = false;
  const ModuleResult pa =
      make_cpu_engine(pc, 128)->measure_attention(plain, x, "model.layers.0.self_attn", opts);
  EXPECT_GT(relative_error(pa.target, ca.target), 1e-2);
  for (const bool exact : {false, true}) {
    SCOPED_TRACE(exact ? "exact f32 attention" : "tensor-core attention");
    CudaEngineOptions o;
    o.exact_attention = exact;
    const auto gpu = make_cuda_engine(c, 128, o);
    const ModuleResult ga = gpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
    test::expect_measurements_close(ga, ca, 0.002, 1e-3);
    const AttnOptions ao = attn_option_table()[10];
    const QuantStep cq = cpu->quantize_attention(layer, 0, x, ao);
    const QuantStep gq = gpu->quantize_attention(layer, 0, x, ao);
    test::expect_step_close(gq, cq);
  }
}

// phi3's longrope: both engines rotate with model::rope_table of their row length (128 above the
// original 64: the long factors, cos / sin times the attention factor).
TEST(CudaEngineSynthetic, LongRopeMatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  io::ModelConfig c = test::tiny_config(/*out_bias=*/false);
  c.rope_scaling.type = io::RopeScalingType::LongRope;
  c.rope_scaling.original_max_position_embeddings = 64;
  c.rope_scaling.factor = 8.0;
  for (int64_t i = 0; i < c.head_dim / 2; ++i) {
    c.rope_scaling.short_factor.push_back(1.0 + 0.1 * static_cast<double>(i % 3));
    c.rope_scaling.long_factor.push_back(1.0 + 1.5 * static_cast<double>(i % 4));
  }
  const LayerF32 layer = random_layer(c, 21);
  const Tensor x = random_states(c, 8);
  const MeasureOptions opts = some_rows();
  const ModuleResult ca = make_cpu_engine(c, 128)->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  io::ModelConfig plain = c;
  plain.rope_scaling = io::RopeScaling{};
  const ModuleResult pa = make_cpu_engine(plain, 128)->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  EXPECT_GT(relative_error(pa.target, ca.target), 1e-2);
  const ModuleResult ga = make_cuda_engine(c, 128, CudaEngineOptions{})->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  test::expect_measurements_close(ga, ca, 0.002, 1e-3);
}

// The GPU engine's tensor-core and exact f32 attention against the CPU engine's measurement `ca`
// and quantization of one attention module.
template <class Engine>
void expect_both_attention_paths_agree(const io::ModelConfig& c, const LayerF32& layer, const Tensor& x,
                                       const MeasureOptions& opts, const ModuleResult& ca, Engine& cpu) {
  for (const bool exact : {false, true}) {
    SCOPED_TRACE(exact ? "exact f32 attention" : "tensor-core attention");
    CudaEngineOptions o;
    o.exact_attention = exact;
    const auto gpu = make_cuda_engine(c, 128, o);
    test::expect_measurements_close(gpu->measure_attention(layer, x, "model.layers.0.self_attn", opts), ca, 0.002,
                                    1e-3);
    const AttnOptions ao = attn_option_table()[10];
    test::expect_step_close(gpu->quantize_attention(layer, 0, x, ao), cpu.quantize_attention(layer, 0, x, ao));
  }
}

// Phi-4-mini's partial rotary (the first 3/4 of each head turn, the rest pass): the tensor-core
// path (heads_f16's unrotated pairs) and the exact f32 one (backend rotary) match the CPU engine.
TEST(CudaEngineSynthetic, PartialRotaryMatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  io::ModelConfig c = test::tiny_config(/*out_bias=*/false);
  c.rotary_dim = c.head_dim * 3 / 4;
  ASSERT_EQ(c.rotary_dim % 2, 0);
  const LayerF32 layer = random_layer(c, 23);
  const Tensor x = random_states(c, 9);
  const MeasureOptions opts = some_rows();
  const auto cpu = make_cpu_engine(c, 128);
  const ModuleResult ca = cpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  io::ModelConfig full = c;
  full.rotary_dim = 0;
  const ModuleResult fa = make_cpu_engine(full, 128)->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  EXPECT_GT(relative_error(fa.target, ca.target), 1e-2);
  expect_both_attention_paths_agree(c, layer, x, opts, ca, *cpu);
}

// head_dim 96 (Phi-3 / 3.5 mini): the tensor-core attention is the runtime's prefill kernel over
// f16 caches (BlockRunner::wide), the exact path the f32 one; both match the CPU engine.
TEST(CudaEngineSynthetic, HeadDim96MatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  io::ModelConfig c = test::tiny_config(/*out_bias=*/false);
  c.head_dim = 96;  // 4 / 2 heads: q 384 wide
  const LayerF32 layer = random_layer(c, 29);
  const Tensor x = random_states(c, 11);
  const MeasureOptions opts = some_rows();
  const auto cpu = make_cpu_engine(c, 128);
  const ModuleResult ca = cpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  expect_both_attention_paths_agree(c, layer, x, opts, ca, *cpu);
}

TEST(CudaEngineSynthetic, StreamingAndBudgetsGiveIdenticalResults) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 14);
  std::mt19937 rng(8);
  const Tensor x = random({5, kTokens, c.hidden_size}, rng, 1.0f, 0.0f, false);
  const MeasureOptions opts = some_rows();
  const auto ref = make_cuda_engine(c, 128, {});
  const ModuleResult a0 = ref->measure_attention(layer, x, "a", opts);
  const ModuleResult m0 = ref->measure_mlp(layer, a0.target, "m", opts);
  const size_t peak = ref->module_stats().at("peak_vram_bytes").get<size_t>();
  const QuantStep qa0 = ref->quantize_attention(layer, 0, x, attn_option_table()[3]);
  const QuantStep qm0 = ref->quantize_mlp(layer, 0, qa0.output, mlp_option_table()[4]);
  for (int64_t slots : {3, 2, 1}) {
    SCOPED_TRACE(::testing::Message() << slots << " row slot(s)");
    CudaEngineOptions o;
    o.vram_budget_bytes = peak;
    o.max_rows_on_device = slots;
    const auto tight = make_cuda_engine(c, 128, o);
    test::expect_measurements_identical(tight->measure_attention(layer, x, "a", opts), a0);
    const auto stats = tight->module_stats();
    EXPECT_EQ(stats.at("rows_per_chunk").get<int64_t>(), slots);
    EXPECT_FALSE(stats.at("states_resident").get<bool>());
    EXPECT_LE(stats.at("peak_vram_bytes").get<size_t>(), peak);
    test::expect_measurements_identical(tight->measure_mlp(layer, a0.target, "m", opts), m0);
    test::expect_packed_identical(tight->quantize_attention(layer, 0, x, attn_option_table()[3]),
                                  qa0);
    test::expect_packed_identical(tight->quantize_mlp(layer, 0, qa0.output, mlp_option_table()[4]),
                                  qm0);
  }
  test::expect_measurements_identical(ref->measure_attention(layer, x, "a", opts), a0);
}

TEST(CudaEngineSynthetic, ErrorsMidStreamLeaveTheEngineUsable) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 15);
  std::mt19937 rng(9);
  const Tensor x = random({6, kTokens, c.hidden_size}, rng, 1.0f, 0.0f, false);
  Tensor bad = Tensor::copy_of(x);
  const int64_t at = 4 * kTokens * c.hidden_size + 100;  // row 4: found while streaming
  bad.data<float>()[at] = NAN;
  CudaEngineOptions o;
  o.max_rows_on_device = 2;
  const auto gpu = make_cuda_engine(c, 128, o);
  const ModuleResult before =
      gpu->measure_attention(layer, x, "model.layers.3.self_attn", some_rows());
  for (int pass = 0; pass < 2; ++pass) {
    try {
      if (pass == 0)
        gpu->measure_attention(layer, bad, "model.layers.3.self_attn", some_rows());
      else
        gpu->quantize_mlp(layer, 3, bad, mlp_option_table()[2]);
      ADD_FAILURE() << "expected exq::Error";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(pass == 0 ? "measure model.layers.3.self_attn: input states hold NaN/Inf"
                                 : "quantize model.layers.3.mlp: input states hold NaN/Inf"),
                std::string::npos)
          << m;
      EXPECT_NE(m.find("(element " + std::to_string(at) + ")"), std::string::npos) << m;
    }
  }
  test::expect_measurements_identical(
      gpu->measure_attention(layer, x, "model.layers.3.self_attn", some_rows()), before);
}

// Page-locked states skip the staging buffers (copied directly, checked on the device).
TEST(CudaEngineSynthetic, PinnedStatesGiveTheSameResults) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 17);
  std::mt19937 rng(11);
  const Tensor x = random({4, kTokens, c.hidden_size}, rng, 1.0f, 0.0f, false);
  Tensor pinned = Tensor::copy_of(x);
  ASSERT_EQ(cudaHostRegister(pinned.raw(), pinned.nbytes(), cudaHostRegisterDefault), cudaSuccess);
  CudaEngineOptions o;
  o.max_rows_on_device = 2;
  const auto gpu = make_cuda_engine(c, 128, o);
  const ModuleResult a = gpu->measure_attention(layer, x, "a", some_rows());
  const ModuleResult b = gpu->measure_attention(layer, pinned, "a", some_rows());
  test::expect_measurements_identical(b, a);
  EXPECT_EQ(gpu->module_stats().at("bytes_h2d").get<size_t>() > 0, true);
  const int64_t at = 3 * kTokens * c.hidden_size + 5;
  pinned.data<float>()[at] = -INFINITY;
  try {
    gpu->measure_mlp(layer, pinned, "model.layers.1.mlp", some_rows());
    ADD_FAILURE() << "expected exq::Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("measure model.layers.1.mlp: input states hold NaN/Inf (element " +
                     std::to_string(at) + ")"),
              std::string::npos)
        << m;
  }
  EXPECT_EQ(cudaHostUnregister(pinned.raw()), cudaSuccess);
}

// Engines with resident states, with host candidates and with streamed states, and the host
// waits a module makes in each: one, and for streamed states one more (the reference targets
// back on the host before they are staged again).
struct SyncCase {
  const char* name;
  CudaEngineOptions options;
  int syncs;
};

std::vector<SyncCase> sync_cases() {
  CudaEngineOptions host_candidates, streamed;
  host_candidates.host_candidates = true;
  streamed.max_rows_on_device = 1;
  return {{"resident", {}, 1}, {"host candidates", host_candidates, 1}, {"streamed", streamed, 2}};
}

// Keeps the first sync case's attention and MLP results; every later case must match them.
template <typename T, typename Same>
void expect_same_as_first_case(std::vector<T>& first, T attention, T mlp, Same&& same) {
  if (first.empty()) {
    first.push_back(std::move(attention));
    first.push_back(std::move(mlp));
    return;
  }
  same(attention, first[0]);
  same(mlp, first[1]);
}

// A measured module waits for the device once (its one download: table errors, NaN/Inf
// counts, factorization status), resident or with host candidates; streamed states add one
// (the reference targets back on the host before the tests). Results stay the same.
TEST(CudaEngineSynthetic, MeasurementWaitsOnceForTheHostPerModule) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 19);
  const Tensor x = random_states(c, 13);
  const MeasureOptions opts = some_rows();
  std::vector<ModuleResult> first;
  for (const SyncCase& k : sync_cases()) {
    SCOPED_TRACE(k.name);
    const auto gpu = make_cuda_engine(c, 128, k.options);
    const auto check = [&](const char* module, const ModuleResult& r) {
      const auto st = gpu->module_stats();
      std::printf("%s %s: %s\n", k.name, module, st.dump().c_str());
      EXPECT_EQ(st.at("host_syncs").get<int>(), k.syncs) << module;
      EXPECT_EQ(r.timing.host_syncs, k.syncs) << module;
      return st;
    };
    ModuleResult a = gpu->measure_attention(layer, x, "a", opts);
    const auto sa = check("attention", a);
    EXPECT_EQ(a.timing.staging_waits, sa.at("staging_waits").get<int>());
    EXPECT_GT(a.timing.gptq_s, 0.0);
    ModuleResult m = gpu->measure_mlp(layer, a.target, "m", opts);
    check("mlp", m);
    expect_same_as_first_case(first, std::move(a), std::move(m),
                              [](const ModuleResult& got, const ModuleResult& want) {
                                test::expect_measurements_identical(got, want);
                              });
  }
}

// The quantization pass waits like the measurement: once per module, at its end (rfn sums,
// NaN/Inf counts, factorization status; the packed results are copied to pinned memory before
// it and packed after it), resident or with host candidates. Streamed states add one wait: the
// quantized forward stages the reference targets from their host copy, so their downloads must
// have landed first. Results stay the same in every mode.
TEST(CudaEngineSynthetic, QuantizationWaitsOnceForTheHostPerModule) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 23);
  const Tensor x = random_states(c, 17);
  const auto cpu = make_cpu_engine(c, 128);
  const QuantStep ca = cpu->quantize_attention(layer, 0, x, attn_option_table()[10]);
  std::vector<QuantStep> first;
  for (const SyncCase& k : sync_cases()) {
    SCOPED_TRACE(k.name);
    const auto gpu = make_cuda_engine(c, 128, k.options);
    const auto check = [&](const char* module) {
      const auto s = gpu->module_stats();
      std::printf("%s %s: %s\n", k.name, module, s.dump().c_str());
      EXPECT_EQ(s.at("host_syncs").get<int>(), k.syncs) << module;
      const auto& reasons = s.at("sync_reasons");
      EXPECT_EQ(reasons.value("quantize: module end", 0), 1) << module;
      EXPECT_EQ(reasons.value("streamed states: reference targets back on the host", 0),
                k.syncs - 1)
          << module;
      EXPECT_EQ(reasons.size(), static_cast<size_t>(k.syncs)) << module;
      EXPECT_FALSE(s.contains("damping_retries")) << module;
      EXPECT_EQ(s.at("states_resident").get<bool>(), k.syncs == 1) << module;
      EXPECT_EQ(s.at("host_candidates").get<bool>(), k.options.host_candidates) << module;
    };
    QuantStep a = gpu->quantize_attention(layer, 0, x, attn_option_table()[10]);
    check("attention");
    // The packed tensors as the CPU's, and what the quantized forward used.
    test::expect_packed_valid(a, ca, {{c.q_dim(), c.hidden_size},
                                      {c.kv_dim(), c.hidden_size},
                                      {c.kv_dim(), c.hidden_size},
                                      {c.hidden_size, c.q_dim()}});
    QuantStep m = gpu->quantize_mlp(layer, 0, a.output, mlp_option_table()[9]);
    check("mlp");
    expect_same_as_first_case(first, std::move(a), std::move(m),
                              [](const QuantStep& got, const QuantStep& want) {
                                test::expect_packed_identical(got, want);
                              });
  }
}

// The optimistic factorization's slow path: a first attempt that fails (forced here) runs the
// module again, checked, one damping step further: the result of measuring (quantizing) with
// that damping from the start, not the normal one.
TEST(CudaEngineSynthetic, FailedFactorizationRetriesWithMoreDamping) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 21);
  const Tensor x = random_states(c, 15);
  const MeasureOptions opts = some_rows();
  CudaEngineOptions fail, more;
  fail.fail_first_factorization = 3;  // both Hessians
  more.extra_damping_steps = 1;
  const auto plain = make_cuda_engine(c, 128, {});
  const auto retried = make_cuda_engine(c, 128, fail);
  const auto direct = make_cuda_engine(c, 128, more);
  for (const bool attention : {true, false}) {
    SCOPED_TRACE(attention ? "attention" : "mlp");
    const auto measure = [&](Engine& e) {
      return attention ? e.measure_attention(layer, x, "a", opts)
                       : e.measure_mlp(layer, x, "m", opts);
    };
    const ModuleResult r = measure(*retried);
    const auto stats = retried->module_stats();
    EXPECT_EQ(stats.value("damping_retries", 0), 1);
    // The failed pass's download, one wait per checked factorization, the retry's download.
    EXPECT_EQ(stats.at("host_syncs").get<int>(), 4);
    const ModuleResult d = measure(*direct);
    EXPECT_EQ(direct->module_stats().at("host_syncs").get<int>(), 1);
    EXPECT_FALSE(direct->module_stats().contains("damping_retries"));
    test::expect_measurements_identical(r, d);
    EXPECT_NE(measure(*plain).errors, r.errors);
    // The quantization pass the same way: the packed results of the optimistic pass are
    // dropped, the checked rerun gives what quantizing with that damping gives.
    const auto quantize = [&](Engine& e) {
      return attention ? e.quantize_attention(layer, 0, x, attn_option_table()[10])
                       : e.quantize_mlp(layer, 0, x, mlp_option_table()[9]);
    };
    const QuantStep qr = quantize(*retried);
    const auto qstats = retried->module_stats();
    EXPECT_EQ(qstats.value("damping_retries", 0), 1);
    EXPECT_EQ(qstats.at("host_syncs").get<int>(), 4);
    EXPECT_EQ(qstats.at("sync_reasons").value("Cholesky status", 0), 2);
    const QuantStep qd = quantize(*direct);
    EXPECT_EQ(direct->module_stats().at("host_syncs").get<int>(), 1);
    test::expect_packed_identical(qr, qd);
    EXPECT_NE(quantize(*plain).rfn, qr.rfn);
  }
}

TEST(CudaEngineSynthetic, BudgetBelowOneModuleIsAClearError) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 16);
  std::mt19937 rng(10);
  const Tensor x = random({2, kTokens, c.hidden_size}, rng, 1.0f, 0.0f, false);
  // 64 KiB: not even the first weight; 3 MiB: the weights but not the Hessians and results.
  for (size_t budget : {size_t{64} << 10, size_t{3} << 20}) {
    CudaEngineOptions o;
    o.vram_budget_bytes = budget;
    const auto gpu = make_cuda_engine(c, 128, o);
    try {
      gpu->measure_mlp(layer, x, "model.layers.0.mlp", {});
      ADD_FAILURE() << "expected exq::Error for a budget of " << budget;
    } catch (const Error& e) {
      const std::string m = e.what();
      std::printf("%s\n", m.c_str());
      EXPECT_NE(m.find("measure model.layers.0.mlp: VRAM budget of"), std::string::npos) << m;
    }
  }
}

TEST(CudaEngineSynthetic, BadInputsAreErrorsNamingTheModule) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 13);
  std::mt19937 rng(7);
  const auto gpu = make_cuda_engine(c, 64, {});
  const Tensor too_long = random({1, 65, c.hidden_size}, rng, 1.0f, 0.0f, false);
  Tensor inf = random({2, 16, c.hidden_size}, rng, 1.0f, 0.0f, false);
  inf.data<float>()[16 * c.hidden_size + 3] = INFINITY;
  const Tensor wrong = random({2, 16, c.hidden_size + 32}, rng, 1.0f, 0.0f, false);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&too_long, &inf, &wrong}) {
    try {
      gpu->measure_mlp(layer, *t, "model.layers.7.mlp", some_rows());
      ADD_FAILURE() << "expected exq::Error for states " << shape_str(t->shape());
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("measure model.layers.7.mlp: "), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(make_cuda_engine(c, 0, {}), Error);
}

}  // namespace
}  // namespace exq::quant::cuda
