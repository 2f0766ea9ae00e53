// Tiny random Llama / Qwen2 / Mistral checkpoints written to a temp folder: the forward pass
// against a naive double-precision reference (biases, untied head, GQA, rope scalings, every
// weight dtype), and the loader's errors for missing, misshapen and non-finite tensors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <numbers>
#include <random>

#include "core/half.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Vec = std::vector<double>;

constexpr int64_t kHidden = 32, kHeads = 4, kKvHeads = 2, kHeadDim = 8, kInter = 37, kVocab = 53, kLayers = 2;

struct Tiny {
  json config;
  DType dtype = DType::F16;
  std::map<std::string, Tensor> tensors;  // as written
  std::map<std::string, Vec> values;      // the exact values they hold

  void add(const std::string& name, Shape shape, std::mt19937& rng, double scale, double mean = 0.0) {
    Tensor t(dtype, shape);
    Vec v(static_cast<size_t>(t.numel()));
    std::normal_distribution<float> d(static_cast<float>(mean), static_cast<float>(scale));
    for (size_t i = 0; i < v.size(); ++i) {
      const float f = d(rng);
      if (dtype == DType::F16) v[i] = half_to_float(t.data<uint16_t>()[i] = float_to_half(f));
      else if (dtype == DType::BF16) v[i] = bf16_to_float(t.data<uint16_t>()[i] = float_to_bf16(f));
      else v[i] = t.data<float>()[i] = f;
    }
    tensors[name] = std::move(t);
    values[name] = std::move(v);
  }

  void write(const fs::path& dir) const {
    std::ofstream(dir / "config.json") << config.dump(1);
    std::vector<io::NamedTensor> list;
    for (const auto& [name, t] : tensors) list.push_back({name, t.view()});
    io::write_safetensors(dir / "model.safetensors", list);
  }
};

Tiny make_tiny(const std::string& type, DType dtype, bool tied, json rope_scaling, uint32_t seed) {
  Tiny m;
  m.dtype = dtype;
  m.config = {{"model_type", type},           {"hidden_size", kHidden},       {"intermediate_size", kInter},
              {"num_hidden_layers", kLayers}, {"num_attention_heads", kHeads}, {"num_key_value_heads", kKvHeads},
              {"vocab_size", kVocab},         {"rms_norm_eps", 1e-5},          {"rope_theta", 10000.0},
              {"max_position_embeddings", 64}, {"tie_word_embeddings", tied},  {"rope_scaling", rope_scaling}};
  const bool llama_bias = type == "llama";
  if (llama_bias) m.config["attention_bias"] = m.config["mlp_bias"] = true;
  std::mt19937 rng(seed);
  const int64_t qd = kHeads * kHeadDim, kvd = kKvHeads * kHeadDim;
  m.add("model.embed_tokens.weight", {kVocab, kHidden}, rng, 1.0);
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m.add(p + "input_layernorm.weight", {kHidden}, rng, 0.1, 1.0);
    m.add(p + "post_attention_layernorm.weight", {kHidden}, rng, 0.1, 1.0);
    const std::pair<std::string, Shape> lin[] = {
        {"self_attn.q_proj", {qd, kHidden}}, {"self_attn.k_proj", {kvd, kHidden}}, {"self_attn.v_proj", {kvd, kHidden}},
        {"self_attn.o_proj", {kHidden, qd}}, {"mlp.gate_proj", {kInter, kHidden}},  {"mlp.up_proj", {kInter, kHidden}},
        {"mlp.down_proj", {kHidden, kInter}}};
    for (const auto& [name, shape] : lin) {
      m.add(p + name + ".weight", shape, rng, 0.3);
      const bool qkv = name == "self_attn.q_proj" || name == "self_attn.k_proj" || name == "self_attn.v_proj";
      if ((type == "qwen2" && qkv) || llama_bias) m.add(p + name + ".bias", {shape[0]}, rng, 0.2);
    }
  }
  m.add("model.norm.weight", {kHidden}, rng, 0.1, 1.0);
  if (!tied) m.add("lm_head.weight", {kVocab, kHidden}, rng, 0.3);
  return m;
}

// y = W x (+ b) with W [out, in] from the checkpoint.
Vec linear(const Tiny& m, const std::string& prefix, const Vec& x) {
  const Vec& w = m.values.at(prefix + ".weight");
  const size_t in = x.size(), out = w.size() / in;
  Vec y(out, 0.0);
  for (size_t o = 0; o < out; ++o)
    for (size_t i = 0; i < in; ++i) y[o] += w[o * in + i] * x[i];
  if (m.values.count(prefix + ".bias"))
    for (size_t o = 0; o < out; ++o) y[o] += m.values.at(prefix + ".bias")[o];
  return y;
}

Vec rmsnorm(const Vec& x, const Vec& w) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + 1e-5);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = w[i] * x[i] * r;
  return y;
}

// transformers' inverse frequencies, written out independently in double.
Vec inv_freq(const json& rs) {
  Vec f(kHeadDim / 2);
  for (int64_t i = 0; i < kHeadDim / 2; ++i) f[i] = 1.0 / std::pow(10000.0, 2.0 * i / kHeadDim);
  if (rs.is_null()) return f;
  const std::string type = rs["rope_type"];
  const double factor = rs["factor"];
  if (type == "yarn") {  // the YaRN paper's ramp, transformers' defaults (beta 32 / 1, truncated)
    const double ctx = rs["original_max_position_embeddings"];
    auto dim_of = [&](double rot) { return kHeadDim * std::log(ctx / (rot * 2 * std::numbers::pi)) / (2 * std::log(10000.0)); };
    const double lo = std::max(std::floor(dim_of(32)), 0.0), hi = std::min(std::ceil(dim_of(1)), kHeadDim - 1.0);
    for (int64_t i = 0; i < kHeadDim / 2; ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - lo) / (hi - lo), 0.0, 1.0);
      f[i] = f[i] / factor * ramp + f[i] * (1 - ramp);
    }
    return f;
  }
  for (double& v : f) {
    if (type == "linear") {
      v /= factor;
    } else {
      const double old_len = rs["original_max_position_embeddings"], lo = rs["low_freq_factor"], hi = rs["high_freq_factor"];
      const double wavelen = 2 * std::numbers::pi / v;
      if (wavelen > old_len / lo) v /= factor;
      else if (wavelen >= old_len / hi) {
        const double s = (old_len / wavelen - lo) / (hi - lo);
        v = (1 - s) * v / factor + s * v;
      }
    }
  }
  return f;
}

// YaRN scales cos and sin by 0.1 ln(factor) + 1; other ropes by 1.
double rope_scale(const json& rs) {
  return !rs.is_null() && rs["rope_type"] == "yarn" ? 0.1 * std::log(rs["factor"].get<double>()) + 1 : 1.0;
}

void rope(Vec& x, int64_t heads, int64_t pos, const Vec& freq, double scale) {
  const int64_t half = kHeadDim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    double* v = x.data() + h * kHeadDim;
    for (int64_t i = 0; i < half; ++i) {
      const double c = scale * std::cos(pos * freq[i]), s = scale * std::sin(pos * freq[i]);
      const double a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

// All-position logits of a whole sequence, no cache.
std::vector<Vec> reference_forward(const Tiny& m, const std::vector<int32_t>& ids) {
  const size_t T = ids.size();
  const Vec freq = inv_freq(m.config["rope_scaling"]);
  const double scale = rope_scale(m.config["rope_scaling"]);
  std::vector<Vec> x(T);
  for (size_t t = 0; t < T; ++t) {
    const Vec& e = m.values.at("model.embed_tokens.weight");
    x[t].assign(e.begin() + ids[t] * kHidden, e.begin() + (ids[t] + 1) * kHidden);
  }
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const Vec xn = rmsnorm(x[t], m.values.at(p + "input_layernorm.weight"));
      q[t] = linear(m, p + "self_attn.q_proj", xn);
      k[t] = linear(m, p + "self_attn.k_proj", xn);
      v[t] = linear(m, p + "self_attn.v_proj", xn);
      rope(q[t], kHeads, static_cast<int64_t>(t), freq, scale);
      rope(k[t], kKvHeads, static_cast<int64_t>(t), freq, scale);
    }
    for (size_t t = 0; t < T; ++t) {
      Vec att(kHeads * kHeadDim, 0.0);
      for (int64_t h = 0; h < kHeads; ++h) {
        const int64_t kv = h / (kHeads / kKvHeads);
        Vec s(t + 1);
        double mx = -1e300, sum = 0;
        for (size_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t i = 0; i < kHeadDim; ++i) d += q[t][h * kHeadDim + i] * k[j][kv * kHeadDim + i];
          s[j] = d / std::sqrt(static_cast<double>(kHeadDim));
          mx = std::max(mx, s[j]);
        }
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (size_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < kHeadDim; ++i) att[h * kHeadDim + i] += s[j] / sum * v[j][kv * kHeadDim + i];
      }
      const Vec o = linear(m, p + "self_attn.o_proj", att);
      for (int64_t i = 0; i < kHidden; ++i) x[t][i] += o[i];
      const Vec xn = rmsnorm(x[t], m.values.at(p + "post_attention_layernorm.weight"));
      Vec g = linear(m, p + "mlp.gate_proj", xn);
      const Vec u = linear(m, p + "mlp.up_proj", xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const Vec d = linear(m, p + "mlp.down_proj", g);
      for (int64_t i = 0; i < kHidden; ++i) x[t][i] += d[i];
    }
  }
  const std::string head = m.values.count("lm_head.weight") ? "lm_head" : "model.embed_tokens";
  std::vector<Vec> logits(T);
  for (size_t t = 0; t < T; ++t) logits[t] = linear(m, head, rmsnorm(x[t], m.values.at("model.norm.weight")));
  return logits;
}

struct Variant {
  const char* type;
  DType dtype;
  bool tied;
  json rope_scaling;
};

TEST(LlamaTiny, ForwardMatchesNaiveReference) {
  const json llama3 = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  const json linear_rs = {{"rope_type", "linear"}, {"factor", 2.0}};
  // Ramp over dims 1..3 of 4 (orig 4096); positions 0-10 barely turn the slow dims, so a large
  // factor makes the difference visible through the attention factor 1.41.
  const json yarn = {{"rope_type", "yarn"}, {"factor", 60.0}, {"original_max_position_embeddings", 4096}};
  const Variant variants[] = {{"qwen2", DType::F16, false, nullptr},
                              {"llama", DType::BF16, true, llama3},
                              {"mistral", DType::F32, false, linear_rs},
                              {"qwen2", DType::F32, true, yarn}};
  const std::vector<int32_t> ids = {3, 17, 52, 0, 9, 9, 41, 5, 30, 12, 1};
  uint32_t seed = 100;
  for (const Variant& var : variants) {
    const fs::path dir = test::temp_dir(std::string("tiny_") + var.type + std::to_string(seed));
    const Tiny tiny = make_tiny(var.type, var.dtype, var.tied, var.rope_scaling, ++seed);
    tiny.write(dir);
    LlamaModel m = LlamaModel::load(dir);
    EXPECT_EQ(m.weights().head_tied, var.tied);
    const std::vector<Vec> ref = reference_forward(tiny, ids);
    // Prefill 4 tokens, then the rest in chunks of 1 and 3 through the cache.
    KvCache cache = m.make_cache(static_cast<int64_t>(ids.size()));
    std::vector<Tensor> parts;
    size_t pos = 0;
    for (size_t n : {4, 1, 3, 1, 2}) {
      parts.push_back(m.forward(std::span(ids).subspan(pos, n), cache, true));
      pos += n;
    }
    ASSERT_EQ(pos, ids.size());
    double max_err = 0;
    size_t t = 0;
    for (const Tensor& p : parts) {
      for (int64_t r = 0; r < p.dim(0); ++r, ++t)
        for (int64_t i = 0; i < kVocab; ++i)
          max_err = std::max(max_err, std::fabs(p.data<float>()[r * kVocab + i] - ref[t][i]));
    }
    std::printf("  %-7s %s max abs logit error %.3g\n", var.type, std::string(dtype_name(var.dtype)).c_str(), max_err);
    EXPECT_LE(max_err, 2e-4) << var.type;
    fs::remove_all(dir);
  }
}

// Three sequences of different lengths step one token each in one pass: every row equals the
// reference's last row of that sequence, and each cache grows by one.
TEST(LlamaTiny, ForwardBatchMatchesReference) {
  const fs::path dir = test::temp_dir("tiny_batch");
  const Tiny tiny = make_tiny("qwen2", DType::F16, false, nullptr, 31);
  tiny.write(dir);
  LlamaModel m = LlamaModel::load(dir);
  std::vector<std::vector<int32_t>> seqs = {{3, 17, 52}, {9, 41, 5, 30, 12, 1, 8}, {7}};
  std::vector<KvCache> caches;
  for (const auto& s : seqs) {
    caches.push_back(m.make_cache(16));
    m.forward(s, caches.back());
  }
  std::vector<KvCache*> ptrs;
  for (KvCache& c : caches) ptrs.push_back(&c);
  double max_err = 0;
  for (const std::vector<int32_t>& next : {std::vector<int32_t>{4, 0, 49}, std::vector<int32_t>{11, 2, 6}}) {
    const Tensor logits = m.forward_batch(next, ptrs);
    ASSERT_EQ(logits.dim(0), 3);
    for (size_t r = 0; r < 3; ++r) {
      seqs[r].push_back(next[r]);
      EXPECT_EQ(caches[r].length(), static_cast<int64_t>(seqs[r].size()));
      const Vec ref = reference_forward(tiny, seqs[r]).back();
      for (int64_t i = 0; i < kVocab; ++i)
        max_err = std::max(max_err, std::fabs(logits.data<float>()[static_cast<int64_t>(r) * kVocab + i] - ref[i]));
    }
  }
  std::printf("  batched rows: max abs logit error %.3g\n", max_err);
  EXPECT_LE(max_err, 2e-4);

  // A cache given twice, a count mismatch, a full cache: refused, no cache changed.
  const std::vector<int32_t> two = {1, 2};
  KvCache* same[] = {ptrs[0], ptrs[0]};
  EXPECT_THROW(m.forward_batch(two, same), Error);
  EXPECT_THROW(m.forward_batch(two, ptrs), Error);
  KvCache full = m.make_cache(1);
  m.forward(std::vector<int32_t>{5}, full);
  KvCache* with_full[] = {ptrs[0], &full};
  EXPECT_THROW(m.forward_batch(two, with_full), Error);
  EXPECT_EQ(caches[0].length(), 5);
  EXPECT_EQ(full.length(), 1);
  fs::remove_all(dir);
}

// Writes the tiny model with one tensor changed and expects load to fail naming it.
void expect_load_error(const std::function<void(Tiny&)>& edit, const std::string& tensor, const std::string& what) {
  const fs::path dir = test::temp_dir("tiny_bad");
  Tiny tiny = make_tiny("llama", DType::F16, true, nullptr, 7);
  edit(tiny);
  tiny.write(dir);
  try {
    LlamaModel::load(dir);
    ADD_FAILURE() << "no error for " << tensor;
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, tensor) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(LlamaTiny, LoadErrorsNameTheTensor) {
  const std::string up = "model.layers.1.mlp.up_proj.weight";
  expect_load_error([&](Tiny& t) { t.tensors.erase(up); }, up, "missing");
  expect_load_error([&](Tiny& t) { t.tensors[up] = Tensor::zeros(DType::F16, {kInter, kHidden + 1}); }, up,
                    "expected shape [37, 32]");
  expect_load_error([&](Tiny& t) { t.tensors[up] = Tensor::zeros(DType::I8, {kInter, kHidden}); }, up, "I8");
  expect_load_error([&](Tiny& t) { t.tensors[up].data<uint16_t>()[40] = 0x7e00; }, up, "element 40");
  const std::string norm = "model.layers.0.input_layernorm.weight";
  expect_load_error([&](Tiny& t) { t.tensors[norm].data<uint16_t>()[3] = 0xfc00; }, norm, "NaN or Inf");
  const std::string bias = "model.layers.0.self_attn.k_proj.bias";
  expect_load_error([&](Tiny& t) { t.tensors.erase(bias); }, bias, "missing");
}

TEST(LlamaTiny, CacheShapeAndCaptureChecks) {
  const fs::path dir = test::temp_dir("tiny_cache");
  make_tiny("qwen2", DType::F16, true, nullptr, 3).write(dir);
  LlamaModel m = LlamaModel::load(dir);
  KvCache other(kLayers + 1, 8, kKvHeads, kHeadDim);
  const std::vector<int32_t> ids = {1, 2};
  EXPECT_THROW(m.forward(ids, other), Error);
  // Positions past max_position_embeddings still work (the rotary table grows).
  KvCache long_cache = m.make_cache(100);
  std::vector<int32_t> many(90, 4);
  int captured = 0;
  m.set_hidden_capture([&](int layer, const TensorView& h) {
    EXPECT_EQ(h.shape(), Shape({90, kHidden}));
    EXPECT_EQ(layer, captured++);
  });
  const Tensor logits = m.forward(many, long_cache);
  EXPECT_EQ(captured, kLayers + 1);
  EXPECT_EQ(logits.shape(), Shape({1, kVocab}));
  EXPECT_EQ(long_cache.length(), 90);
  EXPECT_THROW(long_cache.truncate(91), Error);
  long_cache.truncate(10);
  EXPECT_EQ(long_cache.length(), 10);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::model
