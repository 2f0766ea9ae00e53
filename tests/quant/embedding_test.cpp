// An embedding model stored as Qwen3-Embedding is (Qwen3Model's weights without the "model."
// prefix, no lm_head: tests/model/data/qwen3_embed_tiny) converts on the CPU into the same EXL2
// folder, byte for byte, as its weights stored under the usual model.* names; at 8 bpw its
// last-token embeddings stay close to the fp16 model's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/exl2.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "test_support.h"
#include "tiny_gemma.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

// Cosine similarity of the last rows of two [T, width] hidden states (last-token pooling).
double last_row_cosine(const Tensor& a, const Tensor& b) {
  const int64_t w = a.dim(1), t = a.dim(0) - 1;
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < w; ++i) {
    const double x = a.data<float>()[t * w + i], y = b.data<float>()[t * w + i];
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return ab / std::sqrt(aa * bb);
}

TEST(EmbeddingQuantize, PrefixlessModelConvertsAsTheUsualNames) {
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  const fs::path dir = test::temp_dir("quantize_embed"), named = test::temp_dir("quantize_embed_named");
  tiny_gemma::copy_model("qwen3_embed_tiny", dir);
  tiny_gemma::copy_model("qwen3_embed_tiny", named);
  {  // the same weights under model.*
    const io::SafetensorsModel files = io::SafetensorsModel::open(dir / "model");
    std::vector<io::NamedTensor> list;
    for (const std::string& n : files.names()) list.push_back({n, files.get(n)});
    io::write_safetensors(named / "model" / "model.safetensors", list);
  }
  const fs::path a = tiny_gemma::convert(dir, 4.0), b = tiny_gemma::convert(named, 4.0);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  const io::SafetensorsModel fa = io::SafetensorsModel::open(a), fb = io::SafetensorsModel::open(b);
  EXPECT_TRUE(io::has_exl2(fa, "model.layers.0.self_attn.q_proj"));
  ASSERT_EQ(fa.names().size(), fb.names().size());
  for (const std::string& n : fb.names()) {
    ASSERT_TRUE(fa.contains(n)) << n;
    const TensorView x = fa.get(n), y = fb.get(n);
    EXPECT_TRUE(x.shape() == y.shape() && std::memcmp(x.raw(), y.raw(), y.nbytes()) == 0) << n;
  }
  // At 8 bpw the pooled states stay close (this random model is sensitive: at 4.0 bpw its logits
  // move 0.63 relative, at 8.0 0.040; the tiny qwen3 of qwen3_test.cpp 0.25 at 4.0).
  const fs::path out = tiny_gemma::convert(dir, 8.0);
  ASSERT_FALSE(out.empty());
  model::LlamaModel original = model::LlamaModel::load(dir / "model"), q = model::LlamaModel::load(out);
  std::vector<int32_t> ids;
  for (int i = 0; i < 30; ++i) ids.push_back((i * 7919 + 17) % 320);
  double worst = 1;
  for (size_t end : {size_t{10}, size_t{30}}) {
    const std::span<const int32_t> text = std::span(ids).first(end);
    model::KvCache ca = original.make_cache(30), cb = q.make_cache(30);
    worst = std::min(worst, last_row_cosine(original.hidden_states(text, ca), q.hidden_states(text, cb)));
  }
  std::printf("  qwen3_embed_tiny 8.0 bpw: worst cosine similarity to the fp16 last-token states %.5f, logits "
              "relative error %.4f\n", worst, tiny_gemma::logits_error(original, q));
  EXPECT_GE(worst, 0.995);
  fs::remove_all(dir);
  fs::remove_all(named);
}

}  // namespace
}  // namespace exq::quant
