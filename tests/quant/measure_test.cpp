// Module measurement on synthetic layers (no model needed): the table rows come out in
// exllamav2's schema with exact total_bits, errors fall as bits rise, the target is the plain
// module forward, and the quantize step agrees with the measurement's GPTQ. Plus Spearman,
// calibration rows, and the module forward against LlamaModel and transformers.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>

#include "io/hf_config.h"
#include "model/llama.h"
#include "quant/calibration.h"
#include "quant/measure.h"
#include "test_support.h"
#include "random_layer.h"
#include "tiny_llama.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {
namespace {

io::ModelConfig tiny_config() { return test::tiny_llama_config(256, 512, 4, 2, 64); }

using test::random_normal;

LayerF32 random_layer(const io::ModelConfig& c) { return test::random_layer(c); }

bool same_bits(const TensorView& a, const TensorView& b) {
  return a.numel() == b.numel() &&
         std::equal(a.data<float>(), a.data<float>() + a.numel(), b.data<float>());
}

TEST(Measure, AttentionRowsFollowSchemaAndErrorsFallWithBits) {
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c);
  const Tensor states = random_normal({3, 96, c.hidden_size}, 1.0f, 10);
  ModuleForward fwd(c, 96);
  MeasureOptions opt;
  for (size_t r : {0, 6, 9, 18}) opt.attn_table.push_back(attn_option_table()[r]);  // 2..8 bit
  const ModuleResult res = measure_attention(fwd, layer, states, "model.layers.0.self_attn", opt);

  ASSERT_TRUE(res.measurement.rows);
  ASSERT_EQ(res.measurement.rows->size(), 4u);
  EXPECT_EQ(res.timing.gptq_runs, 16);  // 4 distinct options in each of 4 columns
  for (size_t i = 0; i < 4; ++i) {
    const MeasuredRow& row = (*res.measurement.rows)[i];
    int64_t bits = 0;
    ASSERT_EQ(row.linears.size(), 4u);
    for (size_t k = 0; k < 4; ++k) {
      EXPECT_EQ(row.linears[k].first, kAttnLinears[k]);
      EXPECT_EQ(row.linears[k].second, opt.attn_table[i][k]);
      const int64_t out = k == 1 || k == 2 ? c.kv_dim() : c.hidden_size;
      bits += total_bits(row.linears[k].second, c.hidden_size, out, false);
    }
    EXPECT_EQ(row.total_bits, bits);
    EXPECT_DOUBLE_EQ(row.accuracy, 1.0 - res.errors[i]);
    if (i > 0) {
      EXPECT_LT(res.errors[i], res.errors[i - 1]) << "row " << i;
    }
  }
  EXPECT_LT(res.errors[3], 0.01);  // 8-bit
  EXPECT_GT(res.errors[0], 0.01);  // 2-bit

  // The target is the plain module forward of the original weights.
  Tensor y(DType::F32, states.shape());
  fwd.attention_rows(attn_weights(layer), states, y);
  EXPECT_TRUE(same_bits(y, res.target));

  // Schema round trip.
  Measurement m;
  m.modules.push_back(res.measurement);
  const Measurement back = measurement_from_json(measurement_to_json(m));
  ASSERT_EQ(back.modules.size(), 1u);
  EXPECT_EQ(back.modules[0].key, "model.layers.0.self_attn");
  EXPECT_EQ((*back.modules[0].rows)[2].total_bits, (*res.measurement.rows)[2].total_bits);
}

TEST(Measure, MlpMeasurementAndQuantizeStepAgree) {
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c);
  const Tensor states = random_normal({2, 64, c.hidden_size}, 1.0f, 11);
  ModuleForward fwd(c, 64);
  MeasureOptions opt;
  opt.mlp_table = {mlp_option_table()[4], mlp_option_table()[16]};
  const ModuleResult res = measure_mlp(fwd, layer, states, "model.layers.0.mlp", opt);
  ASSERT_EQ(res.errors.size(), 2u);
  EXPECT_LT(res.errors[1], res.errors[0]);
  EXPECT_LT(res.errors[1], 0.01);

  // Quantizing at row 4's options and running the module gives the measured error exactly.
  const QuantizedModule q = quantize_mlp(fwd, layer, states, "model.layers.0.mlp", opt.mlp_table[0]);
  ASSERT_EQ(q.linears.size(), 3u);
  EXPECT_TRUE(same_bits(q.target, res.target));
  MlpWeights w = mlp_weights(layer);
  Tensor gate(DType::F32, layer.gate.shape()), up(DType::F32, layer.up.shape()),
      down(DType::F32, layer.down.shape());
  std::copy(q.linears[0].result.weight.begin(), q.linears[0].result.weight.end(), gate.data<float>());
  std::copy(q.linears[1].result.weight.begin(), q.linears[1].result.weight.end(), up.data<float>());
  std::copy(q.linears[2].result.weight.begin(), q.linears[2].result.weight.end(), down.data<float>());
  w.gate = gate;
  w.up = up;
  w.down = down;
  Tensor y(DType::F32, states.shape());
  fwd.mlp_rows(w, states, y);
  double err = 0;
  for (int64_t r = 0; r < 2; ++r)
    err += relative_error(y.view().slice0(r, r + 1), q.target.view().slice0(r, r + 1));
  EXPECT_DOUBLE_EQ(err / 2, res.errors[0]);
}

TEST(Measure, RejectsNonFiniteStates) {
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c);
  Tensor states = random_normal({1, 8, c.hidden_size}, 1.0f, 12);
  states.data<float>()[77] = NAN;
  ModuleForward fwd(c, 8);
  try {
    measure_mlp(fwd, layer, states, "model.layers.5.mlp");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.5.mlp"), std::string::npos) << e.what();
  }
}

TEST(Measure, SpearmanAndComparison) {
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 2, 3, 4}), 0.9486833, 1e-6);  // tie: average ranks
  ModuleMeasurement a{"m", std::vector<MeasuredRow>{}}, b{"m", std::vector<MeasuredRow>{}};
  for (double e : {0.3, 0.2, 0.1}) a.rows->push_back({1 - e, 0, {{"up_proj", parse_option("1:4b_128g")}}});
  for (double e : {0.2, 0.25, 0.05}) b.rows->push_back({1 - e, 0, {{"up_proj", parse_option("1:4b_128g")}}});
  const MeasureComparison cmp = compare_measurements(a, b);
  EXPECT_NEAR(cmp.mean_error, 0.2, 1e-12);
  EXPECT_NEAR(cmp.ratio, 0.2 / (0.5 / 3), 1e-12);
  EXPECT_DOUBLE_EQ(cmp.spearman, 0.5);
  (*b.rows)[1].linears[0].second = parse_option("1:4b_64g");
  EXPECT_THROW(compare_measurements(a, b), Error);
}

// The module forward chained over layers 0 and 1 reproduces LlamaModel's residual stream
// bit for bit (same ops in the same order).
TEST(ModuleForward, MatchesLlamaModelOnSmolLM2) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const std::vector<int32_t> ids =
      tok.encode("The quick brown fox jumps over the lazy dog. In 1879, the first electric "
                 "street lights were installed in Cleveland, Ohio, and people came to look.");
  const int64_t T = static_cast<int64_t>(ids.size());
  std::vector<Tensor> captured;
  model.set_hidden_capture([&](int layer, const TensorView& h) {
    if (layer <= 2) captured.push_back(Tensor::copy_of(h));
  });
  auto cache = model.make_cache(T);
  model.forward(ids, cache);
  ASSERT_EQ(captured.size(), 3u);

  const auto files = io::SafetensorsModel::open(test::test_model());
  Tensor x = embed_rows(files.get("model.embed_tokens.weight"), ids, 1, T);
  EXPECT_TRUE(same_bits(x, captured[0]));
  ModuleForward fwd(model.config(), T);
  Tensor mid(DType::F32, x.shape()), out(DType::F32, x.shape());
  for (int l = 0; l < 2; ++l) {
    const LayerF32 w = load_layer_f32(files, model.config(), l);
    fwd.attention_rows(attn_weights(w), x, mid);
    fwd.mlp_rows(mlp_weights(w), mid, out);
    EXPECT_TRUE(same_bits(out, captured[static_cast<size_t>(l + 1)])) << "layer " << l;
    std::swap(x, out);
  }
}

// Chained over all 30 layers, the module forward reproduces Hugging Face's residual stream
// (fixtures/smollm2/logits.safetensors, float32 transformers) entering layers 1, 15 and 29:
// the states the measurement of deep layers starts from.
TEST(ModuleForward, MatchesTransformersHiddenStatesOnSmolLM2) {
  EXQ_REQUIRE_MODEL();
  const auto ref = io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "smollm2" /
                                             "logits.safetensors");
  const TensorView ids = ref.get("chat.ids");
  const int64_t T = ids.numel();
  const io::ModelConfig config = io::load_model_config(test::test_model());
  const auto files = io::SafetensorsModel::open(test::test_model());
  Tensor x = embed_rows(files.get("model.embed_tokens.weight"), ids.span<int32_t>(), 1, T);
  Tensor mid(DType::F32, x.shape());
  ModuleForward fwd(config, T);
  for (int64_t l = 0; l < 30; ++l) {
    if (l == 1 || l == 15 || l == 29) {
      const double err =
          relative_error(x.view().reshape({T, config.hidden_size}),
                         ref.get(fmt::format("chat.hidden_in_layer{}", l)));
      EXPECT_LT(err, 1e-4) << "layer " << l;
    }
    const LayerF32 w = load_layer_f32(files, config, l);
    fwd.attention_rows(attn_weights(w), x, mid);
    fwd.mlp_rows(mlp_weights(w), mid, x);
  }
}

TEST(Calibration, RowsCycleSourcesAndHeldOutWindowsDiffer) {
  EXQ_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const auto data = test::shared_dir() / "data";
  const CalibrationRows a = calibration_rows(tok, data, 8, 128, 49152);
  EXPECT_EQ(a.describe(), "wiki:2 c4:1 code:1 multilingual:1 technical:1 tiny:1 random:1");
  ASSERT_EQ(a.ids.size(), 8u * 128u);
  for (int32_t id : a.ids) ASSERT_TRUE(id >= 0 && id < 49152);
  const CalibrationRows again = calibration_rows(tok, data, 8, 128, 49152);
  EXPECT_EQ(a.ids, again.ids);
  // Row 7 is wiki's second window: held-out rows starting at window 1 begin with it.
  const CalibrationRows held = calibration_rows(tok, data, 2, 128, 49152, 1);
  EXPECT_TRUE(std::equal(held.ids.begin(), held.ids.begin() + 128, a.ids.begin() + 7 * 128));
  EXPECT_FALSE(std::equal(held.ids.begin(), held.ids.begin() + 128, a.ids.begin()));
  EXPECT_THROW(calibration_rows(tok, data / "missing", 1, 16, 100), Error);
}

TEST(Calibration, Exllamav2MeasurementLayout) {
  EXQ_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const CalibrationRows r =
      exllamav2_measurement_rows(tok, test::shared_dir() / "data", 256, 49152, 1, 2);
  EXPECT_EQ(r.rows, 19);
  ASSERT_EQ(r.ids.size(), 19u * 256u);
  EXPECT_EQ(r.describe(), "wiki:4 c4:2 code:3 multilingual:4 technical:2 tiny:2 random:2");
  const std::vector<std::string> order = {"c4", "c4", "wiki", "wiki", "wiki", "wiki", "code",
                                          "code", "code", "tiny", "tiny", "multilingual"};
  EXPECT_TRUE(std::equal(order.begin(), order.end(), r.sources.begin()));
  // Wiki rows 0-1 drop the leading bos, rows 2-3 keep it (each row starts a new article).
  EXPECT_NE(r.ids[2 * 256], 1);
  EXPECT_EQ(r.ids[4 * 256], 1);
  EXPECT_EQ(r.ids[5 * 256], 1);
  EXPECT_NE(r.ids[9 * 256], 1);   // first tiny row drops it
  EXPECT_EQ(r.ids[10 * 256], 1);  // second tiny row keeps its bos
}

}  // namespace
}  // namespace exq::quant
