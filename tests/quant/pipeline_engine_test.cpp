// run_conversion drives the Engine its factory makes (one per pass, rows of the pass's length)
// and shows the engine's module_stats() in the status (JSON under "engine", text in words);
// with a zero host budget every state buffer spills to a file mapping and the converted model
// is byte-identical to one made with the states in RAM. Tiny random model (tiny_model.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "quant/engine.h"
#include "quant/pipeline.h"
#include "test_support.h"
#include "tiny_model.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

// The CPU engine, plus made-up GPU-style stats.
class StatsEngine final : public Engine {
 public:
  explicit StatsEngine(std::unique_ptr<Engine> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "stats"; }
  ModuleResult measure_attention(const LayerF32& l, const TensorView& s, const std::string& k,
                                 const MeasureOptions& o) override {
    return inner_->measure_attention(l, s, k, o);
  }
  ModuleResult measure_mlp(const LayerF32& l, const TensorView& s, const std::string& k,
                           const MeasureOptions& o) override {
    return inner_->measure_mlp(l, s, k, o);
  }
  QuantStep quantize_attention(const LayerF32& l, int64_t i, const TensorView& s,
                               const AttnOptions& o) override {
    return inner_->quantize_attention(l, i, s, o);
  }
  QuantStep quantize_mlp(const LayerF32& l, int64_t i, const TensorView& s,
                         const MlpOptions& o) override {
    return inner_->quantize_mlp(l, i, s, o);
  }
  nlohmann::ordered_json module_stats() override {
    return {{"gpu_s", 0.41}, {"copy_hidden", 0.93}, {"peak_vram_bytes", 3.2e9}};
  }

 private:
  std::unique_ptr<Engine> inner_;
};

std::vector<std::string> files_of(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

ConvertOptions tiny_options(const fs::path& model, const fs::path& work, const fs::path& cal) {
  ConvertOptions o;
  o.args.model_dir = model.string();
  o.args.out_dir = (work / "out").string();
  o.args.bits = 4.0;
  o.args.cal_files = {cal.string()};
  o.args.rows = o.args.measure_rows = 4;
  o.args.length = o.args.measure_length = 64;
  o.work_dir = work.string();
  return o;
}

TEST(PipelineEngine, FactoryStatsAndSpilledStatesGiveTheSameModel) {
  EXQ_REQUIRE_MODEL();
  const fs::path dir = test::temp_dir("pipeline_engine");
  const fs::path model = dir / "tiny";
  test_models::write_tiny_model(model);
  const fs::path cal = dir / "cal.txt";
  std::ofstream(cal) << test::read_file(test::shared_dir() / "data" / "wiki.utf8").substr(0, 60000);

  // 1: states in RAM, JSON status, an engine with stats.
  std::vector<int64_t> max_tokens;
  ConvertOptions a = tiny_options(model, dir / "ram", cal);
  a.status_json = true;
  a.engine = [&](const io::ModelConfig& c, int64_t t) -> std::unique_ptr<Engine> {
    max_tokens.push_back(t);
    return std::make_unique<StatsEngine>(make_cpu_engine(c, t));
  };
  testing::internal::CaptureStdout();
  run_conversion(a);
  const std::string json_log = testing::internal::GetCapturedStdout();
  EXPECT_EQ(max_tokens, (std::vector<int64_t>{64, 64}));  // one engine per pass
  int with_stats = 0;
  std::istringstream lines(json_log);
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("event") == "module" && j.contains("engine")) {
      ++with_stats;
      EXPECT_EQ(j.at("engine").at("gpu_s"), 0.41);
      EXPECT_EQ(j.at("engine").at("peak_vram_bytes"), 3.2e9);
      EXPECT_EQ(j.at("host").at("file_bytes"), 0) << line;
    }
    if (j.at("event") == "engine") {
      EXPECT_EQ(j.at("device"), "stats");
    }
  }
  EXPECT_EQ(with_stats, 9);  // attention and MLP of 2 layers, both passes, and the head

  // 2: no RAM for states: every state buffer is a spill file; text status.
  ConvertOptions b = tiny_options(model, dir / "spill", cal);
  b.host_budget_bytes = 0;
  b.snapshot_interval_s = 0;
  b.engine = [](const io::ModelConfig& c, int64_t t) -> std::unique_ptr<Engine> {
    return std::make_unique<StatsEngine>(make_cpu_engine(c, t));
  };
  testing::internal::CaptureStdout();
  run_conversion(b);
  const std::string text_log = testing::internal::GetCapturedStdout();
  EXPECT_NE(text_log.find("GPU 0.41 s, copies 93 % hidden, peak VRAM 3.2 GB"), std::string::npos)
      << text_log;
  EXPECT_NE(text_log.find("states: RAM 0 B, file 131.1 KB"), std::string::npos) << text_log;
  EXPECT_NE(text_log.find("peak 0 B in RAM"), std::string::npos) << text_log;
  EXPECT_TRUE(fs::is_empty(dir / "spill" / "spill"));  // unlinked once mapped

  const fs::path out_a = dir / "ram" / "out", out_b = dir / "spill" / "out";
  ASSERT_EQ(files_of(out_a), files_of(out_b));
  for (const std::string& name : files_of(out_a))
    EXPECT_TRUE(test::read_file(out_a / name) == test::read_file(out_b / name)) << name;
}

}  // namespace
}  // namespace exq::quant
