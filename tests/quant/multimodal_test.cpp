// Multimodal checkpoints (gemma3: Gemma 3 4B-27B; mistral3: Mistral Small 3.1 / 3.2) convert as
// their language model: a gemma3_text / mistral folder whose tensors are byte for byte those of
// the same weights stored plain; the vision tower and the projector are not carried over.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "test_support.h"
#include "../model/multimodal.h"
#include "tiny_gemma.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

TEST(MultimodalQuantize, CheckpointsConvertTheirLanguageModel) {
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  struct Case {
    const test::Multimodal& mm;
    const char* model_type;
    const char* architecture;
  };
  for (const Case& k : {Case{test::kGemma3Multimodal, "gemma3_text", "Gemma3ForCausalLM"},
                        Case{test::kMistral3Multimodal, "mistral", "MistralForCausalLM"}}) {
    SCOPED_TRACE(k.mm.model_type);
    const fs::path dir = test::temp_dir(std::string("quantize_mm_") + k.mm.model_type),
                   plain_dir = test::temp_dir(std::string("quantize_plain_") + k.mm.model_type);
    tiny_gemma::copy_model(k.mm.tiny, plain_dir);
    tiny_gemma::copy_model(k.mm.tiny, dir);
    fs::remove(dir / "model" / "config.json");
    fs::remove(dir / "model" / "model.safetensors");
    test::write_multimodal(dir / "model", k.mm, /*transformers5=*/false);
    const fs::path a = tiny_gemma::convert(dir, 4.0), b = tiny_gemma::convert(plain_dir, 4.0);
    ASSERT_FALSE(a.empty());
    ASSERT_FALSE(b.empty());
    const auto cfg = nlohmann::json::parse(test::read_file(a / "config.json"));
    EXPECT_EQ(cfg.at("model_type"), k.model_type);
    EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({k.architecture}));
    EXPECT_EQ(cfg.at("eos_token_id"), k.mm.eos);
    EXPECT_FALSE(cfg.contains("vision_config"));
    EXPECT_FALSE(cfg.contains("text_config"));
    const io::SafetensorsModel fa = io::SafetensorsModel::open(a), fb = io::SafetensorsModel::open(b);
    ASSERT_EQ(fa.names().size(), fb.names().size());
    for (const std::string& n : fb.names()) {
      ASSERT_TRUE(fa.contains(n)) << n;
      const TensorView x = fa.get(n), y = fb.get(n);
      EXPECT_TRUE(x.shape() == y.shape() && x.dtype() == y.dtype() && std::memcmp(x.raw(), y.raw(), y.nbytes()) == 0) << n;
    }
    for (const io::SafetensorsFile& f : fa.files())
      for (const std::string& n : f.names()) {
        EXPECT_EQ(n.find("vision"), std::string::npos) << n;
        EXPECT_EQ(n.find("projector"), std::string::npos) << n;
      }
    fs::remove_all(dir);
    fs::remove_all(plain_dir);
  }
}

}  // namespace
}  // namespace exq::quant
