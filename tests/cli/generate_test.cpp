// `exq generate`: greedy goldens on the real model, end-to-end runs on a tiny random model,
// and one test per kind of user error (exit code 2, one line naming the problem).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "cli_support.h"
#include "core/half.h"

namespace exq::test {
namespace {

using nlohmann::json;

// A fresh tiny model folder; `edit` breaks it before writing.
std::filesystem::path tiny_model(const std::string& name,
                                 const std::function<void(json&, std::map<std::string, Tensor>&)>& edit = {}) {
  const auto dir = temp_dir("gen_" + name) / "model";
  json config = tiny_config();
  auto tensors = tiny_tensors(config);
  if (edit) edit(config, tensors);
  write_model_dir(dir, config, tensors);
  return dir;
}

void set_value(std::map<std::string, Tensor>& t, const std::string& name, int64_t index, float v) {
  t.at(name).span<uint16_t>()[static_cast<size_t>(index)] = float_to_half(v);
}

// ---------------------------------------------------------------- tiny random model, success

TEST(CliGenerate, TinyModelJsonAndStreamingAgree) {
  const auto dir = tiny_model("ok");
  const RunResult j = run_exq({"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "6",
                               "--temperature", "0", "--json", "--threads", "1"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json out = json::parse(j.out);
  EXPECT_EQ(out["prompt_tokens"], 2);  // "Hello", " world"; SmolLM2 adds no BOS
  const auto ids = out["ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(out["generated_tokens"], ids.size());
  EXPECT_GE(ids.size(), 1u);
  EXPECT_LE(ids.size(), 6u);
  for (const char* k : {"text", "prefill_tokens_per_s", "decode_tokens_per_s"}) EXPECT_TRUE(out.contains(k)) << k;
  if (ids.size() == 6) {
    EXPECT_EQ(out["stop_reason"], "max_tokens");
  }

  const RunResult s = run_exq({"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "6",
                               "--temperature", "0"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  // Streamed text plus the closing newline equals the JSON text.
  std::string text = out["text"];
  if (text.empty() || text.back() != '\n') text += '\n';
  EXPECT_EQ(s.out, text);
  const auto err_lines = lines_of(s.err);
  ASSERT_EQ(err_lines.size(), 1u) << s.err;
  EXPECT_NE(err_lines[0].find(fmt::format("generated tokens: {}", ids.size())), std::string::npos) << s.err;
  EXPECT_NE(err_lines[0].find("prompt tokens: 2"), std::string::npos) << s.err;
  EXPECT_NE(err_lines[0].find("decode:"), std::string::npos) << s.err;
}

// --cache-type q8_0 runs the same prompt with the q8 cache (head_dim 32 here), and greedy tokens
// of a random tiny model stay those of the f16 cache for these few steps; so do -ctk / -ctv q8_0.
TEST(CliGenerate, Q8CacheType) {
  const auto dir = tiny_model("q8", [](json& c, std::map<std::string, Tensor>& t) {
    c["head_dim"] = 32;
    t = tiny_tensors(c);
  });
  auto ids = [&](const char* type) {
    const RunResult r = run_exq({"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "5",
                                 "--temperature", "0", "--json", "--cache-type", type, "--device", "cpu"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["ids"].get<std::vector<int32_t>>() : std::vector<int32_t>{};
  };
  const auto f16 = ids("f16");
  EXPECT_EQ(f16.size(), 5u);
  const auto q8 = ids("q8_0");
  EXPECT_EQ(q8, f16);
  // llama.cpp's -ctk / -ctv with the same type are --cache-type; different types are refused.
  const RunResult ctk = run_exq({"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "5",
                                 "--temperature", "0", "--json", "-ctk", "q8_0", "-ctv", "q8_0", "--device", "cpu"});
  ASSERT_EQ(ctk.exit_code, 0) << ctk.err;
  EXPECT_EQ(json::parse(ctk.out)["ids"].get<std::vector<int32_t>>(), q8);
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "x", "-ctk", "q8_0", "-ctv", "q4"}),
                    "keys q8_0 and values q4 differ");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "x", "--cache-type-k", "q4"}),
                    "keys q4 and values f16 differ");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "x", "--cache-type", "fp8"}),
                    "--cache-type must be f16, q8_0 or q4, got 'fp8'");
}

// --cpu-moe / --n-cpu-moe place experts for CUDA runs: on a dense model they change nothing (a
// note says so), and a negative count is refused.
TEST(CliGenerate, CpuMoeFlags) {
  const auto dir = tiny_model("cpu_moe", [](json& c, std::map<std::string, Tensor>& t) { t = tiny_tensors(c); });
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "4",
                                     "--temperature", "0", "--json", "--device", "cpu"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_exq(args);
  };
  const RunResult plain = run({}), moe = run({"--cpu-moe"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(moe.exit_code, 0) << moe.err;
  EXPECT_EQ(json::parse(moe.out)["ids"], json::parse(plain.out)["ids"]);
  EXPECT_NE(moe.err.find("this model has no experts; nothing changes"), std::string::npos) << moe.err;
  EXPECT_EQ(plain.err.find("no experts"), std::string::npos) << plain.err;
  expect_user_error(run({"--n-cpu-moe", "-2"}), "--n-cpu-moe must be >= 0, got -2");
}

TEST(CliGenerate, LogprobsInTheJson) {
  const auto dir = tiny_model("logprobs");
  const RunResult j = run_exq({"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "4",
                               "--temperature", "0", "--json", "--logprobs", "3", "--threads", "1"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json out = json::parse(j.out);
  ASSERT_EQ(out["logprobs"].size(), out["ids"].size());
  for (size_t i = 0; i < out["ids"].size(); ++i) {
    const json& e = out["logprobs"][i];
    EXPECT_EQ(e["id"], out["ids"][i]);
    ASSERT_EQ(e["top"].size(), 3u);
    EXPECT_EQ(e["top"][0]["id"], e["id"]);  // greedy: the likeliest
    EXPECT_EQ(e["top"][0]["logprob"], e["logprob"]);
    EXPECT_LE(e["top"][1]["logprob"].get<double>(), e["logprob"].get<double>());
    EXPECT_LT(e["logprob"].get<double>(), 0.0);
  }
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "a", "--logprobs", "2"}), "give --json too");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "a", "--json", "--logprobs", "21"}),
                    "--logprobs must be between 0 and 20, got 21");
}

TEST(CliGenerate, TinyModelSeedReproducible) {
  const auto dir = tiny_model("seed");
  auto ids = [&](const std::string& seed) {
    const RunResult r = run_exq({"generate", "-m", dir.string(), "--chat", "Hi", "--system", "Be brief.",
                                 "--max-tokens", "12", "--temperature", "1.5", "--top-k", "0", "--top-p", "1",
                                 "--min-p", "0", "--seed", seed, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["seed"], std::stoull(seed));
    return j["ids"].get<std::vector<int32_t>>();
  };
  const auto a = ids("42");
  EXPECT_EQ(a, ids("42"));
  EXPECT_NE(a, ids("43"));  // near-uniform random logits: 12 equal draws would be a bug
}

// --draft-max: the same tokens, counted drafts; a prediction file is drafted from (here the
// answer itself, so nearly every token comes from a checked draft).
TEST(CliGenerate, DraftsKeepTheTokensAndArePrintedWithTheirCounts) {
  const auto dir = tiny_model("draft");
  const std::vector<std::string> base = {"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "16",
                                         "--temperature", "0", "--json", "--threads", "1"};
  const RunResult plain = run_exq(base);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const json p = json::parse(plain.out);
  EXPECT_EQ(p["draft_tokens"], 0);
  const auto pred = temp_dir("gen_draft_pred") / "prediction.txt";
  std::ofstream(pred) << p["text"].get<std::string>();
  std::vector<std::string> args = base;
  for (const char* a : {"--draft-max", "5", "--draft-ngram-min", "1"}) args.push_back(a);
  args.push_back("--prediction-file");
  args.push_back(pred.string());
  const RunResult spec = run_exq(args);
  ASSERT_EQ(spec.exit_code, 0) << spec.err;
  const json s = json::parse(spec.out);
  EXPECT_EQ(s["ids"], p["ids"]);
  EXPECT_EQ(s["text"], p["text"]);
  EXPECT_GT(s["accepted_draft_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(s["decode_steps"].get<int64_t>() + s["accepted_draft_tokens"].get<int64_t>(), p["decode_steps"]);

  args.erase(std::find(args.begin(), args.end(), std::string("--json")));
  const RunResult text = run_exq(args);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.err.find(fmt::format("drafts: {} of", s["accepted_draft_tokens"].get<int64_t>())), std::string::npos)
      << text.err;

  const RunResult bad = run_exq({"generate", "-m", dir.string(), "-p", "Hi", "--draft-max", "3", "--draft-ngram-min",
                                 "4", "--draft-ngram-max", "2"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("n-gram maximum (2) is below its minimum (4)"), std::string::npos) << bad.err;
  const RunResult no_draft = run_exq({"generate", "-m", dir.string(), "-p", "Hi", "--prediction-file", pred.string()});
  EXPECT_EQ(no_draft.exit_code, 2);
  EXPECT_NE(no_draft.err.find("--prediction-file needs drafts"), std::string::npos) << no_draft.err;
}

// --draft-model: a draft model of other weights (the same tokenizer) keeps the tokens, the same
// model as its own draft has every guess kept; a draft model whose tokenizer differs, a missing
// folder or no drafts are refused naming the problem.
TEST(CliGenerate, DraftModelKeepsTheTokens) {
  const auto dir = tiny_model("draft_main");
  const auto other = temp_dir("gen_draft_other") / "model";
  json config = tiny_config();
  write_model_dir(other, config, tiny_tensors(config, 99));
  const std::vector<std::string> base = {"generate", "-m", dir.string(), "-p", "Hello world", "--max-tokens", "20",
                                         "--temperature", "0", "--json", "--threads", "1"};
  const RunResult plain = run_exq(base);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const json p = json::parse(plain.out);
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult r = run_exq(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json();
  };
  const json own = with({"--draft-model", dir.string(), "--draft-p-min", "0"});
  EXPECT_EQ(own["ids"], p["ids"]);
  EXPECT_GT(own["draft_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(own["accepted_draft_tokens"], own["draft_tokens"]);
  EXPECT_EQ(own["decode_steps"].get<int64_t>() + own["accepted_draft_tokens"].get<int64_t>(), p["decode_steps"]);
  const json foreign = with({"--model-draft", other.string(), "--draft-max", "3", "--draft-p-min", "0"});
  EXPECT_EQ(foreign["ids"], p["ids"]);
  EXPECT_GT(foreign["draft_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(foreign["decode_steps"].get<int64_t>() + foreign["accepted_draft_tokens"].get<int64_t>(),
            p["decode_steps"]);

  // Another tokenizer: one special token renamed (id 16, <empty_output>).
  const auto renamed = temp_dir("gen_draft_tok") / "model";
  write_model_dir(renamed, config, tiny_tensors(config));
  json tj = json::parse(read_file(renamed / "tokenizer.json"));
  ASSERT_EQ(tj["added_tokens"][16]["content"], "<empty_output>");
  tj["added_tokens"][16]["content"] = "<empty_0utput>";
  tj["model"]["vocab"].erase("<empty_output>");
  tj["model"]["vocab"]["<empty_0utput>"] = 16;
  write_text(renamed / "tokenizer.json", tj.dump());
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "Hi", "--draft-model", renamed.string()}),
                    "the draft model's tokenizer differs from the model's at id 16 ('<empty_0utput>' against "
                    "'<empty_output>')");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "Hi", "--draft-model", "/nonexistent/draft"}),
                    "/nonexistent/draft");
  expect_user_error(
      run_exq({"generate", "-m", dir.string(), "-p", "Hi", "--draft-model", dir.string(), "--draft-max", "0"}),
      "--draft-model needs drafts");
  expect_user_error(
      run_exq({"generate", "-m", dir.string(), "-p", "Hi", "--draft-model", dir.string(), "--draft-p-min", "2"}),
      "minimum probability must be in [0, 1], got 2");
}

// ---------------------------------------------------------------- user errors

TEST(CliGenerate, MissingPrompt) {
  const auto dir = tiny_model("noprompt");
  expect_user_error(run_exq({"generate", "-m", dir.string()}), "-p TEXT or --chat TEXT");
}

TEST(CliGenerate, PromptAndChatTogether) {
  const auto dir = tiny_model("both");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "a", "--chat", "b"}), "not both");
}

TEST(CliGenerate, MissingModelFlag) {
  expect_user_error(run_exq({"generate", "-p", "hi"}), "-m MODEL");
}

TEST(CliGenerate, MissingFolder) {
  const auto dir = temp_dir("gen_missing") / "absent";
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), dir.string());
}

TEST(CliGenerate, BadConfigJson) {
  const auto dir = tiny_model("badjson");
  write_text(dir / "config.json", R"({"model_type": "llama", "hidden_size": )");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "config.json");
}

TEST(CliGenerate, ConfigFieldWrongType) {
  const auto dir = tiny_model("badfield", [](json& c, auto&) { c["num_hidden_layers"] = "two"; });
  const RunResult r = run_exq({"generate", "-m", dir.string(), "-p", "hi"});
  expect_user_error(r, "config.json");
  EXPECT_NE(r.err.find("num_hidden_layers"), std::string::npos) << r.err;
}

TEST(CliGenerate, UnsupportedArchitecture) {
  const auto dir = tiny_model("arch", [](json& c, auto&) { c["model_type"] = "gpt_neox"; });
  const RunResult r = run_exq({"generate", "-m", dir.string(), "-p", "hi"});
  expect_user_error(r, "gpt_neox");
  EXPECT_NE(r.err.find("model_type"), std::string::npos) << r.err;
}

TEST(CliGenerate, MissingTensor) {
  const auto dir = tiny_model("missing", [](json&, auto& t) { t.erase("model.layers.1.self_attn.o_proj.weight"); });
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "model.layers.1.self_attn.o_proj.weight");
}

TEST(CliGenerate, ShapeMismatch) {
  const auto dir = tiny_model("shape", [](json&, auto& t) {
    t["model.layers.0.mlp.down_proj.weight"] = Tensor::zeros(DType::F16, {64, 95});
  });
  const RunResult r = run_exq({"generate", "-m", dir.string(), "-p", "hi"});
  expect_user_error(r, "model.layers.0.mlp.down_proj.weight");
  EXPECT_NE(r.err.find("95"), std::string::npos) << r.err;
}

// --typical-p, --top-n-sigma, --xtc-probability, --xtc-threshold: a seed reproduces the
// answer, and values out of range are refused naming the setting.
TEST(CliGenerate, TypicalSigmaAndXtcSampling) {
  const auto dir = tiny_model("extras");
  auto ids = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"generate", "-m", dir.string(), "-p", "Hello", "--max-tokens", "12", "--temperature",
                                     "1.2", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed", "5", "--json",
                                     "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult r = run_exq(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["ids"].get<std::vector<int32_t>>() : std::vector<int32_t>();
  };
  const std::vector<std::string> extras = {"--typical-p", "0.8", "--top-n-sigma", "2", "--xtc-probability", "0.5",
                                           "--xtc-threshold", "0.01", "--dry-multiplier", "0.8",
                                           "--dry-sequence-breaker", "\n", "--dry-sequence-breaker", "."};
  const auto a = ids(extras);
  EXPECT_EQ(a.size(), 12u);
  EXPECT_EQ(a, ids(extras));
  EXPECT_NE(a, ids({}));  // near-uniform logits: XTC and the cuts change the draws
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "a", "--typical", "0"}), "typical-p must be in (0, 1]");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "a", "--xtc-threshold", "1.5"}),
                    "XTC threshold must be in (0, 1], got 1.5");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "a", "--dry-multiplier", "1", "--dry-base", "0.9"}),
                    "DRY base must be >= 1, got 0.9");
}

TEST(CliGenerate, NanWeight) {
  const auto dir = tiny_model("nan", [](json&, auto& t) {
    set_value(t, "model.layers.1.self_attn.v_proj.weight", 77, std::numeric_limits<float>::quiet_NaN());
  });
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "model.layers.1.self_attn.v_proj.weight");
}

TEST(CliGenerate, InfWeight) {
  const auto dir = tiny_model("inf", [](json&, auto& t) {
    set_value(t, "model.embed_tokens.weight", 1000, std::numeric_limits<float>::infinity());
  });
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "model.embed_tokens.weight");
}

TEST(CliGenerate, TruncatedSafetensors) {
  const auto dir = tiny_model("trunc");
  const auto st = dir / "model.safetensors";
  std::filesystem::resize_file(st, std::filesystem::file_size(st) - 100);
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "model.safetensors");
}

TEST(CliGenerate, NoSafetensors) {
  const auto dir = tiny_model("noweights");
  std::filesystem::remove(dir / "model.safetensors");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), dir.string());
}

TEST(CliGenerate, BadTokenizerJson) {
  const auto dir = tiny_model("badtok");
  write_text(dir / "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "tokenizer.json");
}

TEST(CliGenerate, MissingTokenizer) {
  const auto dir = tiny_model("notok");
  std::filesystem::remove(dir / "tokenizer.json");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi"}), "tokenizer.json");
}

TEST(CliGenerate, BadGenerationConfig) {
  const auto dir = tiny_model("badgen");
  write_text(dir / "generation_config.json", R"({"eos_token_id": "end"})");
  const RunResult r = run_exq({"generate", "-m", dir.string(), "-p", "hi"});
  expect_user_error(r, "generation_config.json");
  EXPECT_NE(r.err.find("eos_token_id"), std::string::npos) << r.err;
}

TEST(CliGenerate, ChatWithoutTemplate) {
  const auto dir = tiny_model("notemplate");
  write_text(dir / "tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "--chat", "hi"}), "chat template");
}

TEST(CliGenerate, BadSamplingValue) {
  const auto dir = tiny_model("badtopp");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi", "--top-p", "1.5"}), "top-p");
  expect_user_error(run_exq({"generate", "-m", dir.string(), "-p", "hi", "--max-tokens", "-3"}), "--max-tokens");
}

// ---------------------------------------------------------------- real model goldens

TEST(CliGenerate, RealModelGreedyMatchesFixture) {
  EXQ_REQUIRE_MODEL();
  const json cases = json::parse(read_file(shared_dir() / "fixtures" / "smollm2" / "greedy.json"));
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    // The CLI's --chat sends a single user message: only such cases apply.
    if (c["messages"].size() != 1 || c["messages"][0]["role"] != "user") continue;
    const auto want = c["greedy_ids"].get<std::vector<int32_t>>();
    const RunResult r = run_exq({"generate", "-m", test_model().string(), "--chat", c["messages"][0]["content"],
                                 "--max-tokens", std::to_string(want.size() + 8), "--temperature", "0", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json out = json::parse(r.out);
    EXPECT_EQ(out["prompt_tokens"], c["prompt_ids"].size());
    EXPECT_EQ(out["ids"].get<std::vector<int32_t>>(), want) << c["messages"][0]["content"];
    EXPECT_EQ(out["stop_reason"], "eos");
    // The fixture text ends with the eos token's text, which exq does not print.
    std::string text = c["text"];
    const std::string eos = "<|im_end|>";
    if (text.size() >= eos.size() && text.compare(text.size() - eos.size(), eos.size(), eos) == 0)
      text.resize(text.size() - eos.size());
    EXPECT_EQ(out["text"], text);
  }
}

TEST(CliGenerate, RealModelChatStreams) {
  EXQ_REQUIRE_MODEL();
  const std::vector<std::string> args = {"generate", "-m", test_model().string(), "--chat", "What is 2+2?",
                                         "--max-tokens", "16", "--temperature", "0"};
  const RunResult s = run_exq(args);
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto json_args = args;
  json_args.push_back("--json");
  const RunResult j = run_exq(json_args);
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json out = json::parse(j.out);
  EXPECT_FALSE(out["text"].get<std::string>().empty());
  EXPECT_LE(out["generated_tokens"].get<int>(), 16);
  EXPECT_EQ(s.out.substr(0, out["text"].get<std::string>().size()), out["text"].get<std::string>());
  EXPECT_NE(s.err.find("prompt tokens:"), std::string::npos) << s.err;
  EXPECT_GT(out["prefill_tokens_per_s"].get<double>(), 0.0);
}

}  // namespace
}  // namespace exq::test
