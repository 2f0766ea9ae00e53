// import-gguf of granite files: llama.cpp writes granite's weights as llama's (q/k rows
// interleaved per head) and its four scalars as granite.embedding_scale, residual_scale,
// logit_scale and attention.scale. The import gives the llama import's tensors, byte for byte,
// and a granite config.json with transformers' names that reads back as the same scalars.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "gguf_builder.h"
#include "io/gguf_import.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::GgufBuilder;

// The tiny llama's weights under arch granite, with the scalars given (a negative one left out).
std::string tiny_granite(float embedding, float residual, float logit, float attention) {
  GgufBuilder b = test::tiny_llama_builder(5, {}, "granite");
  const std::pair<const char*, float> keys[] = {{"granite.embedding_scale", embedding},
                                                {"granite.residual_scale", residual},
                                                {"granite.logit_scale", logit},
                                                {"granite.attention.scale", attention}};
  for (const auto& [key, v] : keys)
    if (v >= 0) b.kv<float>(key, GgufBuilder::F32, v);
  return b.build();
}

TEST(GgufGranite, ImportsTheScalarsAndLlamasTensors) {
  const fs::path dir = test::temp_dir("gguf_import_granite");
  std::ofstream(dir / "llama.gguf", std::ios::binary) << test::tiny_llama_builder(5).build();
  std::ofstream(dir / "granite.gguf", std::ios::binary) << tiny_granite(12.0f, 0.22f, 8.0f, 0.0078125f);
  import_gguf(dir / "llama.gguf", dir / "llama");
  import_gguf(dir / "granite.gguf", dir / "granite");
  const json config = json::parse(test::read_file(dir / "granite" / "config.json"));
  EXPECT_EQ(config["model_type"], "granite");
  EXPECT_EQ(config["architectures"], json::array({"GraniteForCausalLM"}));
  EXPECT_EQ(config["embedding_multiplier"], 12.0);
  EXPECT_EQ(config["residual_multiplier"], 0.22);  // the short decimal, not float32's 0.2199999988
  EXPECT_EQ(config["logits_scaling"], 8.0);
  EXPECT_EQ(config["attention_multiplier"], 0.0078125);
  const ModelConfig c = parse_model_config(config.dump(), "config.json");
  EXPECT_EQ(c.attention_scale(), 0.0078125);
  EXPECT_EQ(c.residual_multiplier, 0.22);

  const SafetensorsModel llama = SafetensorsModel::open(dir / "llama");
  const SafetensorsModel granite = SafetensorsModel::open(dir / "granite");
  EXPECT_EQ(granite.names().size(), llama.names().size());
  for (const std::string& name : llama.names()) {
    const TensorView a = llama.get(name), b = granite.get(name);
    ASSERT_EQ(a.shape(), b.shape()) << name;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << name;
  }
  fs::remove_all(dir);
}

// llama.cpp's rule for a missing attention.scale: head_dim^-0.5 (transformers' default is 1.0,
// so the import writes it out); the other three scalars are required, as llama.cpp requires them.
TEST(GgufGranite, MissingScalars) {
  const fs::path dir = test::temp_dir("gguf_import_granite_missing");
  std::ofstream(dir / "noatt.gguf", std::ios::binary) << tiny_granite(12.0f, 0.22f, 8.0f, -1.0f);
  import_gguf(dir / "noatt.gguf", dir / "noatt");
  const json config = json::parse(test::read_file(dir / "noatt" / "config.json"));
  EXPECT_EQ(config["attention_multiplier"], 0.25);  // head_dim 16
  for (const char* key : {"embedding_scale", "residual_scale", "logit_scale"}) {
    const bool e = std::string(key) == "embedding_scale", r = std::string(key) == "residual_scale";
    std::ofstream(dir / "bad.gguf", std::ios::binary)
        << tiny_granite(e ? -1.0f : 12.0f, r ? -1.0f : 0.22f, !e && !r ? -1.0f : 8.0f, 0.01f);
    try {
      import_gguf(dir / "bad.gguf", dir / "bad");
      ADD_FAILURE() << "accepted a file without " << key;
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find(std::string("granite needs granite.") + key), std::string::npos)
          << err.what();
    }
    EXPECT_FALSE(fs::exists(dir / "bad"));
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::io
