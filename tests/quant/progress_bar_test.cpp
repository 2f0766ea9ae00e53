// quant::ProgressBar (the calibration progress of `exq quantize`): JSON events, plain lines,
// the in-place terminal bar, throttling; and `exq quantize --status-json` printing progress
// events while it tokenizes (or samples) and embeds its calibration rows.
#include "quant/progress_bar.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "core/half.h"
#include "quant/calibration_input.h"
#include "quant/module_forward.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

// Everything written to a temporary FILE*.
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(ProgressBar, JsonEventsCountUpToTheTotalAndCarryFields) {
  std::FILE* text = std::tmpfile();
  std::FILE* json = std::tmpfile();
  ASSERT_TRUE(text && json);
  {
    ProgressBar bar("embed", "Embedding rows", "rows", true, {{"pass", "measure"}},
                    ProgressBar::Style::kAuto, text, json);
    EXPECT_EQ(bar.style(), ProgressBar::Style::kJson);
    const ProgressFn cb = bar.callback();
    for (int64_t i = 0; i <= 1000; ++i) cb(i, 1000);
    bar.finish();  // already final: prints nothing more
  }
  EXPECT_EQ(contents(text), "");
  const auto ls = lines(contents(json));
  // 0, every twentieth, and the final one: 21 events, not 1001.
  ASSERT_EQ(ls.size(), 21u);
  int64_t prev = -1;
  for (size_t i = 0; i < ls.size(); ++i) {
    const auto j = nlohmann::json::parse(ls[i]);
    EXPECT_EQ(j.at("event"), "progress");
    EXPECT_EQ(j.at("stage"), "embed");
    EXPECT_EQ(j.at("pass"), "measure");
    EXPECT_EQ(j.at("total").get<int64_t>(), 1000);
    EXPECT_GT(j.at("done").get<int64_t>(), prev);
    prev = j.at("done").get<int64_t>();
    EXPECT_EQ(j.at("final").get<bool>(), i + 1 == ls.size());
  }
  EXPECT_EQ(prev, 1000);
  std::fclose(text);
  std::fclose(json);
}

TEST(ProgressBar, PlainLinesAtEveryTenthWhenNotATerminal) {
  std::FILE* text = std::tmpfile();
  ASSERT_TRUE(text);
  {
    // A temporary file is not a terminal: kAuto gives plain lines.
    ProgressBar bar("tokenize", "Tokenizing", "bytes", false, {}, ProgressBar::Style::kAuto, text);
    EXPECT_EQ(bar.style(), ProgressBar::Style::kLines);
    for (int64_t i = 0; i <= 200; ++i) bar.update(i, 200);
  }
  const auto ls = lines(contents(text));
  ASSERT_EQ(ls.size(), 11u);
  EXPECT_EQ(ls.front().rfind(" -- Tokenizing: 0/200 bytes (0%)", 0), 0u) << ls.front();
  EXPECT_EQ(ls.back().rfind(" -- Tokenizing: 200/200 bytes (100%)", 0), 0u) << ls.back();
  std::fclose(text);
}

TEST(ProgressBar, TerminalBarIsRedrawnInPlaceAndEndsWithANewline) {
  std::FILE* text = std::tmpfile();
  ASSERT_TRUE(text);
  {
    ProgressBar bar("sample", "Sampling", "tokens", false, {}, ProgressBar::Style::kTerminal, text);
    for (int64_t i = 0; i <= 50; ++i) bar.update(i, 50);
  }
  const std::string s = contents(text);
  // First draw and final draw at least (others are throttled to 10 a second).
  EXPECT_GE(std::count(s.begin(), s.end(), '\r'), 2);
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1);
  EXPECT_EQ(s.back(), '\n');
  EXPECT_NE(s.find("[##############################] 100%  50/50 tokens"), std::string::npos) << s;
  std::fclose(text);
}

TEST(ProgressBar, UnfinishedTerminalLineIsClosedAndFinishWithoutCountsEnds) {
  std::FILE* text = std::tmpfile();
  ASSERT_TRUE(text);
  {
    ProgressBar bar("sample", "Sampling", "tokens", false, {}, ProgressBar::Style::kTerminal, text);
    bar.update(3, 10);  // e.g. an exception leaves the stage early
  }
  std::string s = contents(text);
  EXPECT_EQ(s.back(), '\n');
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1);
  std::fclose(text);

  std::FILE* json = std::tmpfile();
  {
    ProgressBar bar("tokenize", "Tokenizing", "bytes", true, {}, ProgressBar::Style::kJson, stderr, json);
    bar.finish();
  }
  const auto ls = lines(contents(json));
  ASSERT_EQ(ls.size(), 1u);
  EXPECT_TRUE(nlohmann::json::parse(ls[0]).at("final").get<bool>());
  std::fclose(json);
}

TEST(CalibrationProgress, EmbeddingRowByRowEqualsEmbedRowsAndCountsRows) {
  Tensor table(DType::F16, {10, 4});
  for (int64_t i = 0; i < table.numel(); ++i)
    table.data<uint16_t>()[i] = float_to_half(0.25f * static_cast<float>(i % 7) - 0.5f);
  const std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9};
  std::vector<std::pair<int64_t, int64_t>> calls;
  const Tensor got = embed_calibration_rows(table, ids, 3, 5, [&](int64_t d, int64_t t) {
    calls.emplace_back(d, t);
  });
  const Tensor want = embed_rows(table, ids, 3, 5);
  ASSERT_EQ(got.shape(), want.shape());
  EXPECT_TRUE(std::equal(got.data<float>(), got.data<float>() + got.numel(), want.data<float>()));
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 3}, {1, 3}, {2, 3}, {3, 3}};
  EXPECT_EQ(calls, expected);
  EXPECT_THROW(embed_calibration_rows(table, ids, 4, 5), Error);
}

TEST(CalibrationProgress, FileRowsReportBytesPerFile) {
  EXQ_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const fs::path a = test::shared_dir() / "data" / "tiny.utf8", b = test::shared_dir() / "data" / "code.utf8";
  const int64_t total = static_cast<int64_t>(fs::file_size(a) + fs::file_size(b));
  std::vector<std::pair<int64_t, int64_t>> calls;
  const CalibrationRows rows = rows_from_files(tok, {a, b}, 4, 32, [&](int64_t d, int64_t t) {
    calls.emplace_back(d, t);
  });
  EXPECT_EQ(rows.rows, 4);
  const std::vector<std::pair<int64_t, int64_t>> expected = {
      {0, total}, {static_cast<int64_t>(fs::file_size(a)), total}, {total, total}};
  EXPECT_EQ(calls, expected);
  // The callback does not change the rows.
  EXPECT_EQ(rows_from_files(tok, {a, b}, 4, 32).ids, rows.ids);
}

int run(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

// Progress events of a conversion that is stopped after its first module (EXQ_TEST_ABORT_AFTER):
// by then the measurement rows are made and embedded.
std::vector<nlohmann::json> progress_events(const std::string& cal_args, const std::string& name) {
  const fs::path exq = fs::path(EXQ_BINARY_DIR) / "exq";
  const fs::path dir = test::temp_dir(name);
  const int rc = run(fmt::format(
      "EXQ_TEST_ABORT_AFTER=1 {} quantize -i {} -o {} -b 4.0 {} -mr 4 -ml 64 -r 4 -l 64 "
      "--device cpu --threads 1 --status-json > {} 2> {}",
      exq.string(), test::test_model().string(), (dir / "work").string(), cal_args,
      (dir / "out.jsonl").string(), (dir / "err.txt").string()));
  EXPECT_EQ(rc, 128 + SIGKILL) << test::read_file(dir / "err.txt");
  std::vector<nlohmann::json> events;
  for (const std::string& l : lines(test::read_file(dir / "out.jsonl"))) {
    const auto j = nlohmann::json::parse(l, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << l;
    if (!j.is_discarded() && j.value("event", "") == "progress") events.push_back(j);
  }
  return events;
}

// The stages seen, each checked to end with a final event at done == total.
std::vector<std::string> finished_stages(const std::vector<nlohmann::json>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    if (!e.at("final").get<bool>()) continue;
    EXPECT_EQ(e.at("done"), e.at("total")) << e.dump();
    EXPECT_EQ(e.at("pass"), "measure") << e.dump();
    out.push_back(e.at("stage").get<std::string>());
  }
  return out;
}

TEST(QuantizeProgress, JsonEventsWhileTokenizingAndEmbeddingFileRows) {
  EXQ_REQUIRE_MODEL();
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  const auto events =
      progress_events("-c " + (test::shared_dir() / "data" / "tiny.utf8").string(), "progress_file");
  EXPECT_EQ(finished_stages(events), (std::vector<std::string>{"tokenize", "embed"}));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().at("stage"), "tokenize");
  EXPECT_EQ(events.front().at("done"), 0);
  EXPECT_EQ(events.back().at("total"), 4);  // embedding counts rows
}

TEST(QuantizeProgress, JsonEventsWhileSamplingAndEmbeddingSelfSampledRows) {
  EXQ_REQUIRE_MODEL();
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  const auto events = progress_events("", "progress_sampled");
  EXPECT_EQ(finished_stages(events), (std::vector<std::string>{"sample", "embed"}));
  int64_t sample_events = 0;
  for (const auto& e : events) sample_events += e.at("stage") == "sample";
  // 2 text rows -> a pool of 2 texts of 64 tokens: 128 tokens, reported in twentieths.
  EXPECT_GE(sample_events, 10);
  EXPECT_EQ(events.front().at("total"), 128);
}

}  // namespace
}  // namespace exq::quant
