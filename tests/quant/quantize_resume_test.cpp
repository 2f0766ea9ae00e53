// `exq quantize` killed (SIGKILL via EXQ_TEST_ABORT_AFTER) at several points of the measurement
// and quantization passes and resumed each time gives output files byte-identical to an
// uninterrupted run. Uses a tiny random 2-layer model (untied head, so the head is quantized
// too) with SmolLM2's tokenizer, so each run takes seconds.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <random>

#include "core/half.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

void write_tiny_model(const fs::path& dir) {
  fs::create_directories(dir);
  const int64_t hidden = 128, inter = 256, layers = 2, heads = 4, kv = 2, hd = 32, vocab = 49152;
  std::ofstream(dir / "config.json") << nlohmann::json{
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", hidden},
      {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
      {"num_key_value_heads", kv}, {"head_dim", hd}, {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0}, {"max_position_embeddings", 2048}, {"vocab_size", vocab},
      {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2},
      {"torch_dtype", "float16"}}.dump(2);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(test::test_model() / f, dir / f);
  std::mt19937 rng(1234);
  std::vector<Tensor> store;
  std::vector<io::NamedTensor> named;
  auto add = [&](const std::string& name, Shape shape, float scale, bool ones = false) {
    Tensor t(DType::F16, shape);
    std::uniform_real_distribution<float> u(-scale, scale);
    for (auto& v : t.span<uint16_t>()) v = float_to_half(ones ? 1.0f + u(rng) * 0.1f : u(rng));
    store.push_back(std::move(t));
    named.push_back({name, store.back()});
  };
  store.reserve(64);
  add("model.embed_tokens.weight", {vocab, hidden}, 1.0f);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", {hidden}, 1.0f, true);
    add(p + "post_attention_layernorm.weight", {hidden}, 1.0f, true);
    const float s = 1.7f / std::sqrt(static_cast<float>(hidden));
    add(p + "self_attn.q_proj.weight", {heads * hd, hidden}, s);
    add(p + "self_attn.k_proj.weight", {kv * hd, hidden}, s);
    add(p + "self_attn.v_proj.weight", {kv * hd, hidden}, s);
    add(p + "self_attn.o_proj.weight", {hidden, heads * hd}, s);
    add(p + "mlp.gate_proj.weight", {inter, hidden}, s);
    add(p + "mlp.up_proj.weight", {inter, hidden}, s);
    add(p + "mlp.down_proj.weight", {hidden, inter}, 1.7f / std::sqrt(static_cast<float>(inter)));
  }
  add("model.norm.weight", {hidden}, 1.0f, true);
  add("lm_head.weight", {vocab, hidden}, 0.15f);
  io::write_safetensors(dir / "model.safetensors", named);
}

fs::path exq_binary() { return fs::path(EXQ_BINARY_DIR) / "exq"; }

// Runs exq quantize; returns the exit code, or 128 + signal when killed.
int quantize(const fs::path& model, const fs::path& work, const fs::path& cal, const std::string& extra,
             int abort_after = 0) {
  const std::string env = abort_after > 0 ? fmt::format("EXQ_TEST_ABORT_AFTER={} ", abort_after) : "";
  const std::string cmd = fmt::format(
      "{}{} quantize -i {} -o {} -b 4.0 -c {} -mr 4 -ml 64 -r 4 -l 64 --threads 2 {} >> {} 2>&1",
      env, exq_binary().string(), model.string(), work.string(), cal.string(), extra,
      (work.parent_path() / (work.filename().string() + ".log")).string());
  const int status = std::system(cmd.c_str());
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

std::vector<std::string> output_files(const fs::path& out) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(QuantizeResume, KilledAndResumedRunsGiveIdenticalFiles) {
  EXQ_REQUIRE_MODEL();
  if (!fs::exists(exq_binary())) GTEST_SKIP() << "exq binary not built: " << exq_binary();
  const fs::path dir = test::temp_dir("quantize_resume");
  const fs::path model = dir / "tiny";
  write_tiny_model(model);
  const fs::path cal = dir / "cal.txt";
  std::ofstream(cal) << test::read_file(test::shared_dir() / "data" / "wiki.utf8").substr(0, 60000);

  ASSERT_EQ(quantize(model, dir / "ref", cal, "--status-json"), 0) << test::read_file(dir / "ref.log");
  {
    // --status-json: every line one JSON event; 12 module events (6 per pass).
    std::istringstream lines(test::read_file(dir / "ref.log"));
    std::string line;
    int modules = 0;
    while (std::getline(lines, line)) {
      const auto j = nlohmann::json::parse(line);
      ASSERT_TRUE(j.contains("event")) << line;
      if (j.at("event") == "module") {
        ++modules;
        EXPECT_TRUE(j.contains("eta_s") && j.contains("peak_rss_mb") && j.contains("avg_s")) << line;
      }
    }
    EXPECT_EQ(modules, 12);
  }
  const fs::path ref_out = dir / "ref" / "out";
  ASSERT_TRUE(fs::exists(ref_out / "output.safetensors"));
  // The untied head is quantized; everything else loads as EXL2.
  const io::SafetensorsModel m = io::SafetensorsModel::open(ref_out);
  EXPECT_TRUE(io::has_exl2(m, "lm_head"));
  EXPECT_TRUE(io::has_exl2(m, "model.layers.1.mlp.down_proj"));
  EXPECT_FALSE(m.contains("lm_head.weight"));
  EXPECT_EQ(m.get("model.embed_tokens.weight").dtype(), DType::F16);

  // Steps: measurement 1..6 (attn, mlp x2, norm, head), quantization 7..12.
  const fs::path work = dir / "killed";
  int runs = 0;
  for (int abort_after : {2, 5, 6, 8, 11, 12}) {
    const int rc = quantize(model, work, cal, runs++ ? "-res" : "", abort_after);
    ASSERT_EQ(rc, 128 + SIGKILL) << "abort after step " << abort_after << "\n"
                                 << test::read_file(dir / "killed.log");
  }
  ASSERT_EQ(quantize(model, work, cal, "-res"), 0) << test::read_file(dir / "killed.log");
  const std::string log = test::read_file(dir / "killed.log");
  EXPECT_NE(log.find("Resuming job"), std::string::npos);

  const fs::path out = work / "out";
  ASSERT_EQ(output_files(out), output_files(ref_out));
  for (const std::string& name : output_files(ref_out))
    EXPECT_TRUE(test::read_file(out / name) == test::read_file(ref_out / name)) << name << " differs";

  // Changed arguments on resume: refused, naming them.
  const fs::path refused_log = dir / "killed.log";
  const int rc = quantize(model, work, cal, "-res -hb 8");
  EXPECT_EQ(rc, 2);
  const std::string log2 = test::read_file(refused_log);
  EXPECT_NE(log2.find("arguments changed (head_bits)"), std::string::npos) << log2;
}

TEST(QuantizeResume, SelfSampledCalibrationWithoutFiles) {
  EXQ_REQUIRE_MODEL();
  if (!fs::exists(exq_binary())) GTEST_SKIP() << "exq binary not built: " << exq_binary();
  const fs::path dir = test::temp_dir("quantize_sampled");
  const fs::path model = dir / "tiny";
  write_tiny_model(model);
  const std::string cmd = fmt::format(
      "{} quantize -i {} -o {} -b 3.0 -mr 4 -ml 64 -r 4 -l 64 --threads 2 > {} 2>&1", exq_binary().string(),
      model.string(), (dir / "work").string(), (dir / "log").string());
  ASSERT_EQ(std::system(cmd.c_str()), 0) << test::read_file(dir / "log");
  const auto config = nlohmann::json::parse(test::read_file(dir / "work" / "out" / "config.json"));
  EXPECT_EQ(config.at("quantization_config").at("calibration").at("dataset"), "(self-sampled)");
  const io::SafetensorsFile rows = io::SafetensorsFile::open(dir / "work" / "cal_quant.safetensors");
  const TensorView ids = rows.get("ids");
  ASSERT_EQ(ids.shape(), Shape({4, 64}));
  // Two sampled rows start with BOS; the last two are random ids.
  EXPECT_EQ(ids.data<int32_t>()[0], 1);
  EXPECT_EQ(ids.data<int32_t>()[64], 1);
}

}  // namespace
}  // namespace exq::quant
