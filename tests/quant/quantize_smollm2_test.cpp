// `exq quantize` of SmolLM2-135M at 4.0 bpw with small settings (wiki.utf8 calibration,
// -mr 4 -ml 256 -r 16 -l 256: with -r 8 the perplexity lands at 1.496 x FP16, too near the bound;
// docs/perf.md "CPU conversion" has the measurements), then
// the output folder: every decoder linear validates as EXL2 through io::exl2, the decoder's
// bits per weight (exllamav2's accounting, from the stored group tables) is within 0.02 of the
// target, and `exq ppl --kl-base` on the first 16 x 512 windows of wiki.utf8 against the FP16
// model: perplexity under 1.5 x the FP16 model's 14.606 (fixtures/smollm2/ppl.json), mean KL
// divergence to FP16 below exllamav2's 4.0 bpw conversion's 0.239 on the same windows
// (fixtures/README.md).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <fstream>

#include "io/exl2.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "quant/options.h"
#include "test_support.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

int run(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

// Bits per weight of the decoder linears as exllamav2 counts them (options.h total_bits), from
// the stored group tables; every layer must validate.
double decoder_bpw(const io::ModelConfig& config, const io::SafetensorsModel& files) {
  int64_t bits = 0, weights = 0;
  const int64_t h = config.hidden_size, q = config.q_dim(), kv = config.kv_dim(),
                m = config.intermediate_size;
  const std::pair<const char*, std::pair<int64_t, int64_t>> linears[] = {
      {"self_attn.q_proj", {h, q}},  {"self_attn.k_proj", {h, kv}}, {"self_attn.v_proj", {h, kv}},
      {"self_attn.o_proj", {q, h}},  {"mlp.gate_proj", {h, m}},     {"mlp.up_proj", {h, m}},
      {"mlp.down_proj", {m, h}}};
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    for (const auto& [name, shape] : linears) {
      const auto [in, outs] = shape;
      const std::string key = fmt::format("model.layers.{}.{}", l, name);
      EXPECT_TRUE(io::has_exl2(files, key)) << key;
      const auto groups = io::validate_exl2(io::exl2_tensors(files, key), in, outs, key);
      for (const io::Exl2Group& g : groups) bits += g.rows * outs * g.bits + 16 + 32 + 4 * outs;
      bits += 32 * in;
      weights += in * outs;
    }
  }
  return static_cast<double>(bits) / static_cast<double>(weights);
}

TEST(QuantizeSmolLM2, Converts4BpwLoadsAndKeepsPerplexity) {
  EXQ_REQUIRE_MODEL();
  const fs::path exq = fs::path(EXQ_BINARY_DIR) / "exq";
  if (!fs::exists(exq)) GTEST_SKIP() << "exq binary not built: " << exq;
  const fs::path dir = test::temp_dir("quantize_smollm2");
  const fs::path work = dir / "work", out = dir / "out";
  const fs::path wiki = test::shared_dir() / "data" / "wiki.utf8";
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = run(fmt::format("{} quantize -i {} -o {} -cf {} -b 4.0 -c {} -mr 4 -ml 256 -r 16 -l 256 "
                                 "--threads 2 > {} 2>&1",
                                 exq.string(), test::test_model().string(), work.string(), out.string(),
                                 wiki.string(), (dir / "quantize.log").string()));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(rc, 0) << test::read_file(dir / "quantize.log");
  std::printf("conversion wall time %.1f s\n", seconds);

  const io::ModelConfig config = io::load_model_config(out);
  ASSERT_EQ(config.quantization_config.value("quant_method", ""), "exl2");
  EXPECT_EQ(config.quantization_config.at("bits").get<double>(), 4.0);
  EXPECT_EQ(config.quantization_config.at("head_bits").get<int>(), 6);
  EXPECT_EQ(config.quantization_config.at("calibration").at("rows").get<int>(), 16);
  const io::SafetensorsModel files = io::SafetensorsModel::open(out);
  EXPECT_FALSE(files.contains("lm_head.weight"));  // tied: the embedding serves as the head
  EXPECT_FALSE(io::has_exl2(files, "lm_head"));
  EXPECT_EQ(files.get("model.embed_tokens.weight").dtype(), DType::F16);

  const double bpw = decoder_bpw(config, files);
  std::printf("decoder bpw %.4f\n", bpw);
  EXPECT_NEAR(bpw, 4.0, 0.02);
  EXPECT_LE(bpw, 4.0);

  const int prc = run(fmt::format("{} ppl -m {} --kl-base {} -f {} --window 512 --windows 16 --threads 2 --json > {} 2> {}",
                                  exq.string(), out.string(), test::test_model().string(), wiki.string(),
                                  (dir / "ppl.json").string(), (dir / "ppl.log").string()));
  ASSERT_EQ(prc, 0) << test::read_file(dir / "ppl.log");
  const auto result = nlohmann::json::parse(test::read_file(dir / "ppl.json"));
  const double ppl = result.at("ppl").get<double>();
  const auto fixture = nlohmann::json::parse(test::read_file(test::shared_dir() / "fixtures" / "smollm2" / "ppl.json"));
  const double ref = fixture.at("windows").at("wiki.utf8").at("ppl").get<double>();
  std::printf("perplexity %.4f (fp16 %.4f, ratio %.3f)\n", ppl, ref, ppl / ref);
  EXPECT_LT(ppl, 1.5 * ref);
  EXPECT_GT(ppl, 0.9 * ref);

  const auto& kl = result.at("kl");
  const double base_ppl = kl.at("base_ppl").get<double>(), mean = kl.at("mean").get<double>();
  std::printf("KL divergence to fp16: mean %.4f +/- %.4f, p99 %.3f; same top token %.2f %%; fp16 ppl %.4f\n", mean,
              kl.at("stderr").get<double>(), kl.at("p99").get<double>(), 100 * kl.at("same_top").get<double>(),
              base_ppl);
  EXPECT_NEAR(base_ppl, ref, 2e-3 * ref);  // the reference run is the FP16 model of the fixture
  constexpr double kExllamaKl = 0.239;     // exllamav2 0.3.2, 4.0 bpw, same windows (fixtures/README.md)
  EXPECT_GT(mean, 0.01);
  EXPECT_LT(mean, kExllamaKl);
  EXPECT_GT(kl.at("same_top").get<double>(), 0.7);
  EXPECT_NEAR(kl.at("ln_ppl_ratio").get<double>(), std::log(ppl / base_ppl), 1e-9);
}

// exllamav2's own measurement.json drives a conversion (-m): no measurement pass.
TEST(QuantizeSmolLM2, ExllamaMeasurementDrivesConversion) {
  EXQ_REQUIRE_MODEL();
  const fs::path exq = fs::path(EXQ_BINARY_DIR) / "exq";
  if (!fs::exists(exq)) GTEST_SKIP() << "exq binary not built: " << exq;
  const fs::path dir = test::temp_dir("quantize_smollm2_m");
  const fs::path measurement = test::shared_dir() / "fixtures" / "exl2" / "smollm2_measurement.json";
  const int rc = run(fmt::format("{} quantize -i {} -o {} -b 3.5 -m {} -c {} -r 4 -l 128 -ss 40 "
                                 "--threads 2 > {} 2>&1",
                                 exq.string(), test::test_model().string(), (dir / "work").string(),
                                 measurement.string(), (test::shared_dir() / "data" / "c4.utf8").string(),
                                 (dir / "log").string()));
  ASSERT_EQ(rc, 0) << test::read_file(dir / "log");
  const fs::path out = dir / "work" / "out";
  // -ss 40: the ~100 MB of tensors come in several shards with an index.
  EXPECT_TRUE(fs::exists(out / "output.safetensors.index.json"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(out))
    shards += e.path().filename().string().starts_with("output-0000");
  EXPECT_GE(shards, 2);
  EXPECT_FALSE(fs::exists(out / "output.safetensors"));
  const io::ModelConfig config = io::load_model_config(out);
  const double bpw = decoder_bpw(config, io::SafetensorsModel::open(out));
  std::printf("decoder bpw %.4f\n", bpw);
  EXPECT_NEAR(bpw, 3.5, 0.02);
  EXPECT_LE(bpw, 3.5);
}

}  // namespace
}  // namespace exq::quant
