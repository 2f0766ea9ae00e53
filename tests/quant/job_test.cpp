// quant/job and quant/calibration_input without a model: argument changes refused on resume
// (naming them), unwritable work folders, committed progress and snapshots surviving a reopen,
// and calibration rows cut from text / JSONL files and mixed round-robin.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/calibration_input.h"
#include "quant/job.h"
#include "quant/quantize.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

JobArgs small_args() {
  JobArgs a;
  a.model_dir = "/m";
  a.out_dir = "/o";
  a.bits = 4.0;
  a.cal_files = {"a.txt"};
  a.rows = 8;
  a.length = 64;
  return a;
}

TEST(Job, ResumeWithChangedArgumentsIsRefusedNamingThem) {
  const fs::path dir = test::temp_dir("job_args");
  { Job::open(dir, small_args(), false); }
  JobArgs changed = small_args();
  changed.bits = 5.0;
  changed.rows = 16;
  try {
    Job::open(dir, changed, true);
    FAIL() << "resume with changed arguments was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bits"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rows"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("length"), std::string::npos) << msg;
  }
  // Starting over with the new arguments is allowed.
  EXPECT_NO_THROW(Job::open(dir, changed, false));
  EXPECT_NO_THROW(Job::open(dir, changed, true));
}

TEST(Job, UnwritableWorkFolderIsAClearError) {
  const fs::path dir = test::temp_dir("job_unwritable");
  std::ofstream(dir / "file") << "x";
  try {
    Job::open(dir / "file" / "work", small_args(), false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("work folder"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find((dir / "file" / "work").string()), std::string::npos)
        << e.what();
  }
}

TEST(Job, CommitsSurviveReopen) {
  const fs::path dir = test::temp_dir("job_commit");
  Tensor s(DType::F32, {2, 3, 4});
  for (int64_t i = 0; i < s.numel(); ++i) s.data<float>()[i] = static_cast<float>(i) * 0.5f;
  {
    Job job = Job::open(dir, small_args(), false);
    job.measurement().modules.push_back({"model.norm.norm", std::nullopt});
    job.commit(Pass::kMeasure, 1, s);
    job.commit(Pass::kMeasure, 2, TensorView());  // unchanged states: no new snapshot
  }
  Job job = Job::open(dir, small_args(), true);
  EXPECT_TRUE(job.resumed());
  EXPECT_EQ(job.last_module(Pass::kMeasure), 2);
  EXPECT_EQ(job.last_module(Pass::kQuantize), -1);
  ASSERT_EQ(job.measurement().modules.size(), 1u);
  const Tensor back = job.load_states(Pass::kMeasure);
  ASSERT_EQ(back.shape(), s.shape());
  EXPECT_EQ(0, std::memcmp(back.raw(), s.raw(), s.nbytes()));
  EXPECT_TRUE(job.load_states(Pass::kQuantize).empty());
}

TEST(CheckStates, NanAbortsRareInfIsClampedFrequentInfAborts) {
  Tensor s = Tensor::zeros(DType::F32, {1, 10, 100});
  float* p = s.data<float>();
  p[3] = INFINITY;
  p[7] = -INFINITY;
  EXPECT_EQ(check_states(s, "model.layers.2.mlp"), 2);  // 0.2 % of 1000
  EXPECT_EQ(p[3], 65504.0f);
  EXPECT_EQ(p[7], -65504.0f);
  for (int i = 0; i < 5; ++i) p[100 + i] = INFINITY;  // 0.5 %: too many
  EXPECT_THROW(check_states(s, "model.layers.2.mlp"), Error);
  p[500] = NAN;
  try {
    check_states(s, "model.layers.4.self_attn");
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.4.self_attn"), std::string::npos) << e.what();
  }
}

TEST(CalibrationInput, FilesAreMixedRoundRobinAndJsonlUsesText) {
  EXQ_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const fs::path dir = test::temp_dir("cal_files");
  const std::string wiki = test::read_file(test::shared_dir() / "data" / "wiki.utf8").substr(0, 20000);
  const std::string code = test::read_file(test::shared_dir() / "data" / "code.utf8").substr(0, 800);
  std::ofstream(dir / "a.txt") << wiki;
  {
    std::ofstream j(dir / "b.jsonl");
    j << nlohmann::json({{"text", code}, {"id", 1}}).dump() << "\n\n"
      << nlohmann::json({{"text", "second"}}).dump() << "\n";
  }
  const int64_t L = 64;
  const CalibrationRows rows = rows_from_files(tok, {dir / "a.txt", dir / "b.jsonl"}, 12, L);
  const std::vector<int32_t> a = tok.encode(wiki), b = tok.encode(code + "\n\nsecond");
  const int64_t b_rows = static_cast<int64_t>(b.size()) / L;
  ASSERT_GE(b_rows, 2);
  ASSERT_LT(b_rows, 6);
  // Rows alternate a, b while b lasts, then come from a only.
  int64_t na = 0, nb = 0;
  for (int64_t r = 0; r < 12; ++r) {
    const bool from_b = r % 2 == 1 && nb < b_rows;
    const std::vector<int32_t>& src = from_b ? b : a;
    const int64_t k = from_b ? nb++ : na++;
    EXPECT_EQ(rows.sources[r], from_b ? "b.jsonl" : "a.txt") << r;
    EXPECT_TRUE(std::equal(rows.ids.begin() + r * L, rows.ids.begin() + (r + 1) * L,
                           src.begin() + k * L))
        << "row " << r;
  }
  EXPECT_THROW(rows_from_files(tok, {dir / "b.jsonl"}, b_rows + 1, L), Error);
  std::ofstream(dir / "bad.jsonl") << "{\"txt\": 1}\n";
  EXPECT_THROW(rows_from_files(tok, {dir / "bad.jsonl"}, 1, L), Error);
}

}  // namespace
}  // namespace exq::quant
