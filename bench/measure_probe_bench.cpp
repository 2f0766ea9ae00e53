// Probe of what lies behind exllamav2's SmolLM2 measurement (docs/quality.md): a plain float
// forward of the decoder blocks whose arithmetic can be switched, to test which forward
// reproduces exllamav2's numbers. Not the product path (quant::ModuleForward stays HF-exact).
// Switches: --modes f32,f16 (f16 rounds every activation to half, fp32 accumulation: exllamav2's
// torch path), --noncausal (every token attends to the whole row), --theta B (rope base),
// --attn-scale S (softmax scale), --gqa-interleave (query head h reads kv head h % kv_heads),
// --rope-gptj (rotate pairs (2i, 2i+1)). Rows: the first --rows of exllamav2's 19-row
// measurement layout at --length tokens.
//
// Three modes (one JSON object on stdout):
//   default      layer 0 scored with exllamav2's own weights (fixture smollm2_layer0_4.0bpw)
//                and exq's GPTQ at the same options; --linears qkvo picks the attention
//                linears that take the quantized weight
//   --table L,.. exq's measurement procedure in this forward (Hessians from the reference
//                pass, GPTQ of every distinct option, every table row on every row) for the
//                attention and MLP of each listed layer, against smollm2_measurement.json;
//                states carried through the earlier layers in the same forward
//   --ppl N      perplexity of the whole model on the first N windows of
//                fixtures/smollm2/ppl_ids.safetensors (--ppl-set wiki|c4), like ppl.json
#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "io/exl2.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/rope.h"
#include "quant/calibration.h"
#include "quant/gptq.h"
#include "quant/hessian.h"
#include "quant/measure.h"
#include "quant/measurement.h"
#include "quant/option_match.h"
#include "quant/options.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using exq::DType;
using exq::Tensor;
using exq::TensorView;
using Vec = std::vector<float>;
using nlohmann::ordered_json;

std::vector<std::string> split(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

struct Args {
  fs::path model, shared;
  int64_t rows = 19, length = 2048, ppl = 0;
  std::vector<std::string> modes = {"f32", "f16"};
  std::vector<int64_t> table;  // layers to measure
  std::string linears = "qkvo", ppl_set = "wiki";
  double theta = 0, attn_scale = 0;  // 0: the config's
  bool noncausal = false, gqa_interleave = false, rope_gptj = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  a.shared = fs::path(EXQ_SOURCE_DIR).parent_path() / "shared";
  if (const char* m = std::getenv("EXQ_TEST_MODEL")) a.model = m;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--noncausal") { a.noncausal = true; continue; }
    if (k == "--gqa-interleave") { a.gqa_interleave = true; continue; }
    if (k == "--rope-gptj") { a.rope_gptj = true; continue; }
    if (i + 1 >= argc) throw exq::Error(fmt::format("missing value for {}", k));
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--rows") a.rows = std::stoll(v);
    else if (k == "--length") a.length = std::stoll(v);
    else if (k == "--linears") a.linears = v;
    else if (k == "--theta") a.theta = std::stod(v);
    else if (k == "--attn-scale") a.attn_scale = std::stod(v);
    else if (k == "--ppl") a.ppl = std::stoll(v);
    else if (k == "--ppl-set") a.ppl_set = v;
    else if (k == "--modes") a.modes = split(v);
    else if (k == "--table") for (const auto& s : split(v)) a.table.push_back(std::stoll(s));
    else throw exq::Error(fmt::format("unknown option {}", k));
  }
  if (a.model.empty()) throw exq::Error("no model: pass --model or set EXQ_TEST_MODEL");
  return a;
}

struct Mode {
  bool f16 = false;
};

float r16(float v) { return exq::half_to_float(exq::float_to_half(v)); }
void round16(Vec& v, const Mode& m) {
  if (m.f16)
    for (float& x : v) x = r16(x);
}

// y[T, out] = x[T, in] w[out, in]^T, fp32 accumulation.
Vec matmul(const Vec& x, const Vec& w, int64_t T, int64_t in, int64_t out) {
  Vec y(static_cast<size_t>(T * out));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(out), int(in), 1.0f, x.data(),
              int(in), w.data(), int(in), 0.0f, y.data(), int(out));
  return y;
}

Vec rms_norm(const Vec& x, const Vec& g, int64_t T, int64_t d, float eps, const Mode& m) {
  Vec y(x.size());
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(x[t * d + j]) * x[t * d + j];
    const float r = 1.0f / std::sqrt(static_cast<float>(ss / double(d)) + eps);
    for (int64_t j = 0; j < d; ++j) {
      float v = x[t * d + j] * r;
      if (m.f16) v = r16(v);  // HF: normed value cast to the weight dtype, then scaled
      y[t * d + j] = v * g[j];
    }
  }
  round16(y, m);
  return y;
}

struct Layer {
  Vec norm1, q, k, v, o, norm2, gate, up, down;
};

struct Dims {
  int64_t hidden, inter, H, KVH, D;
  float eps, attn_scale;
  bool causal, gqa_interleave, rope_gptj;
  std::vector<float> inv_freq;
};

void rope(Vec& x, int64_t T, int64_t heads, const Dims& d, const Mode& m) {
  const int64_t half = d.D / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float ang = static_cast<float>(t) * d.inv_freq[static_cast<size_t>(i)];
      float c = std::cos(ang), s = std::sin(ang);
      if (m.f16) c = r16(c), s = r16(s);
      const int64_t i0 = d.rope_gptj ? 2 * i : i, i1 = d.rope_gptj ? 2 * i + 1 : i + half;
      for (int64_t h = 0; h < heads; ++h) {
        float* p = x.data() + (t * heads + h) * d.D;
        const float a = p[i0], b = p[i1];
        p[i0] = a * c - b * s;
        p[i1] = b * c + a * s;
      }
    }
  round16(x, m);
}

// Inputs of the linears of one block call (for Hessians): normed feeds q/k/v or gate/up,
// inner feeds o (attention output) or down (silu(gate) * up).
struct BlockInputs {
  Vec normed, inner;
};

// x [T, hidden] -> x + o(attention(q, k, v)).
Vec attention(const Layer& w, const Vec& x, int64_t T, const Dims& d, const Mode& m,
              BlockInputs* inputs = nullptr) {
  const int64_t qd = d.H * d.D, kd = d.KVH * d.D;
  const Vec xn = rms_norm(x, w.norm1, T, d.hidden, d.eps, m);
  Vec q = matmul(xn, w.q, T, d.hidden, qd), k = matmul(xn, w.k, T, d.hidden, kd),
      v = matmul(xn, w.v, T, d.hidden, kd);
  round16(q, m), round16(k, m), round16(v, m);
  rope(q, T, d.H, d, m), rope(k, T, d.KVH, d, m);
  // Per head: S = q_h k_g^T (scaled), softmax over the visible keys, att_h = P v_g.
  Vec att(static_cast<size_t>(T * qd)), S(static_cast<size_t>(T * T));
  for (int64_t h = 0; h < d.H; ++h) {
    const int64_t g = d.gqa_interleave ? h % d.KVH : h / (d.H / d.KVH);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(T), int(d.D), d.attn_scale,
                q.data() + h * d.D, int(qd), k.data() + g * d.D, int(kd), 0.0f, S.data(), int(T));
    for (int64_t t = 0; t < T; ++t) {
      float* row = S.data() + t * T;
      const int64_t visible = d.causal ? t + 1 : T;
      const float mx = *std::max_element(row, row + visible);
      double z = 0;
      for (int64_t u = 0; u < visible; ++u) z += (row[u] = std::exp(row[u] - mx));
      const float inv = static_cast<float>(1.0 / z);
      for (int64_t u = 0; u < visible; ++u) row[u] *= inv;
      std::fill(row + visible, row + T, 0.0f);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(d.D), int(T), 1.0f, S.data(),
                int(T), v.data() + g * d.D, int(kd), 0.0f, att.data() + h * d.D, int(qd));
  }
  round16(att, m);
  Vec y = matmul(att, w.o, T, qd, d.hidden);
  round16(y, m);
  for (size_t i = 0; i < y.size(); ++i) y[i] += x[i];
  round16(y, m);
  if (inputs) *inputs = {xn, att};
  return y;
}

Vec mlp(const Layer& w, const Vec& x, int64_t T, const Dims& d, const Mode& m,
        BlockInputs* inputs = nullptr) {
  const Vec xn = rms_norm(x, w.norm2, T, d.hidden, d.eps, m);
  Vec g = matmul(xn, w.gate, T, d.hidden, d.inter), u = matmul(xn, w.up, T, d.hidden, d.inter);
  round16(g, m), round16(u, m);
  for (size_t i = 0; i < g.size(); ++i) {
    float a = g[i] / (1.0f + std::exp(-g[i]));
    if (m.f16) a = r16(a);
    g[i] = a * u[i];
  }
  round16(g, m);
  Vec y = matmul(g, w.down, T, d.inter, d.hidden);
  round16(y, m);
  for (size_t i = 0; i < y.size(); ++i) y[i] += x[i];
  round16(y, m);
  if (inputs) *inputs = {xn, g};
  return y;
}

double rel_err(const Vec& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = double(a[i]) - b[i];
    num += e * e;
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

Vec to_vec(const TensorView& t) {
  const Tensor f = exq::to_f32(t);
  return Vec(f.data<float>(), f.data<float>() + f.numel());
}

Layer load_layer(const exq::io::SafetensorsModel& files, int64_t l) {
  const std::string p = fmt::format("model.layers.{}.", l);
  auto get = [&](const std::string& n) { return to_vec(files.get(p + n)); };
  return {get("input_layernorm.weight"),  get("self_attn.q_proj.weight"),
          get("self_attn.k_proj.weight"), get("self_attn.v_proj.weight"),
          get("self_attn.o_proj.weight"), get("post_attention_layernorm.weight"),
          get("mlp.gate_proj.weight"),    get("mlp.up_proj.weight"),
          get("mlp.down_proj.weight")};
}

// The linears in table column order: attention q, k, v, o then MLP gate, up, down.
struct Lin {
  const char* name;
  const char* module;
  int64_t in, out;
  Vec Layer::*field;
  int hessian;  // 0: the block's normed input, 1: its inner input
};
std::vector<Lin> linears(const Dims& d) {
  const int64_t qd = d.H * d.D, kd = d.KVH * d.D;
  return {{"q_proj", "self_attn", d.hidden, qd, &Layer::q, 0},
          {"k_proj", "self_attn", d.hidden, kd, &Layer::k, 0},
          {"v_proj", "self_attn", d.hidden, kd, &Layer::v, 0},
          {"o_proj", "self_attn", qd, d.hidden, &Layer::o, 1},
          {"gate_proj", "mlp", d.hidden, d.inter, &Layer::gate, 0},
          {"up_proj", "mlp", d.hidden, d.inter, &Layer::up, 0},
          {"down_proj", "mlp", d.inter, d.hidden, &Layer::down, 1}};
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

using Block = Vec (*)(const Layer&, const Vec&, int64_t, const Dims&, const Mode&, BlockInputs*);

// exq's measurement procedure for one module in this forward (see the header comment).
ordered_json table_module(const Layer& orig, const std::vector<Vec>& x, int64_t T, const Dims& d,
                          const Mode& m, bool attn, const exq::quant::ModuleMeasurement& theirs,
                          std::vector<Vec>* target) {
  const std::vector<Lin> all = linears(d);
  const std::vector<Lin> lins(all.begin() + (attn ? 0 : 4), attn ? all.begin() + 4 : all.end());
  const Block block = attn ? static_cast<Block>(attention) : static_cast<Block>(mlp);
  const int64_t inner = attn ? d.H * d.D : d.inter;
  exq::quant::HessianAccumulator h0(d.hidden), h1(inner);
  std::vector<Vec> y(x.size());
  BlockInputs in;
  for (size_t r = 0; r < x.size(); ++r) {
    y[r] = block(orig, x[r], T, d, m, &in);
    h0.add_batch(in.normed.data(), T);
    h1.add_batch(in.inner.data(), T);
  }
  const exq::quant::PreparedHessian ph[2] = {exq::quant::prepare_hessian(h0.hessian(), d.hidden),
                                             exq::quant::prepare_hessian(h1.hessian(), inner)};
  std::map<std::string, Vec> cache;
  auto quantized = [&](const Lin& l, const exq::quant::QuantOption& o) -> const Vec& {
    const std::string key = fmt::format("{}:{}", l.name, o.desc());
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    const Vec& w = orig.*l.field;
    auto g = exq::quant::gptq_quantize(w.data(), l.out, l.in, ph[l.hessian], o);
    return cache.emplace(key, std::move(g.weight)).first->second;
  };
  std::vector<double> ours, ref;
  for (const exq::quant::MeasuredRow& row : *theirs.rows) {
    Layer w = orig;
    for (const Lin& l : lins) {
      const exq::quant::QuantOption* o = row.find(l.name);
      EXQ_CHECK(o != nullptr, "{}: row without {}", theirs.key, l.name);
      w.*l.field = quantized(l, *o);
    }
    double e = 0;
    for (size_t r = 0; r < x.size(); ++r) e += rel_err(block(w, x[r], T, d, m, nullptr), y[r]);
    ours.push_back(e / double(x.size()));
    ref.push_back(1.0 - row.accuracy);
    std::fprintf(stderr, "%s row %zu: %.5f (exllamav2 %.5f, x %.3f)\n", theirs.key.c_str(),
                 ours.size() - 1, ours.back(), ref.back(), ours.back() / ref.back());
  }
  double a = 0, b = 0;
  for (size_t i = 0; i < ours.size(); ++i) a += ours[i], b += ref[i];
  if (target) *target = std::move(y);
  return {{"key", theirs.key}, {"mean_error", a / double(ours.size())},
          {"exllamav2_mean_error", b / double(ours.size())}, {"ratio", a / b},
          {"spearman", exq::quant::spearman(ours, ref)}, {"errors", ours}};
}

// Layer 0 with exllamav2's own weights and exq's GPTQ at the same options (score mode).
ordered_json score_layer0(const Args& args, const exq::io::ModelConfig& config,
                          const exq::io::SafetensorsModel& files, const Dims& d,
                          const std::vector<Vec>& x, int64_t T) {
  const auto fixture = exq::io::SafetensorsFile::open(args.shared / "fixtures" / "exl2" /
                                                      "smollm2_layer0_4.0bpw.safetensors");
  const Layer orig = load_layer(files, 0);
  const std::vector<Lin> lins = linears(d);
  Layer exl = orig;
  std::vector<exq::quant::QuantOption> options;
  for (const Lin& l : lins) {
    const std::string key = std::string("model.layers.0.") + l.module + "." + l.name;
    const auto t = exq::io::exl2_tensors(fixture, key);
    exl.*l.field = to_vec(exq::io::dequantize_exl2(t, l.in, l.out, key, DType::F32));
    options.push_back(exq::quant::table_option_for_groups(l.name, l.in,
                                                          exq::io::validate_exl2(t, l.in, l.out, key))
                          .value_or(exq::quant::QuantOption{}));
  }
  // exq's GPTQ at those options, float32 reference forward (as quant::measure does).
  const int64_t R = static_cast<int64_t>(x.size());
  exq::quant::ModuleForward fwd(config, T);
  const exq::quant::LayerF32 lf = exq::quant::load_layer_f32(files, config, 0);
  Tensor states(DType::F32, {R, T, d.hidden});
  for (int64_t r = 0; r < R; ++r)
    std::copy(x[r].begin(), x[r].end(), states.data<float>() + r * T * d.hidden);
  const auto qa = exq::quant::quantize_attention(fwd, lf, states, "attn",
                                                 {options[0], options[1], options[2], options[3]});
  const auto qm = exq::quant::quantize_mlp(fwd, lf, qa.target, "mlp", {options[4], options[5], options[6]});
  Layer ours = orig;
  for (size_t i = 0; i < 4; ++i) ours.*lins[i].field = qa.linears[i].result.weight;
  for (size_t i = 0; i < 3; ++i) ours.*lins[4 + i].field = qm.linears[i].result.weight;

  ordered_json out;
  out["options"] = ordered_json::array();
  for (const auto& o : options) out["options"].push_back(o.desc());
  for (const std::string& mode_name : args.modes) {
    const Mode m{mode_name == "f16"};
    std::vector<Vec> ya(x.size()), ym(x.size());
    for (size_t r = 0; r < x.size(); ++r) {
      ya[r] = attention(orig, x[r], T, d, m);
      ym[r] = mlp(orig, ya[r], T, d, m);
    }
    using Named = std::pair<const char*, const Layer*>;
    for (const auto& [who, q] : {Named{"exllamav2", &exl}, Named{"exq_gptq", &ours}}) {
      Layer w = orig;  // attention linears named by --linears take the quantized weight
      for (size_t i = 0; i < 4; ++i)
        if (args.linears.find(lins[i].name[0]) != std::string::npos) w.*lins[i].field = q->*lins[i].field;
      for (size_t i = 4; i < 7; ++i) w.*lins[i].field = q->*lins[i].field;
      double ea = 0, em = 0;
      for (size_t r = 0; r < x.size(); ++r) {
        ea += rel_err(attention(w, x[r], T, d, m), ya[r]);
        em += rel_err(mlp(w, ya[r], T, d, m), ym[r]);
      }
      out[mode_name][who] = {{"attn_error", ea / double(R)}, {"mlp_error", em / double(R)}};
    }
  }
  out["exllamav2_recorded"] = {{"attn_row5", 0.01255}, {"mlp_row12", 0.02492}};
  return out;
}

// Perplexity of the whole model in this forward (ppl mode).
ordered_json run_ppl(const Args& args, const exq::io::SafetensorsModel& files, int64_t layers,
                     const Dims& d, const Mode& m) {
  const fs::path fx = args.shared / "fixtures" / "smollm2";
  const auto idf = exq::io::SafetensorsFile::open(fx / "ppl_ids.safetensors");
  const TensorView ids = idf.get(args.ppl_set);
  const auto ref = nlohmann::json::parse(std::ifstream(fx / "ppl.json"));
  const auto& ref_w = ref.at("windows").at(args.ppl_set + ".utf8").at("ppl_per_window");
  std::vector<Layer> L;
  for (int64_t l = 0; l < layers; ++l) L.push_back(load_layer(files, l));
  const Vec norm = to_vec(files.get("model.norm.weight"));
  const Vec emb = to_vec(files.get("model.embed_tokens.weight"));
  const int64_t vocab = static_cast<int64_t>(emb.size()) / d.hidden, T = 512;
  double nll = 0, ref_log = 0;
  std::vector<double> per;
  for (int64_t w = 0; w < args.ppl; ++w) {
    const int32_t* id = ids.data<int32_t>() + w * T;
    Vec x(static_cast<size_t>(T * d.hidden));
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(emb.begin() + id[t] * d.hidden, d.hidden, x.begin() + t * d.hidden);
    for (const Layer& l : L) x = mlp(l, attention(l, x, T, d, m), T, d, m);
    Vec logits = matmul(rms_norm(x, norm, T, d.hidden, d.eps, m), emb, T, d.hidden, vocab);
    round16(logits, m);
    double wn = 0;
    for (int64_t t = 0; t + 1 < T; ++t) {
      const float* lg = logits.data() + t * vocab;
      const float mx = *std::max_element(lg, lg + vocab);
      double z = 0;
      for (int64_t v = 0; v < vocab; ++v) z += std::exp(double(lg[v]) - mx);
      wn += std::log(z) + mx - lg[id[t + 1]];
    }
    nll += wn;
    per.push_back(std::exp(wn / double(T - 1)));
    ref_log += std::log(ref_w.at(static_cast<size_t>(w)).get<double>());
    std::fprintf(stderr, "window %lld: ppl %.4f (HF %.4f)\n", static_cast<long long>(w),
                 per.back(), ref_w.at(static_cast<size_t>(w)).get<double>());
  }
  const double n = static_cast<double>(args.ppl);
  return {{"ppl", std::exp(nll / (n * double(T - 1)))}, {"hf_ppl_same_windows", std::exp(ref_log / n)},
          {"per_window", per}};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    const double t0 = now_s();
    const auto config = exq::io::load_model_config(args.model);
    const auto files = exq::io::SafetensorsModel::open(args.model);
    exq::io::ModelConfig rope_config = config;
    if (args.theta > 0) rope_config.rope_theta = args.theta;
    const Dims d{config.hidden_size, config.intermediate_size, config.num_attention_heads,
                 config.num_key_value_heads, config.head_dim, static_cast<float>(config.rms_norm_eps),
                 args.attn_scale > 0 ? static_cast<float>(args.attn_scale)
                                     : 1.0f / std::sqrt(static_cast<float>(config.head_dim)),
                 !args.noncausal, args.gqa_interleave, args.rope_gptj,
                 exq::model::rope_inv_freq(rope_config, args.length)};
    ordered_json out;
    out["forward"] = {{"causal", d.causal}, {"theta", args.theta}, {"attn_scale", d.attn_scale},
                      {"gqa_interleave", d.gqa_interleave}, {"rope_gptj", d.rope_gptj}};
    if (args.ppl > 0) {
      out["set"] = args.ppl_set;
      out["windows"] = args.ppl;
      for (const std::string& mode : args.modes)
        out[mode] = run_ppl(args, files, config.num_hidden_layers, d, Mode{mode == "f16"});
      std::printf("%s\n", out.dump(2).c_str());
      return 0;
    }

    const auto tok = exq::tokenizer::Tokenizer::from_file(args.model / "tokenizer.json");
    const auto cal = exq::quant::exllamav2_measurement_rows(
        tok, args.shared / "data", args.length, static_cast<int32_t>(config.vocab_size),
        config.bos_token_id.value_or(1), config.eos_token_ids.empty() ? 2 : config.eos_token_ids[0]);
    const int64_t R = std::min(args.rows, cal.rows), T = args.length;
    const TensorView emb = files.get("model.embed_tokens.weight");
    std::vector<Vec> x(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) {
      x[r].resize(static_cast<size_t>(T * d.hidden));
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < d.hidden; ++j)
          x[r][t * d.hidden + j] =
              exq::half_to_float(emb.data<uint16_t>()[cal.ids[r * T + t] * d.hidden + j]);
    }
    out["rows"] = R;
    out["length"] = T;
    out["sources"] = cal.describe();

    if (args.table.empty()) {
      out["layer0"] = score_layer0(args, config, files, d, x, T);
    } else {
      const auto ref = exq::quant::read_measurement(args.shared / "fixtures" / "exl2" /
                                                    "smollm2_measurement.json");
      const Mode m{args.modes.front() == "f16"};
      out["mode"] = args.modes.front();
      out["modules"] = ordered_json::array();
      int64_t next = 0;  // layer the states in x enter
      for (int64_t l : args.table) {
        for (; next < l; ++next) {
          const Layer w = load_layer(files, next);
          for (Vec& s : x) s = mlp(w, attention(w, s, T, d, m), T, d, m);
        }
        const Layer w = load_layer(files, l);
        for (bool attn : {true, false}) {
          const std::string key = fmt::format("model.layers.{}.{}", l, attn ? "self_attn" : "mlp");
          const auto* theirs = ref.find(key);
          EXQ_CHECK(theirs && theirs->rows, "{} not in the fixture", key);
          std::vector<Vec> y;
          out["modules"].push_back(table_module(w, x, T, d, m, attn, *theirs, &y));
          x = std::move(y);
        }
        next = l + 1;
        std::fprintf(stderr, "layer %lld done (%.0f s)\n", static_cast<long long>(l), now_s() - t0);
      }
    }
    out["seconds"] = now_s() - t0;
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "measure_probe_bench: %s\n", e.what());
    return 2;
  }
}
