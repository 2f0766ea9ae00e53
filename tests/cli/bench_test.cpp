// `exq bench`: the tests it runs (names, order, counts) on a tiny random model, as a table and as
// JSON, and one test per kind of user error.
#include <gtest/gtest.h>

#include "cli_support.h"

namespace exq::test {
namespace {

using nlohmann::json;

TEST(CliBench, RunsEachTestAtEachDepth) {
  const auto dir = tiny_model_dir("bench_ok");
  const RunResult r = run_exq({"bench", "-m", dir.string(), "-p", "8,16", "-n", "4", "-d", "0,5", "-r", "2", "--json",
                               "--threads", "1", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out);
  ASSERT_EQ(rows.size(), 6u);
  const std::vector<std::string> names{"pp8", "pp16", "tg4", "pp8 @ d5", "pp16 @ d5", "tg4 @ d5"};
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& row = rows[i];
    EXPECT_EQ(row["test"], names[i]);
    EXPECT_EQ(row["n_depth"], i < 3 ? 0 : 5);
    EXPECT_EQ(row["n_prompt"].get<int64_t>() + row["n_gen"].get<int64_t>(), i % 3 == 0 ? 8 : i % 3 == 1 ? 16 : 4);
    ASSERT_EQ(row["samples_ts"].size(), 2u);
    double mean = 0.0;
    for (const auto& v : row["samples_ts"]) {
      EXPECT_GT(v.get<double>(), 0.0);
      mean += v.get<double>() / 2.0;
    }
    EXPECT_NEAR(row["avg_ts"].get<double>(), mean, 1e-9 * mean);
    EXPECT_GE(row["stddev_ts"].get<double>(), 0.0);
    EXPECT_EQ(row["backend"], "cpu");
    EXPECT_EQ(row["threads"], 1);
    EXPECT_GT(row["size_bytes"].get<int64_t>(), 0);
    EXPECT_EQ(row["type_k"], "f16");
    EXPECT_EQ(row["type_v"], "f16");
  }

  const RunResult table = run_exq({"bench", "-m", dir.string(), "-p", "8", "-n", "0", "-r", "1", "--threads", "1",
                                   "--device", "cpu"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  const auto lines = lines_of(table.out);
  ASSERT_EQ(lines.size(), 3u) << table.out;
  EXPECT_EQ(lines[0], "| model | size | backend | threads | test | t/s |");
  EXPECT_NE(lines[2].find("| cpu | 1 | pp8 | "), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find(" ± "), std::string::npos) << lines[2];
}

// --cache-type q8_0 (a model of head_dim 32): llama-bench's type_k / type_v fields and columns.
TEST(CliBench, Q8CacheType) {
  const auto dir = temp_dir("bench_q8") / "model";
  json config = tiny_config();
  config["head_dim"] = 32;
  write_model_dir(dir, config, tiny_tensors(config));
  const RunResult r = run_exq({"bench", "-m", dir.string(), "-p", "8", "-n", "4", "-np", "1,2", "-r", "1", "--json",
                               "--threads", "1", "--device", "cpu", "--cache-type", "q8_0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out);
  ASSERT_EQ(rows.size(), 3u);
  for (const json& row : rows) {
    EXPECT_EQ(row["type_k"], "q8_0");
    EXPECT_EQ(row["type_v"], "q8_0");
    EXPECT_GT(row["avg_ts"].get<double>(), 0.0);
  }
  const RunResult table = run_exq({"bench", "-m", dir.string(), "-p", "8", "-n", "0", "-r", "1", "--threads", "1",
                                   "--device", "cpu", "--cache-type", "q8_0"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  const auto lines = lines_of(table.out);
  ASSERT_EQ(lines.size(), 3u) << table.out;
  EXPECT_EQ(lines[0], "| model | size | backend | threads | type_k | type_v | test | t/s |");
  EXPECT_NE(lines[2].find("| cpu | 1 | q8_0 | q8_0 | pp8 | "), std::string::npos) << lines[2];
  const RunResult q4 = run_exq({"bench", "-m", dir.string(), "-p", "8", "-n", "0", "-r", "1", "--json", "--threads",
                                "1", "--device", "cpu", "--cache-type", "q4"});
  ASSERT_EQ(q4.exit_code, 0) << q4.err;
  EXPECT_EQ(json::parse(q4.out)[0]["type_k"], "q4");
}

// -np: each tg test once per count of generations at once.
TEST(CliBench, ParallelGenerations) {
  const auto dir = tiny_model_dir("bench_np");
  const RunResult r = run_exq({"bench", "-m", dir.string(), "-p", "0", "-n", "6", "-np", "1,3", "-d", "0,4", "-r", "1",
                               "--json", "--threads", "1", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out);
  ASSERT_EQ(rows.size(), 4u);
  const std::vector<std::string> names{"tg6", "tg6 x3", "tg6 @ d4", "tg6 x3 @ d4"};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["test"], names[i]);
    EXPECT_EQ(rows[i]["n_parallel"], i % 2 == 0 ? 1 : 3);
    EXPECT_GT(rows[i]["avg_ts"].get<double>(), 0.0);
  }
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-np", "0"}), "-np values must be 1 to 64, got 0");
}

// YaRN from the command line raises the context the tests may use: original x factor.
TEST(CliBench, YarnExtendsTheContext) {
  const auto dir = tiny_model_dir("bench_yarn");
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-p", "300", "-n", "0", "-r", "1", "--device", "cpu"}),
                    "pp300 needs a context of 300 tokens, more than the model's 256");
  const RunResult r = run_exq({"bench", "-m", dir.string(), "-p", "300", "-n", "0", "-r", "1", "--json", "--threads",
                               "1", "--device", "cpu", "--rope-scaling", "yarn", "--rope-scale", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)[0]["n_prompt"], 300);
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-p", "600", "-n", "0", "-r", "1", "--device", "cpu",
                             "--rope-scaling", "yarn", "--rope-scale", "2"}),
                    "more than the model's 512");
}

TEST(CliBench, UserErrors) {
  const auto dir = tiny_model_dir("bench_err");
  expect_user_error(run_exq({"bench"}), "-m MODEL");
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-p", "0", "-n", "0"}), "nothing to measure");
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-r", "0"}), "-r must be >= 1, got 0");
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-p", "8,-3"}), "-p values must be >= 0, got -3");
  // The tiny model's context is 256 tokens.
  expect_user_error(run_exq({"bench", "-m", dir.string(), "-p", "200", "-n", "0", "-d", "100"}),
                    "pp200 @ d100 needs a context of 300 tokens, more than the model's 256");
  expect_user_error(run_exq({"bench", "-m", (dir.parent_path() / "missing").string()}), "missing");
}

}  // namespace
}  // namespace exq::test
