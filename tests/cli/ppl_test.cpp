// `exq ppl`: windows/skip logic on a tiny random model, user errors, and the real model
// against both the library (runtime::perplexity) and the HF fixture.
#include <gtest/gtest.h>

#include <cmath>

#include "cli_support.h"
#include "model/llama.h"
#include "runtime/kl_divergence.h"
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

// --cache-type q8_0 / q4: a model of head_dim 32 scores the same windows a little differently
// (q4 more than q8_0); a head_dim of 16, llama.cpp's unrotated 4-bit names and an unknown type are
// user errors.
TEST(CliPpl, CacheType) {
  const auto dir = temp_dir("ppl_cache_type") / "model";
  json config = tiny_config();
  config["head_dim"] = 32;
  write_model_dir(dir, config, tiny_tensors(config));
  const auto text = dir.parent_path() / "text.txt";
  write_text(text, sample_text());
  auto ppl = [&](const char* type) {
    const RunResult r = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64", "--windows", "2",
                                 "--json", "--cache-type", type, "--device", "cpu"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["ppl"].get<double>() : 0.0;
  };
  const double f16 = ppl("f16"), q8 = ppl("q8_0");
  EXPECT_NE(q8, f16);
  EXPECT_NEAR(q8 / f16, 1.0, 1e-3);
  EXPECT_EQ(ppl("q8"), q8);
  const double q4 = ppl("q4");
  EXPECT_NE(q4, f16);
  EXPECT_GT(std::fabs(q4 / f16 - 1.0), std::fabs(q8 / f16 - 1.0));
  EXPECT_NEAR(q4 / f16, 1.0, 3e-2);
  for (const char* name : {"q4_0", "q4_1", "q5_0", "iq4_nl"})
    expect_user_error(run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--cache-type", name}),
                      "exq's 4-bit KV cache is q4 (rotated groups of 32");
  expect_user_error(run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--cache-type", "q2"}),
                    "--cache-type must be f16, q8_0 or q4, got 'q2'");
  const auto hd16 = tiny_model_dir("cache_type_hd16");
  expect_user_error(run_exq({"ppl", "-m", hd16.string(), "-f", text.string(), "--cache-type", "q8_0"}),
                    "q8_0 KV cache needs a head_dim that is a multiple of 32; this model's is 16");
  expect_user_error(run_exq({"ppl", "-m", hd16.string(), "-f", text.string(), "--cache-type", "q4"}),
                    "q4 KV cache needs a head_dim that is a multiple of 32; this model's is 16");
}

// The --rope-* flags give what the same settings in config.json give, bit for bit, and change
// the perplexity when they change the rotary.
TEST(CliPpl, RopeFlags) {
  const auto root = temp_dir("ppl_rope");
  const json config = tiny_config();  // rope_theta 100000, no scaling, 256 positions
  const auto plain = root / "plain";
  write_model_dir(plain, config, tiny_tensors(config));
  auto with_scaling = [&](const char* name, json scaling) {
    json c = config;
    c["rope_scaling"] = std::move(scaling);
    write_model_dir(root / name, c, tiny_tensors(c));
    return root / name;
  };
  const auto yarn =
      with_scaling("yarn", {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}});
  const auto linear = with_scaling("linear", {{"rope_type", "linear"}, {"factor", 2.0}});
  const auto text = root / "text.txt";
  write_text(text, sample_text());
  auto ppl = [&](const std::filesystem::path& dir, std::vector<std::string> flags) {
    std::vector<std::string> args = {"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64", "--windows",
                                     "2", "--json", "--device", "cpu"};
    args.insert(args.end(), flags.begin(), flags.end());
    const RunResult r = run_exq(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["ppl"].get<double>() : 0.0;
  };
  const double base = ppl(plain, {});
  EXPECT_EQ(ppl(plain, {"--rope-freq-base", "100000"}), base);
  EXPECT_NE(ppl(plain, {"--rope-freq-base", "10000"}), base);
  const double y = ppl(yarn, {});
  EXPECT_NE(y, base);
  EXPECT_EQ(ppl(plain, {"--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "64"}), y);
  EXPECT_EQ(ppl(yarn, {"--rope-scaling", "none"}), base);
  const double l = ppl(linear, {});
  EXPECT_NE(l, base);
  EXPECT_EQ(ppl(plain, {"--rope-scale", "2"}), l);  // a model without scaling gets linear
  EXPECT_EQ(ppl(plain, {"--rope-freq-scale", "0.5"}), l);
  EXPECT_EQ(ppl(linear, {"--rope-scale", "4"}), ppl(plain, {"--rope-scaling", "linear", "--rope-scale", "4"}));

  const std::string m = plain.string(), f = text.string();
  expect_user_error(run_exq({"ppl", "-m", m, "-f", f, "--rope-scaling", "dynamic"}),
                    "--rope-scaling must be none, linear or yarn, got 'dynamic'");
  expect_user_error(run_exq({"ppl", "-m", m, "-f", f, "--rope-scaling", "yarn"}),
                    "--rope-scaling yarn needs --rope-scale (or --rope-freq-scale)");
  expect_user_error(run_exq({"ppl", "-m", m, "-f", f, "--rope-scale", "2", "--rope-freq-scale", "0.5"}),
                    "give --rope-scale or --rope-freq-scale, not both");
  expect_user_error(run_exq({"ppl", "-m", m, "-f", f, "--rope-scale", "0"}), "--rope-scale must be in [0.001, 1e6], got 0");
  expect_user_error(run_exq({"ppl", "-m", m, "-f", f, "--rope-freq-base", "-5"}),
                    "--rope-freq-base must be in (1, 1e12], got -5");
  expect_user_error(run_exq({"ppl", "-m", m, "-f", f, "--yarn-orig-ctx", "64"}),
                    "--yarn-orig-ctx applies to yarn scaling only (the model's is none; add --rope-scaling yarn)");
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

// --kl-base on tiny random models: a model against itself is 0 everywhere, against another
// the figures agree with each model's plain ppl run and with the library.
TEST(CliPpl, KlBase) {
  const auto dir = tiny_model_dir("kl");
  const auto other = dir.parent_path() / "other";
  write_model_dir(other, tiny_config(), tiny_tensors(tiny_config(), 2));
  const auto text = dir.parent_path() / "text.txt";
  write_text(text, sample_text());
  const std::vector<std::string> common = {"-f", text.string(), "--window", "64", "--windows", "2", "--threads", "2"};
  auto args = [&](std::vector<std::string> a) {
    a.insert(a.end(), common.begin(), common.end());
    return a;
  };

  const RunResult self = run_exq(args({"ppl", "-m", dir.string(), "--kl-base", dir.string(), "--json"}));
  ASSERT_EQ(self.exit_code, 0) << self.err;
  const json s = json::parse(self.out);
  EXPECT_EQ(s["kl"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(s["kl"]["max"].get<double>(), 0.0);
  EXPECT_EQ(s["kl"]["same_top"].get<double>(), 1.0);
  EXPECT_EQ(s["kl"]["delta_p_rms"].get<double>(), 0.0);
  EXPECT_EQ(s["kl"]["base_ppl"].get<double>(), s["ppl"].get<double>());

  const RunResult cmp = run_exq(args({"ppl", "-m", dir.string(), "--kl-base", other.string(), "--json"}));
  ASSERT_EQ(cmp.exit_code, 0) << cmp.err;
  const json c = json::parse(cmp.out);
  const RunResult plain_test = run_exq(args({"ppl", "-m", dir.string(), "--json"}));
  const RunResult plain_base = run_exq(args({"ppl", "-m", other.string(), "--json"}));
  ASSERT_EQ(plain_test.exit_code, 0) << plain_test.err;
  ASSERT_EQ(plain_base.exit_code, 0) << plain_base.err;
  const double ppl_t = json::parse(plain_test.out)["ppl"].get<double>();
  const double ppl_b = json::parse(plain_base.out)["ppl"].get<double>();
  EXPECT_NEAR(c["ppl"].get<double>(), ppl_t, 1e-9 * ppl_t);
  EXPECT_NEAR(c["kl"]["base_ppl"].get<double>(), ppl_b, 1e-9 * ppl_b);
  EXPECT_NEAR(c["kl"]["ln_ppl_ratio"].get<double>(), std::log(ppl_t / ppl_b), 1e-9);
  EXPECT_EQ(c["kl"]["window_kl"].size(), 2u);
  // Two random models: near-uniform distributions over 49152 tokens, slightly apart.
  const double kl = c["kl"]["mean"].get<double>();
  EXPECT_GT(kl, 0.0);
  EXPECT_LT(kl, 1.0);
  EXPECT_LE(c["kl"]["median"].get<double>(), c["kl"]["p90"].get<double>());
  EXPECT_LE(c["kl"]["p99_9"].get<double>(), c["kl"]["max"].get<double>());

  // The library on the same windows gives the same mean.
  auto test_model = model::LlamaModel::load(dir), base_model = model::LlamaModel::load(other);
  const auto tok = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
  const auto windows = runtime::split_windows(tok.encode(read_file(text), false), 64, 2);
  const runtime::KlResult lib = runtime::kl_divergence(base_model, test_model, windows);
  EXPECT_NEAR(kl, lib.kl_mean, 1e-9 * lib.kl_mean);

  const RunResult txt = run_exq(args({"ppl", "-m", dir.string(), "--kl-base", other.string()}));
  ASSERT_EQ(txt.exit_code, 0) << txt.err;
  for (const char* line : {"base perplexity:", "KL divergence from base: mean", "same top token as base:",
                           "ln(ppl / base ppl):"})
    EXPECT_NE(txt.out.find(line), std::string::npos) << line << " not in " << txt.out;
  EXPECT_NE(txt.err.find("KL "), std::string::npos) << txt.err;  // per-window progress
}

TEST(CliPpl, KlBaseMismatches) {
  const auto dir = tiny_model_dir("klbad");
  const auto text = dir.parent_path() / "text.txt";
  write_text(text, sample_text());
  const std::vector<std::string> tail = {"-f", text.string(), "--window", "64", "--windows", "1"};
  auto run = [&](const std::filesystem::path& base) {
    std::vector<std::string> a = {"ppl", "-m", dir.string(), "--kl-base", base.string()};
    a.insert(a.end(), tail.begin(), tail.end());
    return run_exq(a);
  };
  const auto absent = dir.parent_path() / "absent";
  expect_user_error(run(absent), absent.string());

  // One token more in the vocabulary.
  auto config = tiny_config();
  config["vocab_size"] = config["vocab_size"].get<int64_t>() + 1;
  const auto wide = dir.parent_path() / "wide";
  write_model_dir(wide, config, tiny_tensors(config));
  const RunResult v = run(wide);
  expect_user_error(v, "vocabulary");

  // Same vocabulary size, but two tokens' ids swapped: the text encodes differently.
  const auto swapped = dir.parent_path() / "swapped";
  write_model_dir(swapped, tiny_config(), tiny_tensors(tiny_config()));
  json tj = json::parse(read_file(swapped / "tokenizer.json"));
  auto& vocab = tj["model"]["vocab"];
  const json the = vocab.at("\u0120the"), comma = vocab.at(",");
  vocab["\u0120the"] = comma;
  vocab[","] = the;
  write_text(swapped / "tokenizer.json", tj.dump());
  expect_user_error(run(swapped), "encode");
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
