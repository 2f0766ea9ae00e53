// `exq generate / ppl / info` on EXL2 folders: SmolLM2 with layer 0 from exllamav2's 4.0 bpw
// fixture against the same model holding the fixture's dequantized weights, per-layer bits in
// `info`, and broken EXL2 layers as one-line user errors (exit 2) naming tensor and file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>

#include "cli_support.h"
#include "exl2_test_models.h"
#include "model/linear_bits.h"

namespace exq::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(CliExl2, Smollm2Layer0PplGenerateInfo) {
  EXQ_REQUIRE_MODEL();
  const fs::path root = temp_dir("cli_exl2_smollm2");
  const Exl2Folders f = make_smollm2_layer0_folders(test_model(), root);
  const auto text = shared_dir() / "data" / "c4.utf8";

  double ppl[2];
  std::vector<int32_t> ids[2];
  for (int i = 0; i < 2; ++i) {
    const fs::path dir = i == 0 ? f.exl2 : f.ref;
    const RunResult p = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--windows", "2", "--json"});
    ASSERT_EQ(p.exit_code, 0) << p.err;
    ppl[i] = json::parse(p.out)["ppl"].get<double>();
    const RunResult g = run_exq({"generate", "-m", dir.string(), "-p", "The capital of France is", "--max-tokens",
                                 "24", "--temperature", "0", "--json"});
    ASSERT_EQ(g.exit_code, 0) << g.err;
    ids[i] = json::parse(g.out)["ids"].get<std::vector<int32_t>>();
  }
  std::printf("[exq ppl c4 --windows 2] exl2 layer 0: %.6f, dequantized reference: %.6f (rel diff %.3g)\n", ppl[0],
              ppl[1], std::fabs(ppl[0] - ppl[1]) / ppl[1]);
  EXPECT_NEAR(ppl[0], ppl[1], 1e-4 * ppl[1]);
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_FALSE(ids[0].empty());

  const RunResult info = run_exq({"info", f.exl2.string(), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const json q = json::parse(info.out)["quantization"];
  EXPECT_EQ(q["method"], "exl2");
  ASSERT_EQ(q["layers"].size(), 30u);
  // The library's count (checked against exllamav2's measurement in model/exl2_model_test).
  const model::ModelBits bits =
      model::linear_bits(io::load_model_config(f.exl2), io::SafetensorsModel::open(f.exl2), f.exl2);
  for (size_t i = 0; i < 7; ++i) {
    const char* lin = kLlamaLinears[i];
    EXPECT_EQ(q["layers"][0]["linears"][lin]["format"], "exl2") << lin;
    EXPECT_DOUBLE_EQ(q["layers"][0]["linears"][lin]["bpw"].get<double>(), bits.layers[0].linears[i].bits.bpw()) << lin;
    EXPECT_EQ(q["layers"][1]["linears"][lin]["format"], "F16") << lin;
    EXPECT_DOUBLE_EQ(q["layers"][1]["linears"][lin]["bpw"].get<double>(), 16.0) << lin;
  }
  EXPECT_DOUBLE_EQ(q["decoder_bpw"].get<double>(), bits.decoder.bpw());
  EXPECT_EQ(q["head"]["format"], "tied");
  std::printf("[exq info] layer 0: %.4f bpw; decoder average %.4f bpw\n", q["layers"][0]["bpw"].get<double>(),
              q["decoder_bpw"].get<double>());
  const RunResult txt = run_exq({"info", f.exl2.string()});
  ASSERT_EQ(txt.exit_code, 0) << txt.err;
  EXPECT_NE(txt.out.find("bits/weight:"), std::string::npos) << txt.out;
  EXPECT_NE(txt.out.find("q_proj"), std::string::npos) << txt.out;
  EXPECT_NE(txt.out.find("tensors:       "), std::string::npos) << txt.out;
  fs::remove_all(root);
}

// Tiny folder: every linear of layer 0 EXL2, layer 1 fp16.
std::map<std::string, Tensor> tiny_exl2_tensors() {
  auto tensors = tiny_tensors(tiny_config());
  std::map<std::string, Tensor> twin;
  uint32_t seed = 1;
  for (const char* lin : kLlamaLinears)
    exl2ify(tensors, twin, fmt::format("model.layers.0.{}", lin), {4, 3}, seed++);
  return tensors;
}

nlohmann::json tiny_exl2_config() {
  json c = tiny_config();
  c["quantization_config"] = {{"quant_method", "exl2"}, {"bits", 4.0}, {"head_bits", 6}};
  return c;
}

TEST(CliExl2, TinyRunsAndReportsBits) {
  const fs::path dir = temp_dir("cli_exl2_tiny") / "m";
  write_model_dir(dir, tiny_exl2_config(), tiny_exl2_tensors());
  const RunResult g = run_exq({"generate", "-m", dir.string(), "-p", "Hello", "--max-tokens", "4", "--temperature", "0"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  const auto text = dir.parent_path() / "t.txt";
  write_text(text, read_file(shared_dir() / "data" / "c4.utf8").substr(0, 2000));
  const RunResult p = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64", "--windows", "2"});
  EXPECT_EQ(p.exit_code, 0) << p.err;

  const RunResult r = run_exq({"info", dir.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json q = json::parse(r.out)["quantization"];
  // q_proj [64, 64] in a 4-bit and a 3-bit group of 32 rows: codes, 2 x (16 + 32 + 4*64), 32*64.
  const double q_bpw = (32.0 * 64 * 7 + 2 * (16 + 32 + 4 * 64) + 32 * 64) / (64.0 * 64);
  EXPECT_DOUBLE_EQ(q["layers"][0]["linears"]["self_attn.q_proj"]["bpw"].get<double>(), q_bpw);
  EXPECT_EQ(q["layers"][0]["linears"]["self_attn.q_proj"]["groups"], 2);
  // down_proj [64, 96]: 4, 3, 4-bit groups.
  const double down_bpw = (32.0 * 64 * 11 + 3 * (16 + 32 + 4 * 64) + 32 * 96) / (64.0 * 96);
  EXPECT_DOUBLE_EQ(q["layers"][0]["linears"]["mlp.down_proj"]["bpw"].get<double>(), down_bpw);
  EXPECT_DOUBLE_EQ(q["layers"][1]["bpw"].get<double>(), 16.0);
  const double l0 = q["layers"][0]["bpw"].get<double>();
  EXPECT_NEAR(q["decoder_bpw"].get<double>(), (l0 + 16.0) / 2, 1e-12);  // both layers hold the same weights
}

// One broken variant of the tiny folder; every model command must fail the same way.
void expect_all_commands_fail(const std::string& name, const std::function<void(std::map<std::string, Tensor>&)>& edit,
                              const std::string& tensor, const std::string& text) {
  const fs::path dir = temp_dir("cli_exl2_bad_" + name) / "m";
  auto tensors = tiny_exl2_tensors();
  edit(tensors);
  write_model_dir(dir, tiny_exl2_config(), tensors);
  const auto txt = dir.parent_path() / "t.txt";
  write_text(txt, read_file(shared_dir() / "data" / "c4.utf8").substr(0, 2000));
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"info", dir.string()},
           {"generate", "-m", dir.string(), "-p", "hi"},
           {"ppl", "-m", dir.string(), "-f", txt.string(), "--window", "64"}}) {
    SCOPED_TRACE(args[0] + " " + name);
    const RunResult r = run_exq(args);
    expect_user_error(r, tensor);
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
    EXPECT_NE(r.err.find((dir / "model.safetensors").string()), std::string::npos) << r.err;
  }
}

TEST(CliExl2, BadLayersExit2) {
  const std::string down = "model.layers.0.mlp.down_proj";
  // q_groups [4, 0, 3, 4, 4, 7] -> [4, 0, 3, 5, 4, 7]: group 1 gets 2 words, not whole 3-bit rows.
  expect_all_commands_fail("groups", [&](auto& t) { t.at(down + ".q_groups").template data<int16_t>()[3] = 5; },
                           down + ".q_groups", "group");
  expect_all_commands_fail("scale", [&](auto& t) { t.erase(down + ".q_scale"); }, down + ".q_scale", "missing");
  expect_all_commands_fail(
      "gptq", [](auto& t) { t["model.layers.1.self_attn.q_proj.qweight"] = Tensor::zeros(DType::I32, {8, 64}); },
      "model.layers.1.self_attn.q_proj.qweight", "GPTQ format is not supported");
}

}  // namespace
}  // namespace exq::test
