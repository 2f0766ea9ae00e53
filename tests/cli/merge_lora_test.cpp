// exq merge-lora on a tiny model: the targeted weights become W + scale B A (within one fp16
// rounding of a double-precision reference), every other tensor and file is the base's, the
// merged folder runs, and the user errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "cli_support.h"
#include "io/safetensors.h"

namespace exq::test {
namespace {

using nlohmann::json;

Tensor rand_f32(Shape shape, uint32_t seed) {
  Tensor t(DType::F32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.2f);
  for (float& v : t.span<float>()) v = d(rng);
  return t;
}

TEST(CliMergeLora, MergesIntoTheTargetedWeights) {
  const auto root = temp_dir("merge_lora");
  const auto base = root / "base";
  const json config = tiny_config();
  const auto tensors = tiny_tensors(config);
  write_model_dir(base, config, tensors);
  const int64_t h = config["hidden_size"], inter = config["intermediate_size"];
  const int64_t q = int64_t{config["num_attention_heads"]} * int64_t{config["head_dim"]};
  // rank 4 on layer 0's q_proj and layer 1's down_proj, alpha 16: scale 4 (x0.5 with --lora-scaled).
  const std::string p0 = "base_model.model.model.layers.0.self_attn.q_proj", p1 = "base_model.model.model.layers.1.mlp.down_proj";
  const Tensor a0 = rand_f32({4, h}, 1), b0 = rand_f32({q, 4}, 2), a1 = rand_f32({4, inter}, 3), b1 = rand_f32({h, 4}, 4);
  const auto adapter = root / "adapter";
  std::filesystem::create_directories(adapter);
  write_text(adapter / "adapter_config.json",
             R"({"peft_type": "LORA", "r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "down_proj"],
                 "bias": "none", "use_rslora": false, "use_dora": false, "modules_to_save": null})");
  io::write_safetensors(adapter / "adapter_model.safetensors",
                        {{p0 + ".lora_A.weight", a0.view()}, {p0 + ".lora_B.weight", b0.view()},
                         {p1 + ".lora_A.weight", a1.view()}, {p1 + ".lora_B.weight", b1.view()}});
  // exq info reads the adapter folder.
  const RunResult info = run_exq({"info", adapter.string(), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const json ij = json::parse(info.out);
  EXPECT_EQ(ij["ranks"], json::array({4}));
  EXPECT_EQ(ij["scale"], 4.0);
  EXPECT_EQ(ij["modules"], json({{"self_attn.q_proj", 1}, {"mlp.down_proj", 1}}));
  EXPECT_EQ(ij["parameters"], 4 * h + q * 4 + 4 * inter + h * 4);
  const RunResult info_text = run_exq({"info", adapter.string()});
  EXPECT_NE(info_text.out.find("rank:          4 (lora_alpha 16, scale 4)"), std::string::npos) << info_text.out;

  const auto out = root / "merged";
  const RunResult r = run_exq({"merge-lora", "-m", base.string(), "--lora-scaled", adapter.string(), "0.5", "-o", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("merged 1 adapter(s), 2 weight(s)"), std::string::npos) << r.out;

  const io::SafetensorsFile m = io::SafetensorsFile::open(out / "model.safetensors");
  EXPECT_EQ(m.names().size(), tensors.size());
  auto check = [&](const std::string& name, const Tensor& a, const Tensor& b) {
    const TensorView w = tensors.at(name).view(), got = m.get(name);
    const int64_t rows = w.dim(0), cols = w.dim(1);
    double worst = 0;
    int changed = 0;
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < cols; ++i) {
        double d = 0;
        for (int64_t k = 0; k < 4; ++k) d += double{b.data<float>()[o * 4 + k]} * a.data<float>()[k * cols + i];
        const double base_v = half_to_float(w.data<uint16_t>()[o * cols + i]);
        const double ref = base_v + 2.0 * d;  // 16 / 4 x 0.5
        const double v = half_to_float(got.data<uint16_t>()[o * cols + i]);
        worst = std::max(worst, std::fabs(v - ref) / (std::fabs(ref) * 9.8e-4 + 6e-8));
        changed += v != base_v;
      }
    EXPECT_LE(worst, 1.01) << name;
    EXPECT_GT(changed, rows * cols / 2) << name;
  };
  check("model.layers.0.self_attn.q_proj.weight", a0, b0);
  check("model.layers.1.mlp.down_proj.weight", a1, b1);
  for (const auto& [name, t] : tensors) {
    if (name == "model.layers.0.self_attn.q_proj.weight" || name == "model.layers.1.mlp.down_proj.weight") continue;
    const TensorView got = m.get(name);
    EXPECT_EQ(std::memcmp(got.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  EXPECT_EQ(read_file(out / "config.json"), read_file(base / "config.json"));
  EXPECT_EQ(read_file(out / "tokenizer.json"), read_file(base / "tokenizer.json"));

  // The merged folder runs and answers differently from the base.
  const auto text = root / "text.txt";
  write_text(text, read_file(shared_dir() / "data" / "c4.utf8").substr(0, 4000));
  auto ppl = [&](const std::filesystem::path& dir) {
    const RunResult p = run_exq({"ppl", "-m", dir.string(), "-f", text.string(), "--window", "64", "--windows", "1",
                                 "--json", "--device", "cpu"});
    EXPECT_EQ(p.exit_code, 0) << p.err;
    return p.exit_code == 0 ? json::parse(p.out)["ppl"].get<double>() : 0.0;
  };
  const double merged = ppl(out);
  EXPECT_NE(merged, ppl(base));
  // --lora at load gives the merged folder's numbers, bit for bit.
  auto ppl_with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"ppl", "-m", base.string(), "-f", text.string(), "--window", "64", "--windows", "1",
                                     "--json", "--device", "cpu"};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult p = run_exq(args);
    EXPECT_EQ(p.exit_code, 0) << p.err;
    return p.exit_code == 0 ? json::parse(p.out)["ppl"].get<double>() : 0.0;
  };
  EXPECT_EQ(ppl_with({"--lora-scaled", adapter.string(), "0.5"}), merged);
  EXPECT_NE(ppl_with({"--lora", adapter.string()}), merged);  // scale 4 instead of 2
  const RunResult g = run_exq({"generate", "-m", base.string(), "-p", "Hello", "--max-tokens", "4", "--temperature", "0",
                               "--device", "cpu", "--lora", adapter.string()});
  EXPECT_EQ(g.exit_code, 0) << g.err;

  // User errors: no adapter, an adapter weight the base lacks, a quantized base.
  expect_user_error(run_exq({"merge-lora", "-m", base.string(), "-o", (root / "x").string()}), "give at least one --lora");
  expect_user_error(run_exq({"merge-lora", "-m", base.string(), "--lora-scaled", adapter.string(), "half", "-o",
                             (root / "x").string()}),
                    "the scale is not a number");
  const auto wrong = root / "wrong";
  std::filesystem::create_directories(wrong);
  write_text(wrong / "adapter_config.json", R"({"peft_type": "LORA", "lora_alpha": 8})");
  const std::string pw = "base_model.model.model.layers.7.self_attn.q_proj";
  io::write_safetensors(wrong / "adapter_model.safetensors",
                        {{pw + ".lora_A.weight", a0.view()}, {pw + ".lora_B.weight", b0.view()}});
  expect_user_error(run_exq({"merge-lora", "-m", base.string(), "--lora", wrong.string(), "-o", (root / "y").string()}),
                    "has no weight model.layers.7.self_attn.q_proj.weight in the base model");
  json qc = config;
  qc["quantization_config"] = {{"quant_method", "exl2"}, {"bits", 4.0}};
  const auto quant = root / "quant";
  write_model_dir(quant, qc, tensors);
  expect_user_error(run_exq({"merge-lora", "-m", quant.string(), "--lora", adapter.string(), "-o", (root / "z").string()}),
                    "the base model is quantized");
  EXPECT_FALSE(std::filesystem::exists(root / "y" / "model.safetensors"));
}

}  // namespace
}  // namespace exq::test
