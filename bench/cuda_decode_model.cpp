#include "cuda_decode_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>

#include "core/half.h"
#include "model/exl2_linear.h"
#include "model/linear.h"
#include "quant/options.h"

namespace exq::decode_bench {
namespace {

// splitmix64: fast, deterministic random bits.
struct Bits {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

// A random EXL2 layer [out, in] with the groups of `option` (random codes), as exllamav2 stores
// them.
io::Exl2Packed random_exl2(int64_t in, int64_t out, const quant::QuantOption& option,
                          uint64_t seed) {
  Bits b{seed};
  io::Exl2Linear l;
  l.in = in;
  l.out = out;
  const std::vector<quant::GroupSpan> spans = quant::group_layout(option, in);
  std::vector<std::pair<int, int64_t>> bits_rows;
  for (const quant::GroupSpan& g : spans) bits_rows.push_back({g.bits, g.rows});
  l.groups = io::exl2_group_table(bits_rows);
  l.q.resize(static_cast<size_t>(in * out));
  for (const quant::GroupSpan& g : spans) {  // codes of the group's width, rows [begin, +rows)
    const uint64_t mask = (uint64_t{1} << g.bits) - 1;
    const auto end = static_cast<size_t>((g.row_begin + g.rows) * out);
    for (auto i = static_cast<size_t>(g.row_begin * out); i < end; i += 8) {
      const uint64_t r = b.next();
      for (size_t k = 0; k < 8 && i + k < end; ++k)
        l.q[i + k] = static_cast<uint8_t>((r >> (8 * k)) & mask);
    }
  }
  for (size_t i = 0; i < l.groups.size() * static_cast<size_t>(out); ++i)
    l.qs.push_back(static_cast<uint8_t>(1 + b.next() % 16));
  for (size_t g = 0; g < l.groups.size(); ++g) l.scale_max.push_back(float_to_half(0.004f + 0.002f * (b.next() % 8) / 8.0f));
  l.perm.resize(static_cast<size_t>(in));
  std::iota(l.perm.begin(), l.perm.end(), 0);
  std::shuffle(l.perm.begin(), l.perm.end(), std::mt19937_64(seed));
  l.invperm.resize(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) l.invperm[static_cast<size_t>(l.perm[static_cast<size_t>(i)])] = static_cast<int32_t>(i);
  return io::pack_exl2(l);
}

}  // namespace

std::unique_ptr<HostModel> make_model(int64_t layers, int64_t vocab, int attn_row, int mlp_row, bool smol,
                                      bool mixtral, bool qwen3moe) {
  auto m = std::make_unique<HostModel>();
  io::ModelConfig& c = m->config;
  c.model_type = "llama";
  c.hidden_size = smol ? 576 : 4096;
  c.intermediate_size = smol ? 1536 : 14336;
  c.num_hidden_layers = layers;
  c.num_attention_heads = smol ? 9 : 32;
  c.num_key_value_heads = smol ? 3 : 8;
  c.head_dim = smol ? 64 : 128;
  c.vocab_size = vocab;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  if (qwen3moe) {
    c.hidden_size = 2048;
    c.intermediate_size = 768;  // the experts'
    c.num_key_value_heads = 4;
  }
  if (mixtral || qwen3moe) {
    c.model_type = qwen3moe ? "qwen3_moe" : "mixtral";
    c.num_experts = qwen3moe ? 128 : 8;
    c.experts_per_token = qwen3moe ? 8 : 2;
    c.expert_intermediate = c.intermediate_size;
    c.norm_topk_prob = true;
    c.layer_moe.assign(static_cast<size_t>(layers), 1);
  }
  const int64_t h = c.hidden_size, f = c.intermediate_size, kv = c.kv_dim();
  const int64_t qd = c.num_attention_heads * c.head_dim;
  const std::pair<int64_t, int64_t> shapes[] = {{h, qd}, {h, kv}, {h, kv}, {qd, h}, {h, f}, {h, f}, {f, h}};
  const quant::QuantOption four = quant::parse_option("1:4b_128g");
  std::vector<quant::QuantOption> options(7, four);
  if (attn_row >= 0) {
    const quant::AttnOptions& row = quant::attn_option_table().at(static_cast<size_t>(attn_row));
    std::copy(row.begin(), row.end(), options.begin());
  }
  if (mlp_row >= 0) {
    const quant::MlpOptions& row = quant::mlp_option_table().at(static_cast<size_t>(mlp_row));
    std::copy(row.begin(), row.end(), options.begin() + 4);
  }
  for (const quant::QuantOption& o : options) m->options.push_back(o.desc());
  uint64_t seed = 1;
  for (size_t i = 0; i < 7; ++i)
    m->packed.push_back(std::make_unique<io::Exl2Packed>(
        random_exl2(shapes[i].first, shapes[i].second, options[i], seed++)));
  m->table = Tensor(DType::F16, {vocab, h});
  Bits b{99};
  for (uint16_t& v : m->table.span<uint16_t>()) v = float_to_half(static_cast<float>(static_cast<int64_t>(b.next() % 2001) - 1000) * 2e-5f);
  const bool moe = mixtral || qwen3moe;
  if (moe) {  // the router: random f16 [experts, hidden]
    m->router = Tensor(DType::F16, {c.num_experts, h});
    for (uint16_t& v : m->router.span<uint16_t>()) v = float_to_half(static_cast<float>(static_cast<int64_t>(b.next() % 2001) - 1000) * 1e-3f);
  }
  model::LlamaWeights& w = m->weights;
  w.embed = m->table.view();
  const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (int64_t l = 0; l < layers; ++l) {
    model::LayerWeights L;
    L.attn_norm = Tensor(DType::F32, {h});
    L.ffn_norm = Tensor(DType::F32, {h});
    std::fill(L.attn_norm.span<float>().begin(), L.attn_norm.span<float>().end(), 1.0f);
    std::fill(L.ffn_norm.span<float>().begin(), L.ffn_norm.span<float>().end(), 1.0f);
    std::unique_ptr<model::Linear>* slots[] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
    for (int i = 0; i < (moe ? 4 : 7); ++i)
      *slots[i] = std::make_unique<model::Exl2Linear>(m->packed[static_cast<size_t>(i)]->view(), shapes[i].first,
                                                      shapes[i].second, fmt::format("model.layers.{}.{}", l, names[i]));
    if (moe) {
      L.router = std::make_unique<model::DenseLinear>(m->router.view());
      for (int64_t e = 0; e < c.num_experts; ++e) {
        model::ExpertWeights x;
        std::unique_ptr<model::Linear>* parts[] = {&x.gate, &x.up, &x.down};
        for (int i = 4; i < 7; ++i)
          *parts[i - 4] = std::make_unique<model::Exl2Linear>(
              m->packed[static_cast<size_t>(i)]->view(), shapes[i].first, shapes[i].second,
              fmt::format("model.layers.{}.{}.experts.{}.{}", l, qwen3moe ? "mlp" : "block_sparse_moe", e,
                          names[i]));
        L.experts.push_back(std::move(x));
      }
    }
    w.layers.push_back(std::move(L));
  }
  w.final_norm = Tensor(DType::F32, {h});
  std::fill(w.final_norm.span<float>().begin(), w.final_norm.span<float>().end(), 1.0f);
  w.head = std::make_unique<model::DenseLinear>(m->table.view());
  w.head_tied = false;
  return m;
}

}  // namespace exq::decode_bench
