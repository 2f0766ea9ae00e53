// Sliding-window attention: tiny random mistral (a window of 5 on every layer) and qwen2
// (use_sliding_window from max_window_layers 1: layer 0 full, layer 1 a window of 4) against
// transformers' logits (scripts/swa_golden.py wrote tests/model/data/*_swa_tiny), through the KV
// cache in chunks (prefill rows and single decode rows both cross the window), and the config
// rules that pick the windowed layers.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

#include "io/hf_config.h"
#include "model/llama.h"
#include "golden_logits.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path data_dir(const char* name) { return test::model_data_dir(name); }

TEST(SlidingWindow, LogitsMatchTransformers) {
  // All 14 rows in one pass, 6 + three single steps + 5, and 14 single steps (the blocked
  // GEMM path of 16 rows and more: GemmRowsMatchSingleRows).
  test::expect_goldens({"mistral_swa_tiny", "qwen2_swa_tiny"}, 1e-4);
}

// The blocked GEMM path (16 rows and more) with a window: the same rows as the row-by-row path.
TEST(SlidingWindow, GemmRowsMatchSingleRows) {
  LlamaModel m = LlamaModel::load(data_dir("mistral_swa_tiny"));
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 37 + 11) % 320);
  KvCache a = m.make_cache(40), b = m.make_cache(40);
  const Tensor all = m.forward(ids, a, true);
  double err = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const Tensor one = m.forward(std::span(ids).subspan(t, 1), b, true);
    for (int64_t i = 0; i < one.numel(); ++i)
      err = std::max(err, std::fabs(static_cast<double>(one.data<float>()[i] - all.data<float>()[static_cast<int64_t>(t) * 320 + i])));
  }
  EXPECT_LE(err, 1e-4);
}

TEST(SlidingWindow, ConfigRules) {
  const json base = json::parse(test::read_file(data_dir("qwen2_swa_tiny") / "config.json"));
  auto parse = [](const json& j) { return io::parse_model_config(j.dump(), "config.json"); };
  EXPECT_EQ(parse(base).layer_window, (std::vector<int64_t>{0, 4}));
  json off = base;
  off["use_sliding_window"] = false;  // Qwen2.5's configs: a window given, not used
  EXPECT_TRUE(parse(off).layer_window.empty());
  json all = base;
  all["max_window_layers"] = 0;
  EXPECT_EQ(parse(all).layer_window, (std::vector<int64_t>{4, 4}));
  json types = base;
  types["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_EQ(parse(types).layer_window, (std::vector<int64_t>{4, 0}));
  types["layer_types"] = {"sliding_attention"};
  EXPECT_THROW(parse(types), Error);
  types["layer_types"] = {"sliding_attention", "chunked_attention"};
  EXPECT_THROW(parse(types), Error);
  json mistral = json::parse(test::read_file(data_dir("mistral_swa_tiny") / "config.json"));
  EXPECT_EQ(parse(mistral).layer_window, (std::vector<int64_t>{5, 5}));
  mistral["sliding_window"] = nullptr;  // Mistral v0.2 on
  EXPECT_TRUE(parse(mistral).layer_window.empty());
  mistral["sliding_window"] = 0;
  EXPECT_THROW(parse(mistral), Error);
  json llama = mistral;
  llama["model_type"] = "llama";
  llama["sliding_window"] = 5;  // not a llama field: ignored as transformers does
  EXPECT_TRUE(parse(llama).layer_window.empty());
}

}  // namespace
}  // namespace exq::model
