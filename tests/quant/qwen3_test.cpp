// qwen3 in the converter: the module forward the measurement runs (q/k norms per head) gives
// the model's own layer outputs, and a tiny qwen3 converts end to end on the CPU into a model
// that loads, keeps its norms and stays close to the original.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "backend/cpu/norm.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "quant/measure.h"
#include "quant/module_forward.h"
#include "test_support.h"
#include "tiny_model.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

fs::path qwen3_golden_dir() { return fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "qwen3_tiny"; }

TEST(Qwen3ModuleForward, MatchesTheModelsLayers) {
  model::LlamaModel m = model::LlamaModel::load(qwen3_golden_dir());
  const io::ModelConfig& c = m.config();
  ASSERT_TRUE(c.qk_norm);
  std::vector<Tensor> inputs;  // residual stream before each layer, then the final norm's output
  m.set_hidden_capture([&](int, const TensorView& x) { inputs.push_back(Tensor::copy_of(x)); });
  const std::vector<int32_t> ids = {7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200};
  model::KvCache cache = m.make_cache(static_cast<int64_t>(ids.size()));
  m.forward(ids, cache, true);
  ASSERT_EQ(inputs.size(), static_cast<size_t>(c.num_hidden_layers) + 1);
  const io::SafetensorsModel files = io::SafetensorsModel::open(qwen3_golden_dir());
  const auto T = static_cast<int64_t>(ids.size());
  ModuleForward fwd(c, T);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerF32 layer = load_layer_f32(files, c, l);
    ASSERT_FALSE(layer.q_norm.empty());
    Tensor mid(DType::F32, {T, c.hidden_size}), out(DType::F32, {T, c.hidden_size});
    fwd.attention(attn_weights(layer), inputs[static_cast<size_t>(l)], mid);
    fwd.mlp(mlp_weights(layer), mid, out);
    // The last capture is after the final norm.
    if (l + 1 == c.num_hidden_layers)
      cpu::rms_norm(out, m.weights().final_norm, static_cast<float>(c.rms_norm_eps), out);
    const double err = relative_error(out, inputs[static_cast<size_t>(l) + 1]);
    std::printf("  layer %lld: module forward vs model, relative error %.3g\n", static_cast<long long>(l),
                err);
    EXPECT_LE(err, 1e-6) << "layer " << l;
  }
}

// Converts write_tiny_model(qwen3) at 4.0 bpw on the CPU; returns the relative error of the
// result's logits against the original's over 40 tokens (or -1 after a failure).
double convert_tiny(const fs::path& dir, bool qwen3) {
  const fs::path exq = fs::path(EXQ_BINARY_DIR) / "exq";
  const fs::path model = dir / "tiny";
  test_models::write_tiny_model(model, qwen3);
  const fs::path cal = dir / "cal.txt";
  std::ofstream(cal) << test::read_file(test::shared_dir() / "data" / "wiki.utf8").substr(0, 60000);
  const std::string cmd = fmt::format(
      "{} quantize -i {} -o {} -b 4.0 -c {} -mr 4 -ml 64 -r 4 -l 64 --threads 2 --device cpu > {} 2>&1",
      exq.string(), model.string(), (dir / "work").string(), cal.string(), (dir / "log").string());
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::read_file(dir / "log");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  const fs::path out = dir / "work" / "out";
  const io::SafetensorsModel files = io::SafetensorsModel::open(out);
  EXPECT_TRUE(io::has_exl2(files, "model.layers.0.self_attn.q_proj"));
  EXPECT_EQ(files.contains("model.layers.1.self_attn.k_norm.weight"), qwen3);
  const auto cfg = nlohmann::json::parse(test::read_file(out / "config.json"));
  EXPECT_EQ(cfg.at("model_type"), qwen3 ? "qwen3" : "llama");
  EXPECT_EQ(cfg.at("quantization_config").at("quant_method"), "exl2");

  model::LlamaModel original = model::LlamaModel::load(model);
  model::LlamaModel converted = model::LlamaModel::load(out);
  EXPECT_EQ(converted.config().qk_norm, qwen3);
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 7919 + 17) % 49152);
  model::KvCache c1 = original.make_cache(40), c2 = converted.make_cache(40);
  const Tensor a = original.forward(ids, c1, true), b = converted.forward(ids, c2, true);
  return relative_error(b, a);
}

// The same tiny model with and without q/k norms converts about as well.
TEST(Qwen3Quantize, TinyModelConvertsOnTheCpuAsWellAsLlama) {
  EXQ_REQUIRE_MODEL();
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  const fs::path dir = test::temp_dir("quantize_qwen3");
  const double q = convert_tiny(dir / "qwen3", true);
  const double l = convert_tiny(dir / "llama", false);
  std::printf("  tiny 4.0 bpw logits relative error: qwen3 %.4f, llama %.4f\n", q, l);
  EXPECT_GE(q, 0.0);
  EXPECT_GE(l, 0.0);
  EXPECT_LE(q, 1.5 * l + 0.02);
  EXPECT_LE(q, 0.35);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::quant
