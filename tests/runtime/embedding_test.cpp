// Embeddings: a tiny random Qwen3 stored as Qwen3-Embedding is (Qwen3Model's weights without the
// "model." prefix, no lm_head; scripts/embedding_golden.py wrote tests/model/data/qwen3_embed_tiny)
// against transformers' last hidden state and its last-token and mean embeddings; the pooling
// rules of runtime/embedding.h, and sentence-transformers' files read for the defaults.
#include "runtime/embedding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "../model/golden_logits.h"
#include "test_support.h"

namespace exq::runtime {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(Embedding, HiddenStatesMatchTransformers) {
  const auto dir = test::model_data_dir("qwen3_embed_tiny");
  const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
  EXPECT_TRUE(files.contains("model.embed_tokens.weight"));
  EXPECT_TRUE(files.contains("model.layers.1.self_attn.q_norm.weight"));
  for (const std::string& n : files.names()) EXPECT_TRUE(n.starts_with("model.")) << n;
  model::LlamaModel m = model::LlamaModel::load(dir);
  EXPECT_TRUE(m.weights().head_tied);
  const json g = json::parse(test::read_file(dir / "golden.json"));
  const auto ids = g["prompt_ids"].get<std::vector<int32_t>>();
  const auto T = static_cast<int64_t>(ids.size());
  // In one pass and in two chunks (the cache carries the first).
  for (const int64_t split : {T, int64_t{5}}) {
    model::KvCache cache = m.make_cache(T);
    const Tensor a = m.hidden_states(std::span(ids).first(static_cast<size_t>(split)), cache);
    ASSERT_EQ(a.shape(), (Shape{split, 64}));
    Tensor h(DType::F32, {T, 64});
    std::copy(a.data<float>(), a.data<float>() + a.numel(), h.data<float>());
    if (split < T) {
      const Tensor b = m.hidden_states(std::span(ids).subspan(static_cast<size_t>(split)), cache);
      std::copy(b.data<float>(), b.data<float>() + b.numel(), h.data<float>() + a.numel());
    }
    double err = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < 64; ++i)
        err = std::max(err, std::fabs(h.data<float>()[t * 64 + i] - g["hidden"][t][i].get<double>()));
    std::printf("  hidden states in %s: max abs error %.3g\n", split < T ? "2 chunks" : "1 pass", err);
    EXPECT_LE(err, 2e-5) << "split " << split;
    if (split < T) continue;
    for (const char* kind : {"last", "mean"}) {
      EmbeddingOptions o;
      o.pooling = parse_pooling(kind);
      const std::vector<float> e = pool_embedding(h, o);
      double pe = 0;
      for (size_t i = 0; i < e.size(); ++i) pe = std::max(pe, std::fabs(e[i] - g[kind][i].get<double>()));
      std::printf("  %s embedding: max abs error %.3g\n", kind, pe);
      EXPECT_LE(pe, 2e-6) << kind;
    }
  }
  // The logits path still runs (the tied head), equal to the hidden states through the embedding.
  model::KvCache c = m.make_cache(T);
  EXPECT_EQ(m.forward(ids, c).shape(), (Shape{1, 320}));
}


Tensor rows(std::initializer_list<std::initializer_list<float>> values) {
  const auto T = static_cast<int64_t>(values.size()), W = static_cast<int64_t>(values.begin()->size());
  Tensor t(DType::F32, {T, W});
  float* p = t.data<float>();
  for (const auto& r : values)
    for (float x : r) *p++ = x;
  return t;
}

TEST(EmbeddingPooling, LastMeanFirstDimensionsAndNorm) {
  const Tensor h = rows({{1, 2, 2, 0}, {3, 0, 4, 0}, {0, 0, 0, 5}});
  EmbeddingOptions o;
  o.normalize = false;
  EXPECT_EQ(pool_embedding(h, o), (std::vector<float>{0, 0, 0, 5}));
  o.pooling = Pooling::kFirst;
  EXPECT_EQ(pool_embedding(h, o), (std::vector<float>{1, 2, 2, 0}));
  o.pooling = Pooling::kMean;
  const std::vector<float> mean = pool_embedding(h, o);
  EXPECT_FLOAT_EQ(mean[0], 4.0f / 3);
  EXPECT_FLOAT_EQ(mean[2], 2.0f);
  o.normalize = true;
  o.pooling = Pooling::kFirst;
  const std::vector<float> unit = pool_embedding(h, o);
  EXPECT_FLOAT_EQ(unit[0], 1.0f / 3);
  EXPECT_FLOAT_EQ(unit[1], 2.0f / 3);
  // Matryoshka: cut first, then normalize.
  o.dimensions = 2;
  const std::vector<float> cut = pool_embedding(h, o);
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_FLOAT_EQ(cut[0], 1.0f / std::sqrt(5.0f));
  EXPECT_FLOAT_EQ(cut[1], 2.0f / std::sqrt(5.0f));
  o.dimensions = 5;
  EXPECT_THROW(pool_embedding(h, o), Error);
  o.dimensions = 0;
  o.pooling = Pooling::kLast;
  const Tensor zero = rows({{0, 0}});
  EXPECT_EQ(pool_embedding(zero, o), (std::vector<float>{0, 0}));  // a zero vector stays zero
  EXPECT_DOUBLE_EQ(cosine_similarity(unit, unit), 1.0);
  EXPECT_NEAR(cosine_similarity(std::vector<float>{1, 0}, std::vector<float>{0, 3}), 0.0, 1e-12);
  EXPECT_EQ(parse_pooling("cls"), Pooling::kFirst);
  EXPECT_EQ(parse_pooling("first"), Pooling::kFirst);
  EXPECT_STREQ(pooling_name(Pooling::kMean), "mean");
  EXPECT_THROW(parse_pooling("max"), Error);
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

TEST(EmbeddingPooling, SentenceTransformersFiles) {
  const auto tiny = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "qwen3_embed_tiny";
  const auto o = sentence_transformers_options(tiny);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->pooling, Pooling::kLast);
  EXPECT_TRUE(o->normalize);
  const fs::path dir = test::temp_dir("st_pooling");
  EXPECT_FALSE(sentence_transformers_options(dir).has_value());  // no modules.json
  write(dir / "modules.json",
        R"([{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}])");
  write(dir / "1_Pooling" / "config.json", R"({"pooling_mode_mean_tokens": true})");
  const auto mean = sentence_transformers_options(dir);
  ASSERT_TRUE(mean.has_value());
  EXPECT_EQ(mean->pooling, Pooling::kMean);
  EXPECT_FALSE(mean->normalize);  // no Normalize module
  write(dir / "1_Pooling" / "config.json", R"({"pooling_mode_max_tokens": true})");
  try {
    sentence_transformers_options(dir);
    ADD_FAILURE() << "max pooling accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1_Pooling"), std::string::npos) << e.what();
  }
  write(dir / "modules.json", "[oops");
  EXPECT_THROW(sentence_transformers_options(dir), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::runtime
