// `exq ppl`: windows/skip logic on a tiny random model, user errors, and the real model
// against both the library (runtime::perplexity) and the HF fixture.
#include <gtest/gtest.h>

#include <cmath>

#include "cli_support.h"
#include "model/llama.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace exq::test {
namespace {

using nlohmann::json;

std::filesystem::path tiny_model_dir(const std::string& name) {
  const auto dir = temp_dir("ppl_" + name) / "model";
  write_model_dir(dir, tiny_config(), tiny_tensors(tiny_config()));
  return dir;
}

std::string sample_text() {
  return read_file(shared_dir() / "data" / "c4.utf8").substr(0, 4000);
}

TEST(CliPpl, WindowsAndSkip) {
  const auto dir = tiny_model_dir("skip");
  const auto text = dir.parent_path() / "text.txt";
  write_text(text, sample_text());
  const RunResult all = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64",
                                 "--windows", "3", "--json", "--threads", "2"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const json a = json::parse(all.out);
  EXPECT_EQ(a["windows"], 3);
  EXPECT_EQ(a["tokens_scored"], 3 * 63);
  const auto per = a["window_ppl"].get<std::vector<double>>();
  ASSERT_EQ(per.size(), 3u);
  // ppl = exp(mean NLL) over equal windows = geometric mean of the window perplexities.
  EXPECT_NEAR(a["ppl"].get<double>(), std::cbrt(per[0] * per[1] * per[2]), 1e-9 * a["ppl"].get<double>());
  EXPECT_NEAR(std::log(a["ppl"].get<double>()), a["nll"].get<double>(), 1e-12);
  // A random model over a 49152-token vocabulary is close to uniform.
  EXPECT_GT(a["ppl"].get<double>(), 1000.0);

  const RunResult skip = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64",
                                  "--windows", "1", "--skip-windows", "2", "--json"});
  ASSERT_EQ(skip.exit_code, 0) << skip.err;
  const json s = json::parse(skip.out);
  EXPECT_EQ(s["windows"], 1);
  EXPECT_NEAR(s["ppl"].get<double>(), per[2], 1e-6 * per[2]);

  const RunResult txt = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64", "--windows", "1"});
  ASSERT_EQ(txt.exit_code, 0) << txt.err;
  EXPECT_NE(txt.out.find("perplexity:"), std::string::npos) << txt.out;
  EXPECT_NE(txt.out.find("tokens scored: 63"), std::string::npos) << txt.out;
  EXPECT_NE(txt.out.find("time:"), std::string::npos) << txt.out;
}

TEST(CliPpl, MissingTextFile) {
  const auto dir = tiny_model_dir("nofile");
  const auto text = dir.parent_path() / "absent.txt";
  expect_user_error(run_exq({"ppl", "-m", dir.string(), "-f", text.string()}), text.string());
}

TEST(CliPpl, TextTooShort) {
  const auto dir = tiny_model_dir("short");
  const auto text = dir.parent_path() / "short.txt";
  write_text(text, "Just a few words.");
  const RunResult r = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "512"});
  expect_user_error(r, text.string());
  EXPECT_NE(r.err.find("window"), std::string::npos) << r.err;
}

TEST(CliPpl, BadWindow) {
  const auto dir = tiny_model_dir("badwin");
  const auto text = dir.parent_path() / "t.txt";
  write_text(text, sample_text());
  expect_user_error(run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "1"}), "--window");
}

TEST(CliPpl, MissingArguments) {
  expect_user_error(run_exq({"ppl", "-f", "x.txt"}), "-m MODEL");
  const auto dir = tiny_model_dir("nof");
  expect_user_error(run_exq({"ppl", "-m", dir.string()}), "-f TEXTFILE");
}

TEST(CliPpl, MissingTensor) {
  const auto dir = temp_dir("ppl_missing_tensor") / "model";
  auto tensors = tiny_tensors(tiny_config());
  tensors.erase("model.norm.weight");
  write_model_dir(dir, tiny_config(), tensors);
  const auto text = dir.parent_path() / "t.txt";
  write_text(text, sample_text());
  expect_user_error(run_exq({"ppl", "-m", dir.string(), "-f", text.string()}), "model.norm.weight");
}

TEST(CliPpl, RealModelMatchesLibraryAndFixture) {
  EXQ_REQUIRE_MODEL();
  const auto file = shared_dir() / "data" / "c4.utf8";
  const RunResult r = run_exq({"ppl", "-m", test_model().string(), "-f", file.string(), "--windows", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json cli = json::parse(r.out);
  EXPECT_EQ(cli["tokens_scored"], 2 * 511);
  const json fixture = json::parse(read_file(shared_dir() / "fixtures" / "smollm2" / "ppl.json"));
  EXPECT_EQ(cli["tokens_in_file"], fixture["windows"]["c4.utf8"]["tokens_in_file"]);

  // The library on the same windows.
  auto model = model::LlamaModel::load(test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test_model() / "tokenizer.json");
  const auto ids = tok.encode(read_file(file), false);
  const auto lib = runtime::perplexity(model, runtime::split_windows(ids, 512, 2));
  EXPECT_NEAR(cli["ppl"].get<double>(), lib.ppl, 1e-6 * lib.ppl);

  // And HF transformers: exp(mean NLL) of two equal windows = geometric mean of theirs.
  const auto want = fixture["windows"]["c4.utf8"]["ppl_per_window"];
  const double hf = std::sqrt(want[0].get<double>() * want[1].get<double>());
  EXPECT_NEAR(cli["ppl"].get<double>(), hf, 2e-3 * hf);
  const auto per = cli["window_ppl"].get<std::vector<double>>();
  EXPECT_NEAR(per[0], want[0].get<double>(), 2e-3 * want[0].get<double>());
  EXPECT_NEAR(per[1], want[1].get<double>(), 2e-3 * want[1].get<double>());
}

}  // namespace
}  // namespace exq::test
