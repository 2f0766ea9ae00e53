#include "model/llama_weights.h"

#include <fmt/format.h>

#include <cmath>

#include "core/half.h"

#include "io/exl2.h"
#include "model/exl2_linear.h"

namespace exq::model {

const FusedLinear kFusedLinears[2] = {{"self_attn.qkv_proj", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
                                      {"mlp.gate_up_proj", {"mlp.gate_proj", "mlp.up_proj"}}};

std::vector<std::string> fused_linear_parts(const std::string& key) {
  for (const FusedLinear& f : kFusedLinears) {
    const std::string suffix = std::string(".") + f.fused;
    if (!key.ends_with(suffix)) continue;
    const std::string layer = key.substr(0, key.size() - suffix.size() + 1);
    std::vector<std::string> parts;
    for (const char* part : f.parts) parts.push_back(layer + part);
    return parts;
  }
  return {};
}

NormNames norm_names(const io::ModelConfig& c) {
  if (c.sandwich_norms)
    return {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"};
  return {"input_layernorm", nullptr, "post_attention_layernorm", nullptr};
}

MoeNames moe_names(const io::ModelConfig& c) {
  // granitemoe: its fused experts as io::SafetensorsModel presents them.
  if (c.model_type == "mixtral" || c.model_type == "granitemoe") return {"block_sparse_moe", "w1", "w3", "w2"};
  return {"mlp", "gate_proj", "up_proj", "down_proj"};
}

std::string router_key(const io::ModelConfig& c, int64_t layer) {
  return fmt::format("model.layers.{}.{}.gate", layer, moe_names(c).block);
}

std::string expert_key(const io::ModelConfig& c, int64_t layer, int64_t expert, const char* part) {
  return fmt::format("model.layers.{}.{}.experts.{}.{}", layer, moe_names(c).block, expert, part);
}

Tensor norm_weight(const io::ModelConfig& c, const TensorView& stored) {
  Tensor w = to_f32(stored);
  if (c.norm_plus_one)
    for (float& x : w.span<float>()) x += 1.0f;  // transformers: 1.0 + weight.float()
  return w;
}

float embedding_scale(const io::ModelConfig& c, DType table) {
  if (!c.embed_scale) return static_cast<float>(c.embedding_multiplier);
  // The dtype transformers loads the model in: config.json's, which an EXL2 folder keeps while
  // its embedding is stored as fp16.
  if (c.torch_dtype) table = *c.torch_dtype;
  const auto s = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
  if (table == DType::F16) return half_to_float(float_to_half(s));
  if (table == DType::BF16) return bf16_to_float(float_to_bf16(s));
  return s;
}

namespace {

// Index of the first NaN/Inf or -1. 16-bit floats are tested on their bits (all-ones
// exponent), which avoids converting the whole checkpoint to float32 at load.
int64_t first_non_finite(const TensorView& t) {
  if (t.dtype() == DType::F16 || t.dtype() == DType::BF16) {
    const uint16_t mask = t.dtype() == DType::F16 ? 0x7c00 : 0x7f80;
    const auto v = t.span<uint16_t>();
    for (size_t i = 0; i < v.size(); ++i)
      if ((v[i] & mask) == mask) return static_cast<int64_t>(i);
    return -1;
  }
  int64_t index = -1;
  return has_non_finite(t, &index) ? index : -1;
}

class Loader {
 public:
  Loader(const io::SafetensorsModel& files, std::filesystem::path dir, const io::ModelConfig& config)
      : files_(files), dir_(std::move(dir)), config_(config) {}

  // The named tensor, checked for existence, shape, a float dtype and finite values.
  TensorView get(const std::string& name, const Shape& shape) const {
    if (!files_.contains(name)) fail(name, "missing tensor");
    const TensorView t = files_.get(name);
    if (t.shape() != shape)
      fail(name, fmt::format("expected shape {}, got {}", shape_str(shape), shape_str(t.shape())));
    if (t.dtype() != DType::F32 && t.dtype() != DType::F16 && t.dtype() != DType::BF16)
      fail(name, fmt::format("expected F32, F16 or BF16, got {}", dtype_name(t.dtype())));
    if (const int64_t bad = first_non_finite(t); bad >= 0)
      fail(name, fmt::format("non-finite value (NaN or Inf) at element {}", bad));
    return t;
  }

  Tensor norm(const std::string& name, int64_t n) const { return norm_weight(config_, get(name, {n})); }

  // KEY.q_weight makes an EXL2 layer, KEY.qweight is GPTQ (rejected), else KEY.weight.
  std::unique_ptr<Linear> linear(const std::string& prefix, int64_t out, int64_t in, bool bias) const {
    if (files_.contains(prefix + ".qweight"))
      fail_in_file(prefix + ".qweight",
                   "GPTQ format is not supported (exq runs EXL2 and unquantized layers)");
    if (io::has_exl2(files_, prefix)) return exl2(prefix, out, in, bias);
    const TensorView w = get(prefix + ".weight", {out, in});
    const TensorView b = bias ? get(prefix + ".bias", {out}) : TensorView();
    return std::make_unique<DenseLinear>(w, b);
  }

  bool contains(const std::string& name) const { return files_.contains(name); }

  // phi3's fused KEY.weight [sum(rows), in]: a zero-copy view of each part's rows. Without it,
  // the parts' own names (split checkpoints, EXL2 folders of exllamav2 or exq).
  std::vector<std::unique_ptr<Linear>> fused(const std::string& layer, const FusedLinear& f,
                                             const std::vector<int64_t>& rows, int64_t in) const {
    std::vector<std::unique_ptr<Linear>> out;
    const std::string key = layer + f.fused;
    if (io::has_exl2(files_, key) || files_.contains(key + ".qweight"))
      fail_in_file(key + ".q_weight", fmt::format("a quantized fused layer is not supported (EXL2 stores {} as "
                                                  "separate layers)", f.fused));
    if (!files_.contains(key + ".weight")) {
      for (size_t i = 0; i < rows.size(); ++i) out.push_back(linear(layer + f.parts[i], rows[i], in, false));
      return out;
    }
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    const TensorView w = get(key + ".weight", {total, in});
    int64_t at = 0;
    for (int64_t r : rows) {
      out.push_back(std::make_unique<DenseLinear>(w.slice0(at, at + r), TensorView()));
      at += r;
    }
    return out;
  }

  // Packed tensors used in place; errors name the tensor and the file holding KEY.q_weight.
  std::unique_ptr<Linear> exl2(const std::string& prefix, int64_t out, int64_t in, bool bias) const {
    const std::string file = files_.file_of(prefix + ".q_weight").string();
    for (const char* suffix : io::kExl2Suffixes)
      if (!files_.contains(prefix + suffix))
        fail_in_file(prefix + suffix, fmt::format("missing tensor of the EXL2 layer {} (its q_weight is in "
                                                  "this file)", prefix));
    if (bias && !files_.contains(prefix + ".bias")) fail(prefix + ".bias", "missing tensor");
    try {
      io::Exl2Tensors t = io::exl2_tensors(files_, prefix);
      if (!bias) t.bias = TensorView();  // as for dense layers, a bias the config does not use is ignored
      return std::make_unique<Exl2Linear>(t, in, out, prefix);
    } catch (const Error& e) {
      throw e.with_file(file);
    }
  }

  [[noreturn]] void fail_in_file(const std::string& tensor, const std::string& message) const {
    const std::string q = tensor.substr(0, tensor.rfind('.')) + ".q_weight";
    const std::string file = files_.contains(tensor) ? files_.file_of(tensor).string()
                             : files_.contains(q)    ? files_.file_of(q).string()
                                                     : dir_.string();
    throw Error(message, ErrorContext{.file = file, .tensor = tensor});
  }

  [[noreturn]] void fail(const std::string& tensor, const std::string& message) const {
    throw Error(message, ErrorContext{.file = dir_.string(), .tensor = tensor});
  }

 private:
  const io::SafetensorsModel& files_;
  std::filesystem::path dir_;
  const io::ModelConfig& config_;
};

// Unquantized or EXL2 (whose layers may also be plain); other methods need kernels exq lacks.
void check_quantization(const io::ModelConfig& c, const std::filesystem::path& dir) {
  const nlohmann::json& q = c.quantization_config;
  if (q.is_null()) return;
  const auto it = q.find("quant_method");
  const std::string method = it != q.end() && it->is_string() ? it->get<std::string>() : "";
  if (method == "exl2") return;
  const std::string path = (dir / "config.json").string();
  if (method == "gptq")
    throw Error("quantization_config.quant_method \"gptq\": GPTQ format is not supported",
                ErrorContext{.file = path});
  throw Error(fmt::format("quantization_config.quant_method {}: not supported (exq runs EXL2 and "
                          "unquantized models)",
                          it == q.end() ? std::string("is missing") : it->dump()),
              ErrorContext{.file = path});
}

}  // namespace

LlamaWeights load_llama_weights(const io::ModelConfig& c, const std::filesystem::path& dir) {
  LlamaWeights w;
  check_quantization(c, dir);
  w.files = io::SafetensorsModel::open(dir);
  const Loader ld(w.files, dir, c);
  const NormNames nn = norm_names(c);
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  w.embed = ld.get("model.embed_tokens.weight", {c.vocab_size, hidden});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights L;
    L.attn_norm = ld.norm(p + nn.attn + ".weight", hidden);
    if (c.fused_projections) {
      auto qkv = ld.fused(p, kFusedLinears[0], {c.q_dim(), c.kv_dim(), c.kv_dim()}, hidden);
      L.q = std::move(qkv[0]);
      L.k = std::move(qkv[1]);
      L.v = std::move(qkv[2]);
    } else {
      L.q = ld.linear(p + "self_attn.q_proj", c.q_dim(), hidden, c.attention_qkv_bias);
      L.k = ld.linear(p + "self_attn.k_proj", c.kv_dim(), hidden, c.attention_qkv_bias);
      L.v = ld.linear(p + "self_attn.v_proj", c.kv_dim(), hidden, c.attention_qkv_bias);
    }
    L.o = ld.linear(p + "self_attn.o_proj", hidden, c.q_dim(), c.attention_out_bias);
    if (c.qk_norm) {
      L.q_norm = ld.norm(p + "self_attn.q_norm.weight", c.head_dim);
      L.k_norm = ld.norm(p + "self_attn.k_norm.weight", c.head_dim);
    }
    L.ffn_norm = ld.norm(p + nn.ffn + ".weight", hidden);
    if (nn.post_attn) {
      L.post_attn_norm = ld.norm(p + nn.post_attn + ".weight", hidden);
      L.post_ffn_norm = ld.norm(p + nn.post_ffn + ".weight", hidden);
    }
    if (c.moe_layer(l)) {
      const MoeNames mn = moe_names(c);
      const int64_t ei = c.expert_intermediate;
      if (io::has_exl2(w.files, router_key(c, l)))
        ld.fail_in_file(router_key(c, l) + ".q_weight", "a quantized expert router is not supported (EXL2 keeps it fp16)");
      L.router = ld.linear(router_key(c, l), c.num_experts, hidden, false);
      for (int64_t e = 0; e < c.num_experts; ++e) {
        ExpertWeights ew;
        ew.gate = ld.linear(expert_key(c, l, e, mn.gate), ei, hidden, false);
        ew.up = ld.linear(expert_key(c, l, e, mn.up), ei, hidden, false);
        ew.down = ld.linear(expert_key(c, l, e, mn.down), hidden, ei, false);
        L.experts.push_back(std::move(ew));
      }
      w.layers.push_back(std::move(L));
      continue;
    }
    if (c.fused_projections) {
      auto gate_up = ld.fused(p, kFusedLinears[1], {inter, inter}, hidden);
      L.gate = std::move(gate_up[0]);
      L.up = std::move(gate_up[1]);
    } else {
      L.gate = ld.linear(p + "mlp.gate_proj", inter, hidden, c.mlp_bias);
      L.up = ld.linear(p + "mlp.up_proj", inter, hidden, c.mlp_bias);
    }
    L.down = ld.linear(p + "mlp.down_proj", hidden, inter, c.mlp_bias);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = ld.norm("model.norm.weight", hidden);
  // transformers ties the head to the embedding when the config says so; a checkpoint
  // without lm_head.weight can only mean the same.
  // A quantized head is used even when the config ties it: the converter chose to store it.
  w.head_tied = !ld.contains("lm_head.q_weight") && !ld.contains("lm_head.qweight") &&
                (c.tie_word_embeddings || !ld.contains("lm_head.weight"));
  if (w.head_tied) w.head = std::make_unique<DenseLinear>(w.embed);
  else w.head = ld.linear("lm_head", c.vocab_size, hidden, false);
  return w;
}

}  // namespace exq::model
