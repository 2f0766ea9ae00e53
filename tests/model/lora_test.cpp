// LoRA adapters: the scale peft uses (alpha / r, alpha / sqrt(r) with rslora, a user factor),
// the merge W + scale B A against a double-precision reference for every weight dtype, and the
// refusals of what the merge cannot reproduce.
#include "model/lora.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <random>

#include "core/error.h"
#include "core/half.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Tensor random(DType dtype, Shape shape, uint32_t seed, float scale) {
  Tensor t(dtype, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = d(rng);
    if (dtype == DType::F32) t.data<float>()[i] = v;
    else if (dtype == DType::F16) t.data<uint16_t>()[i] = float_to_half(v);
    else t.data<uint16_t>()[i] = float_to_bf16(v);
  }
  return t;
}

double at(const TensorView& t, int64_t i) {
  if (t.dtype() == DType::F32) return t.data<float>()[i];
  if (t.dtype() == DType::F16) return half_to_float(t.data<uint16_t>()[i]);
  return bf16_to_float(t.data<uint16_t>()[i]);
}

// An adapter folder: config fields patched into a valid LoRA config, tensors as given.
fs::path write_adapter(const std::string& name, const json& patch, const std::vector<io::NamedTensor>& tensors) {
  const fs::path dir = test::temp_dir(name);
  json c = {{"peft_type", "LORA"}, {"r", 4},          {"lora_alpha", 8},        {"target_modules", {"q_proj"}},
            {"bias", "none"},      {"use_dora", false}, {"fan_in_fan_out", false}, {"modules_to_save", nullptr}};
  if (patch.is_object()) c.update(patch);
  std::ofstream(dir / "adapter_config.json") << c.dump(1);
  io::write_safetensors(dir / "adapter_model.safetensors", tensors);
  return dir;
}

const std::string kQ = "base_model.model.model.layers.0.self_attn.q_proj";

TEST(Lora, ScaleAndPairs) {
  const Tensor a = random(DType::F32, {4, 6}, 1, 0.5f), b = random(DType::BF16, {5, 4}, 2, 0.5f);
  const fs::path dir = write_adapter("lora_scale", {}, {{kQ + ".lora_A.weight", a.view()}, {kQ + ".lora_B.weight", b.view()}});
  LoraAdapter ad = load_lora(dir);
  ASSERT_EQ(ad.pairs.size(), 1u);
  const LoraPair& p = ad.pairs.at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(p.a.dim(0), 4);
  EXPECT_EQ(p.b.dim(0), 5);
  EXPECT_DOUBLE_EQ(ad.scale(4), 2.0);  // 8 / 4
  EXPECT_DOUBLE_EQ(load_lora(dir, 0.5).scale(4), 1.0);
  const fs::path rs = write_adapter("lora_rslora", {{"use_rslora", true}},
                                    {{kQ + ".lora_A.weight", a.view()}, {kQ + ".lora_B.weight", b.view()}});
  EXPECT_DOUBLE_EQ(load_lora(rs).scale(4), 4.0);  // 8 / sqrt(4)
}

TEST(Lora, MergeMatchesReference) {
  for (DType wt : {DType::F32, DType::F16, DType::BF16}) {
    const Tensor w = random(wt, {37, 29}, 3, 0.1f);
    const Tensor a = random(DType::BF16, {3, 29}, 4, 0.3f), b = random(DType::F32, {37, 3}, 5, 0.3f);
    const double scale = 1.7;
    const Tensor m = merge_lora(w.view(), {a.view(), b.view()}, scale, "w");
    ASSERT_EQ(m.dtype(), wt);
    // Allowed: half a step of the stored type at the reference, plus float32's error on the
    // sum's terms (a few ulps of their magnitude).
    const double half_step = wt == DType::F32 ? 0x1p-24 : wt == DType::F16 ? 0x1p-11 : 0x1p-8;
    double worst = 0;
    for (int64_t o = 0; o < 37; ++o)
      for (int64_t i = 0; i < 29; ++i) {
        double d = 0, mag = std::fabs(at(w.view(), o * 29 + i));
        for (int64_t k = 0; k < 3; ++k) {
          const double t = at(b.view(), o * 3 + k) * at(a.view(), k * 29 + i);
          d += t;
          mag += scale * std::fabs(t);
        }
        const double ref = at(w.view(), o * 29 + i) + scale * d;
        const double allowed = half_step * std::fabs(ref) + 4 * 0x1p-24 * mag + 6e-8;
        worst = std::max(worst, std::fabs(at(m.view(), o * 29 + i) - ref) / allowed);
      }
    EXPECT_LE(worst, 1.0) << dtype_name(wt);
  }
  const Tensor w = random(DType::F16, {5, 6}, 6, 0.1f), a = random(DType::F32, {2, 7}, 7, 0.1f),
               b = random(DType::F32, {5, 2}, 8, 0.1f);
  EXPECT_THROW(merge_lora(w.view(), {a.view(), b.view()}, 1.0, "w"), Error);
  // A sum past float16's range is refused, not stored as inf.
  Tensor big = random(DType::F16, {1, 2}, 9, 0.1f);
  const Tensor a1 = random(DType::F32, {1, 2}, 10, 1.0f);
  Tensor b1(DType::F32, {1, 1});
  b1.data<float>()[0] = 1e9f;
  try {
    merge_lora(big.view(), {a1.view(), b1.view()}, 1.0, "big.weight");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("big.weight gives values that are not finite in F16"), std::string::npos)
        << e.what();
  }
}

TEST(Lora, RefusesWhatItCannotMerge) {
  const Tensor a = random(DType::F32, {4, 6}, 1, 0.5f), b = random(DType::F32, {5, 4}, 2, 0.5f);
  const std::vector<io::NamedTensor> ok = {{kQ + ".lora_A.weight", a.view()}, {kQ + ".lora_B.weight", b.view()}};
  auto message = [](const fs::path& dir) -> std::string {
    try {
      load_lora(dir);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto expect = [&](const fs::path& dir, const std::string& needle) {
    const std::string m = message(dir);
    EXPECT_NE(m.find(needle), std::string::npos) << "'" << m << "' lacks '" << needle << "'";
  };
  expect(write_adapter("lora_dora", {{"use_dora", true}}, ok), "use_dora: DoRA adapters are not supported");
  expect(write_adapter("lora_prefix", {{"peft_type", "PREFIX_TUNING"}}, ok), "peft_type: 'PREFIX_TUNING' is not a LoRA");
  expect(write_adapter("lora_fifo", {{"fan_in_fan_out", true}}, ok), "fan_in_fan_out");
  expect(write_adapter("lora_bias", {{"bias", "all"}}, ok), "bias: 'all'");
  expect(write_adapter("lora_save", {{"modules_to_save", {"lm_head"}}}, ok), "modules_to_save");
  expect(write_adapter("lora_alpha", {{"lora_alpha", nullptr}}, ok), "lora_alpha");
  expect(write_adapter("lora_onlya", {}, {ok[0]}), "has lora_A but not lora_B");
  const Tensor b3 = random(DType::F32, {5, 3}, 2, 0.5f);
  expect(write_adapter("lora_rank", {}, {ok[0], {kQ + ".lora_B.weight", b3.view()}}), "do not share a rank");
  expect(write_adapter("lora_embed", {}, {{"base_model.model.model.embed_tokens.lora_embedding_A", a.view()}}),
         "not a LoRA A / B weight");
  const fs::path bin = test::temp_dir("lora_bin");
  std::ofstream(bin / "adapter_config.json") << R"({"peft_type": "LORA", "lora_alpha": 16})";
  std::ofstream(bin / "adapter_model.bin") << "pickle";
  expect(bin, "adapter_model.bin (a pickle) is not read");
  expect(test::temp_dir("lora_empty"), "missing adapter_config.json");
}

}  // namespace
}  // namespace exq::model
