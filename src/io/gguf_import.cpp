#include "io/gguf_import.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <optional>
#include <regex>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace exq::io {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

// Llama 3.1+ files: llama3 rope scaling as per-frequency divisors (config, not weights).
constexpr const char* kRopeFreqs = "rope_freqs.weight";

Error gguf_error(const GgufFile& g, const std::string& msg, const std::string& tensor = {}) {
  return Error(msg, ErrorContext{.file = g.path().string(), .tensor = tensor});
}

std::string arch_of(const GgufFile& g) {
  const std::string arch = g.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3" && arch != "qwen3moe" && arch != "granite" &&
      arch != "granitemoe")
    throw gguf_error(g, fmt::format("unsupported architecture '{}' (import-gguf handles llama, qwen2, qwen3, "
                                    "qwen3moe, granite and granitemoe)",
                                    arch));
  return arch;
}

// A mixture of experts' HF names: llama files with experts are Mixtral (block_sparse_moe,
// w1 / w3 / w2), qwen3moe files Qwen3-MoE (mlp, gate_proj / up_proj / down_proj). granitemoe's
// stacked experts are written fused as transformers stores them (gguf_to_hf_tensors).
struct MoeHfNames {
  const char* block;
  const char* gate;
  const char* up;
  const char* down;
};
MoeHfNames moe_hf_names(const std::string& arch) {
  if (arch == "qwen3moe") return {"mlp", "gate_proj", "up_proj", "down_proj"};
  return {"block_sparse_moe", "w1", "w3", "w2"};
}

// llama.cpp stores a layer's experts as one 3-D tensor [experts, rows, cols]; its HF name here
// holds "*" where each expert's number goes.
constexpr const char* kEachExpert = ".experts.*.";

// GGUF stores float32; HF configs carry the short decimal (1e-05, not 9.99999974738e-06).
double short_decimal(double v) { return std::stod(fmt::format("{}", static_cast<float>(v))); }

// llama's q/k rows (and biases) come interleaved per head ([H, D, 2] in GGUF: llama.cpp's
// converter permutes them for its rotary kernel); HF keeps the rotary halves contiguous
// ([H, 2, D]). qwen2 files keep HF's order.
void unpermute_rows(Tensor& t, int64_t heads, const GgufFile& g, const std::string& name) {
  if (t.shape().size() != 2 && t.shape().size() != 1)
    throw gguf_error(g, fmt::format("expected 1 or 2 dimensions, got {}", shape_str(t.shape())),
                     name);
  const int64_t rows = t.dim(0);
  if (rows == 0 || t.numel() == 0) return;
  if (heads <= 0 || rows % (2 * heads) != 0)
    throw gguf_error(
        g, fmt::format("{} rows do not split into {} heads of rotary pairs", rows, heads), name);
  const int64_t d = rows / heads / 2;
  const int64_t cols = t.numel() / rows;
  const size_t row_bytes = static_cast<size_t>(cols) * 2;
  Tensor out(DType::F16, t.shape());
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t k = 0; k < d; ++k) {
        const int64_t from = h * 2 * d + k * 2 + i;
        const int64_t to = h * 2 * d + i * d + k;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
  t = std::move(out);
}

// bos/eos/pad ids as HF names them (GGUF says padding_token_id).
void add_token_ids(const GgufFile& g, ordered_json& c) {
  for (const auto& [gguf_key, hf_key] :
       {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"},
        std::pair{"tokenizer.ggml.eos_token_id", "eos_token_id"},
        std::pair{"tokenizer.ggml.padding_token_id", "pad_token_id"}})
    if (g.find(gguf_key)) c[hf_key] = g.get_int(gguf_key);
}

}  // namespace

std::string gguf_to_hf_name(const std::string& n, const std::string& arch) {
  static const std::vector<std::pair<std::string, std::string>> kTop = {
      {"token_embd", "model.embed_tokens"}, {"output_norm", "model.norm"}, {"output", "lm_head"}};
  static const std::vector<std::pair<std::string, std::string>> kLayer = {
      {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},    {"attn_q_norm", "self_attn.q_norm"},
      {"attn_k_norm", "self_attn.k_norm"}};
  static const std::regex kBlk(R"(blk\.(\d{1,6})\.([a-z_]+)\.(weight|bias))");
  static const std::regex kTopRe(R"(([a-z_]+)\.(weight|bias))");
  // Experts: all of a layer's in one tensor (ffn_gate_exps), or one each (older Mixtral files).
  static const std::regex kExperts(R"(blk\.(\d{1,6})\.ffn_(gate|up|down)(_exps|\.(\d{1,5}))\.weight)");
  std::smatch m;
  const MoeHfNames moe = moe_hf_names(arch);
  if (std::regex_match(n, m, kExperts)) {
    const char* part = m[2] == "gate" ? moe.gate : m[2] == "up" ? moe.up : moe.down;
    const std::string expert = m[3] == "_exps" ? std::string(kEachExpert) : ".experts." + m[4].str() + ".";
    return fmt::format("model.layers.{}.{}{}{}.weight", std::stoi(m[1]), moe.block, expert, part);
  }
  if (std::regex_match(n, m, kBlk) && m[2] == "ffn_gate_inp" && m[3] == "weight")
    return fmt::format("model.layers.{}.{}.{}.weight", std::stoi(m[1]), moe.block,
                       arch == "granitemoe" ? "router.layer" : "gate");
  if (std::regex_match(n, m, kBlk)) {
    for (const auto& [from, to] : kLayer)
      if (m[2] == from)
        return fmt::format("model.layers.{}.{}.{}", std::stoi(m[1]), to, m[3].str());
  } else if (std::regex_match(n, m, kTopRe)) {
    for (const auto& [from, to] : kTop)
      if (m[1] == from) return to + "." + m[2].str();
  }
  throw Error("tensor not supported by import-gguf", ErrorContext{.tensor = n});
}

namespace {

// [experts, a rows, cols] and [experts, b rows, cols] -> [experts, a + b rows, cols] (F16).
Tensor stack_rows(const Tensor& a, const Tensor& b, const GgufFile& g, const std::string& name) {
  if (a.dim(0) != b.dim(0) || a.dim(2) != b.dim(2))
    throw gguf_error(g, fmt::format("the experts' gate {} and up {} do not stack", shape_str(a.shape()),
                                    shape_str(b.shape())), name);
  Tensor out(DType::F16, {a.dim(0), a.dim(1) + b.dim(1), a.dim(2)});
  const auto ab = static_cast<size_t>(a.dim(1) * a.dim(2)) * 2, bb = static_cast<size_t>(b.dim(1) * b.dim(2)) * 2;
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t e = 0; e < a.dim(0); ++e) {
    std::memcpy(dst, static_cast<const uint8_t*>(a.raw()) + static_cast<size_t>(e) * ab, ab);
    std::memcpy(dst + ab, static_cast<const uint8_t*>(b.raw()) + static_cast<size_t>(e) * bb, bb);
    dst += ab + bb;
  }
  return out;
}

}  // namespace

std::vector<HfTensor> gguf_to_hf_tensors(const GgufFile& g) {
  const std::string arch = arch_of(g);
  const int64_t heads = g.get_int(arch + ".attention.head_count");
  const int64_t kv_heads = g.get_int_or(arch + ".attention.head_count_kv", heads);
  std::vector<HfTensor> out;
  out.reserve(g.tensors().size());
  std::map<std::string, std::array<std::optional<Tensor>, 2>> gate_up;  // granitemoe: until both are read
  for (const GgufTensorInfo& info : g.tensors()) {
    if (info.name == kRopeFreqs) continue;  // config.json's rope_scaling
    std::string name;
    try {
      name = gguf_to_hf_name(info.name, arch);
    } catch (const Error& e) {
      throw e.with_file(g.path().string());
    }
    Tensor t = g.dequantize_f16(info);
    if (const size_t at = name.find(kEachExpert); at != std::string::npos) {
      if (t.shape().size() != 3)
        throw gguf_error(g, fmt::format("expected 3 dimensions (experts, rows, columns), got {}", shape_str(t.shape())),
                         info.name);
      if (arch == "granitemoe") {  // input_linear [experts, gate rows + up rows, hidden], output_linear
        const std::string block = name.substr(0, at), part = name.substr(at + std::strlen(kEachExpert));
        if (part == "w2.weight") {
          out.push_back({block + ".output_linear.weight", std::move(t)});
          continue;
        }
        auto& pair = gate_up[block];
        pair[part == "w1.weight" ? 0 : 1].emplace(std::move(t));
        if (pair[0] && pair[1]) {
          out.push_back({block + ".input_linear.weight", stack_rows(*pair[0], *pair[1], g, info.name)});
          gate_up.erase(block);
        }
        continue;
      }
      const auto bytes = static_cast<size_t>(t.dim(1) * t.dim(2)) * 2;
      for (int64_t e = 0; e < t.dim(0); ++e) {
        Tensor one(DType::F16, {t.dim(1), t.dim(2)});
        std::memcpy(one.raw(), static_cast<const uint8_t*>(t.raw()) + static_cast<size_t>(e) * bytes, bytes);
        out.push_back({name.substr(0, at) + fmt::format(".experts.{}.", e) + name.substr(at + std::strlen(kEachExpert)),
                       std::move(one)});
      }
      continue;
    }
    // granite: llama.cpp's converter permutes its q/k rows as llama's.
    const bool permuted = arch == "llama" || arch == "granite" || arch == "granitemoe";
    if (permuted && info.name.find(".attn_q.") != std::string::npos)
      unpermute_rows(t, heads, g, info.name);
    if (permuted && info.name.find(".attn_k.") != std::string::npos)
      unpermute_rows(t, kv_heads, g, info.name);
    out.push_back({std::move(name), std::move(t)});
  }
  if (!gate_up.empty())
    throw gguf_error(g, fmt::format("{}: the experts' {} without their {}", gate_up.begin()->first,
                                    gate_up.begin()->second[0] ? "ffn_gate_exps" : "ffn_up_exps",
                                    gate_up.begin()->second[0] ? "ffn_up_exps" : "ffn_gate_exps"));
  return out;
}

namespace {

// llama.cpp's rope.scaling.* keys as transformers' rope_scaling (null without scaling): linear
// (also the old rope.scale_linear) and yarn; other kinds are refused.
ordered_json rope_scaling_from_gguf(const GgufFile& g, const std::string& a) {
  std::string type = g.get_string_or(a + "rope.scaling.type", "none");
  const bool old_linear = type == "none" && g.find(a + "rope.scale_linear");
  if (old_linear) type = "linear";
  if (type == "none") return nullptr;
  if (type != "linear" && type != "yarn")
    throw gguf_error(g, fmt::format("rope scaling '{}' is not supported by import-gguf (linear or yarn)", type));
  const std::string factor_key = old_linear ? a + "rope.scale_linear" : a + "rope.scaling.factor";
  if (!g.find(factor_key)) throw gguf_error(g, fmt::format("rope scaling '{}' without {}", type, factor_key));
  const double factor = short_decimal(g.get_double(factor_key));
  if (!(factor > 0.0)) throw gguf_error(g, fmt::format("{} is {}, not a positive factor", factor_key, factor));
  ordered_json rs = {{"rope_type", type}, {"factor", factor}};
  if (type == "linear") return rs;
  if (g.find(a + "rope.scaling.original_context_length"))
    rs["original_max_position_embeddings"] = g.get_int(a + "rope.scaling.original_context_length");
  for (const auto& [key, field] : {std::pair{"yarn_beta_fast", "beta_fast"}, std::pair{"yarn_beta_slow", "beta_slow"},
                                   std::pair{"yarn_attn_factor", "attention_factor"}})
    if (g.find(a + "rope.scaling." + key)) rs[field] = short_decimal(g.get_double(a + "rope.scaling." + key));
  // llama.cpp's other yarn knobs change the formula itself (DeepSeek's log multiplier, a partial
  // extrapolation): refused rather than run differently.
  if (g.find(a + "rope.scaling.yarn_log_multiplier") && g.get_double(a + "rope.scaling.yarn_log_multiplier") != 0.0)
    throw gguf_error(g, "rope.scaling.yarn_log_multiplier is not supported by import-gguf");
  if (g.find(a + "rope.scaling.yarn_ext_factor") && g.get_double(a + "rope.scaling.yarn_ext_factor") != 1.0)
    throw gguf_error(g, "rope.scaling.yarn_ext_factor other than 1 is not supported by import-gguf");
  return rs;
}

// llama.cpp's converter writes a Llama 3.1+ model's llama3 rope scaling as rope_freqs.weight,
// the divisor of each frequency (1 for fast ones, factor for slow ones, a blend between), not as
// parameters. They are recovered with Meta's low / high frequency factors 1 and 4 (every Llama
// 3.x release) and must reproduce every divisor; null when the file has no such tensor.
ordered_json llama3_scaling_from_rope_freqs(const GgufFile& g, double theta, int64_t head_dim) {
  const GgufTensorInfo* info = g.find_tensor(kRopeFreqs);
  if (!info) return nullptr;
  if (info->type != 0 || info->numel() != head_dim / 2)
    throw gguf_error(g, fmt::format("expected {} float32 values (head_dim / 2), got {} of ggml type {}", head_dim / 2,
                                    info->numel(), ggml_type_name(info->type)),
                     kRopeFreqs);
  std::vector<float> div(static_cast<size_t>(head_dim / 2));
  std::memcpy(div.data(), info->data, div.size() * sizeof(float));
  const double factor = *std::max_element(div.begin(), div.end());
  if (!(factor >= 1.0) || !std::isfinite(factor))
    throw gguf_error(g, fmt::format("the largest divisor is {}, not a factor >= 1", factor), kRopeFreqs);
  if (factor == 1.0) return nullptr;
  constexpr double kLow = 1.0, kHigh = 4.0;
  std::vector<double> wavelen(div.size());
  for (size_t i = 0; i < div.size(); ++i) {  // the converter's float32 frequencies
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    wavelen[i] = 2.0 * std::numbers::pi / (1.0f / static_cast<float>(std::pow(theta, static_cast<double>(e))));
  }
  // A blended divisor d gives s = (1/d - 1/factor) / (1 - 1/factor) = (old / wavelen - low) / (high - low).
  int64_t old_len = 8192;
  for (size_t i = 0; i < div.size(); ++i) {
    if (div[i] > 1.0f && div[i] < static_cast<float>(factor)) {
      const double s = (1.0 / div[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
      old_len = std::llround(wavelen[i] * (s * (kHigh - kLow) + kLow));
      break;
    }
  }
  const double low_wl = static_cast<double>(old_len) / kLow, high_wl = static_cast<double>(old_len) / kHigh;
  for (size_t i = 0; i < div.size(); ++i) {
    double want = 1.0;
    if (wavelen[i] > low_wl) {
      want = factor;
    } else if (wavelen[i] >= high_wl) {
      const double s = (static_cast<double>(old_len) / wavelen[i] - kLow) / (kHigh - kLow);
      want = 1.0 / ((1.0 - s) / factor + s);
    }
    if (std::fabs(div[i] - want) > 1e-4 * want)
      throw gguf_error(g,
                       fmt::format("divisor {} is {}, but llama3 scaling x{} from {} tokens (low / high frequency "
                                   "factors 1 / 4) gives {}: not a rope scaling import-gguf can express",
                                   i, div[i], factor, old_len, want),
                       kRopeFreqs);
  }
  return {{"rope_type", "llama3"},
          {"factor", short_decimal(factor)},
          {"low_freq_factor", kLow},
          {"high_freq_factor", kHigh},
          {"original_max_position_embeddings", old_len}};
}

// expert_count experts, expert_used_count a token, their weights renormalized (llama.cpp does for
// Mixtral and Qwen3-MoE). Mixtral's intermediate_size is each expert's; qwen3moe's experts have
// expert_feed_forward_length, and a layer without a router (ffn_gate_inp) is a dense MLP.
void add_experts(const GgufFile& g, const std::string& a, int64_t experts, ordered_json& c) {
  if (!g.find(a + "expert_used_count")) throw gguf_error(g, fmt::format("experts without {}expert_used_count", a));
  c["num_experts_per_tok"] = g.get_int(a + "expert_used_count");
  if (a == "llama." || a == "granitemoe.") {
    c["num_local_experts"] = experts;
    if (a == "llama.") c["sliding_window"] = nullptr;
    return;
  }
  c["num_experts"] = experts;
  c["moe_intermediate_size"] = g.get_int(a + "expert_feed_forward_length");
  c["norm_topk_prob"] = true;
  c["decoder_sparse_step"] = 1;
  ordered_json dense = ordered_json::array();
  for (int64_t l = 0; l < g.get_int(a + "block_count"); ++l)
    if (!g.find_tensor(fmt::format("blk.{}.ffn_gate_inp.weight", l))) dense.push_back(l);
  c["mlp_only_layers"] = dense;
}

// granite's four scalars under transformers' names. llama.cpp requires the embedding, residual
// and logit scales, and takes a missing (or zero) attention.scale as head_dim^-0.5, where
// transformers' default would be 1.0, so that one is always written.
void add_granite_scalars(const GgufFile& g, const std::string& a, int64_t head_dim, ordered_json& c) {
  for (const auto& [key, field] : {std::pair{"embedding_scale", "embedding_multiplier"},
                                   std::pair{"residual_scale", "residual_multiplier"},
                                   std::pair{"logit_scale", "logits_scaling"}}) {
    if (!g.find(a + key)) throw gguf_error(g, fmt::format("granite needs {}{}", a, key));
    c[field] = short_decimal(g.get_double(a + key));
  }
  const double scale = g.find(a + "attention.scale") ? g.get_double(a + "attention.scale") : 0.0;
  c["attention_multiplier"] = scale != 0.0 ? short_decimal(scale) : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

}  // namespace

ordered_json hf_config_from_gguf(const GgufFile& g) {
  const std::string a = arch_of(g) + ".";
  const int64_t hidden = g.get_int(a + "embedding_length");
  const int64_t heads = g.get_int(a + "attention.head_count");
  if (heads <= 0 || hidden % heads != 0)
    throw gguf_error(
        g, fmt::format("embedding_length {} is not divisible by head_count {}", hidden, heads));
  int64_t vocab = 0;
  if (g.find(a + "vocab_size")) {
    vocab = g.get_int(a + "vocab_size");
  } else if (const GgufValue* toks = g.find("tokenizer.ggml.tokens")) {
    vocab = static_cast<int64_t>(toks->size());
  } else {
    const GgufTensorInfo& emb = g.tensor("token_embd.weight");
    vocab = emb.dims.size() == 2 ? emb.dims[1] : 0;
  }
  const bool qwen2 = a == "qwen2.", qwen3 = a == "qwen3." || a == "qwen3moe.";
  const int64_t experts = g.get_int_or(a + "expert_count", 0);
  if (a == "qwen3moe." && experts <= 0) throw gguf_error(g, "qwen3moe needs qwen3moe.expert_count");
  const bool granite = a == "granite." || a == "granitemoe.";
  if (a == "granite." && experts > 0) throw gguf_error(g, "granite with experts: its architecture must be granitemoe");
  if (a == "granitemoe." && experts <= 0) throw gguf_error(g, "granitemoe needs granitemoe.expert_count");
  const bool qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  if (qwen2 && !qkv_bias)
    throw gguf_error(g, "qwen2 needs q/k/v biases (blk.0.attn_q.bias is missing)");
  if (qwen3 && g.find_tensor("blk.0.attn_q_norm.weight") == nullptr)
    throw gguf_error(g, "qwen3 needs q/k norms (blk.0.attn_q_norm.weight is missing)");
  ordered_json c;
  const char* type = qwen2     ? "qwen2"
                     : qwen3   ? (experts > 0 ? "qwen3_moe" : "qwen3")
                     : granite ? (experts > 0 ? "granitemoe" : "granite")
                               : (experts > 0 ? "mixtral" : "llama");
  static const std::map<std::string, const char*> kArchitecture = {
      {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}, {"qwen3_moe", "Qwen3MoeForCausalLM"},
      {"mixtral", "MixtralForCausalLM"}, {"llama", "LlamaForCausalLM"}, {"granite", "GraniteForCausalLM"},
      {"granitemoe", "GraniteMoeForCausalLM"}};
  c["architectures"] = {kArchitecture.at(type)};
  c["model_type"] = type;
  c["hidden_size"] = hidden;
  c["intermediate_size"] = g.get_int(a + "feed_forward_length");
  c["num_hidden_layers"] = g.get_int(a + "block_count");
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = g.get_int_or(a + "attention.head_count_kv", heads);
  c["head_dim"] = g.get_int_or(a + "attention.key_length", hidden / heads);
  c["hidden_act"] = "silu";
  c["rms_norm_eps"] = short_decimal(g.get_double(a + "attention.layer_norm_rms_epsilon"));
  c["rope_theta"] =
      g.find(a + "rope.freq_base") ? short_decimal(g.get_double(a + "rope.freq_base")) : 10000.0;
  c["rope_scaling"] = rope_scaling_from_gguf(g, a);
  if (ordered_json l3 = llama3_scaling_from_rope_freqs(g, c["rope_theta"].get<double>(), c["head_dim"].get<int64_t>());
      !l3.is_null()) {
    if (!c["rope_scaling"].is_null())
      throw gguf_error(g, fmt::format("both {} and {}rope.scaling.type", kRopeFreqs, a));
    c["rope_scaling"] = std::move(l3);
  }
  c["max_position_embeddings"] = g.get_int(a + "context_length");
  c["vocab_size"] = vocab;
  c["tie_word_embeddings"] = g.find_tensor("output.weight") == nullptr;
  if (experts > 0) add_experts(g, a, experts, c);
  if (qwen2) {
    c["use_sliding_window"] = false;  // llama.cpp runs qwen2 with full attention too
  } else if (qwen3) {
    c["attention_bias"] = qkv_bias;
    c["use_sliding_window"] = false;
  } else if (experts == 0) {
    c["attention_bias"] = qkv_bias;
    c["mlp_bias"] = false;
  } else if (granite) {
    c["attention_bias"] = qkv_bias;
  }
  if (granite) add_granite_scalars(g, a, c["head_dim"].get<int64_t>(), c);
  add_token_ids(g, c);
  c["torch_dtype"] = "float16";
  return c;
}

ordered_json hf_generation_config_from_gguf(const GgufFile& g) {
  ordered_json c = ordered_json::object();
  add_token_ids(g, c);
  return c;
}

ordered_json gguf_summary(const GgufFile& g) {
  ordered_json s;
  s["path"] = g.path().string();
  s["format"] = fmt::format("GGUF v{}", g.version());
  s["architecture"] = g.get_string_or("general.architecture", "");
  s["name"] = g.get_string_or("general.name", "");
  ordered_json problems = ordered_json::array();
  try {
    const ordered_json c = hf_config_from_gguf(g);
    for (const char* key : {"model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
                            "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
                            "max_position_embeddings", "tie_word_embeddings", "rope_scaling"})
      s["config"][key] = c[key];
    for (const char* key : {"num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size"})
      if (c.contains(key)) s["config"][key] = c[key];
  } catch (const Error& e) {
    problems.push_back(e.message());
  }
  s["tokenizer"] = {{"model", g.get_string_or("tokenizer.ggml.model", "")},
                    {"pre", g.get_string_or("tokenizer.ggml.pre", "")}};
  try {
    (void)hf_tokenizer_from_gguf(g);
  } catch (const Error& e) {
    problems.push_back(e.message());
  }
  std::map<std::string, int64_t> types, unsupported;
  int64_t values = 0, bytes = 0, unknown_names = 0;
  std::string first_unknown;
  for (const GgufTensorInfo& t : g.tensors()) {
    const std::string type = ggml_type_name(t.type);
    ++types[type];
    if (!gguf_dequant_supported(t.type)) ++unsupported[type];
    values += t.numel();
    bytes += static_cast<int64_t>(t.nbytes);
    try {
      if (t.name != kRopeFreqs) (void)gguf_to_hf_name(t.name, s["architecture"].get<std::string>());
    } catch (const Error&) {
      if (unknown_names++ == 0) first_unknown = t.name;
    }
  }
  for (const auto& [type, n] : unsupported)
    problems.push_back(fmt::format("{} tensor(s) of type {}, which import-gguf does not read", n, type));
  if (unknown_names > 0)
    problems.push_back(fmt::format("{} tensor(s) import-gguf does not know, first '{}'",
                                   unknown_names, first_unknown));
  s["tensors"] = g.tensors().size();
  s["types"] = types;
  s["values"] = values;
  s["bytes"] = bytes;
  s["bits_per_value"] = values > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(values) : 0.0;
  s["importable"] = problems.empty();
  s["problems"] = problems;
  return s;
}

std::vector<fs::path> import_gguf(const fs::path& gguf_path, const fs::path& out_dir) {
  const GgufFile g = GgufFile::open(gguf_path);
  // Build every JSON first: an unsupported tokenizer or config fails before any large write.
  const ordered_json config = hf_config_from_gguf(g);
  const ordered_json gen = hf_generation_config_from_gguf(g);
  const ordered_json tok = hf_tokenizer_from_gguf(g);
  const ordered_json tok_config = hf_tokenizer_config_from_gguf(g);
  const ordered_json special = hf_special_tokens_map_from_gguf(g);
  const std::vector<HfTensor> tensors = gguf_to_hf_tensors(g);

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec || !fs::is_directory(out_dir))
    throw Error(fmt::format("cannot create output folder: {}", ec ? ec.message() : "not a folder"),
                ErrorContext{.file = out_dir.string()});
  std::vector<NamedTensor> named;
  named.reserve(tensors.size());
  for (const HfTensor& t : tensors) named.push_back({t.name, t.tensor.view()});
  std::vector<fs::path> written =
      write_safetensors(out_dir / "model.safetensors", named, {{"format", "pt"}});
  auto write_json = [&](const char* name, const ordered_json& j) {
    std::string text;
    try {
      text = j.dump(2) + "\n";
    } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in a GGUF string
      throw Error(fmt::format("cannot write {}: {}", name, e.what()),
                  ErrorContext{.file = gguf_path.string()});
    }
    write_file_atomic(out_dir / name, text);
    written.push_back(out_dir / name);
  };
  write_json("config.json", config);
  write_json("generation_config.json", gen);
  write_json("tokenizer.json", tok);
  write_json("tokenizer_config.json", tok_config);
  write_json("special_tokens_map.json", special);
  return written;
}

}  // namespace exq::io
