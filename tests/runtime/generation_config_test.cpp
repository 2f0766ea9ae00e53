#include "runtime/generation_config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "test_support.h"

namespace exq::runtime {
namespace {

TEST(GenerationConfig, ReadsSmolLM2File) {
  const auto dir = test::shared_dir() / "models" / "smollm2-135m-instruct";
  const GenerationConfig g = load_generation_config(dir);
  EXPECT_EQ(g.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_EQ(g.bos_token_id, 1);
  EXPECT_EQ(g.pad_token_id, 2);
  EXPECT_FALSE(g.temperature.has_value());
  // Nothing set: the built-in sampler defaults stay.
  const SamplerConfig s = sampler_defaults(g);
  EXPECT_FLOAT_EQ(s.temperature, SamplerConfig{}.temperature);
  EXPECT_EQ(s.top_k, SamplerConfig{}.top_k);
}

TEST(GenerationConfig, EosListAndSamplingFields) {
  const GenerationConfig g = parse_generation_config(
      R"({"eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000, "do_sample": true,
          "temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.1,
          "repetition_penalty": 1.1, "max_new_tokens": 64, "transformers_version": "4.45"})",
      "g.json");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_EQ(g.bos_token_id, 128000);
  EXPECT_EQ(g.max_new_tokens, 64);
  const SamplerConfig s = sampler_defaults(g);
  EXPECT_FLOAT_EQ(s.temperature, 0.6f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 20);
  EXPECT_FLOAT_EQ(s.min_p, 0.1f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.1f);
}

TEST(GenerationConfig, DoSampleFalseMeansGreedy) {
  const auto g = parse_generation_config(R"({"do_sample": false, "temperature": 0.7})", "g.json");
  EXPECT_TRUE(sampler_defaults(g).greedy());
}

TEST(GenerationConfig, MissingFileIsEmpty) {
  const auto dir = test::temp_dir("genconf_missing");
  const GenerationConfig g = load_generation_config(dir);
  EXPECT_TRUE(g.eos_token_ids.empty());
  EXPECT_FALSE(g.bos_token_id.has_value());
}

TEST(GenerationConfig, ErrorsNameFileAndKey) {
  const auto dir = test::temp_dir("genconf_bad");
  std::ofstream(dir / "generation_config.json") << "{\"eos_token_id\": 2,";
  try {
    load_generation_config(dir);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("generation_config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("invalid JSON"), std::string::npos) << e.what();
  }
  try {
    parse_generation_config(R"({"eos_token_id": "two"})", "g.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos_token_id"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_generation_config(R"({"eos_token_id": [2, -1]})", "g.json"), Error);
  EXPECT_THROW(parse_generation_config(R"({"temperature": "hot"})", "g.json"), Error);
  EXPECT_THROW(parse_generation_config(R"({"do_sample": 1})", "g.json"), Error);
  EXPECT_THROW(parse_generation_config(R"([1, 2])", "g.json"), Error);
}

}  // namespace
}  // namespace exq::runtime
