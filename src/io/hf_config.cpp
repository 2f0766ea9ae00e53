#include "io/hf_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace exq::io {
namespace {

using nlohmann::json;

// Upper bounds keep every later product (vocab x hidden, layers x ...) far from overflow and
// reject garbage early; they are generous for any Llama-family model that exists.
constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kMaxIntermediate = 1 << 20;
constexpr int64_t kMaxLayers = 1 << 10;
constexpr int64_t kMaxExperts = 1 << 12;
constexpr int64_t kMaxHeads = 1 << 10;
constexpr int64_t kMaxHeadDim = 1 << 10;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

class Reader {
 public:
  Reader(const json& root, std::string file) : root_(root), file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(fmt::format("config field '{}': {}", field, what), ErrorContext{.file = file_});
  }

  // Null counts as absent, as in transformers' PretrainedConfig.
  const json* find(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }

  int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(field, fmt::format("expected an integer, got {}", brief(v)));
    int64_t x = 0;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(hi)) fail(field, fmt::format("{} is out of range [{}, {}]", u, lo, hi));
      x = static_cast<int64_t>(u);
    } else {
      x = v.get<int64_t>();
    }
    if (x < lo || x > hi) fail(field, fmt::format("{} is out of range [{}, {}]", x, lo, hi));
    return x;
  }

  int64_t req_int(const std::string& key, int64_t lo, int64_t hi) const {
    const json* v = find(root_, key);
    if (!v) fail(key, "missing");
    return integer(*v, key, lo, hi);
  }

  int64_t opt_int(const std::string& key, int64_t def, int64_t lo, int64_t hi) const {
    const json* v = find(root_, key);
    return v ? integer(*v, key, lo, hi) : def;
  }

  double number(const json& v, const std::string& field, double lo, double hi) const {
    if (!v.is_number()) fail(field, fmt::format("expected a number, got {}", brief(v)));
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < lo || x > hi)
      fail(field, fmt::format("{} is out of range [{}, {}]", x, lo, hi));
    return x;
  }

  double opt_num(const std::string& key, double def, double lo, double hi) const {
    const json* v = find(root_, key);
    return v ? number(*v, key, lo, hi) : def;
  }

  bool opt_bool(const std::string& key, bool def) const {
    const json* v = find(root_, key);
    if (!v) return def;
    if (!v->is_boolean()) fail(key, fmt::format("expected true or false, got {}", brief(*v)));
    return v->get<bool>();
  }

  std::string opt_str(const std::string& key, const std::string& def) const {
    const json* v = find(root_, key);
    if (!v) return def;
    if (!v->is_string()) fail(key, fmt::format("expected a string, got {}", brief(*v)));
    return v->get<std::string>();
  }

  const json& root() const { return root_; }

  static std::string brief(const json& v) {
    std::string s = v.dump(-1, ' ', true, json::error_handler_t::replace);
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return s;
  }

 private:
  const json& root_;
  std::string file_;
};

// `obj`: "rope_scaling", or transformers 5's "rope_parameters" (which also holds rope_theta and
// says rope_type "default" when there is no scaling).
RopeScaling read_rope_scaling(const Reader& r, const std::string& obj = "rope_scaling") {
  RopeScaling rs;
  const json* v = r.find(r.root(), obj);
  if (!v) return rs;
  if (!v->is_object()) r.fail(obj, fmt::format("expected an object or null, got {}", Reader::brief(*v)));
  // transformers accepts both spellings; rope_type is the current one.
  std::string key = obj + ".rope_type";
  const json* t = r.find(*v, "rope_type");
  if (!t) {
    t = r.find(*v, "type");
    if (t) key = obj + ".type";
  }
  if (!t && obj.starts_with("rope_parameters")) return rs;
  if (!t) r.fail(obj + ".rope_type", "missing");
  if (!t->is_string()) r.fail(key, fmt::format("expected a string, got {}", Reader::brief(*t)));
  const std::string type = t->get<std::string>();
  auto num = [&](const char* name, bool required, double def, double lo, double hi) {
    const json* f = r.find(*v, name);
    const std::string field = obj + "." + name;
    if (!f) {
      if (required) r.fail(field, "missing");
      return def;
    }
    return r.number(*f, field, lo, hi);
  };
  if (type == "default") return rs;
  if (type == "linear") {
    rs.type = RopeScalingType::Linear;
    rs.factor = num("factor", true, 1.0, 1e-3, 1e6);
    return rs;
  }
  if (type == "llama3") {
    rs.type = RopeScalingType::Llama3;
    rs.factor = num("factor", true, 1.0, 1e-3, 1e6);
    rs.low_freq_factor = num("low_freq_factor", true, 1.0, 1e-6, 1e6);
    rs.high_freq_factor = num("high_freq_factor", true, 4.0, 1e-6, 1e6);
    if (!(rs.high_freq_factor > rs.low_freq_factor))
      r.fail(obj + ".high_freq_factor",
             fmt::format("{} must exceed low_freq_factor {}", rs.high_freq_factor, rs.low_freq_factor));
    const json* o = r.find(*v, "original_max_position_embeddings");
    if (!o) r.fail(obj + ".original_max_position_embeddings", "missing");
    rs.original_max_position_embeddings =
        r.integer(*o, obj + ".original_max_position_embeddings", 1, kMaxPositions);
    return rs;
  }
  if (type == "yarn") {
    rs.type = RopeScalingType::Yarn;
    rs.factor = num("factor", true, 1.0, 1e-3, 1e6);
    // transformers reads `x.get(name) or default`: null and 0 mean the default.
    auto opt = [&](const char* name, double def, double hi) {
      const json* f = r.find(*v, name);
      if (!f || f->is_null()) return def;
      const double d = r.number(*f, obj + "." + name, 0.0, hi);
      return d == 0.0 ? def : d;
    };
    rs.beta_fast = opt("beta_fast", 32.0, 1e6);
    rs.beta_slow = opt("beta_slow", 1.0, 1e6);
    rs.mscale = opt("mscale", 0.0, 1e3);
    rs.mscale_all_dim = opt("mscale_all_dim", 0.0, 1e3);
    if (const json* a = r.find(*v, "attention_factor"); a && !a->is_null())
      rs.attention_factor = r.number(*a, obj + ".attention_factor", 1e-6, 1e3);
    if (const json* o = r.find(*v, "original_max_position_embeddings"); o && !o->is_null())
      rs.original_max_position_embeddings = r.integer(*o, obj + ".original_max_position_embeddings", 1, kMaxPositions);
    else
      rs.original_max_position_embeddings = 0;  // read_config sets max_position_embeddings
    if (const json* t2 = r.find(*v, "truncate"); t2 && !t2->is_null()) {
      if (!t2->is_boolean())
        r.fail(obj + ".truncate", fmt::format("expected true or false, got {}", Reader::brief(*t2)));
      rs.truncate = t2->get<bool>();
    }
    return rs;
  }
  if (type == "longrope" || type == "su") {  // "su": Phi-3's first name for it
    rs.type = RopeScalingType::LongRope;
    auto factors = [&](const char* name) {
      const std::string field = obj + "." + name;
      const json* f = r.find(*v, name);
      if (!f) r.fail(field, "missing");
      if (!f->is_array()) r.fail(field, fmt::format("expected a list of numbers, got {}", Reader::brief(*f)));
      std::vector<double> out;
      for (size_t i = 0; i < f->size(); ++i)
        out.push_back(r.number((*f)[i], fmt::format("{}[{}]", field, i), 1e-6, 1e6));
      return out;
    };
    rs.short_factor = factors("short_factor");
    rs.long_factor = factors("long_factor");
    rs.factor = num("factor", false, 0.0, 1e-3, 1e6);  // read_config derives it when absent
    if (const json* a = r.find(*v, "attention_factor"))
      rs.attention_factor = r.number(*a, obj + ".attention_factor", 1e-6, 1e3);
    if (const json* o = r.find(*v, "original_max_position_embeddings"))
      rs.original_max_position_embeddings = r.integer(*o, obj + ".original_max_position_embeddings", 1, kMaxPositions);
    else
      rs.original_max_position_embeddings = 0;
    return rs;
  }
  r.fail(key, fmt::format("unsupported rope scaling '{}' (supported: default, linear, llama3, yarn, longrope)", type));
}

// transformers' _compute_longrope_parameters: a top-level original_max_position_embeddings (as
// Phi-3 configs have) makes the factor max_position_embeddings / original.
void read_longrope(const Reader& r, ModelConfig& c) {
  RopeScaling& rs = c.rope_scaling;
  const std::string obj = r.find(r.root(), "rope_scaling") ? "rope_scaling" : "rope_parameters";
  if (const json* o = r.find(r.root(), "original_max_position_embeddings")) {
    rs.original_max_position_embeddings = r.integer(*o, "original_max_position_embeddings", 1, kMaxPositions);
    rs.factor = static_cast<double>(c.max_position_embeddings) / static_cast<double>(rs.original_max_position_embeddings);
  } else {
    if (rs.original_max_position_embeddings == 0) rs.original_max_position_embeddings = c.max_position_embeddings;
    if (rs.factor == 0.0) rs.factor = 1.0;
  }
  const size_t half = static_cast<size_t>(c.rope_dim() / 2);
  for (const auto& [name, f] : {std::pair{"short_factor", &rs.short_factor}, std::pair{"long_factor", &rs.long_factor}})
    if (f->size() != half)
      r.fail(obj + "." + name, fmt::format("{} values, {} rotary dimensions need {}", f->size(), c.rope_dim(), half));
}

// transformers: mistral and phi3 window every layer; qwen2 / qwen3 only with use_sliding_window
// and from layer max_window_layers on; transformers 5's layer_types names each layer's kind.
// gemma2 alternates sliding and full layers, gemma3 makes every sliding_window_pattern-th full.
void read_sliding_window(const Reader& r, ModelConfig& c) {
  if (c.model_type == "llama" || c.model_type == "gemma") return;
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3" || c.model_type == "qwen3_moe";
  if (qwen && !r.opt_bool("use_sliding_window", false)) return;
  const json* w = r.find(r.root(), "sliding_window");
  if (!w) return;
  const int64_t window = r.integer(*w, "sliding_window", 1, kMaxPositions);
  const auto layers = static_cast<size_t>(c.num_hidden_layers);
  c.layer_window.assign(layers, window);
  if (const json* t = r.find(r.root(), "layer_types")) {
    if (!t->is_array() || t->size() != layers)
      r.fail("layer_types", fmt::format("expected a list of {} layer kinds, got {}", layers, Reader::brief(*t)));
    for (size_t l = 0; l < layers; ++l) {
      const json& k = (*t)[l];
      const std::string kind = k.is_string() ? k.get<std::string>() : "";
      if (kind != "sliding_attention" && kind != "full_attention")
        r.fail(fmt::format("layer_types[{}]", l),
               fmt::format("expected \"sliding_attention\" or \"full_attention\", got {}", Reader::brief(k)));
      if (kind == "full_attention") c.layer_window[l] = 0;
    }
  } else if (qwen) {
    const int64_t from = r.opt_int("max_window_layers", c.num_hidden_layers, 0, kMaxLayers);
    for (size_t l = 0; l < layers && static_cast<int64_t>(l) < from; ++l) c.layer_window[l] = 0;
  } else if (c.model_type == "gemma2" || c.model_type == "gemma3_text") {
    const int64_t pattern = c.model_type == "gemma2" ? 2 : r.opt_int("sliding_window_pattern", 6, 1, kMaxLayers);
    for (size_t l = 0; l < layers; ++l)
      if ((static_cast<int64_t>(l) + 1) % pattern == 0) c.layer_window[l] = 0;
  }
  if (std::all_of(c.layer_window.begin(), c.layer_window.end(), [](int64_t x) { return x == 0; }))
    c.layer_window.clear();
}

// mixtral: every layer's MLP is num_local_experts experts of intermediate_size, the top-k weights
// renormalized. qwen3_moe: num_experts (transformers 5 writes num_local_experts) of
// moe_intermediate_size, on the layers l with (l + 1) % decoder_sparse_step == 0 that
// mlp_only_layers does not list; norm_topk_prob as given (transformers' default: false).
// granitemoe: every layer's MLP num_local_experts (GraniteMoeConfig's default 8) of
// intermediate_size, num_experts_per_tok (2) a token, weighted by the softmax of their router
// logits: the renormalized top k.
void read_experts(const Reader& r, ModelConfig& c) {
  if (c.model_type == "granitemoe") {
    c.num_experts = r.opt_int("num_local_experts", 8, 1, kMaxExperts);
    c.experts_per_token = r.opt_int("num_experts_per_tok", 2, 1, c.num_experts);
    c.expert_intermediate = c.intermediate_size;
    c.norm_topk_prob = true;
    c.layer_moe.assign(static_cast<size_t>(c.num_hidden_layers), 1);
    return;
  }
  const bool mixtral = c.model_type == "mixtral";
  const char* count = !mixtral && r.find(r.root(), "num_experts") ? "num_experts" : "num_local_experts";
  c.num_experts = r.req_int(count, 1, kMaxExperts);
  c.experts_per_token = r.req_int("num_experts_per_tok", 1, c.num_experts);
  c.expert_intermediate = mixtral ? c.intermediate_size : r.req_int("moe_intermediate_size", 1, kMaxIntermediate);
  c.norm_topk_prob = mixtral || r.opt_bool("norm_topk_prob", false);
  c.layer_moe.assign(static_cast<size_t>(c.num_hidden_layers), 1);
  if (mixtral) return;
  const int64_t step = r.opt_int("decoder_sparse_step", 1, 1, kMaxLayers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if ((l + 1) % step != 0) c.layer_moe[static_cast<size_t>(l)] = 0;
  if (const json* only = r.find(r.root(), "mlp_only_layers")) {
    if (!only->is_array()) r.fail("mlp_only_layers", fmt::format("expected a list of layers, got {}", Reader::brief(*only)));
    for (size_t i = 0; i < only->size(); ++i)
      c.layer_moe[static_cast<size_t>(r.integer((*only)[i], fmt::format("mlp_only_layers[{}]", i), 0,
                                                c.num_hidden_layers - 1))] = 0;
  }
}

// gemma2 / gemma3 read hidden_activation, gemma hidden_activation when set, else hidden_act (its
// legacy "gelu" meaning the tanh approximation, as transformers and llama.cpp run it); the
// others hidden_act.
Activation read_activation(const Reader& r, const std::string& type) {
  const bool gemma = type.starts_with("gemma");
  const json* ha = gemma ? r.find(r.root(), "hidden_activation") : nullptr;
  const std::string key = ha && !ha->is_null() ? "hidden_activation" : "hidden_act";
  const std::string act = r.opt_str(key, gemma ? "gelu_pytorch_tanh" : "silu");
  if (act == "silu" || act == "swish") return Activation::Silu;
  if (gemma && (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu")) return Activation::GeluTanh;
  r.fail(key, fmt::format("unsupported activation '{}' ({})", act,
                          gemma ? "silu, gelu_pytorch_tanh, gelu_new or gelu" : "only silu"));
}

// gemma2 / gemma3: null turns a softcap off.
double read_softcap(const Reader& r, const char* key, double def) {
  const auto it = r.root().find(key);
  if (it == r.root().end()) return def;
  if (it->is_null()) return 0.0;
  return r.number(*it, key, 1e-3, 1e6);
}

std::optional<DType> read_torch_dtype(const Reader& r) {
  // transformers 5 writes "dtype".
  const char* key = r.find(r.root(), "torch_dtype") ? "torch_dtype" : "dtype";
  const json* v = r.find(r.root(), key);
  if (!v) return std::nullopt;
  if (!v->is_string()) r.fail(key, fmt::format("expected a string, got {}", Reader::brief(*v)));
  const std::string s = v->get<std::string>();
  if (s == "float16" || s == "half") return DType::F16;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float32" || s == "float") return DType::F32;
  r.fail(key, fmt::format("unsupported dtype '{}' (float16, bfloat16 or float32)", s));
}

// granite's four scalars, GraniteConfig's defaults (1.0 each; an attention_multiplier of 1.0 is
// the scale, not head_dim^-0.5). Each must be a finite number > 0: a zero or negative one would
// erase or flip the stream rather than describe a model.
void read_granite_scalars(const Reader& r, ModelConfig& c) {
  const auto positive = [&](const char* key) {
    const json* v = r.find(r.root(), key);
    if (!v) return 1.0;
    if (!v->is_number()) r.fail(key, fmt::format("expected a number, got {}", Reader::brief(*v)));
    const double x = v->get<double>();
    if (!std::isfinite(x) || x <= 0.0 || x > 1e9)
      r.fail(key, fmt::format("{} must be a finite number > 0 (and at most 1e9)", x));
    return x;
  };
  c.embedding_multiplier = positive("embedding_multiplier");
  c.residual_multiplier = positive("residual_multiplier");
  c.logits_scaling = positive("logits_scaling");
  c.attention_multiplier = positive("attention_multiplier");
}

ModelConfig read_config(const json& given, const std::string& file) {
  if (!given.is_object()) Reader(given, file).fail("<root>", "expected a JSON object");
  const std::string wrapper = multimodal_wrapper(given);
  const json root = text_model_config(given);
  if (!wrapper.empty() && !root.is_object())
    Reader(given, file).fail("text_config", fmt::format("missing: a {} config holds its language model's there", wrapper));
  Reader r(root, file);
  ModelConfig c;
  c.language_model_of = wrapper;
  const json* mt = r.find(root, "model_type");
  if (!mt) r.fail("model_type", "missing");
  if (!mt->is_string()) r.fail("model_type", fmt::format("expected a string, got {}", Reader::brief(*mt)));
  c.model_type = mt->get<std::string>();
  const bool gemma = c.model_type.starts_with("gemma");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" && c.model_type != "qwen3" &&
      c.model_type != "phi3" && c.model_type != "gemma" && c.model_type != "gemma2" && c.model_type != "gemma3_text" &&
      c.model_type != "granite" && c.model_type != "granitemoe" && c.model_type != "mixtral" &&
      c.model_type != "qwen3_moe")
    r.fail(wrapper.empty() ? "model_type" : "text_config.model_type",
           fmt::format("unsupported model type '{}' (llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3, "
                       "gemma3_text, granite, granitemoe, mixtral, qwen3_moe, or mistral3 with a mistral or llama text model)",
                       c.model_type));
  c.activation = read_activation(r, c.model_type);

  c.hidden_size = r.req_int("hidden_size", 1, kMaxHidden);
  c.intermediate_size = r.req_int("intermediate_size", 1, kMaxIntermediate);
  c.num_hidden_layers = r.req_int("num_hidden_layers", 1, kMaxLayers);
  c.num_attention_heads = r.req_int("num_attention_heads", 1, kMaxHeads);
  c.num_key_value_heads = r.opt_int("num_key_value_heads", c.num_attention_heads, 1, kMaxHeads);
  c.vocab_size = r.req_int("vocab_size", 1, kMaxVocab);
  if (c.hidden_size % c.num_attention_heads != 0)
    r.fail("num_attention_heads", fmt::format("{} does not divide hidden_size {}",
                                              c.num_attention_heads, c.hidden_size));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads", fmt::format("{} does not divide num_attention_heads {}",
                                              c.num_key_value_heads, c.num_attention_heads));
  c.head_dim = r.opt_int("head_dim", c.hidden_size / c.num_attention_heads, 2, kMaxHeadDim);
  if (c.head_dim % 2 != 0) r.fail("head_dim", fmt::format("{} must be even for rotary embeddings", c.head_dim));
  // Phi-4-mini rotates 3/4 of each head (transformers: int(head_dim * factor) dimensions).
  const double prf = r.opt_num("partial_rotary_factor", 1.0, 1e-6, 1.0);
  c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * prf);
  if (c.rotary_dim < 2 || c.rotary_dim % 2 != 0)
    r.fail("partial_rotary_factor", fmt::format("{} of head_dim {} gives {} rotary dimensions, which must be even "
                                                "and at least 2", prf, c.head_dim, c.rotary_dim));

  const bool granite = c.model_type == "granite" || c.model_type == "granitemoe";
  const int64_t default_positions = c.model_type == "llama" || granite ? 2048
                                    : c.model_type == "mistral"     ? 131072
                                    : c.model_type == "mixtral"     ? 131072
                                    : c.model_type == "qwen3"       ? 40960
                                    : c.model_type == "phi3"        ? 4096
                                    : c.model_type == "gemma3_text" ? 131072
                                    : gemma                         ? 8192
                                                                    : 32768;
  c.max_position_embeddings = r.opt_int("max_position_embeddings", default_positions, 1, kMaxPositions);
  c.rms_norm_eps = r.opt_num("rms_norm_eps", 1e-6, 1e-12, 0.5);
  const json* rp = r.find(root, "rope_parameters");
  if (c.model_type == "gemma3_text" && (!rp || !r.find(*rp, "full_attention"))) {
    c.rope_local_theta = r.opt_num("rope_local_base_freq", 10000.0, 1.0, 1e12);
  }
  if (c.model_type == "gemma3_text" && rp && r.find(*rp, "full_attention")) {
    // transformers 5: {"sliding_attention": {...}, "full_attention": {...}}, theta in each.
    for (const char* kind : {"full_attention", "sliding_attention"}) {
      const std::string obj = std::string("rope_parameters.") + kind;
      const json sub = json{{obj, r.find(*rp, kind) ? (*rp)[kind] : json::object()}};
      const Reader sr(sub, file);
      const RopeScaling rs = read_rope_scaling(sr, obj);
      const json* t = sub[obj].is_object() ? sr.find(sub[obj], "rope_theta") : nullptr;
      const bool full = std::string(kind) == "full_attention";
      const double theta = t ? sr.number(*t, obj + ".rope_theta", 1.0, 1e12) : full ? 1e6 : 1e4;
      if (full) {
        c.rope_theta = theta;
        c.rope_scaling = rs;
      } else {
        if (rs.type != RopeScalingType::None)
          r.fail(obj + ".rope_type", "rotary scaling of the sliding-window layers is not supported");
        c.rope_local_theta = theta;
      }
    }
  } else if (c.model_type == "gemma3_text") {
    c.rope_theta = r.opt_num("rope_theta", 1e6, 1.0, 1e12);
    c.rope_scaling = read_rope_scaling(r, r.find(root, "rope_scaling") ? "rope_scaling" : "rope_parameters");
  } else if (rp && !r.find(root, "rope_scaling")) {
    const json* t = r.find(*rp, "rope_theta");
    c.rope_theta = t ? r.number(*t, "rope_parameters.rope_theta", 1.0, 1e12)
                     : r.opt_num("rope_theta", 10000.0, 1.0, 1e12);
    c.rope_scaling = read_rope_scaling(r, "rope_parameters");
  } else {
    c.rope_theta = r.opt_num("rope_theta", 10000.0, 1.0, 1e12);
    c.rope_scaling = read_rope_scaling(r);
  }

  if (c.rope_scaling.type == RopeScalingType::Yarn && c.rope_scaling.original_max_position_embeddings == 0)
    c.rope_scaling.original_max_position_embeddings = c.max_position_embeddings;
  if (c.rope_scaling.type == RopeScalingType::LongRope) read_longrope(r, c);

  if (c.model_type == "qwen2") {
    c.attention_qkv_bias = true;
  } else if (c.model_type == "qwen3" || c.model_type == "qwen3_moe") {
    c.attention_qkv_bias = c.attention_out_bias = r.opt_bool("attention_bias", false);
    c.qk_norm = true;
  } else if (c.model_type == "llama" || granite) {
    if (granite) read_granite_scalars(r, c);
    c.attention_qkv_bias = c.attention_out_bias = r.opt_bool("attention_bias", false);
    c.mlp_bias = r.opt_bool("mlp_bias", false);
  } else if (c.model_type == "phi3") {
    c.fused_projections = true;  // no biases in Phi3ForCausalLM
  } else if (gemma) {
    c.attention_qkv_bias = c.attention_out_bias = r.opt_bool("attention_bias", false);
    c.norm_plus_one = c.embed_scale = true;
    if (c.model_type != "gemma") {
      c.sandwich_norms = true;
      c.query_pre_attn_scalar = r.opt_num("query_pre_attn_scalar", 256.0, 1e-6, 1e9);
      c.final_softcap = read_softcap(r, "final_logit_softcapping", c.model_type == "gemma2" ? 30.0 : 0.0);
    }
    // transformers applies the attention softcap for gemma2 only (gemma3's field is unused).
    if (c.model_type == "gemma2") c.attn_softcap = read_softcap(r, "attn_logit_softcapping", 50.0);
    c.qk_norm = c.model_type == "gemma3_text";
    if (r.opt_bool("use_bidirectional_attention", false))
      r.fail("use_bidirectional_attention", "bidirectional attention (an embedding model) is not supported");
  }
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings", gemma);
  read_sliding_window(r, c);
  if (c.model_type == "mixtral" || c.model_type == "qwen3_moe" || c.model_type == "granitemoe") read_experts(r, c);

  if (const json* b = r.find(root, "bos_token_id"))
    c.bos_token_id = static_cast<int32_t>(r.integer(*b, "bos_token_id", 0, c.vocab_size - 1));
  if (const json* e = r.find(root, "eos_token_id")) {
    if (e->is_array()) {
      for (size_t i = 0; i < e->size(); ++i)
        c.eos_token_ids.push_back(static_cast<int32_t>(
            r.integer((*e)[i], fmt::format("eos_token_id[{}]", i), 0, c.vocab_size - 1)));
    } else {
      c.eos_token_ids.push_back(static_cast<int32_t>(r.integer(*e, "eos_token_id", 0, c.vocab_size - 1)));
    }
  }
  c.torch_dtype = read_torch_dtype(r);
  if (const json* q = r.find(root, "quantization_config")) {
    if (!q->is_object()) r.fail("quantization_config", fmt::format("expected an object, got {}", Reader::brief(*q)));
    c.quantization_config = *q;
  }
  return c;
}

}  // namespace

const char* rope_scaling_name(RopeScalingType type) {
  switch (type) {
    case RopeScalingType::None: return "none";
    case RopeScalingType::Linear: return "linear";
    case RopeScalingType::Llama3: return "llama3";
    case RopeScalingType::Yarn: return "yarn";
    case RopeScalingType::LongRope: return "longrope";
  }
  return "?";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Silu: return "silu";
    case Activation::GeluTanh: return "gelu_pytorch_tanh";
  }
  return "?";
}

double ModelConfig::attention_scale() const {
  if (attention_multiplier > 0.0) return attention_multiplier;
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0.0 ? query_pre_attn_scalar : static_cast<double>(head_dim));
}

int64_t ModelConfig::context_length() const {
  if (rope_scaling.type != RopeScalingType::Yarn) return max_position_embeddings;
  const double scaled = static_cast<double>(rope_scaling.original_max_position_embeddings) * rope_scaling.factor;
  return std::max(max_position_embeddings,
                  static_cast<int64_t>(std::min(std::floor(scaled), static_cast<double>(kMaxPositions))));
}

std::string multimodal_wrapper(const json& root) {
  if (!root.is_object()) return "";
  const auto t = root.find("model_type");
  if (t == root.end() || !t->is_string()) return "";
  const std::string type = t->get<std::string>();
  return type == "gemma3" || type == "mistral3" ? type : "";
}

json text_model_config(const json& root) {
  const std::string wrapper = multimodal_wrapper(root);
  if (wrapper.empty()) return root;
  const auto tc = root.find("text_config");
  if (tc == root.end() || !tc->is_object()) return json();
  json c = *tc;
  if (wrapper == "gemma3") {
    c["model_type"] = "gemma3_text";
    c["architectures"] = json::array({"Gemma3ForCausalLM"});
  } else {
    // Mistral3Config's text model is a MistralConfig unless its text_config names another type.
    if (!c.contains("model_type") || c["model_type"].is_null()) c["model_type"] = "mistral";
    if (c["model_type"] == "mistral") c["architectures"] = json::array({"MistralForCausalLM"});
    else if (c["model_type"] == "llama") c["architectures"] = json::array({"LlamaForCausalLM"});
  }
  // What the wrapper says for the whole model (generation ends, dtype, exl2's own entry).
  for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
                        "quantization_config"})
    if (root.contains(k) && !root[k].is_null()) c[k] = root[k];
  if (wrapper != "gemma3") return c;
  // Gemma3TextConfig's defaults, which the 4B-27B checkpoints' text_config leaves out.
  for (const auto& [k, v] : std::initializer_list<std::pair<const char*, json>>{
           {"vocab_size", 262208}, {"hidden_size", 2304}, {"intermediate_size", 9216},
           {"num_hidden_layers", 26}, {"num_attention_heads", 8}, {"num_key_value_heads", 4},
           {"head_dim", 256}, {"sliding_window", 4096}})
    if (!c.contains(k)) c[k] = v;
  return c;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& file) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("invalid JSON: {}", e.what()), ErrorContext{.file = file});
  }
  try {
    return read_config(root, file);
  } catch (const json::exception& e) {  // defensive: every access above is type-checked
    throw Error(fmt::format("invalid config: {}", e.what()), ErrorContext{.file = file});
  }
}

ModelConfig load_model_config(const std::filesystem::path& dir_or_config_json) {
  std::filesystem::path path = dir_or_config_json;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) path /= "config.json";
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open model config", ErrorContext{.file = path.string()});
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error("cannot read model config", ErrorContext{.file = path.string()});
  return parse_model_config(ss.str(), path.string());
}

}  // namespace exq::io
