// `exq info`: reported numbers checked against sums over the tensors, and broken folders.
#include <gtest/gtest.h>

#include <cmath>

#include "cli_support.h"
#include "exl2_test_models.h"
#include "io/safetensors.h"
#include "../model/multimodal.h"

namespace exq::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

TEST(CliInfo, TinyModelJson) {
  const auto dir = temp_dir("info_tiny") / "m";
  const json config = tiny_config();
  auto tensors = tiny_tensors(config);
  int64_t params = 0, bytes = 0;
  for (const auto& [name, t] : tensors) {
    params += t.numel();
    bytes += static_cast<int64_t>(t.nbytes());
  }
  const size_t count = tensors.size();
  write_model_dir(dir, config, tensors);

  const RunResult r = run_exq({"info", dir.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["hidden_size"], 64);
  EXPECT_EQ(j["heads"], 4);
  EXPECT_EQ(j["kv_heads"], 2);
  EXPECT_EQ(j["vocab_size"], 49152);
  EXPECT_EQ(j["parameters"], params);
  EXPECT_EQ(j["bytes"], bytes);
  EXPECT_EQ(j["tensors"], count);
  EXPECT_EQ(j["dtypes"]["F16"], count);
  EXPECT_EQ(j["tie_word_embeddings"], true);
  EXPECT_DOUBLE_EQ(j["rope"]["theta"].get<double>(), 100000.0);
  EXPECT_EQ(j["rope"]["scaling"], "none");
  EXPECT_EQ(j["quantization"]["method"], "none");
  // 2 layers x keys and values x 2 kv heads x head dim 16: 128 values a token; q8_0 needs a head
  // dim that is a multiple of 32.
  EXPECT_EQ(j["kv_cache_bytes_per_token"]["f16"], 256);
  EXPECT_EQ(j["kv_cache_bytes_per_token"]["q8_0"], 0);
  EXPECT_EQ(j["kv_cache_bytes_per_token"]["q4"], 0);

  const RunResult text = run_exq({"info", dir.string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("layers:        2"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("kv cache:      0.2 KiB a token in f16 (256 tokens: 0.1 MiB; the CPU keeps f32; q8_0 and q4 need"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find(fmt::format("F16 {}", count)), std::string::npos) << text.out;
}

// Qwen2.5's documented yarn: the rope line, the context it gives, and the JSON fields.
TEST(CliInfo, YarnScaling) {
  const auto dir = temp_dir("info_yarn") / "m";
  json config = tiny_config();
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 256}};
  write_model_dir(dir, config, tiny_tensors(config));
  const RunResult r = run_exq({"info", dir.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["max_position_embeddings"], 256);
  EXPECT_EQ(j["context_length"], 1024);
  EXPECT_EQ(j["rope"]["scaling"]["type"], "yarn");
  EXPECT_EQ(j["rope"]["scaling"]["original_max_position_embeddings"], 256);
  EXPECT_NEAR(j["rope"]["scaling"]["attention_factor"].get<double>(), 0.1 * std::log(4.0) + 1.0, 1e-6);
  const RunResult text = run_exq({"info", dir.string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("yarn scaling x4 (original context 256, attention factor 1.1386): context 1024"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("context:       1024"), std::string::npos) << text.out;
}

// phi3 (the golden tiny model): fused tensors checked under their own names, longrope shown.
TEST(CliInfo, Phi3FusedAndLongRope) {
  const fs::path src = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "phi3_tiny";
  const RunResult r = run_exq({"info", src.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model_type"], "phi3");
  EXPECT_EQ(j["parameters"], 303744);  // every tensor's elements: the fused ones count once
  EXPECT_EQ(j["rope"]["scaling"]["type"], "longrope");
  EXPECT_EQ(j["rope"]["scaling"]["original_max_position_embeddings"], 16);
  EXPECT_NEAR(j["rope"]["scaling"]["attention_factor"].get<double>(), std::sqrt(1.0 + std::log(4.0) / std::log(16.0)),
              1e-6);
  const RunResult text = run_exq({"info", src.string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("longrope scaling x4 (attention factor 1.2247; short factors up to a context of 16, long "
                          "ones above): context 64"),
            std::string::npos)
      << text.out;
  EXPECT_EQ(j["rope"]["rotary_dim"], 32);
  const RunResult partial = run_exq({"info", (src.parent_path() / "phi3_partial_tiny").string()});
  ASSERT_EQ(partial.exit_code, 0) << partial.err;
  EXPECT_NE(partial.out.find("rope:          theta 10000 over 24 of each head's 32 dims, longrope"), std::string::npos)
      << partial.out;
  // A fused tensor of the wrong shape is named.
  const auto dir = temp_dir("info_phi3") / "m";
  fs::create_directories(dir);
  fs::copy_file(src / "config.json", dir / "config.json");
  const io::SafetensorsModel files = io::SafetensorsModel::open(src);
  std::vector<io::NamedTensor> list;
  for (const std::string& n : files.names())
    list.push_back({n, n == "model.layers.1.self_attn.qkv_proj.weight" ? files.get(n).slice0(0, 200) : files.get(n)});
  io::write_safetensors(dir / "model.safetensors", list);
  const RunResult bad = run_exq({"info", dir.string()});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("model.layers.1.self_attn.qkv_proj.weight"), std::string::npos) << bad.err;
}

// Sliding windows: each layer's in the JSON, a summary in the text (qwen2: layer 0 full).
TEST(CliInfo, SlidingWindow) {
  const fs::path src = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "qwen2_swa_tiny";
  const RunResult r = run_exq({"info", src.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["sliding_window"], json::array({0, 4}));
  const RunResult text = run_exq({"info", src.string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("attention:     sliding window of 4 keys on 1 of 2 layers"), std::string::npos) << text.out;
  const RunResult none = run_exq({"info", (src.parent_path() / "phi3_tiny").string(), "--json"});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_TRUE(json::parse(none.out)["sliding_window"].is_null());
}

// An embedding model stored as Qwen3-Embedding is (no "model." prefix): its tensors checked under
// model.*, the pooling its sentence-transformers files give; the granitemoe one's fused experts.
TEST(CliInfo, EmbeddingModelAndGraniteMoe) {
  const fs::path data = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data";
  const RunResult r = run_exq({"info", (data / "qwen3_embed_tiny").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["embedding"]["pooling"], "last");
  EXPECT_EQ(j["embedding"]["normalize"], true);
  const RunResult text = run_exq({"info", (data / "qwen3_embed_tiny").string()});
  EXPECT_NE(text.out.find("embeddings:    last pooling, normalized"), std::string::npos) << text.out;
  const RunResult g = run_exq({"info", (data / "granitemoe_tiny").string(), "--json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const json gj = json::parse(g.out);
  EXPECT_TRUE(gj["embedding"].is_null());
  EXPECT_EQ(gj["experts"]["count"], 5);
  EXPECT_EQ(gj["granite"]["residual_multiplier"], 0.22);
}

// gemma: GeGLU, query_pre_attn_scalar, the softcaps, gemma3's local rotary base.
// A mixture of experts: every expert's tensor checked, the parameters a token uses.
TEST(CliInfo, MixtureOfExperts) {
  const fs::path data = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data";
  const RunResult r = run_exq({"info", (data / "mixtral_tiny").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  // A layer: attention 2 x 64x64 + 2 x 32x64, norms 2 x 64, router 4x64, experts 4 x 3 x 48x64;
  // two layers, embedding and head 320x64 each, the final norm.
  const int64_t layer = 2 * 4096 + 2 * 2048 + 128 + 256 + 4 * 3 * 3072;
  EXPECT_EQ(j["parameters"], 2 * layer + 2 * 320 * 64 + 64);
  EXPECT_EQ(j["experts"]["count"], 4);
  EXPECT_EQ(j["experts"]["per_token"], 2);
  EXPECT_EQ(j["experts"]["layers"], 2);
  EXPECT_EQ(j["experts"]["active_parameters"], 2 * (layer - 2 * 3 * 3072) + 2 * 320 * 64 + 64);
  EXPECT_EQ(j["experts"]["bytes"], 2 * 4 * 3 * 3072 * 2);  // fp16, what --cpu-moe keeps off the GPU
  const RunResult text = run_exq({"info", (data / "qwen3_moe_tiny").string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("experts:       6 a layer on 2 of 3 layers, 3 a token, weights renormalized (intermediate 24)"),
            std::string::npos)
      << text.out;
  // qwen3_moe_tiny: 2 MoE layers of 6 experts of 3 x 24x64 fp16.
  EXPECT_NE(text.out.find("expert bytes:  110,592 (0.1 MiB, 38 % of the model)"), std::string::npos) << text.out;
  EXPECT_TRUE(json::parse(run_exq({"info", (data / "gemma2_tiny").string(), "--json"}).out)["experts"].is_null());
}

TEST(CliInfo, Gemma) {
  const fs::path data = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data";
  const RunResult r = run_exq({"info", (data / "gemma2_tiny").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model_type"], "gemma2");
  EXPECT_EQ(j["activation"], "gelu_pytorch_tanh");
  EXPECT_DOUBLE_EQ(j["attention_scale"].get<double>(), 1.0 / std::sqrt(24.0));
  EXPECT_EQ(j["attn_logit_softcapping"], 2.0);
  EXPECT_EQ(j["final_logit_softcapping"], 3.0);
  EXPECT_EQ(j["sliding_window"], json::array({5, 0, 5}));
  const RunResult text = run_exq({"info", (data / "gemma2_tiny").string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const char* line : {"mlp:           gelu_pytorch_tanh (GeGLU)", "scores:        scaled by 0.204124 (query_pre_attn_scalar)",
                           "softcap:       attention scores at 2", "softcap:       logits at 3"})
    EXPECT_NE(text.out.find(line), std::string::npos) << line << "\n" << text.out;
  const RunResult g3 = run_exq({"info", (data / "gemma3_tiny").string()});
  ASSERT_EQ(g3.exit_code, 0) << g3.err;
  EXPECT_NE(g3.out.find("rope:          theta 1000000, linear scaling x4; sliding-window layers theta 100, no scaling"),
            std::string::npos)
      << g3.out;
  EXPECT_EQ(g3.out.find("softcap:"), std::string::npos) << g3.out;
  // A multimodal Gemma 3 checkpoint: its language model, the vision tower's tensors not counted.
  const fs::path mm = temp_dir("info_gemma3_mm") / "m";
  write_multimodal(mm, kGemma3Multimodal, false);
  const RunResult mj = run_exq({"info", mm.string(), "--json"});
  ASSERT_EQ(mj.exit_code, 0) << mj.err;
  const RunResult pj = run_exq({"info", (data / "gemma3_tiny").string(), "--json"});
  ASSERT_EQ(pj.exit_code, 0) << pj.err;
  EXPECT_EQ(json::parse(mj.out)["language_model_of"], "gemma3");
  EXPECT_EQ(json::parse(mj.out)["parameters"], json::parse(pj.out)["parameters"]);
  const RunResult mt = run_exq({"info", mm.string()});
  EXPECT_NE(mt.out.find("gemma3_text (Gemma3ForConditionalGeneration), the language model of a gemma3 checkpoint"),
            std::string::npos)
      << mt.out;
  const RunResult llama = run_exq({"info", (data / "phi3_tiny").string(), "--json"});
  ASSERT_EQ(llama.exit_code, 0) << llama.err;
  EXPECT_EQ(json::parse(llama.out)["activation"], "silu");
  EXPECT_TRUE(json::parse(llama.out)["final_logit_softcapping"].is_null());
}

// granite: its four scalars, in the JSON and the text.
TEST(CliInfo, Granite) {
  const fs::path data = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data";
  const RunResult r = run_exq({"info", (data / "granite_tiny").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model_type"], "granite");
  EXPECT_EQ(j["attention_scale"], 0.09375);
  EXPECT_EQ(j["granite"], json({{"embedding_multiplier", 12.0}, {"attention_multiplier", 0.09375},
                                {"residual_multiplier", 0.22}, {"logits_scaling", 8.0}}));
  const RunResult text = run_exq({"info", (data / "granite_tiny").string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const char* line : {"scores:        scaled by 0.09375 (attention_multiplier)",
                           "multipliers:   embedding x 12, sublayer outputs x 0.22 before the residual add, logits / 8"})
    EXPECT_NE(text.out.find(line), std::string::npos) << line << "\n" << text.out;
  const RunResult gemma = run_exq({"info", (data / "gemma2_tiny").string(), "--json"});
  EXPECT_TRUE(json::parse(gemma.out)["granite"].is_null());
}

TEST(CliInfo, ReportsExl2Quantization) {
  const auto dir = temp_dir("info_exl2") / "m";
  json config = tiny_config();
  config["quantization_config"] = {{"quant_method", "exl2"}, {"version", "0.3.2"}, {"bits", 4.0}, {"head_bits", 6}};
  // Packed tensors do not follow the HF shapes: the count comes from the config.
  std::map<std::string, Tensor> tensors = tiny_tensors(config), twin;
  exl2ify(tensors, twin, "model.layers.0.self_attn.q_proj", {4}, 1);
  write_model_dir(dir, config, tensors);
  const RunResult r = run_exq({"info", dir.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["quantization"]["method"], "exl2");
  EXPECT_DOUBLE_EQ(j["quantization"]["bits"].get<double>(), 4.0);
  EXPECT_EQ(j["quantization"]["head_bits"], 6);
  int64_t params = 0;
  for (const auto& [name, t] : tiny_tensors(config)) params += t.numel();
  EXPECT_EQ(j["parameters"], params);
  EXPECT_EQ(j["dtypes"]["I32"], 3);  // q_weight, q_scale, q_invperm
}

TEST(CliInfo, MissingFolder) {
  const auto dir = temp_dir("info_missing") / "nope";
  expect_user_error(run_exq({"info", dir.string()}), dir.string());
}

TEST(CliInfo, NoArgument) { expect_user_error(run_exq({"info"}), "exq info MODEL"); }

TEST(CliInfo, FolderWithoutConfig) {
  const auto dir = temp_dir("info_noconfig");
  expect_user_error(run_exq({"info", dir.string()}), "config.json");
}

TEST(CliInfo, BadConfigJson) {
  const auto dir = temp_dir("info_badjson") / "m";
  write_model_dir(dir, tiny_config(), tiny_tensors(tiny_config()));
  write_text(dir / "config.json", "{\"model_type\": \"llama\", \"hidden_size\": 64,,}");
  expect_user_error(run_exq({"info", dir.string()}), "config.json");
}

TEST(CliInfo, UnsupportedArchitecture) {
  const auto dir = temp_dir("info_arch") / "m";
  json config = tiny_config();
  config["model_type"] = "gpt2";
  write_model_dir(dir, config, tiny_tensors(tiny_config()));
  const RunResult r = run_exq({"info", dir.string()});
  expect_user_error(r, "model_type");
  EXPECT_NE(r.err.find("gpt2"), std::string::npos) << r.err;
}

TEST(CliInfo, MissingTensor) {
  const auto dir = temp_dir("info_missing_tensor") / "m";
  auto tensors = tiny_tensors(tiny_config());
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  write_model_dir(dir, tiny_config(), std::move(tensors));
  expect_user_error(run_exq({"info", dir.string()}), "model.layers.1.mlp.up_proj.weight");
}

TEST(CliInfo, ShapeMismatch) {
  const auto dir = temp_dir("info_shape") / "m";
  auto tensors = tiny_tensors(tiny_config());
  tensors["model.layers.0.self_attn.k_proj.weight"] = Tensor::zeros(DType::F16, {16, 64});
  write_model_dir(dir, tiny_config(), std::move(tensors));
  const RunResult r = run_exq({"info", dir.string()});
  expect_user_error(r, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_NE(r.err.find("[16, 64]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[32, 64]"), std::string::npos) << r.err;
}

TEST(CliInfo, TruncatedSafetensors) {
  const auto dir = temp_dir("info_trunc") / "m";
  write_model_dir(dir, tiny_config(), tiny_tensors(tiny_config()));
  const auto st = dir / "model.safetensors";
  std::filesystem::resize_file(st, std::filesystem::file_size(st) / 2);
  expect_user_error(run_exq({"info", dir.string()}), "model.safetensors");
}

TEST(CliInfo, RealModel) {
  EXQ_REQUIRE_MODEL();
  const RunResult r = run_exq({"info", test_model().string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["layers"], 30);
  EXPECT_EQ(j["parameters"], 134515008);
  // Independent count: the sum of every tensor's element count.
  const auto st = io::SafetensorsModel::open(test_model());
  int64_t sum = 0, bytes = 0;
  for (const auto& name : st.names()) {
    sum += st.get(name).numel();
    bytes += static_cast<int64_t>(st.get(name).nbytes());
  }
  EXPECT_EQ(sum, 134515008);
  EXPECT_EQ(j["bytes"], bytes);
  EXPECT_EQ(j["tensors"], 272);
  EXPECT_EQ(j["dtypes"]["F16"], 272);
  EXPECT_EQ(j["hidden_size"], 576);
  EXPECT_EQ(j["heads"], 9);
  EXPECT_EQ(j["kv_heads"], 3);
  EXPECT_EQ(j["vocab_size"], 49152);
  EXPECT_EQ(j["tie_word_embeddings"], true);
  // 30 layers x 2 x 3 kv heads x 64 = 11,520 values a token: 23,040 bytes in f16, 12,240 in q8_0,
  // 7,200 in q4 (half a byte a value, 4 bytes a group of 32).
  EXPECT_EQ(j["kv_cache_bytes_per_token"]["f16"], 23040);
  EXPECT_EQ(j["kv_cache_bytes_per_token"]["q8_0"], 12240);
  EXPECT_EQ(j["kv_cache_bytes_per_token"]["q4"], 7200);
  const RunResult text = run_exq({"info", test_model().string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("kv cache:      22.5 KiB a token in f16, 12.0 KiB in q8_0, 7.0 KiB in q4 (8192 tokens: 180.0 / "
                          "95.6 / 56.2 MiB"),
            std::string::npos)
      << text.out;
}

}  // namespace
}  // namespace exq::test
