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
#include "tiny_model.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

using test_models::write_tiny_model;

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

  // Steps: measurement 1..6 (attn, mlp x2, norm, head), quantization 7..12. With a snapshot
  // after every module a resume starts from the last one; with a long interval only the last
  // MLP of each pass is snapshotted, so resuming after steps 3 and 9 rebuilds the states by
  // replaying three modules (reference forward, then forward with the committed EXL2 weights),
  // with the states spilled to files on some resumes. Devices and budgets may change on resume.
  struct Sequence {
    std::string name, flags;
    std::vector<int> kills;
    std::vector<std::string> resume_flags;  // per resume run, cycled
  };
  const Sequence sequences[] = {
      {"killed", "--snapshot-interval 0", {2, 5, 6, 8, 11, 12}, {"-res"}},
      {"replayed", "--snapshot-interval 100000", {3, 5, 9, 11},
       {"-res --host-budget 0", "-res --device cpu"}}};
  for (const Sequence& seq : sequences) {
    const fs::path work = dir / seq.name;
    const fs::path log_path = dir / (seq.name + ".log");
    size_t runs = 0;
    auto flags = [&] {
      const std::string f = runs == 0 ? "" : seq.resume_flags[(runs - 1) % seq.resume_flags.size()];
      ++runs;
      return seq.flags + " " + f;
    };
    for (int abort_after : seq.kills) {
      const int rc = quantize(model, work, cal, flags(), abort_after);
      ASSERT_EQ(rc, 128 + SIGKILL) << seq.name << ": abort after step " << abort_after << "\n"
                                   << test::read_file(log_path);
    }
    ASSERT_EQ(quantize(model, work, cal, flags()), 0) << test::read_file(log_path);
    const std::string log = test::read_file(log_path);
    EXPECT_NE(log.find("Resuming job"), std::string::npos);
    if (seq.name == "replayed") {
      EXPECT_NE(log.find("Measurement states rebuilt from the embedding and 3 replayed module(s)"),
                std::string::npos) << log;
      EXPECT_NE(log.find("Quantization states rebuilt from the embedding and 3 replayed module(s)"),
                std::string::npos) << log;
      EXPECT_NE(log.find("states: RAM 0 B, file"), std::string::npos) << log;
    }

    const fs::path out = work / "out";
    ASSERT_EQ(output_files(out), output_files(ref_out));
    for (const std::string& name : output_files(ref_out))
      EXPECT_TRUE(test::read_file(out / name) == test::read_file(ref_out / name))
          << seq.name << ": " << name << " differs";
  }
  const fs::path work = dir / "killed";

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
