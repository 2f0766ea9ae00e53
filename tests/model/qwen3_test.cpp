// Qwen3 (per-head q/k RMSNorm before rotary, head_dim above hidden / heads, a transformers 5
// config with rope_parameters): a tiny random model's logits against transformers' own
// (scripts/qwen3_golden.py wrote tests/model/data/qwen3_tiny), through the KV cache in chunks.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

#include "io/safetensors.h"
#include "model/llama.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path qwen3_dir() { return fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "qwen3_tiny"; }

TEST(Qwen3Tiny, LogitsMatchTransformers) {
  LlamaModel m = LlamaModel::load(qwen3_dir());
  const io::ModelConfig& c = m.config();
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 32);  // hidden 64 / 4 heads would be 16
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.torch_dtype, DType::F16);
  EXPECT_TRUE(m.weights().head_tied);
  const json golden = json::parse(test::read_file(qwen3_dir() / "golden.json"));
  const auto ids = golden["prompt_ids"].get<std::vector<int32_t>>();
  const auto& want = golden["logits"];
  KvCache cache = m.make_cache(static_cast<int64_t>(ids.size()));
  double max_err = 0, max_abs = 0;
  size_t t = 0;
  for (size_t n : {5, 1, 6}) {
    const Tensor p = m.forward(std::span(ids).subspan(t, n), cache, true);
    for (int64_t r = 0; r < p.dim(0); ++r, ++t)
      for (int64_t i = 0; i < c.vocab_size; ++i) {
        const double w = want[t][static_cast<size_t>(i)].get<double>();
        max_err = std::max(max_err, std::fabs(p.data<float>()[r * c.vocab_size + i] - w));
        max_abs = std::max(max_abs, std::fabs(w));
      }
  }
  ASSERT_EQ(t, ids.size());
  std::printf("  qwen3 tiny: max abs logit error %.3g (logits up to %.2f)\n", max_err, max_abs);
  EXPECT_LE(max_err, 1e-4);
}

TEST(Qwen3Tiny, MissingQkNormIsNamed) {
  const fs::path dir = test::temp_dir("qwen3_no_qnorm");
  fs::copy_file(qwen3_dir() / "config.json", dir / "config.json");
  const io::SafetensorsModel files = io::SafetensorsModel::open(qwen3_dir());
  std::vector<io::NamedTensor> list;
  const std::string gone = "model.layers.1.self_attn.k_norm.weight";
  for (const std::string& name : files.names())
    if (name != gone) list.push_back({name, files.get(name)});
  io::write_safetensors(dir / "model.safetensors", list);
  try {
    LlamaModel::load(dir);
    ADD_FAILURE() << "loaded without " << gone;
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, gone) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::model
