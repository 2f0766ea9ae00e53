// IBM Granite (model_type granite): a tiny random model against transformers' logits
// (scripts/granite_golden.py wrote tests/model/data/granite_tiny), through the KV cache in
// chunks and as batch rows; the four scalars as read from config.json and what is refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_config.h"
#include "model/llama.h"
#include "model/llama_weights.h"
#include "golden_logits.h"
#include "tiny_configs.h"
#include "test_support.h"

namespace exq::model {
namespace {

using nlohmann::json;

TEST(Granite, LogitsMatchTransformers) {
  // The logits reach 4.5; setting a scalar back to its neutral value moves them by 0.15
  // (attention_multiplier) to 32 (logits_scaling) (granite_golden.py).
  test::expect_goldens({"granite_tiny"}, 1e-5);
}

TEST(Granite, BatchRowsMatchSingleSequences) {
  LlamaModel m = LlamaModel::load(test::model_data_dir("granite_tiny"));
  EXPECT_LE(test::batch_rows_error(m), 1e-5);
}

TEST(Granite, ConfigScalars) {
  const io::ModelConfig c = test::parse_config(test::config_json("granite_tiny"));
  EXPECT_EQ(c.model_type, "granite");
  EXPECT_EQ(c.embedding_multiplier, 12.0);
  EXPECT_EQ(c.residual_multiplier, 0.22);
  EXPECT_EQ(c.logits_scaling, 8.0);
  EXPECT_EQ(c.attention_scale(), 0.09375);  // instead of 16^-0.5
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(embedding_scale(c, DType::F16), 12.0f);  // not rounded: transformers multiplies by a float

  // GraniteConfig's defaults: every scalar 1.0, the attention scale included.
  json j = test::config_json("granite_tiny");
  for (const char* k : {"embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling"})
    j.erase(k);
  const io::ModelConfig d = test::parse_config(j);
  EXPECT_EQ(d.embedding_multiplier, 1.0);
  EXPECT_EQ(d.residual_multiplier, 1.0);
  EXPECT_EQ(d.logits_scaling, 1.0);
  EXPECT_EQ(d.attention_scale(), 1.0);

  // llama keeps head_dim^-0.5 and ignores granite's fields.
  json l = test::config_json("granite_tiny");
  l["model_type"] = "llama";
  const io::ModelConfig lc = test::parse_config(l);
  EXPECT_EQ(lc.attention_scale(), 0.25);
  EXPECT_EQ(lc.embedding_multiplier, 1.0);
  EXPECT_EQ(lc.logits_scaling, 1.0);
}

TEST(Granite, RefusesScalarsThatAreNotPositive) {
  for (const char* k : {"embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling"})
    for (const json& bad : {json(0.0), json(-1.0), json("2"), json(1e300), json(true)}) {
      json j = test::config_json("granite_tiny");
      j[k] = bad;
      test::expect_config_refused(j, k);
    }
}

}  // namespace
}  // namespace exq::model
