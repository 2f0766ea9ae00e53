// make_random_model: writes a Hugging Face Llama folder with random fp16 weights of any shape
// (config.json, safetensors shards of at most --shard-gb each plus the index when there are
// several, tokenizer files copied from --tokenizer-from), for conversion benchmarks of model
// sizes we do not have weights for (e.g. an 8B shape). Weights are ~N(0, std) with a few input
// channels per linear scaled up (outliers, as real checkpoints have), so quantization error and
// option choices look realistic; norms are ~1. Streaming: one 64 MB chunk in memory at a time.
// Deterministic: the same arguments give the same bytes whatever the thread count.
//
// An 8B-shaped model with SmolLM2's tokenizer:
//   make_random_model --out DIR --tokenizer-from ~/.cache/exq/dev-smollm2-f16
//     --hidden 4096 --inter 14336 --heads 32 --kv-heads 8 --layers 32 --vocab 49152
// Mixtral-8x7B-shaped (4 layers): --hidden 4096 --inter 14336 --heads 32 --kv-heads 8 --layers 4
//     --vocab 32000 --moe 8,2
// Qwen3-30B-A3B-shaped (4 layers): --hidden 2048 --inter 6144 --heads 32 --kv-heads 4 --head-dim 128
//     --layers 4 --vocab 151936 --moe 128,8 --moe-inter 768
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

struct Args {
  fs::path out, tokenizer_from;
  int64_t hidden = 576, inter = 1536, heads = 9, kv_heads = 3, layers = 30, vocab = 49152;
  int64_t head_dim = 0;  // 0: hidden / heads
  int64_t max_position = 8192;
  double rope_theta = 100000.0, rms_eps = 1e-5;
  bool tied = false;
  bool phi3 = false;  // model_type phi3: q/k/v as one qkv_proj, gate/up as one gate_up_proj
  int gemma = 0;      // 2: gemma2, 3: gemma3_text (four norms a layer, stored as w for 1 + w)
  // Mixture of experts: experts experts, top k a token. moe_inter 0: mixtral (experts of
  // --inter rows); else qwen3_moe (experts of moe_inter rows, q/k norms).
  int64_t experts = 0, experts_per_token = 0, moe_inter = 0;
  uint64_t seed = 1234;
  double std = 0.02, outlier_fraction = 0.005, outlier_scale = 8.0, shard_gb = 4.0;
};

constexpr const char* kUsage = R"(Usage: make_random_model --out DIR --tokenizer-from DIR [options]
  --hidden N --inter N --heads N --kv-heads N --layers N --vocab N --head-dim N
  --rope-theta X --rms-eps X --max-position N     shape (defaults: SmolLM2-135M's)
  --tied | --untied                               tie lm_head to the embedding (default untied)
  --phi3                                          model_type phi3 (fused qkv_proj and gate_up_proj)
  --gemma 2|3                                     model_type gemma2 (softcaps 50 / 30, every other layer a
                                                  window of 4096) or gemma3_text (q/k norms, 5 of 6 layers a
                                                  window of 1024, local rotary base 10000); GeGLU, tied head
  --moe E,K                                       mixture of experts: E experts, top K a token; model_type
                                                  mixtral (experts of --inter rows)
  --moe-inter N                                   with --moe: model_type qwen3_moe, experts of N rows (q/k
                                                  norms, every layer sparse, norm_topk_prob)
  --seed N --std X --outlier-fraction X --outlier-scale X   weight distribution
  --shard-gb X                                    shard cap in GB (default 4))";

Args parse(int argc, char** argv) {
  Args a;
  auto num = [&](int& i, const std::string& opt) {
    if (i + 1 >= argc) throw exq::Error(fmt::format("{} needs a value", opt));
    const std::string v = argv[++i];
    size_t used = 0;
    double d = 0;
    try {
      d = std::stod(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != v.size() || v.empty()) throw exq::Error(fmt::format("{}: '{}' is not a number", opt, v));
    return d;
  };
  auto integer = [&](int& i, const std::string& opt) {
    const double d = num(i, opt);
    if (d < 0 || d != std::floor(d)) throw exq::Error(fmt::format("{}: expected a count, got {}", opt, d));
    return static_cast<int64_t>(d);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string o = argv[i];
    if (o == "-h" || o == "--help") {
      fmt::print("{}\n", kUsage);
      std::exit(0);
    } else if (o == "--out" && i + 1 < argc) a.out = argv[++i];
    else if (o == "--tokenizer-from" && i + 1 < argc) a.tokenizer_from = argv[++i];
    else if (o == "--hidden") a.hidden = integer(i, o);
    else if (o == "--inter") a.inter = integer(i, o);
    else if (o == "--heads") a.heads = integer(i, o);
    else if (o == "--kv-heads") a.kv_heads = integer(i, o);
    else if (o == "--layers") a.layers = integer(i, o);
    else if (o == "--vocab") a.vocab = integer(i, o);
    else if (o == "--head-dim") a.head_dim = integer(i, o);
    else if (o == "--max-position") a.max_position = integer(i, o);
    else if (o == "--rope-theta") a.rope_theta = num(i, o);
    else if (o == "--rms-eps") a.rms_eps = num(i, o);
    else if (o == "--tied") a.tied = true;
    else if (o == "--untied") a.tied = false;
    else if (o == "--phi3") a.phi3 = true;
    else if (o == "--gemma") a.gemma = static_cast<int>(integer(i, o));
    else if (o == "--moe" && i + 1 < argc) {
      const std::string v = argv[++i];
      const size_t comma = v.find(',');
      EXQ_CHECK(comma != std::string::npos, "--moe: expected E,K, got '{}'", v);
      try {
        a.experts = std::stoll(v.substr(0, comma));
        a.experts_per_token = std::stoll(v.substr(comma + 1));
      } catch (const std::exception&) {
        throw exq::Error(fmt::format("--moe: expected E,K, got '{}'", v));
      }
    } else if (o == "--moe-inter") a.moe_inter = integer(i, o);
    else if (o == "--seed") a.seed = static_cast<uint64_t>(integer(i, o));
    else if (o == "--std") a.std = num(i, o);
    else if (o == "--outlier-fraction") a.outlier_fraction = num(i, o);
    else if (o == "--outlier-scale") a.outlier_scale = num(i, o);
    else if (o == "--shard-gb") a.shard_gb = num(i, o);
    else throw exq::Error(fmt::format("unknown argument '{}'\n{}", o, kUsage));
  }
  if (a.out.empty() || a.tokenizer_from.empty())
    throw exq::Error(fmt::format("--out and --tokenizer-from are required\n{}", kUsage));
  if (a.head_dim == 0 && a.heads > 0) a.head_dim = a.hidden / a.heads;
  EXQ_CHECK(a.gemma == 0 || a.gemma == 2 || a.gemma == 3, "--gemma: 2 or 3, got {}", a.gemma);
  EXQ_CHECK(a.gemma == 0 || !a.phi3, "--gemma and --phi3 exclude each other");
  if (a.gemma > 0) a.tied = true;
  EXQ_CHECK(a.experts == 0 || (a.experts_per_token >= 1 && a.experts_per_token <= a.experts),
            "--moe: top K must be within 1..E, got {},{}", a.experts, a.experts_per_token);
  EXQ_CHECK(a.experts == 0 || (a.gemma == 0 && !a.phi3), "--moe excludes --gemma and --phi3");
  EXQ_CHECK(a.moe_inter == 0 || a.experts > 0, "--moe-inter needs --moe");
  EXQ_CHECK(a.hidden > 0 && a.inter > 0 && a.heads > 0 && a.kv_heads > 0 && a.layers > 0 &&
                a.vocab > 0 && a.head_dim > 0 && a.head_dim % 2 == 0 && a.heads % a.kv_heads == 0,
            "bad shape: hidden {} inter {} heads {} kv-heads {} head-dim {} layers {} vocab {}",
            a.hidden, a.inter, a.heads, a.kv_heads, a.head_dim, a.layers, a.vocab);
  EXQ_CHECK(a.shard_gb > 0 && a.std > 0 && a.outlier_fraction >= 0 && a.outlier_fraction <= 1,
            "--shard-gb, --std must be positive and --outlier-fraction within 0..1");
  return a;
}

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double unit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

enum class Kind { kLinear, kNorm, kNormOffset, kEmbedding };  // kNormOffset: gemma's w of 1 + w

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  Kind kind;
  int64_t numel() const { return shape.size() == 1 ? shape[0] : shape[0] * shape[1]; }
};

std::vector<TensorSpec> tensor_list(const Args& a) {
  std::vector<TensorSpec> t;
  const int64_t q = a.heads * a.head_dim, kv = a.kv_heads * a.head_dim, h = a.hidden;
  const Kind norm = a.gemma > 0 ? Kind::kNormOffset : Kind::kNorm;
  t.push_back({"model.embed_tokens.weight", {a.vocab, h}, Kind::kEmbedding});
  for (int64_t l = 0; l < a.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    t.push_back({p + "input_layernorm.weight", {h}, norm});
    if (a.gemma > 0) {
      t.push_back({p + "pre_feedforward_layernorm.weight", {h}, norm});
      t.push_back({p + "post_feedforward_layernorm.weight", {h}, norm});
    }
    if (a.gemma == 3 || a.moe_inter > 0) {
      t.push_back({p + "self_attn.q_norm.weight", {a.head_dim}, norm});
      t.push_back({p + "self_attn.k_norm.weight", {a.head_dim}, norm});
    }
    if (a.phi3) {
      t.push_back({p + "self_attn.qkv_proj.weight", {q + 2 * kv, h}, Kind::kLinear});
    } else {
      t.push_back({p + "self_attn.q_proj.weight", {q, h}, Kind::kLinear});
      t.push_back({p + "self_attn.k_proj.weight", {kv, h}, Kind::kLinear});
      t.push_back({p + "self_attn.v_proj.weight", {kv, h}, Kind::kLinear});
    }
    t.push_back({p + "self_attn.o_proj.weight", {h, q}, Kind::kLinear});
    t.push_back({p + "post_attention_layernorm.weight", {h}, norm});
    if (a.experts > 0) {
      const bool mixtral = a.moe_inter == 0;
      const std::string block = p + (mixtral ? "block_sparse_moe." : "mlp.");
      const int64_t ei = mixtral ? a.inter : a.moe_inter;
      t.push_back({block + "gate.weight", {a.experts, h}, Kind::kLinear});
      for (int64_t e = 0; e < a.experts; ++e) {
        const std::string x = block + fmt::format("experts.{}.", e);
        t.push_back({x + (mixtral ? "w1" : "gate_proj") + ".weight", {ei, h}, Kind::kLinear});
        t.push_back({x + (mixtral ? "w3" : "up_proj") + ".weight", {ei, h}, Kind::kLinear});
        t.push_back({x + (mixtral ? "w2" : "down_proj") + ".weight", {h, ei}, Kind::kLinear});
      }
      continue;
    }
    if (a.phi3) {
      t.push_back({p + "mlp.gate_up_proj.weight", {2 * a.inter, h}, Kind::kLinear});
    } else {
      t.push_back({p + "mlp.gate_proj.weight", {a.inter, h}, Kind::kLinear});
      t.push_back({p + "mlp.up_proj.weight", {a.inter, h}, Kind::kLinear});
    }
    t.push_back({p + "mlp.down_proj.weight", {h, a.inter}, Kind::kLinear});
  }
  t.push_back({"model.norm.weight", {h}, norm});
  if (!a.tied) t.push_back({"lm_head.weight", {a.vocab, h}, Kind::kLinear});
  return t;
}

// Element i of tensor `ti`: a pure function of (seed, ti, i), so chunks fill in parallel.
class Generator {
 public:
  Generator(const Args& a, const TensorSpec& t, uint64_t ti)
      : a_(a), kind_(t.kind), in_(t.shape.size() == 2 ? t.shape[1] : 1),
        key_(splitmix(a.seed ^ splitmix(ti + 1))) {
    if (kind_ != Kind::kLinear) return;
    // Outlier input channels: fixed per tensor from the same key.
    outlier_.assign(static_cast<size_t>(in_), 0);
    for (int64_t c = 0; c < in_; ++c)
      outlier_[static_cast<size_t>(c)] = unit(splitmix(key_ ^ (0x5bd1e995ULL * (c + 1)))) < a.outlier_fraction;
  }
  float at(int64_t i) const {
    // Box-Muller on two hashed uniforms.
    const uint64_t r = splitmix(key_ + 2 * static_cast<uint64_t>(i));
    const double u1 = unit(r), u2 = unit(splitmix(r));
    const double n = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    if (kind_ == Kind::kNorm) return static_cast<float>(1.0 + 0.1 * n);
    if (kind_ == Kind::kNormOffset) return static_cast<float>(0.1 * n);
    double w = n * a_.std;
    if (kind_ == Kind::kLinear && outlier_[static_cast<size_t>(i % in_)]) w *= a_.outlier_scale;
    return static_cast<float>(w);
  }

 private:
  const Args& a_;
  Kind kind_;
  int64_t in_;
  uint64_t key_;
  std::vector<char> outlier_;
};

struct Shard {
  std::vector<size_t> tensors;  // indices into the tensor list
  uint64_t bytes = 0;
};

void write_shard(const Args& a, const std::vector<TensorSpec>& specs, const Shard& shard,
                 const fs::path& path) {
  ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (size_t ti : shard.tensors) {
    const TensorSpec& t = specs[ti];
    const uint64_t n = static_cast<uint64_t>(t.numel()) * 2;
    header[t.name] = {{"dtype", "F16"}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h += ' ';
  const fs::path tmp = path.string() + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) throw exq::Error(fmt::format("cannot write {}", tmp.string()));
  const uint64_t hlen = h.size();
  bool ok = std::fwrite(&hlen, 8, 1, f) == 1 && std::fwrite(h.data(), 1, h.size(), f) == h.size();
  constexpr int64_t kChunk = 32 << 20;  // elements (64 MB of fp16)
  std::vector<uint16_t> buf;
  for (size_t ti : shard.tensors) {
    const TensorSpec& t = specs[ti];
    const Generator gen(a, t, ti);
    for (int64_t begin = 0; ok && begin < t.numel(); begin += kChunk) {
      const int64_t n = std::min(kChunk, t.numel() - begin);
      buf.resize(static_cast<size_t>(n));
      exq::parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) buf[static_cast<size_t>(i)] = exq::float_to_half(gen.at(begin + i));
      }, 1 << 16);
      ok = std::fwrite(buf.data(), 2, buf.size(), f) == buf.size();
    }
  }
  ok = std::fclose(f) == 0 && ok;
  if (!ok) throw exq::Error(fmt::format("write to {} failed (disk full?)", tmp.string()));
  fs::rename(tmp, path);
}

void copy_tokenizer(const Args& a, ordered_json& config) {
  const fs::path& src = a.tokenizer_from;
  EXQ_CHECK(fs::is_regular_file(src / "tokenizer.json"), "{}: no tokenizer.json", src.string());
  for (const auto& e : fs::directory_iterator(src)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file() && (n.starts_with("tokenizer") || n == "special_tokens_map.json" ||
                                n == "generation_config.json" || n == "vocab.json" ||
                                n == "merges.txt" || n == "added_tokens.json")) {
      std::ifstream in(e.path(), std::ios::binary);
      std::ofstream(a.out / n, std::ios::binary) << in.rdbuf();  // copy_file would keep modes
    }
  }
  config["bos_token_id"] = 1;
  config["eos_token_id"] = 2;
  if (fs::is_regular_file(src / "config.json")) {
    const auto c = nlohmann::json::parse(std::ifstream(src / "config.json"));
    for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"})
      if (c.contains(k) && !c.at(k).is_null()) config[k] = c.at(k);
    if (c.contains("vocab_size") && c.at("vocab_size").get<int64_t>() > a.vocab)
      fmt::print(stderr, "warning: the tokenizer of {} has vocab {} > --vocab {}\n", src.string(),
                 c.at("vocab_size").get<int64_t>(), a.vocab);
  }
}

void run(const Args& a) {
  fs::create_directories(a.out);
  ordered_json config{{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"hidden_size", a.hidden},
                      {"intermediate_size", a.inter},
                      {"num_hidden_layers", a.layers},
                      {"num_attention_heads", a.heads},
                      {"num_key_value_heads", a.kv_heads},
                      {"head_dim", a.head_dim},
                      {"hidden_act", "silu"},
                      {"rms_norm_eps", a.rms_eps},
                      {"rope_theta", a.rope_theta},
                      {"rope_scaling", nullptr},
                      {"max_position_embeddings", a.max_position},
                      {"vocab_size", a.vocab},
                      {"tie_word_embeddings", a.tied},
                      {"attention_bias", false},
                      {"mlp_bias", false},
                      {"torch_dtype", "float16"}};
  if (a.phi3) {
    config["architectures"] = {"Phi3ForCausalLM"};
    config["model_type"] = "phi3";
    config.erase("attention_bias");
    config.erase("mlp_bias");
  }
  if (a.gemma > 0) {
    config["architectures"] = {a.gemma == 2 ? "Gemma2ForCausalLM" : "Gemma3ForCausalLM"};
    config["model_type"] = a.gemma == 2 ? "gemma2" : "gemma3_text";
    config.erase("hidden_act");
    config.erase("mlp_bias");
    config["hidden_activation"] = "gelu_pytorch_tanh";
    config["query_pre_attn_scalar"] = a.head_dim;
    config["sliding_window"] = a.gemma == 2 ? 4096 : 1024;
    if (a.gemma == 2) {
      config["attn_logit_softcapping"] = 50.0;
      config["final_logit_softcapping"] = 30.0;
    } else {
      config["sliding_window_pattern"] = 6;
      config["rope_local_base_freq"] = 10000.0;
    }
  }
  if (a.experts > 0 && a.moe_inter == 0) {
    config["architectures"] = {"MixtralForCausalLM"};
    config["model_type"] = "mixtral";
    config["num_local_experts"] = a.experts;
    config["num_experts_per_tok"] = a.experts_per_token;
    config.erase("attention_bias");
    config.erase("mlp_bias");
  } else if (a.experts > 0) {
    config["architectures"] = {"Qwen3MoeForCausalLM"};
    config["model_type"] = "qwen3_moe";
    config["num_experts"] = a.experts;
    config["num_experts_per_tok"] = a.experts_per_token;
    config["moe_intermediate_size"] = a.moe_inter;
    config["norm_topk_prob"] = true;
    config["decoder_sparse_step"] = 1;
    config["mlp_only_layers"] = ordered_json::array();
    config.erase("mlp_bias");
  }
  copy_tokenizer(a, config);

  const std::vector<TensorSpec> specs = tensor_list(a);
  const auto cap = static_cast<uint64_t>(a.shard_gb * 1e9);
  std::vector<Shard> shards(1);
  uint64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t n = static_cast<uint64_t>(specs[i].numel()) * 2;
    if (!shards.back().tensors.empty() && shards.back().bytes + n > cap) shards.emplace_back();
    shards.back().tensors.push_back(i);
    shards.back().bytes += n;
    total += n;
  }
  ordered_json weight_map = ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shards.size() == 1
                                 ? std::string("model.safetensors")
                                 : fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, shards.size());
    write_shard(a, specs, shards[s], a.out / name);
    for (size_t ti : shards[s].tensors) weight_map[specs[ti].name] = name;
    fmt::print("wrote {} ({:.2f} GB, {} tensors)\n", name, static_cast<double>(shards[s].bytes) / 1e9,
               shards[s].tensors.size());
  }
  if (shards.size() > 1) {
    const ordered_json index{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream(a.out / "model.safetensors.index.json") << index.dump(2) << "\n";
  }
  std::ofstream(a.out / "config.json") << config.dump(2) << "\n";
  int64_t params = 0;
  for (const TensorSpec& t : specs) params += t.numel();
  fmt::print("{}: {:.3f} B parameters, {:.2f} GB in {} file(s)\n", a.out.string(),
             static_cast<double>(params) / 1e9, static_cast<double>(total) / 1e9, shards.size());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    run(parse(argc, argv));
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "make_random_model: {}\n", e.what());
    return 2;
  }
}
