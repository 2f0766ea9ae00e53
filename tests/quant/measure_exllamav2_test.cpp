// MeasureOptions::causal = false, the switch that reproduces the forward exllamav2 0.3.2 made
// its SmolLM2 measurement.json with (attention without the causal mask, docs/quality.md).
// Synthetic: the unmasked attention block against a double-precision reference, and what the
// switch changes (attention only, MLP untouched). Real model: exq's measurement of layers 0, 15
// and 29 in that forward, states carried non-causally as exllamav2's were, against the fixture:
// mean error over the full option table <= 1.10 x exllamav2's and Spearman >= 0.9 per module,
// while the causal measurement of layer-0 attention is far from the fixture.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/rotary.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/rope.h"
#include "quant/calibration.h"
#include "quant/measure.h"
#include "quant/measure_layers.h"
#include "test_support.h"
#include "random_layer.h"
#include "tiny_llama.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {
namespace {

io::ModelConfig tiny_config() { return test::tiny_llama_config(128, 256, 4, 2, 32); }

using test::random_normal;

// Large q/k: peaked attention scores, so the mask matters.
LayerF32 random_layer(const io::ModelConfig& c) {
  return test::random_layer(c, {.qk = 0.2f, .vo = 0.08f, .gate_up = 0.08f, .down = 0.06f});
}

// ||a - b|| / ||b|| over rows [t0, t1) of two [T, n] F32 tensors.
double rel_rows(const TensorView& a, const TensorView& b, int64_t t0, int64_t t1) {
  const int64_t n = a.dim(1);
  double num = 0, den = 0;
  for (int64_t i = t0 * n; i < t1 * n; ++i) {
    const double d = static_cast<double>(a.data<float>()[i]) - b.data<float>()[i];
    num += d * d;
    den += static_cast<double>(b.data<float>()[i]) * b.data<float>()[i];
  }
  return std::sqrt(num / den);
}

// The attention block without a mask, q/k/v/rope in float (cpu ops), attention, o and the
// residual in double.
Tensor unmasked_reference(const io::ModelConfig& c, const LayerF32& l, const TensorView& x,
                          const TensorView& normed) {
  const int64_t T = x.dim(0), H = c.num_attention_heads, KVH = c.num_key_value_heads;
  const int64_t D = c.head_dim, hidden = c.hidden_size;
  Tensor q(DType::F32, {T, H, D}), k(DType::F32, {T, KVH, D}), v(DType::F32, {T, KVH, D});
  cpu::matmul(normed, l.q, q.view().reshape({T, H * D}));
  cpu::matmul(normed, l.k, k.view().reshape({T, KVH * D}));
  cpu::matmul(normed, l.v, v.view().reshape({T, KVH * D}));
  const cpu::RopeTable rope = model::rope_table(c, T);
  cpu::apply_rotary(q.view(), rope, 0);
  cpu::apply_rotary(k.view(), rope, 0);
  std::vector<double> att(static_cast<size_t>(T * H * D), 0.0), p(static_cast<size_t>(T));
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KVH);
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < T; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d)
          s += static_cast<double>(qp[(t * H + h) * D + d]) * kp[(j * KVH + g) * D + d];
        p[j] = s / std::sqrt(static_cast<double>(D));
        mx = std::max(mx, p[j]);
      }
      for (int64_t j = 0; j < T; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t j = 0; j < T; ++j)
        for (int64_t d = 0; d < D; ++d)
          att[(t * H + h) * D + d] += p[j] / sum * vp[(j * KVH + g) * D + d];
    }
  Tensor y(DType::F32, {T, hidden});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < hidden; ++o) {
      double s = x.data<float>()[t * hidden + o];
      for (int64_t i = 0; i < H * D; ++i) s += att[t * H * D + i] * l.o.data<float>()[o * H * D + i];
      y.data<float>()[t * hidden + o] = static_cast<float>(s);
    }
  return y;
}

TEST(MeasureNonCausal, UnmaskedAttentionBlockMatchesReference) {
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c);
  const int64_t T = 150;  // two full score blocks of 64 and a partial one
  const Tensor x = random_normal({T, c.hidden_size}, 1.0f, 11);
  ModuleForward fwd(c, 200);
  Tensor full(DType::F32, {T, c.hidden_size}), causal(DType::F32, {T, c.hidden_size});
  fwd.attention(attn_weights(layer), x, full, false);
  const Tensor ref = unmasked_reference(c, layer, x, fwd.normed());
  fwd.attention(attn_weights(layer), x, causal);
  const double err = rel_rows(full, ref, 0, T);
  const double last = rel_rows(full, causal, T - 1, T);  // the last token sees all in both
  const double first = rel_rows(full, causal, 0, T / 2);
  std::printf("unmasked vs reference %.2e, last token vs causal %.2e, first half vs causal %.3f\n",
              err, last, first);
  EXPECT_LT(err, 1e-5);
  EXPECT_LT(last, 1e-5);
  EXPECT_GT(first, 0.05);
}

TEST(MeasureNonCausal, SwitchChangesAttentionOnly) {
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c);
  const Tensor states = random_normal({2, 80, c.hidden_size}, 1.0f, 12);
  ModuleForward fwd(c, 80);
  MeasureOptions causal, open;
  open.causal = false;
  for (size_t r : {0, 9, 18}) {
    causal.attn_table.push_back(attn_option_table()[r]);
    open.attn_table.push_back(attn_option_table()[r]);
  }
  for (size_t r : {0, 16}) {
    causal.mlp_table.push_back(mlp_option_table()[r]);
    open.mlp_table.push_back(mlp_option_table()[r]);
  }
  const std::string key = "model.layers.0.self_attn";
  const ModuleResult a_c = measure_attention(fwd, layer, states, key, causal);
  const ModuleResult a_o = measure_attention(fwd, layer, states, key, open);
  // The target is the unmasked forward, bit for bit.
  Tensor expect(DType::F32, states.shape());
  fwd.attention_rows(attn_weights(layer), states, expect, false);
  ASSERT_EQ(a_o.target.numel(), expect.numel());
  EXPECT_EQ(relative_error(a_o.target, expect), 0.0);
  EXPECT_GT(relative_error(a_o.target, a_c.target), 0.01);
  for (size_t i = 0; i < a_o.errors.size(); ++i) {
    EXPECT_NE(a_o.errors[i], a_c.errors[i]) << "row " << i;
    if (i > 0) {
      EXPECT_LT(a_o.errors[i], a_o.errors[i - 1]) << "row " << i;
    }
  }
  // The MLP block has no attention: the switch must not change it.
  const ModuleResult m_c = measure_mlp(fwd, layer, a_o.target, "model.layers.0.mlp", causal);
  const ModuleResult m_o = measure_mlp(fwd, layer, a_o.target, "model.layers.0.mlp", open);
  EXPECT_EQ(m_c.errors, m_o.errors);
}

// Real model. Calibration: calibration_rows' cycle mix, 4 rows x 1024 tokens (wiki, c4, code,
// multilingual), 36 s on 2 idle cores. Measured (docs/quality.md): non-causal ratios 0.81-0.96,
// Spearman >= 0.996; the same rows causal give 1.17 (layer-0 attention), 0.49 / 0.27 (layer
// 15), 1.91 / 2.33 (layer 29). The size is a compromise: in-sample errors on few tokens come
// out lower; short non-causal rows (every token sees the whole row) push layer 29 up (19 x 256
// in exllamav2's layout: 1.48 / 1.52); and technical, tiny and random rows raise the layer-29
// MLP (6 x 1024 with technical and tiny: 1.02; 8 x 1024 with random: 1.25; 16 x 2048 cycle
// mix: 1.14). The full like-for-like check, exllamav2's own 19-row layout at 2048 tokens
// (measure_quality_bench --mix exllamav2 --noncausal), gives 0.985-1.021 for all six modules.
// The lower bound 0.75 keeps the test from passing on a measurement that merely errs low (the
// causal one fails it at layer 15).
constexpr int64_t kRows = 4, kTokens = 1024;
constexpr double kMaxRatio = 1.10, kMinRatio = 0.75, kMinSpearman = 0.9;

TEST(MeasureExllamav2, NonCausalLayers0_15_29MatchRecordedMeasurement) {
  EXQ_REQUIRE_MODEL();
  const auto model = test::test_model();
  const auto tok = tokenizer::Tokenizer::from_file(model / "tokenizer.json");
  const io::ModelConfig config = io::load_model_config(model);
  const CalibrationRows cal = calibration_rows(tok, test::shared_dir() / "data", kRows, kTokens,
                                               static_cast<int32_t>(config.vocab_size));
  const Measurement ref =
      read_measurement(test::shared_dir() / "fixtures" / "exl2" / "smollm2_measurement.json");
  MeasureOptions open;
  open.metric = ErrorMetric::kRow;
  open.causal = false;
  const LayerMeasureResult res = measure_layers(model, cal, {0, 15, 29}, open);
  ASSERT_EQ(res.modules.size(), 6u);
  for (const ModuleResult& m : res.modules) {
    const ModuleMeasurement* theirs = ref.find(m.measurement.key);
    ASSERT_NE(theirs, nullptr) << m.measurement.key;
    ASSERT_EQ(m.measurement.rows->size(), theirs->rows->size()) << m.measurement.key;
    const MeasureComparison c = compare_measurements(m.measurement, *theirs);
    std::printf("non-causal %-26s exq %.5f exllamav2 %.5f ratio %.3f spearman %.3f (%zu rows)\n",
                m.measurement.key.c_str(), c.mean_error, c.ref_mean_error, c.ratio, c.spearman,
                m.measurement.rows->size());
    EXPECT_LE(c.ratio, kMaxRatio) << m.measurement.key;
    EXPECT_GE(c.ratio, kMinRatio) << m.measurement.key;
    EXPECT_GE(c.spearman, kMinSpearman) << m.measurement.key;
  }

  // Layer-0 attention, causal (exq's default, the model's real function), on the same rows.
  const io::SafetensorsModel files = io::SafetensorsModel::open(model);
  const Tensor states =
      embed_rows(files.get("model.embed_tokens.weight"), cal.ids, cal.rows, cal.length);
  ModuleForward fwd(config, cal.length);
  MeasureOptions causal;
  causal.metric = ErrorMetric::kRow;
  const ModuleResult a = measure_attention(fwd, load_layer_f32(files, config, 0), states,
                                           "model.layers.0.self_attn", causal);
  const MeasureComparison c = compare_measurements(a.measurement, *ref.find(a.measurement.key));
  std::printf("causal     %-26s exq %.5f exllamav2 %.5f ratio %.3f spearman %.3f\n",
              a.measurement.key.c_str(), c.mean_error, c.ref_mean_error, c.ratio, c.spearman);
  EXPECT_TRUE(c.ratio < 0.9 || c.ratio > 1.1) << "causal ratio " << c.ratio;
}

}  // namespace
}  // namespace exq::quant
