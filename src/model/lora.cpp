#include "model/lora.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "io/atomic_file.h"
#include "io/hf_config.h"
#include "model/exl2_linear.h"

namespace exq::model {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

float load(const TensorView& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::F16: return half_to_float(t.data<uint16_t>()[i]);
    case DType::BF16: return bf16_to_float(t.data<uint16_t>()[i]);
    default: return 0.0f;
  }
}

bool dense_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" -> ("model.layers.0.self_attn.q_proj.weight", A).
bool split_name(const std::string& n, std::string* target, bool* is_a) {
  const std::string prefix = "base_model.model.";
  for (const char* suffix : {".lora_A.weight", ".lora_B.weight"}) {
    const std::string s = suffix;
    if (n.starts_with(prefix) && n.ends_with(s) && n.size() > prefix.size() + s.size()) {
      *target = n.substr(prefix.size(), n.size() - prefix.size() - s.size()) + ".weight";
      *is_a = s == ".lora_A.weight";
      return true;
    }
  }
  return false;
}

}  // namespace

double LoraAdapter::scale(int64_t r) const {
  const double rank = static_cast<double>(r);
  return user_scale * alpha / (rslora ? std::sqrt(rank) : rank);
}

LoraAdapter load_lora(const fs::path& dir, double user_scale) {
  const fs::path cfg_path = dir / "adapter_config.json";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("LoRA adapter folder does not exist", ErrorContext{.file = dir.string()});
  if (!fs::exists(cfg_path, ec))
    throw Error("missing adapter_config.json in the LoRA adapter folder", ErrorContext{.file = dir.string()});
  const std::string file = cfg_path.string();
  auto fail = [&](const std::string& field, const std::string& why) -> Error {
    return Error(fmt::format("{}: {}", field, why), ErrorContext{.file = file});
  };
  json c;
  try {
    c = json::parse(io::read_file(cfg_path, "adapter config"));
  } catch (const json::exception& e) {
    throw Error(fmt::format("invalid JSON: {}", e.what()), ErrorContext{.file = file});
  }
  if (!c.is_object()) throw fail("<root>", "expected a JSON object");
  auto str = [&](const char* key, const std::string& def) {
    const auto it = c.find(key);
    if (it == c.end() || it->is_null()) return def;
    if (!it->is_string()) throw fail(key, fmt::format("expected a string, got {}", it->dump()));
    return it->get<std::string>();
  };
  auto flag = [&](const char* key) {
    const auto it = c.find(key);
    if (it == c.end() || it->is_null()) return false;
    if (!it->is_boolean()) throw fail(key, fmt::format("expected true or false, got {}", it->dump()));
    return it->get<bool>();
  };
  auto empty = [&](const char* key) {
    const auto it = c.find(key);
    return it == c.end() || it->is_null() || ((it->is_array() || it->is_object()) && it->empty());
  };
  if (str("peft_type", "LORA") != "LORA")
    throw fail("peft_type", fmt::format("'{}' is not a LoRA adapter (LORA)", str("peft_type", "")));
  if (flag("use_dora")) throw fail("use_dora", "DoRA adapters are not supported");
  if (flag("fan_in_fan_out")) throw fail("fan_in_fan_out", "transposed (Conv1D) adapters are not supported");
  if (str("bias", "none") != "none")
    throw fail("bias", fmt::format("'{}': trained biases are not supported", str("bias", "")));
  if (!empty("modules_to_save")) throw fail("modules_to_save", "fully trained modules are not supported");
  if (!empty("alpha_pattern")) throw fail("alpha_pattern", "per-module alphas are not supported");
  const auto alpha = c.find("lora_alpha");
  if (alpha == c.end() || !alpha->is_number() || !(alpha->get<double>() > 0) || !std::isfinite(alpha->get<double>()))
    throw fail("lora_alpha",
               alpha == c.end() ? "missing" : fmt::format("expected a positive number, got {}", alpha->dump()));
  if (!std::isfinite(user_scale)) throw Error(fmt::format("LoRA scale {} is not finite", user_scale));

  LoraAdapter a;
  a.dir = dir;
  a.alpha = alpha->get<double>();
  a.rslora = flag("use_rslora");
  a.user_scale = user_scale;
  const fs::path weights = dir / "adapter_model.safetensors";
  if (!fs::exists(weights, ec)) {
    if (fs::exists(dir / "adapter_model.bin", ec))
      throw Error("adapter_model.bin (a pickle) is not read; save the adapter with safetensors",
                  ErrorContext{.file = (dir / "adapter_model.bin").string()});
    throw Error("missing adapter_model.safetensors in the LoRA adapter folder", ErrorContext{.file = dir.string()});
  }
  a.file = io::SafetensorsFile::open(weights);
  const std::string wfile = weights.string();
  for (const std::string& n : a.file.names()) {
    std::string target;
    bool is_a = false;
    if (!split_name(n, &target, &is_a))
      throw Error("not a LoRA A / B weight of a linear layer (embedding adapters and other tensors are not supported)",
                  ErrorContext{.file = wfile, .tensor = n});
    const TensorView v = a.file.get(n);
    if (v.rank() != 2 || !dense_float(v.dtype()))
      throw Error(
          fmt::format("expected a 2-D F32 / F16 / BF16 matrix, got {} {}", dtype_name(v.dtype()), shape_str(v.shape())),
          ErrorContext{.file = wfile, .tensor = n});
    LoraPair& p = a.pairs[target];
    (is_a ? p.a : p.b) = v;
  }
  if (a.pairs.empty()) throw Error("the adapter holds no LoRA weights", ErrorContext{.file = wfile});
  for (const auto& [target, p] : a.pairs) {
    if (p.a.empty() || p.b.empty())
      throw Error(
          fmt::format("{} has lora_{} but not lora_{}", target, p.a.empty() ? "B" : "A", p.a.empty() ? "A" : "B"),
          ErrorContext{.file = wfile});
    if (p.a.dim(0) != p.b.dim(1) || p.a.dim(0) < 1)
      throw Error(fmt::format("{}: lora_A {} and lora_B {} do not share a rank", target, shape_str(p.a.shape()),
                              shape_str(p.b.shape())),
                  ErrorContext{.file = wfile});
  }
  return a;
}

Tensor merge_lora(const TensorView& w, const LoraPair& p, double scale, const std::string& name) {
  EXQ_CHECK(w.rank() == 2 && dense_float(w.dtype()) && w.is_contiguous(),
            "LoRA: {} is not a dense 2-D F32 / F16 / BF16 weight ({} {})", name, dtype_name(w.dtype()),
            shape_str(w.shape()));
  const int64_t out = w.dim(0), in = w.dim(1), r = p.a.dim(0);
  EXQ_CHECK(p.a.dim(1) == in && p.b.dim(0) == out, "LoRA: {} is [{}, {}], lora_A {} and lora_B {} do not fit it", name,
            out, in, shape_str(p.a.shape()), shape_str(p.b.shape()));
  // A and B as float32 once; each output row is W's row plus the scaled B row times A.
  const Tensor a = to_f32(p.a), bm = to_f32(p.b);
  Tensor m(w.dtype(), w.shape());
  const TensorView mv = m.view();
  std::atomic<bool> finite{true};
  parallel_for(out, [&](int64_t b, int64_t e) {
    std::vector<float> row(static_cast<size_t>(in));
    bool ok = true;
    for (int64_t o = b; o < e; ++o) {
      std::fill(row.begin(), row.end(), 0.0f);
      for (int64_t k = 0; k < r; ++k) {
        const float bk = bm.data<float>()[o * r + k];
        const float* ak = a.data<float>() + k * in;
        for (int64_t i = 0; i < in; ++i) row[static_cast<size_t>(i)] += bk * ak[i];
      }
      for (int64_t i = 0; i < in; ++i) {
        const float v = load(w, o * in + i) + static_cast<float>(scale) * row[static_cast<size_t>(i)];
        const int64_t j = o * in + i;
        float stored = v;
        if (w.dtype() == DType::F32) {
          mv.data<float>()[j] = v;
        } else if (w.dtype() == DType::F16) {
          mv.data<uint16_t>()[j] = float_to_half(v);
          stored = half_to_float(mv.data<uint16_t>()[j]);
        } else {
          mv.data<uint16_t>()[j] = float_to_bf16(v);
          stored = bf16_to_float(mv.data<uint16_t>()[j]);
        }
        ok = ok && std::isfinite(stored);
      }
    }
    if (!ok) finite = false;
  });
  EXQ_CHECK(finite, "LoRA: merging into {} gives values that are not finite in {}", name, dtype_name(w.dtype()));
  return m;
}

namespace {

// The loaded linear a base weight name targets ("model.layers.3.self_attn.q_proj.weight", a
// mixture of experts' router or expert linear, or "lm_head.weight" when the head is not tied), or
// null.
std::unique_ptr<Linear>* linear_slot(LlamaWeights& w, const std::string& target) {
  static const std::regex kLayer(R"(model\.layers\.(\d{1,6})\.(self_attn|mlp)\.([a-z_]+)\.weight)");
  static const std::regex kMoe(R"(model\.layers\.(\d{1,6})\.(block_sparse_moe|mlp)\.(gate|experts\.(\d{1,5})\.([a-z0-9_]+))\.weight)");
  if (target == "lm_head.weight") return w.head_tied ? nullptr : &w.head;
  std::smatch m;
  std::unique_ptr<Linear>* slot = nullptr;
  if (std::regex_match(target, m, kMoe)) {
    const size_t l = std::stoul(m[1].str());
    if (l >= w.layers.size() || w.layers[l].experts.empty()) return nullptr;
    LayerWeights& L = w.layers[l];
    if (m[3].str() == "gate") return &L.router;
    const size_t e = std::stoul(m[4].str());
    if (e >= L.experts.size()) return nullptr;
    ExpertWeights& ex = L.experts[e];
    const std::string part = m[5].str();
    // Both namings: mixtral's w1 / w3 / w2 and qwen3_moe's gate_proj / up_proj / down_proj.
    slot = part == "w1" || part == "gate_proj"   ? &ex.gate
           : part == "w3" || part == "up_proj"   ? &ex.up
           : part == "w2" || part == "down_proj" ? &ex.down
                                                 : nullptr;
  } else if (std::regex_match(target, m, kLayer)) {
    const size_t l = std::stoul(m[1].str());
    if (l >= w.layers.size()) return nullptr;
    LayerWeights& L = w.layers[l];
    const std::string part = m[2].str() + "." + m[3].str();
    for (auto& [name, ptr] : {std::pair{"self_attn.q_proj", &L.q}, std::pair{"self_attn.k_proj", &L.k},
                              std::pair{"self_attn.v_proj", &L.v}, std::pair{"self_attn.o_proj", &L.o},
                              std::pair{"mlp.gate_proj", &L.gate}, std::pair{"mlp.up_proj", &L.up},
                              std::pair{"mlp.down_proj", &L.down}})
      if (part == name) slot = ptr;
  }
  return slot && *slot ? slot : nullptr;  // a MoE layer has no dense gate / up / down
}

}  // namespace

void merge_lora(LlamaWeights& w, const LoraAdapter& ad) {
  const std::string file = (ad.dir / "adapter_model.safetensors").string();
  // phi3's fused targets (qkv_proj, gate_up_proj) merge as their parts, each with its rows of B.
  std::vector<std::pair<std::string, LoraPair>> targets;
  for (const auto& [target, p] : ad.pairs) {
    const std::string key = target.substr(0, target.size() - std::string(".weight").size());
    const std::vector<std::string> parts = target.ends_with(".weight") ? fused_linear_parts(key) : std::vector<std::string>{};
    if (parts.empty()) {
      targets.emplace_back(target, p);
      continue;
    }
    std::vector<int64_t> rows;
    for (const std::string& part : parts)
      if (const std::unique_ptr<Linear>* slot = linear_slot(w, part + ".weight")) rows.push_back((*slot)->out_features());
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    if (rows.size() != parts.size() || p.b.rank() != 2 || p.b.dim(0) != total)
      throw Error(fmt::format("LoRA: lora_B {} does not fit the fused layer ({} rows)", shape_str(p.b.shape()), total),
                  ErrorContext{.file = file, .tensor = target});
    int64_t at = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      targets.emplace_back(parts[i] + ".weight", LoraPair{p.a, p.b.slice0(at, at + rows[i])});
      at += rows[i];
    }
  }
  for (const auto& [target, p] : targets) {
    std::unique_ptr<Linear>* slot = linear_slot(w, target);
    if (!slot)
      throw Error("the adapter targets a weight that is not a linear layer of this model (lm_head only when untied)",
                  ErrorContext{.file = file, .tensor = target});
    TensorView weight, bias;
    Tensor dequantized, dequantized_bias;  // an EXL2 layer's, for the merge (DenseLinear copies the bias)
    if (const auto* dense = dynamic_cast<const DenseLinear*>(slot->get())) {
      weight = dense->weight();
      bias = dense->bias().view();
    } else if (const auto* q = dynamic_cast<const Exl2Linear*>(slot->get())) {
      // An EXL2 layer runs dequantized to fp16 from here on (4x its memory and read time): the
      // merge needs a weight to add to. A lasting setup merges into the fp16 model and quantizes.
      const cpu::Exl2MatmulWeight& qw = q->matmul_weight();
      dequantized = Tensor(DType::F16, {qw.out, qw.in});
      cpu::exl2_dequantize(qw, dequantized.data<uint16_t>());
      weight = dequantized.view();
      if (qw.bias) {
        dequantized_bias = Tensor(DType::F16, {qw.out});
        std::copy(qw.bias, qw.bias + qw.out, dequantized_bias.data<uint16_t>());
        bias = dequantized_bias.view();
      }
    } else {
      throw Error("LoRA: the layer's weight is in no format the merge reads", ErrorContext{.file = file, .tensor = target});
    }
    w.owned.push_back(merge_lora(weight, p, ad.scale(p.a.dim(0)), target));
    *slot = std::make_unique<DenseLinear>(w.owned.back().view(), bias);
  }
}

std::vector<fs::path> merge_lora_folder(const fs::path& base_dir, const std::vector<LoraAdapter>& adapters,
                                        const fs::path& out_dir) {
  EXQ_CHECK(!adapters.empty(), "LoRA: no adapter to merge");
  const io::ModelConfig config = io::load_model_config(base_dir);
  if (!config.quantization_config.is_null())
    throw Error("the base model is quantized; merge the adapter into the fp16 / bf16 model, then quantize that",
                ErrorContext{.file = (base_dir / "config.json").string()});
  std::error_code ec;
  EXQ_CHECK(fs::weakly_canonical(base_dir, ec) != fs::weakly_canonical(out_dir, ec),
            "LoRA: the output folder is the base model's folder");
  const io::SafetensorsModel base = io::SafetensorsModel::open(base_dir);
  for (const LoraAdapter& ad : adapters)
    for (const auto& [target, p] : ad.pairs)
      if (!base.contains(target))
        throw Error(fmt::format("the adapter's {} has no weight {} in the base model", target, target),
                    ErrorContext{.file = (ad.dir / "adapter_model.safetensors").string(), .tensor = target});

  std::map<std::string, Tensor> merged;
  for (const LoraAdapter& ad : adapters) {
    for (const auto& [target, p] : ad.pairs) {
      auto it = merged.find(target);
      const TensorView w = it != merged.end() ? it->second.view() : base.get(target);
      Tensor m = merge_lora(w, p, ad.scale(p.a.dim(0)), target);
      merged[target] = std::move(m);
    }
  }
  std::vector<io::NamedTensor> tensors;
  size_t bytes = 0;
  for (const std::string& n : base.names()) {
    const auto it = merged.find(n);
    tensors.push_back({n, it != merged.end() ? it->second.view() : base.get(n)});
    bytes += tensors.back().tensor.nbytes();
  }
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create the output folder: " + ec.message(), ErrorContext{.file = out_dir.string()});
  constexpr size_t kShard = size_t{5} * 1000 * 1000 * 1000;  // transformers' default max_shard_size
  std::vector<fs::path> files =
      io::write_safetensors(out_dir / "model.safetensors", tensors, {{"format", "pt"}}, bytes > kShard ? kShard : 0);
  io::remove_stale_safetensors(out_dir / "model.safetensors", files);
  for (fs::path& f : io::copy_model_side_files(base_dir, out_dir)) files.push_back(std::move(f));
  return files;
}

}  // namespace exq::model
