// `exq info MODEL [--json]`: what a model folder holds — architecture, sizes, parameter count,
// tensor dtypes and bytes, rope settings and quantization (for EXL2, bits per weight of every
// linear) — after validating config.json and, for unquantized and EXL2 models, that every Llama
// tensor is present with the shape the config implies (EXL2 layers: io::validate_exl2).
// MODEL may also be a .gguf file: its sizes, tensor types and whether import-gguf takes it.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "io/gguf_import.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/kv_quant.h"
#include "model/lora.h"
#include "model/rope.h"
#include "model/linear_bits.h"
#include "model/llama_weights.h"
#include "runtime/embedding.h"

namespace exq::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct ExpectedTensor {
  std::string name;
  Shape shape;
};

// Every tensor of an unquantized Llama-family checkpoint, with its HF shape; `fused`: phi3's
// qkv_proj and gate_up_proj instead of their parts.
std::vector<ExpectedTensor> llama_tensors(const io::ModelConfig& c, bool fused) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  std::vector<ExpectedTensor> t = {{"model.embed_tokens.weight", {c.vocab_size, h}},
                                   {"model.norm.weight", {h}}};
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    t.push_back({p + "input_layernorm.weight", {h}});
    t.push_back({p + "post_attention_layernorm.weight", {h}});
    if (fused) {
      t.push_back({p + "self_attn.qkv_proj.weight", {q + 2 * kv, h}});
    } else {
      t.push_back({p + "self_attn.q_proj.weight", {q, h}});
      t.push_back({p + "self_attn.k_proj.weight", {kv, h}});
      t.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (c.attention_qkv_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {q}});
      t.push_back({p + "self_attn.k_proj.bias", {kv}});
      t.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.attention_out_bias) t.push_back({p + "self_attn.o_proj.bias", {h}});
    if (c.moe_layer(l)) {
      const model::MoeNames mn = model::moe_names(c);
      const int64_t ei = c.expert_intermediate;
      t.push_back({model::router_key(c, l) + ".weight", {c.num_experts, h}});
      for (int64_t e = 0; e < c.num_experts; ++e) {
        t.push_back({model::expert_key(c, l, e, mn.gate) + ".weight", {ei, h}});
        t.push_back({model::expert_key(c, l, e, mn.up) + ".weight", {ei, h}});
        t.push_back({model::expert_key(c, l, e, mn.down) + ".weight", {h, ei}});
      }
      continue;
    }
    if (fused) {
      t.push_back({p + "mlp.gate_up_proj.weight", {2 * inter, h}});
    } else {
      t.push_back({p + "mlp.gate_proj.weight", {inter, h}});
      t.push_back({p + "mlp.up_proj.weight", {inter, h}});
    }
    t.push_back({p + "mlp.down_proj.weight", {h, inter}});
    if (c.mlp_bias) {
      t.push_back({p + "mlp.gate_proj.bias", {inter}});
      t.push_back({p + "mlp.up_proj.bias", {inter}});
      t.push_back({p + "mlp.down_proj.bias", {h}});
    }
  }
  return t;
}

json rope_json(const io::ModelConfig& c) {
  const io::RopeScaling& rs = c.rope_scaling;
  json r = {{"theta", c.rope_theta}, {"rotary_dim", c.rope_dim()}};
  if (c.rope_local_theta > 0.0) r["local_theta"] = c.rope_local_theta;  // gemma3's sliding layers
  switch (rs.type) {
    case io::RopeScalingType::None: r["scaling"] = "none"; break;
    case io::RopeScalingType::Linear:
      r["scaling"] = {{"type", "linear"}, {"factor", rs.factor}};
      break;
    case io::RopeScalingType::Llama3:
      r["scaling"] = {{"type", "llama3"},
                      {"factor", rs.factor},
                      {"low_freq_factor", rs.low_freq_factor},
                      {"high_freq_factor", rs.high_freq_factor},
                      {"original_max_position_embeddings", rs.original_max_position_embeddings}};
      break;
    case io::RopeScalingType::Yarn:
      r["scaling"] = {{"type", "yarn"},
                      {"factor", rs.factor},
                      {"original_max_position_embeddings", rs.original_max_position_embeddings},
                      {"beta_fast", rs.beta_fast},
                      {"beta_slow", rs.beta_slow},
                      {"truncate", rs.truncate},
                      {"attention_factor", model::rope_attention_factor(c)}};
      break;
    case io::RopeScalingType::LongRope:
      r["scaling"] = {{"type", "longrope"},
                      {"factor", rs.factor},
                      {"original_max_position_embeddings", rs.original_max_position_embeddings},
                      {"attention_factor", model::rope_attention_factor(c)}};
      break;
  }
  return r;
}

// null without sliding-window attention, else each layer's window (0: full attention).
json sliding_json(const io::ModelConfig& c) {
  if (c.layer_window.empty()) return nullptr;
  return c.layer_window;
}

json quantization_json(const io::ModelConfig& c, const fs::path& config_path) {
  const json& q = c.quantization_config;
  if (q.is_null()) return {{"method", "none"}};
  const std::string method = q.value("quant_method", std::string("unknown"));
  json out = {{"method", method}};
  if (method == "exl2") {
    auto num = [&](const char* key) -> json {
      auto it = q.find(key);
      if (it == q.end() || it->is_null()) return nullptr;
      if (!it->is_number())
        throw Error(fmt::format("quantization_config.{}: expected a number, got {}", key, it->dump()),
                    ErrorContext{.file = config_path.string()});
      return *it;
    };
    out["bits"] = num("bits");
    out["head_bits"] = num("head_bits");
    if (auto v = q.find("version"); v != q.end() && v->is_string()) out["version"] = *v;
  }
  return out;
}

json bits_json(const model::Exl2Bits& b) {
  return {{"bpw", b.bpw()}, {"weights", b.weights}, {"total_bits", b.total_bits}};
}

json linear_json(const model::LinearBits& l) {
  json j = bits_json(l.bits);
  j["format"] = l.format;
  if (l.format == "exl2") j["groups"] = l.groups;
  if (l.format == "tied") j = {{"format", "tied"}};
  return j;
}

// Per-layer bits per weight of an EXL2 folder (validating every EXL2 layer on the way).
void add_exl2_bits(json& quant, const io::ModelConfig& c, const io::SafetensorsModel& st, const fs::path& dir) {
  const model::ModelBits m = model::linear_bits(c, st, dir);
  json layers = json::array();
  for (size_t l = 0; l < m.layers.size(); ++l) {
    json linears = json::object();
    for (const auto& lin : m.layers[l].linears) linears[lin.name] = linear_json(lin);
    layers.push_back({{"layer", l}, {"bpw", m.layers[l].total.bpw()}, {"linears", linears}});
  }
  quant["decoder_bpw"] = m.decoder.bpw();
  quant["layers"] = layers;
  quant["head"] = linear_json(m.head);
}

std::string quantization_text(const json& q) {
  if (q["method"] == "none") return "none";
  std::string s = q["method"].get<std::string>();
  if (q.contains("bits") && !q["bits"].is_null()) s += fmt::format(", {} bits", q["bits"].get<double>());
  if (q.contains("head_bits") && !q["head_bits"].is_null())
    s += fmt::format(", head {} bits", q["head_bits"].get<double>());
  return s;
}

// A sentence-transformers folder's pooling (what exq embed and serve --embeddings use by
// default), or null.
json embedding_json(const fs::path& dir) {
  const auto o = runtime::sentence_transformers_options(dir);
  if (!o) return nullptr;
  return {{"pooling", runtime::pooling_name(o->pooling)}, {"normalize", o->normalize}};
}

json build_info(const fs::path& dir) {
  require_model_dir(dir);
  const io::ModelConfig c = io::load_model_config(dir);
  const fs::path config_path = dir / "config.json";
  json raw;
  {
    std::ifstream f(config_path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    raw = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  }
  const io::SafetensorsModel st = io::SafetensorsModel::open(dir);
  const json quant = quantization_json(c, config_path);
  const bool quantized = quant["method"] != "none";

  std::map<std::string, int64_t> dtype_counts;
  int64_t tensor_elems = 0, bytes = 0, count = 0, expert_bytes = 0;
  for (const auto& name : st.names()) {
    const TensorView v = st.get(name);
    dtype_counts[std::string(dtype_name(v.dtype()))]++;
    tensor_elems += v.numel();
    bytes += static_cast<int64_t>(v.nbytes());
    if (name.find(".experts.") != std::string::npos) expert_bytes += static_cast<int64_t>(v.nbytes());
    ++count;
  }

  // Unquantized: the checkpoint must match the config; quantized tensors are packed, so
  // their parameter count comes from the shapes the config implies.
  // EXL2: linear layers are checked by add_exl2_bits, everything else as for unquantized.
  const bool exl2 = quant["method"] == "exl2";
  json quant_out = quant;
  if (exl2) add_exl2_bits(quant_out, c, st, dir);
  int64_t params = 0;
  const bool fused = c.fused_projections && st.contains("model.layers.0.self_attn.qkv_proj.weight");
  for (const auto& t : llama_tensors(c, fused)) {
    params += shape_numel(t.shape);
    const bool linear = t.name.find("_proj.") != std::string::npos || t.name.rfind("lm_head.", 0) == 0 ||
                        t.name.find(".experts.") != std::string::npos;
    if (quantized && (!exl2 || linear)) continue;
    if (!st.contains(t.name))
      throw Error("missing tensor (required by config.json)",
                  ErrorContext{.file = dir.string(), .tensor = t.name});
    const TensorView v = st.get(t.name);
    if (v.shape() != t.shape)
      throw Error(fmt::format("shape {} does not match config.json (expected {})", shape_str(v.shape()),
                              shape_str(t.shape)),
                  ErrorContext{.file = st.file_of(t.name).string(), .tensor = t.name});
  }
  if (!quantized) params = tensor_elems;
  // A token runs experts_per_token of each MoE layer's experts.
  json experts = nullptr;
  if (c.num_experts > 0) {
    const int64_t per_expert = 3 * c.hidden_size * c.expert_intermediate;
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.moe_layer(l) ? 1 : 0;
    experts = {{"count", c.num_experts},
               {"per_token", c.experts_per_token},
               {"intermediate_size", c.expert_intermediate},
               {"norm_topk_prob", c.norm_topk_prob},
               {"layers", moe_layers},
               {"active_parameters", params - moe_layers * (c.num_experts - c.experts_per_token) * per_expert},
               {"bytes", expert_bytes}};
  }

  json architectures = json::array();
  if (raw.is_object() && raw.contains("architectures") && raw["architectures"].is_array())
    architectures = raw["architectures"];
  return {
      {"path", dir.string()},
      {"model_type", c.model_type},
      {"architectures", architectures},
      {"language_model_of", c.language_model_of.empty() ? json(nullptr) : json(c.language_model_of)},
      {"layers", c.num_hidden_layers},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"heads", c.num_attention_heads},
      {"kv_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"context_length", c.context_length()},
      {"kv_cache_bytes_per_token",
       {{"f16", model::kv_cache_bytes_per_token(c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                                model::KvQuant::kNone)},
        {"q8_0", model::kv_cache_bytes_per_token(c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                                 model::KvQuant::kQ8)},
        {"q4", model::kv_cache_bytes_per_token(c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                               model::KvQuant::kQ4)}}},
      {"rms_norm_eps", c.rms_norm_eps},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"torch_dtype", c.torch_dtype ? json(std::string(dtype_name(*c.torch_dtype))) : json(nullptr)},
      {"rope", rope_json(c)},
      {"sliding_window", sliding_json(c)},
      {"activation", io::activation_name(c.activation)},
      {"attention_scale", c.attention_scale()},
      {"attn_logit_softcapping", c.attn_softcap > 0.0 ? json(c.attn_softcap) : json(nullptr)},
      {"final_logit_softcapping", c.final_softcap > 0.0 ? json(c.final_softcap) : json(nullptr)},
      {"granite", !c.model_type.starts_with("granite") ? json(nullptr)
                                            : json{{"embedding_multiplier", c.embedding_multiplier},
                                                   {"attention_multiplier", c.attention_scale()},
                                                   {"residual_multiplier", c.residual_multiplier},
                                                   {"logits_scaling", c.logits_scaling}}},
      {"parameters", params},
      {"experts", experts},
      {"tensors", count},
      {"dtypes", dtype_counts},
      {"bytes", bytes},
      {"files", st.files().size()},
      {"quantization", quant_out},
      {"embedding", embedding_json(dir)},
  };
}

void print_layer_bits(const json& q) {
  if (!q.contains("layers")) return;
  const json& head = q["head"];
  fmt::print("bits/weight:   {:.3f} decoder average; head {}\n", q["decoder_bpw"].get<double>(),
             head["format"] == "tied" ? std::string("tied to the embedding")
                                      : fmt::format("{:.3f} ({})", head["bpw"].get<double>(),
                                                    head["format"].get<std::string>()));
  static const char* const kOrder[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
  std::string header = "  layer";
  for (const std::string name : kOrder) header += fmt::format(" {:>9}", name.substr(name.find('.') + 1));
  fmt::print("{}   average\n", header);
  for (const json& layer : q["layers"]) {
    std::string row = fmt::format("  {:>5}", layer["layer"].get<int64_t>());
    for (const std::string name : kOrder) {
      // A mixture of experts' layer: its experts' gate / up / down in those columns.
      const std::string role = name.starts_with("mlp.") ? "experts." + name.substr(4, name.size() - 9) : "";
      const json& lin = layer["linears"].contains(name) ? layer["linears"][name] : layer["linears"][role];
      row += fmt::format(" {:>9.3f}", lin["bpw"].get<double>());
    }
    fmt::print("{} {:>9.3f}\n", row, layer["bpw"].get<double>());
  }
}

// "F16 3, F32 2" from a {name: count} object.
template <typename Json>
std::string joined_counts(const Json& counts) {
  std::string out;
  for (const auto& [name, n] : counts.items())
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", name, n.template get<int64_t>());
  return out;
}

// The model's sizes, one layout for folders and GGUF files.
struct Sizes {
  int64_t layers, hidden, intermediate, heads, kv_heads, head_dim, vocab, context;
};

void print_sizes(const Sizes& z) {
  fmt::print("layers:        {}\n", z.layers);
  fmt::print("hidden:        {} (intermediate {})\n", z.hidden, z.intermediate);
  fmt::print("heads:         {} (kv heads {}, head dim {})\n", z.heads, z.kv_heads, z.head_dim);
  fmt::print("vocab:         {}\n", z.vocab);
  fmt::print("context:       {}\n", z.context);
  // What --ctx-size costs in memory, per cache type (--cache-type).
  const int64_t f16 = model::kv_cache_bytes_per_token(z.layers, z.kv_heads, z.head_dim, model::KvQuant::kNone);
  const int64_t q8 = model::kv_cache_bytes_per_token(z.layers, z.kv_heads, z.head_dim, model::KvQuant::kQ8);
  const int64_t q4 = model::kv_cache_bytes_per_token(z.layers, z.kv_heads, z.head_dim, model::KvQuant::kQ4);
  const auto kib = [](int64_t b) { return static_cast<double>(b) / 1024.0; };
  const auto mib = [&](int64_t b) { return static_cast<double>(b * z.context) / (1 << 20); };
  if (q8 > 0)
    fmt::print("kv cache:      {:.1f} KiB a token in f16, {:.1f} KiB in q8_0, {:.1f} KiB in q4 ({} tokens: {:.1f} / "
               "{:.1f} / {:.1f} MiB; the CPU keeps f32)\n",
               kib(f16), kib(q8), kib(q4), z.context, mib(f16), mib(q8), mib(q4));
  else
    fmt::print("kv cache:      {:.1f} KiB a token in f16 ({} tokens: {:.1f} MiB; the CPU keeps f32; q8_0 and q4 need "
               "a head dim that is a multiple of 32)\n",
               kib(f16), z.context, mib(f16));
}

void print_info(const json& j) {
  std::string arch = j["model_type"].get<std::string>();
  if (!j["architectures"].empty()) arch += fmt::format(" ({})", j["architectures"][0].get<std::string>());
  if (!j["language_model_of"].is_null())  // a multimodal checkpoint
    arch = fmt::format("{}, the language model of a {} checkpoint (its vision tower is not used)", arch,
                       j["language_model_of"].get<std::string>());
  const std::string dtypes = joined_counts(j["dtypes"]);
  std::string rope = fmt::format("theta {}", j["rope"]["theta"].get<double>());
  if (const int64_t rot = j["rope"]["rotary_dim"].get<int64_t>(); rot != j["head_dim"].get<int64_t>())
    rope += fmt::format(" over {} of each head's {} dims", rot, j["head_dim"].get<int64_t>());
  const json& sc = j["rope"]["scaling"];
  rope += sc.is_string() ? ", no scaling"
                         : fmt::format(", {} scaling x{}", sc["type"].get<std::string>(), sc["factor"].get<double>());
  if (sc.is_object() && sc["type"] == "longrope")
    rope += fmt::format(" (attention factor {:.4f}; short factors up to a context of {}, long ones above): context {}",
                        sc["attention_factor"].get<double>(), sc["original_max_position_embeddings"].get<int64_t>(),
                        j["context_length"].get<int64_t>());
  if (j["rope"].contains("local_theta"))
    rope += fmt::format("; sliding-window layers theta {}, no scaling", j["rope"]["local_theta"].get<double>());
  if (sc.is_object() && sc["type"] == "yarn")
    rope += fmt::format(" (original context {}, attention factor {:.4f}): context {}",
                        sc["original_max_position_embeddings"].get<int64_t>(), sc["attention_factor"].get<double>(),
                        j["context_length"].get<int64_t>());
  const int64_t params = j["parameters"].get<int64_t>();
  const int64_t bytes = j["bytes"].get<int64_t>();
  fmt::print("model:         {}\n", j["path"].get<std::string>());
  fmt::print("architecture:  {}\n", arch);
  print_sizes({j["layers"].get<int64_t>(), j["hidden_size"].get<int64_t>(),
               j["intermediate_size"].get<int64_t>(), j["heads"].get<int64_t>(),
               j["kv_heads"].get<int64_t>(), j["head_dim"].get<int64_t>(),
               j["vocab_size"].get<int64_t>(), j["context_length"].get<int64_t>()});
  fmt::print("parameters:    {} ({:.1f}M)\n", group_digits(params), static_cast<double>(params) / 1e6);
  if (const json& e = j["experts"]; e.is_object())
    fmt::print("experts:       {} a layer on {} of {} layers, {} a token{} (intermediate {}); {} ({:.1f}M) "
               "parameters active a token\n",
               e["count"].get<int64_t>(), e["layers"].get<int64_t>(), j["layers"].get<int64_t>(),
               e["per_token"].get<int64_t>(), e["norm_topk_prob"].get<bool>() ? ", weights renormalized" : "",
               e["intermediate_size"].get<int64_t>(), group_digits(e["active_parameters"].get<int64_t>()),
               static_cast<double>(e["active_parameters"].get<int64_t>()) / 1e6);
  if (const json& e = j["experts"]; e.is_object())
    fmt::print("expert bytes:  {} ({:.1f} MiB, {:.0f} % of the model): in host memory with --cpu-moe\n",
               group_digits(e["bytes"].get<int64_t>()), static_cast<double>(e["bytes"].get<int64_t>()) / (1 << 20),
               bytes > 0 ? 100.0 * static_cast<double>(e["bytes"].get<int64_t>()) / static_cast<double>(bytes) : 0.0);
  fmt::print("tensors:       {} ({}) in {} file(s)\n", j["tensors"].get<int64_t>(), dtypes,
             j["files"].get<int64_t>());
  fmt::print("bytes:         {} ({:.1f} MiB)\n", group_digits(bytes), static_cast<double>(bytes) / (1 << 20));
  fmt::print("tied head:     {}\n", j["tie_word_embeddings"].get<bool>() ? "yes" : "no");
  fmt::print("rope:          {}\n", rope);
  if (const json& sw = j["sliding_window"]; sw.is_array()) {
    int64_t windowed = 0, window = 0;
    for (const json& w : sw)
      if (w.get<int64_t>() > 0) {
        ++windowed;
        window = std::max(window, w.get<int64_t>());
      }
    fmt::print("attention:     sliding window of {} keys on {} of {} layers\n", window, windowed, sw.size());
  }
  // gemma: GeGLU, a scale apart from 1/sqrt(head_dim), softcaps.
  if (j["activation"] != "silu") fmt::print("mlp:           {} (GeGLU)\n", j["activation"].get<std::string>());
  const double head_scale = 1.0 / std::sqrt(static_cast<double>(j["head_dim"].get<int64_t>()));
  const json& granite = j["granite"];
  if (std::fabs(j["attention_scale"].get<double>() - head_scale) > 1e-12 * head_scale)
    fmt::print("scores:        scaled by {:.6g} ({})\n", j["attention_scale"].get<double>(),
               granite.is_null() ? "query_pre_attn_scalar" : "attention_multiplier");
  if (!granite.is_null())
    fmt::print("multipliers:   embedding x {:.6g}, sublayer outputs x {:.6g} before the residual add, "
               "logits / {:.6g}\n",
               granite["embedding_multiplier"].get<double>(), granite["residual_multiplier"].get<double>(),
               granite["logits_scaling"].get<double>());
  if (!j["attn_logit_softcapping"].is_null())
    fmt::print("softcap:       attention scores at {}\n", j["attn_logit_softcapping"].get<double>());
  if (!j["final_logit_softcapping"].is_null())
    fmt::print("softcap:       logits at {}\n", j["final_logit_softcapping"].get<double>());
  fmt::print("norm eps:      {}\n", j["rms_norm_eps"].get<double>());
  fmt::print("quantization:  {}\n", quantization_text(j["quantization"]));
  print_layer_bits(j["quantization"]);
  if (!j["embedding"].is_null())
    fmt::print("embeddings:    {} pooling{} (sentence-transformers' files: exq embed's default)\n",
               j["embedding"]["pooling"].get<std::string>(), j["embedding"]["normalize"].get<bool>() ? ", normalized" : "");
}

// A PEFT LoRA adapter folder: its rank, alpha, scale, targets and size.
json lora_info(const fs::path& dir) {
  const model::LoraAdapter a = model::load_lora(dir);
  std::set<int64_t> ranks;
  std::map<std::string, int64_t> modules;  // "self_attn.q_proj" -> layers
  int64_t params = 0, bytes = 0;
  for (const auto& [target, p] : a.pairs) {
    ranks.insert(p.a.dim(0));
    static const std::regex kLayer(R"(model\.layers\.\d+\.(.+)\.weight)");
    std::smatch m;
    ++modules[std::regex_match(target, m, kLayer) ? m[1].str() : target];
    params += p.a.numel() + p.b.numel();
    bytes += static_cast<int64_t>(p.a.nbytes() + p.b.nbytes());
  }
  const int64_t r = *ranks.begin();
  return {{"path", dir.string()},
          {"kind", "lora"},
          {"ranks", ranks},
          {"lora_alpha", a.alpha},
          {"use_rslora", a.rslora},
          {"scale", a.scale(r)},
          {"weights", a.pairs.size()},
          {"modules", modules},
          {"parameters", params},
          {"bytes", bytes}};
}

void print_lora_info(const json& j) {
  std::string mods;
  for (const auto& [name, n] : j["modules"].items())
    mods += fmt::format("{}{} x{}", mods.empty() ? "" : ", ", name, n.get<int64_t>());
  std::string ranks;
  for (const auto& r : j["ranks"]) ranks += fmt::format("{}{}", ranks.empty() ? "" : ", ", r.get<int64_t>());
  fmt::print("lora adapter:  {}\n", j["path"].get<std::string>());
  fmt::print("rank:          {} (lora_alpha {}, scale {:.4g}{})\n", ranks, j["lora_alpha"].get<double>(),
             j["scale"].get<double>(), j["use_rslora"].get<bool>() ? ", rslora" : "");
  fmt::print("weights:       {} ({})\n", j["weights"].get<int64_t>(), mods);
  fmt::print("parameters:    {} ({:.1f} MiB)\n", group_digits(j["parameters"].get<int64_t>()),
             static_cast<double>(j["bytes"].get<int64_t>()) / (1 << 20));
}

void print_gguf_info(const nlohmann::ordered_json& j) {
  const std::string types = joined_counts(j["types"]);
  const int64_t bytes = j["bytes"].get<int64_t>();
  std::string arch = j["architecture"].get<std::string>();
  if (!j["name"].get<std::string>().empty()) arch += fmt::format(" ({})", j["name"].get<std::string>());
  fmt::print("model:         {}\n", j["path"].get<std::string>());
  fmt::print("format:        {}\n", j["format"].get<std::string>());
  fmt::print("architecture:  {}\n", arch);
  if (j.contains("config")) {
    const auto& c = j["config"];
    print_sizes({c["num_hidden_layers"].get<int64_t>(), c["hidden_size"].get<int64_t>(),
                 c["intermediate_size"].get<int64_t>(), c["num_attention_heads"].get<int64_t>(),
                 c["num_key_value_heads"].get<int64_t>(), c["head_dim"].get<int64_t>(),
                 c["vocab_size"].get<int64_t>(), c["max_position_embeddings"].get<int64_t>()});
    if (c.contains("num_experts_per_tok"))
      fmt::print("experts:       {} a layer, {} a token ({})\n",
                 (c.contains("num_experts") ? c["num_experts"] : c["num_local_experts"]).get<int64_t>(),
                 c["num_experts_per_tok"].get<int64_t>(), c["model_type"].get<std::string>());
  }
  fmt::print("tensors:       {} ({})\n", j["tensors"].get<int64_t>(), types);
  fmt::print("bytes:         {} ({:.1f} MiB, {:.2f} bits per value)\n", group_digits(bytes),
             static_cast<double>(bytes) / (1 << 20), j["bits_per_value"].get<double>());
  fmt::print("tokenizer:     {} / {}\n", j["tokenizer"]["model"].get<std::string>(),
             j["tokenizer"]["pre"].get<std::string>());
  if (j["importable"].get<bool>()) {
    fmt::print("import-gguf:   yes\n");
  } else {
    fmt::print("import-gguf:   no\n");
    for (const auto& p : j["problems"]) fmt::print("  - {}\n", p.get<std::string>());
  }
}

}  // namespace

void add_info(CLI::App& app) {
  struct Args {
    std::string model;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "info", "Show a model folder's architecture, sizes, dtypes and quantization, or what a GGUF holds");
  cmd->add_option("model", args->model,
                  "model folder (config.json + *.safetensors), .gguf file or LoRA adapter folder, "
                  "required");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([args] {
    if (args->model.empty()) throw Error("info needs a model folder: exq info MODEL");
    if (fs::is_regular_file(args->model)) {
      const nlohmann::ordered_json info = io::gguf_summary(io::GgufFile::open(args->model));
      if (args->json) {
        fmt::print("{}\n", info.dump(2));
      } else {
        print_gguf_info(info);
      }
      return;
    }
    std::error_code ec;
    if (!fs::exists(fs::path(args->model) / "config.json", ec) &&
        fs::exists(fs::path(args->model) / "adapter_config.json", ec)) {
      const json info = lora_info(args->model);
      if (args->json) fmt::print("{}\n", info.dump(2));
      else print_lora_info(info);
      return;
    }
    const json info = build_info(args->model);
    if (args->json) {
      fmt::print("{}\n", info.dump(2));
    } else {
      print_info(info);
    }
  });
}

}  // namespace exq::cli
