#include "io/hf_config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "core/error.h"
#include "test_support.h"

namespace exq::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path smollm2_config() { return test::shared_dir() / "models/smollm2-135m-instruct/config.json"; }

json base_config() { return json::parse(test::read_file(smollm2_config())); }

json with(json j, const json& patch) {
  j.update(patch);
  return j;
}

ModelConfig parse(const json& j) { return parse_model_config(j.dump(), "cfg.json"); }

// Expects an exq::Error whose message names the file and every string in `needles`.
void expect_error(const json& j, std::initializer_list<std::string> needles) {
  try {
    parse(j);
    FAIL() << "no error for " << j.dump();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cfg.json"), std::string::npos) << what;
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << what << " lacks " << n;
  }
}

TEST(HfConfig, ReadsSmolLM2) {
  const ModelConfig c = load_model_config(smollm2_config().parent_path());
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_qkv_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_EQ(c.torch_dtype, DType::F16);
  EXPECT_TRUE(c.quantization_config.is_null());
  EXPECT_EQ(c.q_dim(), 576);
  EXPECT_EQ(c.kv_dim(), 192);
  // A path to the file itself works too.
  EXPECT_EQ(load_model_config(smollm2_config()).hidden_size, 576);
}

TEST(HfConfig, DefaultsAndVariants) {
  json j = base_config();
  j.erase("num_key_value_heads");
  j.erase("head_dim");
  j["eos_token_id"] = {2, 0};
  j["sliding_window"] = 4096;
  j["quantization_config"] = {{"quant_method", "exl2"}, {"bits", 4.0}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.num_key_value_heads, 9);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(c.quantization_config["quant_method"], "exl2");

  j["model_type"] = "qwen2";
  c = parse(j);
  EXPECT_TRUE(c.attention_qkv_bias);
  EXPECT_FALSE(c.attention_out_bias);
  j["model_type"] = "mistral";
  EXPECT_FALSE(parse(j).attention_qkv_bias);
  j["model_type"] = "llama";
  j["attention_bias"] = true;
  c = parse(j);
  EXPECT_TRUE(c.attention_qkv_bias && c.attention_out_bias);
  j["bos_token_id"] = nullptr;
  EXPECT_FALSE(parse(j).bos_token_id.has_value());
}

TEST(HfConfig, RopeScaling) {
  json j = base_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse(j).rope_scaling.type, RopeScalingType::None);
  EXPECT_EQ(parse(j).context_length(), 8192);
}

// YaRN as Qwen2.5's model cards add it, with transformers' defaults, and with every field
// (DeepSeek-V3's, gpt-oss's truncate); null and 0 read as transformers' `get(x) or default`.
TEST(HfConfig, YarnRopeScaling) {
  json j = base_config();
  j["max_position_embeddings"] = 32768;
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Yarn);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_LE(c.rope_scaling.attention_factor, 0.0);
  EXPECT_TRUE(c.rope_scaling.truncate);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(c.context_length(), 131072);
  // Without original_max_position_embeddings: max_position_embeddings is the trained context.
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}, {"beta_fast", nullptr}, {"beta_slow", 0}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_EQ(c.context_length(), 65536);
  j["max_position_embeddings"] = 163840;
  j["rope_scaling"] = {{"type", "yarn"},          {"factor", 40},     {"original_max_position_embeddings", 4096},
                       {"beta_fast", 16},         {"beta_slow", 2},   {"mscale", 0.707},
                       {"mscale_all_dim", 1.0},   {"truncate", false}, {"attention_factor", nullptr}};
  c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 2.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale, 0.707);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 1.0);
  EXPECT_FALSE(c.rope_scaling.truncate);
  EXPECT_EQ(c.context_length(), 163840);  // max_position_embeddings already is 4096 x 40
  j["rope_scaling"]["attention_factor"] = 1.25;
  EXPECT_DOUBLE_EQ(parse(j).rope_scaling.attention_factor, 1.25);
}

// qwen3, and transformers 5's spelling: rope_parameters (theta and scaling) and dtype.
TEST(HfConfig, Qwen3AndTransformers5Fields) {
  json j = base_config();
  j["model_type"] = "qwen3";
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j.erase("max_position_embeddings");
  j["rope_parameters"] = {{"rope_theta", 1000000.0}, {"rope_type", "default"}};
  j["dtype"] = "bfloat16";
  ModelConfig c = parse(j);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_qkv_bias);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_EQ(c.torch_dtype, DType::BF16);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  j["attention_bias"] = true;
  c = parse(j);
  EXPECT_TRUE(c.attention_qkv_bias && c.attention_out_bias);
  // A scaling inside rope_parameters; rope_theta missing there falls back to the top level.
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  j["rope_theta"] = 5e5;
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 5e5);
  expect_error(with(j, {{"rope_parameters", {{"rope_type", "dynamic"}, {"factor", 4.0}}}}),
               {"rope_parameters.rope_type", "dynamic"});
  expect_error(with(j, {{"rope_parameters", {{"rope_type", "longrope"}, {"factor", 4.0}}}}),
               {"rope_parameters.short_factor", "missing"});
  // Qwen3's documented yarn, in transformers 5's spelling.
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Yarn);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_EQ(c.context_length(), 131072);
  expect_error(with(j, {{"rope_parameters", {{"rope_theta", "big"}}}}), {"rope_parameters.rope_theta"});
  expect_error(with(j, {{"dtype", "int4"}}), {"dtype", "int4"});
  // A rope_scaling beside rope_parameters (older files carry both): rope_scaling wins.
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_DOUBLE_EQ(parse(j).rope_scaling.factor, 2.0);
  // The llama family stays without q/k norms.
  EXPECT_FALSE(parse(with(base_config(), {{"model_type", "qwen2"}})).qk_norm);
}

TEST(HfConfig, RejectsUnsupported) {
  json j = base_config();
  expect_error(with(j, {{"model_type", "cohere"}}), {"model_type", "cohere"});
  expect_error(with(j, {{"hidden_act", "gelu"}}), {"hidden_act", "gelu"});
  expect_error(with(j, {{"rope_scaling", {{"type", "dynamic"}, {"factor", 4.0}}}}),
               {"rope_scaling.type", "dynamic", "yarn, longrope"});
  expect_error(with(j, {{"rope_scaling", {{"type", "yarn"}}}}), {"rope_scaling.factor", "missing"});
  expect_error(with(j, {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}, {"beta_fast", -1}}}}),
               {"rope_scaling.beta_fast", "range"});
  expect_error(with(j, {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}, {"truncate", "no"}}}}),
               {"rope_scaling.truncate", "true or false"});
  expect_error(with(j, {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}, {"attention_factor", 0}}}}),
               {"rope_scaling.attention_factor", "range"});
  expect_error(with(j, {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 0}}}}),
               {"rope_scaling.original_max_position_embeddings", "range"});
  expect_error(with(j, {{"rope_scaling", {{"rope_type", "dynamic"}, {"factor", 4.0}}}}),
               {"rope_scaling.rope_type", "dynamic"});
  expect_error(with(j, {{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}}}),
               {"rope_scaling.low_freq_factor", "missing"});
  expect_error(with(j, {{"hidden_size", 576.5}}), {"hidden_size", "integer"});
  expect_error(with(j, {{"hidden_size", 576.0}}), {"hidden_size", "integer"});
  expect_error(with(j, {{"hidden_size", "576"}}), {"hidden_size", "integer"});
  expect_error(with(j, {{"hidden_size", -576}}), {"hidden_size", "range"});
  expect_error(with(j, {{"vocab_size", 1ull << 63}}), {"vocab_size", "range"});
  expect_error(with(j, {{"num_attention_heads", 7}}), {"num_attention_heads", "divide"});
  expect_error(with(j, {{"num_key_value_heads", 2}}), {"num_key_value_heads", "divide"});
  expect_error(with(j, {{"head_dim", 63}}), {"head_dim", "even"});
  expect_error(with(j, {{"rms_norm_eps", "tiny"}}), {"rms_norm_eps", "number"});
  expect_error(with(j, {{"tie_word_embeddings", 1}}), {"tie_word_embeddings"});
  expect_error(with(j, {{"eos_token_id", {2, "x"}}}), {"eos_token_id[1]"});
  expect_error(with(j, {{"eos_token_id", 49152}}), {"eos_token_id", "range"});
  expect_error(with(j, {{"torch_dtype", "int8"}}), {"torch_dtype", "int8"});
  expect_error(with(j, {{"quantization_config", 3}}), {"quantization_config"});
  json missing = j;
  missing.erase("num_hidden_layers");
  expect_error(missing, {"num_hidden_layers", "missing"});
  expect_error(json::array({1, 2}), {"<root>"});
}

TEST(HfConfig, FileErrorsNameThePath) {
  const fs::path dir = test::temp_dir("hf_config");
  try {
    load_model_config(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, (dir / "config.json").string());
  }
  std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\", ";
  try {
    load_model_config(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, (dir / "config.json").string());
    EXPECT_NE(std::string(e.what()).find("invalid JSON"), std::string::npos);
  }
  fs::remove_all(dir);
}

// Random values of every JSON type, including ones near the limits.
json random_value(std::mt19937& rng) {
  std::uniform_int_distribution<int> kind(0, 11);
  switch (kind(rng)) {
    case 0: return nullptr;
    case 1: return static_cast<bool>(rng() & 1);
    case 2: return static_cast<int64_t>(rng()) - (1ll << 31);
    case 3: return static_cast<int>(rng() % 10);
    case 4: return std::ldexp(static_cast<double>(rng()), static_cast<int>(rng() % 80) - 40);
    case 5: return "yarn";
    case 6: return json::array({1, "x", nullptr});
    case 7: return json::object({{"type", "llama3"}, {"factor", -1}});
    case 8: return std::numeric_limits<int64_t>::min();
    case 9: return std::numeric_limits<uint64_t>::max();
    case 10: return json::object({{"rope_type", "linear"}, {"factor", 1e300}});
    default: return 0;
  }
}

TEST(HfConfig, SeededMutationsOnlyEverThrowError) {
  const json base = base_config();
  const std::string text = base.dump(1);
  std::vector<std::string> keys;
  for (auto it = base.begin(); it != base.end(); ++it) keys.push_back(it.key());
  keys.push_back("rope_scaling");
  keys.push_back("quantization_config");
  std::mt19937 rng(1234);
  int ok = 0, rejected = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string input;
    if (i % 2 == 0) {  // structural: replace or delete a few fields
      json j = base;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) {
        const std::string& k = keys[rng() % keys.size()];
        if (rng() % 4 == 0) j.erase(k);
        else j[k] = random_value(rng);
      }
      if (i % 6 == 0) {  // a yarn scaling with one of its fields replaced or dropped
        json y = {{"rope_type", "yarn"},  {"factor", 4.0},      {"original_max_position_embeddings", 4096},
                  {"beta_fast", 32},      {"beta_slow", 1},     {"mscale", 1.0},
                  {"mscale_all_dim", 1.0}, {"truncate", true},  {"attention_factor", 1.1}};
        std::vector<std::string> ykeys;
        for (auto it = y.begin(); it != y.end(); ++it) ykeys.push_back(it.key());
        const std::string& k = ykeys[rng() % ykeys.size()];
        if (rng() % 4 == 0) y.erase(k);
        else y[k] = random_value(rng);
        j["rope_scaling"] = y;
      }
      input = j.dump();
    } else {  // textual: flip, insert, delete or truncate bytes
      input = text;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !input.empty(); ++e) {
        const size_t pos = rng() % input.size();
        switch (rng() % 4) {
          case 0: input[pos] = static_cast<char>(rng()); break;
          case 1: input.insert(pos, 1, "{}[]\",:0.-e9\\"[rng() % 13]); break;
          case 2: input.erase(pos, 1 + rng() % 8); break;
          default: input.resize(pos); break;
        }
      }
    }
    try {
      const ModelConfig c = parse_model_config(input, "mutated.json");
      EXPECT_GT(c.hidden_size, 0);
      EXPECT_EQ(c.hidden_size % c.num_attention_heads, 0);
      EXPECT_EQ(c.num_attention_heads % c.num_key_value_heads, 0);
      EXPECT_EQ(c.head_dim % 2, 0);
      EXPECT_GE(c.context_length(), c.max_position_embeddings);
      if (c.rope_scaling.type == RopeScalingType::Yarn) {
        EXPECT_GT(c.rope_scaling.factor, 0.0);
        EXPECT_GE(c.rope_scaling.original_max_position_embeddings, 1);
        EXPECT_GT(c.rope_scaling.beta_fast, 0.0);
        EXPECT_GT(c.rope_scaling.beta_slow, 0.0);
      }
      ++ok;
    } catch (const Error& e) {
      EXPECT_EQ(e.context().file, "mutated.json");
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "mutation " << i << " threw a non-exq exception: " << e.what();
    }
  }
  EXPECT_GT(ok, 10);
  EXPECT_GT(rejected, 300);
}

}  // namespace
}  // namespace exq::io
