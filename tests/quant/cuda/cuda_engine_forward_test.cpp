// The CUDA engine's forward-only calls (resume replay) against the measurement and
// quantization passes on synthetic_inputs.h's random layer: the layer's weights give the
// measurement target, dequantized packed weights the quantized output, on any budget and on
// file-backed states; bad inputs are errors that leave the engine usable. Needs a GPU, not the
// test model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/half.h"
#include "engine_test_util.h"
#include "io/exl2.h"
#include "memory/host_store.h"
#include "quant/cuda/cuda_engine.h"
#include "quant/engine.h"
#include "quant/module_forward.h"
#include "synthetic_inputs.h"
#include "test_support.h"

namespace exq::quant::cuda {
namespace {

using namespace test::synthetic;

// The step's linears dequantized from its packed tensors, F32 [out, in], as replay.cpp reads
// them back from a committed module.
std::vector<Tensor> dequantized(const QuantStep& step,
                                const std::vector<std::pair<int64_t, int64_t>>& dims) {
  std::vector<Tensor> w;
  for (size_t i = 0; i < step.packed.size(); ++i)
    w.push_back(io::dequantize_exl2(step.packed[i].second.view(), dims[i].second, dims[i].first,
                                    step.packed[i].first, DType::F32));
  return w;
}

// Engines replaying a module must reproduce the pass's states exactly, on any budget.
std::vector<std::unique_ptr<Engine>> replay_engines(const io::ModelConfig& c) {
  std::vector<std::unique_ptr<Engine>> e;
  e.push_back(make_cuda_engine(c, 128, {}));
  CudaEngineOptions one;
  one.max_rows_on_device = 1;
  e.push_back(make_cuda_engine(c, 128, one));
  return e;
}

TEST(CudaEngineSynthetic, ForwardWithTheLayerWeightsIsTheMeasurementTarget) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 21);
  const Tensor x = random_states(c, 21);
  const auto gpu = make_cuda_engine(c, 128, {});
  const ModuleResult a = gpu->measure_attention(layer, x, "a", some_rows());
  const ModuleResult m = gpu->measure_mlp(layer, a.target, "m", some_rows());
  for (const auto& e : replay_engines(c)) {
    Tensor ya = Tensor::zeros(DType::F32, x.shape());
    e->forward_attention(attn_weights(layer), x, ya);
    EXPECT_TRUE(test::same_bytes(ya, a.target)) << "attention, " << test::stats_line(*e);
    const auto stats = e->module_stats();
    EXPECT_EQ(stats.at("engine").get<std::string>(), "cuda");
    EXPECT_GT(stats.at("bytes_d2h").get<size_t>(), 0u);
    EXPECT_LE(stats.at("peak_vram_bytes").get<size_t>(),
              stats.at("vram_budget_bytes").get<size_t>());
    Tensor ym = Tensor::zeros(DType::F32, x.shape());
    e->forward_mlp(mlp_weights(layer), a.target, ym);
    EXPECT_TRUE(test::same_bytes(ym, m.target)) << "MLP, " << test::stats_line(*e);
  }
  // The engine measures as before after a forward.
  test::expect_measurements_identical(gpu->measure_attention(layer, x, "a", some_rows()), a);
}

TEST(CudaEngineSynthetic, ForwardWithDequantizedWeightsIsTheQuantizedOutput) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 22);
  const Tensor x = random_states(c, 22);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), in = c.intermediate_size;
  const auto gpu = make_cuda_engine(c, 128, {});
  const QuantStep qa = gpu->quantize_attention(layer, 0, x, attn_option_table()[10]);
  const QuantStep qm = gpu->quantize_mlp(layer, 0, qa.output, mlp_option_table()[9]);
  const std::vector<Tensor> wa = dequantized(qa, {{q, h}, {kv, h}, {kv, h}, {h, q}});
  const std::vector<Tensor> wm = dequantized(qm, {{in, h}, {in, h}, {h, in}});
  AttnWeights aw = attn_weights(layer);
  aw.q = wa[0];
  aw.k = wa[1];
  aw.v = wa[2];
  aw.o = wa[3];
  MlpWeights mw = mlp_weights(layer);
  mw.gate = wm[0];
  mw.up = wm[1];
  mw.down = wm[2];
  for (const auto& e : replay_engines(c)) {
    Tensor ya = Tensor::zeros(DType::F32, x.shape());
    e->forward_attention(aw, x, ya);
    EXPECT_TRUE(test::same_bytes(ya, qa.output)) << "attention, " << test::stats_line(*e);
    Tensor ym = Tensor::zeros(DType::F32, x.shape());
    e->forward_mlp(mw, qa.output, ym);
    EXPECT_TRUE(test::same_bytes(ym, qm.output)) << "MLP, " << test::stats_line(*e);
  }
  // F16 views of the same weights widen exactly: same output.
  std::vector<Tensor> half;
  for (const Tensor& t : wm) {
    half.emplace_back(DType::F16, t.shape());
    const float* src = t.data<float>();
    uint16_t* dst = half.back().data<uint16_t>();
    for (int64_t i = 0; i < t.numel(); ++i) dst[i] = float_to_half(src[i]);
  }
  MlpWeights hw = mw;
  hw.gate = half[0];
  hw.up = half[1];
  hw.down = half[2];
  Tensor yh = Tensor::zeros(DType::F32, x.shape());
  gpu->forward_mlp(hw, qa.output, yh);
  EXPECT_TRUE(test::same_bytes(yh, qm.output));
}

// Replay reads snapshots from and writes states to file-backed shared mappings (HostStore's
// spill tier), which the staging path handles like any host memory.
TEST(CudaEngineSynthetic, ForwardOnFileBackedStates) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 23);
  std::mt19937 rng(23);
  const Tensor x = random({4, kTokens, c.hidden_size}, rng, 1.0f, 0.0f, false);
  const auto gpu = make_cuda_engine(c, 128, {});
  const ModuleResult m = gpu->measure_mlp(layer, x, "m", some_rows());
  memory::HostStore store({.ram_budget_bytes = 0, .spill_dir = exq::test::temp_dir("fwd_spill")});
  const memory::HostBuffer xs = store.copy_of(x);
  const memory::HostBuffer ys = store.allocate(DType::F32, x.shape());
  ASSERT_EQ(xs.tier(), memory::Tier::kFile);
  ASSERT_EQ(ys.tier(), memory::Tier::kFile);
  CudaEngineOptions o;
  o.max_rows_on_device = 2;
  const auto e = make_cuda_engine(c, 128, o);
  e->forward_mlp(mlp_weights(layer), xs, ys);
  EXPECT_TRUE(std::memcmp(ys.view().raw(), m.target.raw(), m.target.nbytes()) == 0);
  EXPECT_EQ(e->module_stats().at("rows_per_chunk").get<int64_t>(), 2);
}

TEST(CudaEngineSynthetic, ForwardBadInputsAreErrors) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 24);
  std::mt19937 rng(24);
  const auto gpu = make_cuda_engine(c, 64, {});
  const Tensor x = random({2, 16, c.hidden_size}, rng, 1.0f, 0.0f, false);
  const auto expect_error = [](const std::function<void()>& f, const std::string& want) {
    try {
      f();
      ADD_FAILURE() << "expected exq::Error containing " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  Tensor y = Tensor::zeros(DType::F32, x.shape());
  const Tensor short_y = Tensor::zeros(DType::F32, {2, 15, c.hidden_size});
  expect_error([&] { gpu->forward_mlp(mlp_weights(layer), x, short_y); }, "forward_mlp: output");
  expect_error([&] { gpu->forward_mlp(mlp_weights(layer), x, x); }, "forward_mlp: output");
  AttnWeights bad = attn_weights(layer);
  bad.o = layer.k;  // [kv_dim, hidden] for [hidden, q_dim]
  expect_error([&] { gpu->forward_attention(bad, x, y); },
               "tensor 'o_proj': forward_attention: expected F32");
  const Tensor too_long = random({1, 65, c.hidden_size}, rng, 1.0f, 0.0f, false);
  Tensor y_long = Tensor::zeros(DType::F32, too_long.shape());
  expect_error([&] { gpu->forward_attention(attn_weights(layer), too_long, y_long); },
               "forward_attention: states");
  Tensor inf = Tensor::copy_of(x);
  inf.data<float>()[16 * c.hidden_size + 3] = INFINITY;
  expect_error([&] { gpu->forward_mlp(mlp_weights(layer), inf, y); },
               "forward_mlp: input states hold NaN/Inf (element " +
                   std::to_string(16 * c.hidden_size + 3) + ")");
  // Still usable.
  gpu->forward_mlp(mlp_weights(layer), x, y);
  const ModuleResult m = gpu->measure_mlp(layer, x, "m", some_rows());
  EXPECT_TRUE(test::same_bytes(y, m.target));
}

}  // namespace
}  // namespace exq::quant::cuda
