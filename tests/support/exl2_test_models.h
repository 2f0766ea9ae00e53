// EXL2 model folders for tests (header-only: included by model and cli tests): random packed
// EXL2 layers whose dequantized twin is known, and the fp16 SmolLM2 folder with layer 0's seven
// linears replaced by exllamav2's 4.0 bpw fixture (and its reference twin using `*.dequant`).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/half.h"
#include "core/tensor.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::test {

inline constexpr const char* kLlamaLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                "mlp.down_proj"};

// Layer-0 linears of SmolLM2-135M in the exllamav2 fixtures: name -> {in, out} (HF weight [out, in]).
inline const std::map<std::string, std::pair<int64_t, int64_t>>& smollm2_layer0_linears() {
  static const std::map<std::string, std::pair<int64_t, int64_t>> linears = {
      {"self_attn.q_proj", {576, 576}}, {"self_attn.k_proj", {576, 192}},
      {"self_attn.v_proj", {576, 192}}, {"self_attn.o_proj", {576, 576}},
      {"mlp.gate_proj", {576, 1536}},   {"mlp.up_proj", {576, 1536}},
      {"mlp.down_proj", {1536, 576}}};
  return linears;
}

// ../shared/fixtures/exl2/smollm2_layer0_<bpw>bpw.safetensors (bpw "4.0" or "2.5").
inline std::filesystem::path exl2_layer0_fixture(const std::string& bpw) {
  return shared_dir() / "fixtures" / "exl2" / ("smollm2_layer0_" + bpw + "bpw.safetensors");
}

// A random EXL2 layer [out, in]: groups of 32 rows whose widths cycle through `bits` (the last
// group takes the rest), random codes and scales, q_scale_max near `scale`, a shuffled permutation.
inline io::Exl2Packed random_exl2(int64_t in, int64_t out, const std::vector<int>& bits, uint32_t seed,
                                  bool bias = false, float scale = 0.05f) {
  std::mt19937 rng(seed);
  io::Exl2Linear l;
  l.in = in;
  l.out = out;
  std::vector<std::pair<int, int64_t>> bits_rows;
  for (int64_t row = 0, g = 0; row < in; row += 32, ++g)
    bits_rows.push_back({bits[static_cast<size_t>(g) % bits.size()], std::min<int64_t>(32, in - row)});
  l.groups = io::exl2_group_table(bits_rows);
  l.q.resize(static_cast<size_t>(in * out));
  for (const auto& g : l.groups)
    for (int64_t i = g.row_begin * out; i < (g.row_begin + g.rows) * out; ++i)
      l.q[static_cast<size_t>(i)] = static_cast<uint8_t>(rng() % (1u << g.bits));
  for (size_t i = 0; i < l.groups.size() * static_cast<size_t>(out); ++i)
    l.qs.push_back(static_cast<uint8_t>(1 + rng() % 16));
  std::uniform_real_distribution<float> sd(0.5f * scale, 1.5f * scale);
  for (size_t g = 0; g < l.groups.size(); ++g) l.scale_max.push_back(float_to_half(sd(rng)));
  for (int64_t i = 0; i < in; ++i) l.perm.push_back(static_cast<int32_t>(i));
  std::shuffle(l.perm.begin(), l.perm.end(), rng);
  l.invperm.resize(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) l.invperm[static_cast<size_t>(l.perm[static_cast<size_t>(i)])] = static_cast<int32_t>(i);
  std::normal_distribution<float> bd(0.0f, 0.1f);
  if (bias)
    for (int64_t c = 0; c < out; ++c) l.bias.push_back(float_to_half(bd(rng)));
  return io::pack_exl2(l);
}

// Replaces tensors[key.weight] (shape [out, in]) by a random EXL2 layer KEY.q_weight ...; puts
// the fp16 weight it dequantizes to into twin[key.weight] (twin: the same model, unquantized).
inline void exl2ify(std::map<std::string, Tensor>& tensors, std::map<std::string, Tensor>& twin,
                    const std::string& key, const std::vector<int>& bits, uint32_t seed) {
  const Shape shape = tensors.at(key + ".weight").shape();
  io::Exl2Packed p = random_exl2(shape[1], shape[0], bits, seed);
  twin[key + ".weight"] = io::dequantize_exl2(p.view(), shape[1], shape[0], key);
  tensors.erase(key + ".weight");
  tensors[key + ".q_weight"] = std::move(p.q_weight);
  tensors[key + ".q_scale"] = std::move(p.q_scale);
  tensors[key + ".q_scale_max"] = std::move(p.q_scale_max);
  tensors[key + ".q_groups"] = std::move(p.q_groups);
  tensors[key + ".q_invperm"] = std::move(p.q_invperm);
}

inline void copy_text_file(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::ofstream(to, std::ios::binary) << read_file(from);  // a copy would keep a read-only mode
}

struct Exl2Folders {
  std::filesystem::path exl2;  // layer 0 EXL2 (fixture), 2 shards output-0000N-of-00002
  std::filesystem::path ref;   // layer 0 = the fixture's *.dequant, fp16, one file
};

// Both folders under `root` from the fp16 SmolLM2 folder `src` (config, tokenizer files too).
inline Exl2Folders make_smollm2_layer0_folders(const std::filesystem::path& src,
                                               const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  const Exl2Folders f{root / "exl2", root / "ref"};
  const auto model = io::SafetensorsModel::open(src);
  const auto fixture = io::SafetensorsFile::open(shared_dir() / "fixtures" / "exl2" /
                                                 "smollm2_layer0_4.0bpw.safetensors");
  std::vector<io::NamedTensor> exl2, ref;
  for (const std::string& name : model.names()) {
    bool layer0_linear = false;
    for (const char* lin : kLlamaLinears)
      layer0_linear |= name == fmt::format("model.layers.0.{}.weight", lin);
    if (layer0_linear) {
      const std::string key = name.substr(0, name.size() - 7);
      ref.push_back({name, fixture.get(key + ".dequant")});
      for (const char* suffix : io::kExl2Suffixes) exl2.push_back({key + suffix, fixture.get(key + suffix)});
    } else {
      ref.push_back({name, model.get(name)});
      exl2.push_back({name, model.get(name)});
    }
  }
  // Shards fill greedily: half the bytes plus the largest tensor makes exactly two.
  size_t bytes = 0, largest = 0;
  for (const auto& t : exl2) {
    bytes += t.tensor.nbytes();
    largest = std::max(largest, t.tensor.nbytes());
  }
  auto config = nlohmann::json::parse(read_file(src / "config.json"));
  for (const fs::path& dir : {f.exl2, f.ref}) {
    fs::create_directories(dir);
    for (const char* file : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "generation_config.json"})
      if (fs::exists(src / file)) copy_text_file(src / file, dir / file);
  }
  std::ofstream(f.ref / "config.json") << config.dump(2);
  config["quantization_config"] = {{"quant_method", "exl2"}, {"version", "0.3.2"}, {"bits", 4.0},
                                   {"head_bits", 6}};
  std::ofstream(f.exl2 / "config.json") << config.dump(2);
  io::write_safetensors(f.exl2 / "output.safetensors", exl2, {}, bytes / 2 + largest);
  io::write_safetensors(f.ref / "model.safetensors", ref);
  return f;
}

}  // namespace exq::test
