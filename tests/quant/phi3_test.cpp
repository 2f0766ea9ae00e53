// phi3 in the converter: the module forward on a transformers-checked phi3 with partial rotary,
// and a tiny llama stored as phi3 (fused qkv_proj and gate_up_proj) converts
// on the CPU into the same EXL2 layers, byte for byte, under exllamav2's names for them (q_proj,
// ..., up_proj), with no fused tensor left in the output; the result loads and runs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>
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

bool quantize(const fs::path& model, const fs::path& work, const fs::path& cal, const fs::path& log) {
  const fs::path exq = fs::path(EXQ_BINARY_DIR) / "exq";
  const std::string cmd = fmt::format(
      "{} quantize -i {} -o {} -b 4.0 -c {} -mr 4 -ml 64 -r 4 -l 64 --threads 2 --device cpu > {} 2>&1",
      exq.string(), model.string(), work.string(), cal.string(), log.string());
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::read_file(log);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The converter's module forward (what measurement and quantization run) on the transformers-
// checked Phi-4-mini-shaped model (fused tensors, partial rotary, longrope) gives the model's own
// layer outputs.
TEST(Phi3ModuleForward, MatchesTheModelsLayers) {
  const fs::path dir = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "phi3_partial_tiny";
  model::LlamaModel m = model::LlamaModel::load(dir);
  const io::ModelConfig& c = m.config();
  ASSERT_EQ(c.rope_dim(), 24);
  std::vector<Tensor> inputs;
  m.set_hidden_capture([&](int, const TensorView& x) { inputs.push_back(Tensor::copy_of(x)); });
  const std::vector<int32_t> ids = {7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8, 271, 95, 160, 2, 45, 310};
  const auto T = static_cast<int64_t>(ids.size());  // above the original 16: long factors
  model::KvCache cache = m.make_cache(T);
  m.forward(ids, cache, true);
  ASSERT_EQ(inputs.size(), static_cast<size_t>(c.num_hidden_layers) + 1);
  const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
  ModuleForward fwd(c, T);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerF32 layer = load_layer_f32(files, c, l);
    Tensor mid(DType::F32, {T, c.hidden_size}), out(DType::F32, {T, c.hidden_size});
    fwd.attention(attn_weights(layer), inputs[static_cast<size_t>(l)], mid);
    fwd.mlp(mlp_weights(layer), mid, out);
    if (l + 1 == c.num_hidden_layers) cpu::rms_norm(out, m.weights().final_norm, static_cast<float>(c.rms_norm_eps), out);
    const double err = relative_error(out, inputs[static_cast<size_t>(l) + 1]);
    std::printf("  layer %lld: module forward vs model, relative error %.3g\n", static_cast<long long>(l), err);
    EXPECT_LE(err, 1e-6) << "layer " << l;
  }
}

TEST(Phi3Quantize, FusedLayersConvertLikeTheirParts) {
  EXQ_REQUIRE_MODEL();
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  const fs::path dir = test::temp_dir("quantize_phi3");
  test_models::write_tiny_model(dir / "llama");
  test_models::write_tiny_phi3(dir / "llama", dir / "phi3");
  const fs::path cal = dir / "cal.txt";
  std::ofstream(cal) << test::read_file(test::shared_dir() / "data" / "wiki.utf8").substr(0, 60000);
  ASSERT_TRUE(quantize(dir / "llama", dir / "wl", cal, dir / "log_llama"));
  ASSERT_TRUE(quantize(dir / "phi3", dir / "wp", cal, dir / "log_phi3"));

  const io::SafetensorsModel a = io::SafetensorsModel::open(dir / "wl" / "out");
  const io::SafetensorsModel b = io::SafetensorsModel::open(dir / "wp" / "out");
  EXPECT_TRUE(io::has_exl2(b, "model.layers.1.self_attn.k_proj"));
  EXPECT_TRUE(io::has_exl2(b, "model.layers.1.mlp.up_proj"));
  for (const std::string& name : b.names()) {
    EXPECT_EQ(name.find("qkv_proj"), std::string::npos) << name;
    EXPECT_EQ(name.find("gate_up_proj"), std::string::npos) << name;
  }
  ASSERT_EQ(a.names(), b.names());
  int differing = 0;
  for (const std::string& name : a.names()) {
    const TensorView x = a.get(name), y = b.get(name);
    const bool same = x.shape() == y.shape() && x.dtype() == y.dtype() && std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
    differing += same ? 0 : 1;
    EXPECT_TRUE(same) << name;
  }
  std::printf("  phi3 vs llama conversion: %zu tensors, %d differ\n", a.names().size(), differing);
  const auto cfg = nlohmann::json::parse(test::read_file(dir / "wp" / "out" / "config.json"));
  EXPECT_EQ(cfg.at("model_type"), "phi3");
  EXPECT_EQ(cfg.at("quantization_config").at("quant_method"), "exl2");

  // The converted phi3 runs and gives the converted llama's logits.
  model::LlamaModel p = model::LlamaModel::load(dir / "wp" / "out");
  model::LlamaModel l = model::LlamaModel::load(dir / "wl" / "out");
  const std::vector<int32_t> ids = {17, 7936, 15855, 23774, 31693, 39612, 47531};
  model::KvCache c1 = p.make_cache(7), c2 = l.make_cache(7);
  const Tensor x = p.forward(ids, c1, true), y = l.forward(ids, c2, true);
  EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::quant
