// A rank-4 PEFT LoRA adapter written for tests: lora_alpha 8 (scale 2) and fixed, patterned A
// and B values for each target, so a merge moves the logits by a clear margin.
#pragma once

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace exq::test {

struct LoraTarget {
  int64_t layer;
  std::string module;  // "self_attn.q_proj", "mlp.gate_up_proj", ...
  int64_t out, in;     // the target weight's shape
};

// Writes adapter_config.json and adapter_model.safetensors into `dir` (which must exist).
inline void write_rank4_adapter(const std::filesystem::path& dir, const std::vector<LoraTarget>& targets) {
  std::ofstream(dir / "adapter_config.json") << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})";
  std::vector<Tensor> keep;
  std::vector<io::NamedTensor> list;
  keep.reserve(2 * targets.size());
  for (const LoraTarget& t : targets) {
    const std::string pre = fmt::format("base_model.model.model.layers.{}.{}", t.layer, t.module);
    const auto l = t.layer;
    Tensor a(DType::F32, {4, t.in}), b(DType::F32, {t.out, 4});
    for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = 0.05f * static_cast<float>((i * 7 + l) % 11) - 0.25f;
    for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = 0.04f * static_cast<float>((i * 5 + l) % 9) - 0.16f;
    keep.push_back(std::move(a));
    list.push_back({pre + ".lora_A.weight", keep.back().view()});
    keep.push_back(std::move(b));
    list.push_back({pre + ".lora_B.weight", keep.back().view()});
  }
  io::write_safetensors(dir / "adapter_model.safetensors", list);
}

}  // namespace exq::test
