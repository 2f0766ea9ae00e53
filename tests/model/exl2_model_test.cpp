// EXL2 model folders on the CPU: SmolLM2 with layer 0 replaced by exllamav2's 4.0 bpw fixture
// against the same model holding the fixture's dequantized weights (logits, greedy text);
// Exl2Linear against a dense matmul of exllamav2's reconstruction; tiny all-EXL2 models (EXL2
// head, biases, padding) against their dequantized twins; and the loader's errors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <tuple>

#include "exl2_test_models.h"
#include "model/exl2_linear.h"
#include "model/linear_bits.h"
#include "model/llama.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// max |a - b| / max |b| over all elements.
double rel_max_abs(const TensorView& a, const TensorView& b) {
  const auto x = a.span<float>(), y = b.span<float>();
  EXPECT_EQ(x.size(), y.size());
  double diff = 0.0, mag = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(x[i] - y[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(y[i])));
  }
  return diff / mag;
}

std::vector<int32_t> prompt_ids(size_t n) {
  const auto f = io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "smollm2" / "ppl_ids.safetensors");
  const auto ids = f.get("wiki").span<int32_t>();
  return {ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n)};
}

std::vector<int32_t> greedy(LlamaModel& m, const std::vector<int32_t>& prompt, int steps) {
  KvCache cache = m.make_cache(static_cast<int64_t>(prompt.size()) + steps);
  Tensor logits = m.forward(prompt, cache);
  std::vector<int32_t> out;
  for (int s = 0; s < steps; ++s) {
    const auto l = logits.span<float>();
    const int32_t next = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(next);
    logits = m.forward(std::span(&next, 1), cache);
  }
  return out;
}

// ------------------------------------------------------------ exllamav2 fixture, real model

class Exl2Smollm2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::test_model().empty()) return;
    root_ = test::temp_dir("exl2_model_smollm2");
    folders_ = test::make_smollm2_layer0_folders(test::test_model(), root_);
  }
  static void TearDownTestSuite() {
    if (!root_.empty()) fs::remove_all(root_);
  }
  static inline fs::path root_;
  static inline test::Exl2Folders folders_;
};

TEST_F(Exl2Smollm2, LoadsShardedFolderZeroCopy) {
  EXQ_REQUIRE_MODEL();
  const LlamaModel m = LlamaModel::load(folders_.exl2);
  const LlamaWeights& w = m.weights();
  EXPECT_EQ(w.files.files().size(), 2u);
  const LayerWeights& l0 = w.layers[0];
  for (const Linear* lin : {l0.q.get(), l0.k.get(), l0.v.get(), l0.o.get(), l0.gate.get(), l0.up.get(), l0.down.get()})
    EXPECT_NE(dynamic_cast<const Exl2Linear*>(lin), nullptr);
  EXPECT_NE(dynamic_cast<const DenseLinear*>(w.layers[1].q.get()), nullptr);
  EXPECT_TRUE(w.head_tied);
  // The packed words are read in place from the mapping.
  const auto* down = dynamic_cast<const Exl2Linear*>(l0.down.get());
  EXPECT_EQ(static_cast<const void*>(down->matmul_weight().q_weight),
            w.files.get("model.layers.0.mlp.down_proj.q_weight").raw());
  EXPECT_EQ(static_cast<const void*>(down->matmul_weight().q_scale),
            w.files.get("model.layers.0.mlp.down_proj.q_scale").raw());
}

TEST_F(Exl2Smollm2, LogitsAndGreedyTextMatchDequantizedReference) {
  EXQ_REQUIRE_MODEL();
  LlamaModel q = LlamaModel::load(folders_.exl2);
  LlamaModel r = LlamaModel::load(folders_.ref);
  const std::vector<int32_t> ids = prompt_ids(64);
  KvCache cq = q.make_cache(64), cr = r.make_cache(64);
  const Tensor lq = q.forward(ids, cq, /*all_logits=*/true);
  const Tensor lr = r.forward(ids, cr, /*all_logits=*/true);
  const double rel = rel_max_abs(lq, lr);
  std::printf("[exl2 layer 0 vs dequantized] logits [64, 49152] relative max-abs diff: %.3g\n", rel);
  EXPECT_LE(rel, 1e-3);

  const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 16);
  const auto gq = greedy(q, prompt, 24), gr = greedy(r, prompt, 24);
  EXPECT_EQ(gq, gr);
}

TEST_F(Exl2Smollm2, BitsFromGroupTables) {
  EXQ_REQUIRE_MODEL();
  const io::ModelConfig c = io::load_model_config(folders_.exl2);
  const auto files = io::SafetensorsModel::open(folders_.exl2);
  const ModelBits b = linear_bits(c, files, folders_.exl2);
  ASSERT_EQ(b.layers.size(), 30u);
  const auto fixture = io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "exl2" /
                                                 "smollm2_layer0_4.0bpw.safetensors");
  for (size_t i = 0; i < 7; ++i) {
    const LinearBits& lin = b.layers[0].linears[i];
    EXPECT_EQ(lin.format, "exl2");
    // Independent count straight from the stored table: q_weight rows hold bits*rows/32 words.
    const std::string key = std::string("model.layers.0.") + test::kLlamaLinears[i];
    const TensorView qw = fixture.get(key + ".q_weight"), qg = fixture.get(key + ".q_groups");
    const int64_t groups = qg.numel() / 2, in = fixture.get(key + ".q_invperm").numel();
    const int64_t out = fixture.get(key + ".dequant").dim(0);
    const double expect = (32.0 * static_cast<double>(qw.dim(0) * out) + groups * (48.0 + 4.0 * out) + 32.0 * in) /
                          static_cast<double>(in * out);
    EXPECT_NEAR(lin.bits.bpw(), expect, 1e-12) << key;
    EXPECT_EQ(lin.groups, groups);
    std::printf("[bits] %-18s %2lld groups %.4f bpw\n", test::kLlamaLinears[i], static_cast<long long>(groups),
                lin.bits.bpw());
    EXPECT_EQ(b.layers[1].linears[i].format, "F16");
    EXPECT_EQ(b.layers[1].linears[i].bits.bpw(), 16.0);
  }
  std::printf("[bits] layer 0 average %.4f bpw, decoder %.4f bpw\n", b.layers[0].total.bpw(), b.decoder.bpw());
  EXPECT_EQ(b.head.format, "tied");
  EXPECT_DOUBLE_EQ(b.decoder.total_bits, b.layers[0].total.total_bits + 29 * b.layers[1].total.total_bits);

  // exllamav2's own count: the measurement row whose options produce layer 0's group tables
  // carries total_bits for the attention and the MLP module.
  const json meas = json::parse(test::read_file(test::shared_dir() / "fixtures" / "exl2" / "smollm2_measurement.json"));
  const struct {
    const char* module;
    size_t first, count;
  } modules[] = {{"self_attn", 0, 4}, {"mlp", 4, 3}};
  for (const auto& mod : modules) {
    double total = 0.0;
    for (size_t i = mod.first; i < mod.first + mod.count; ++i) total += b.layers[0].linears[i].bits.total_bits;
    int matches = 0;
    for (const json& row : meas["measurement"][std::string("model.layers.0.") + mod.module]) {
      bool same = true;
      for (size_t i = mod.first; i < mod.first + mod.count && same; ++i) {
        const std::string key = std::string("model.layers.0.") + test::kLlamaLinears[i];
        const std::string short_name = std::string(test::kLlamaLinears[i]).substr(std::string(mod.module).size() + 1);
        const json& opt = row[short_name];
        const int64_t in = fixture.get(key + ".q_invperm").numel();
        // Group walk of docs/exl2.md section 4: (bits, rows) of every group.
        std::vector<std::pair<int, int64_t>> want;
        int64_t remaining = in, unassigned = in;
        for (size_t part = 0; part < opt["bits"].size(); ++part) {
          const int bits = opt["bits"][part];
          const double prop = opt["bits_prop"][part];
          const int64_t gs = opt["group_size"][std::to_string(bits)];
          const double share = std::min(static_cast<double>(in) * prop, static_cast<double>(remaining));
          const int64_t g = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(share / static_cast<double>(gs))));
          int64_t rows = std::min(g * gs, unassigned);
          unassigned -= rows;
          remaining -= g * gs;
          for (; rows > 0; rows -= gs) want.push_back({bits, std::min(rows, gs)});
        }
        std::vector<std::pair<int, int64_t>> have;
        for (const auto& g : io::validate_exl2(io::exl2_tensors(fixture, key), in,
                                               fixture.get(key + ".dequant").dim(0), key))
          have.push_back({g.bits, g.rows});
        same = want == have;
      }
      if (!same) continue;
      ++matches;
      std::printf("[bits] layer 0 %s: exq %.0f bits, exllamav2 measurement %lld bits\n", mod.module, total,
                  static_cast<long long>(row["total_bits"].get<int64_t>()));
      EXPECT_EQ(total, row["total_bits"].get<double>()) << mod.module;
    }
    EXPECT_GE(matches, 1) << mod.module << ": no measured option gives layer 0's group tables";
  }
}

// ------------------------------------------------------------ Exl2Linear vs dense reconstruction

TEST(Exl2Linear, MatchesDenseMatmulOfFixtureDequant) {
  const auto f = io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "exl2" /
                                           "smollm2_layer0_4.0bpw.safetensors");
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t T : {1, 64}) {
    double worst = 0.0;
    for (const char* name : test::kLlamaLinears) {
      const std::string key = std::string("model.layers.0.") + name;
      const TensorView dq = f.get(key + ".dequant");  // [out, in] f16, exllamav2's weights
      const int64_t out = dq.dim(0), in = dq.dim(1);
      const Exl2Linear packed(io::exl2_tensors(f, key), in, out, key);
      const DenseLinear dense(dq);
      ASSERT_EQ(packed.in_features(), in);
      ASSERT_EQ(packed.out_features(), out);
      Tensor x(DType::F32, {T, in}), yp(DType::F32, {T, out}), yd(DType::F32, {T, out});
      for (float& v : x.span<float>()) v = nd(rng);
      packed.forward(x, yp);
      dense.forward(x, yd);
      const double rel = rel_max_abs(yp, yd);
      EXPECT_LE(rel, 1e-5) << key << " T=" << T;
      worst = std::max(worst, rel);
    }
    std::printf("[T=%lld] packed vs dequantized matmul, worst relative max-abs diff: %.3g\n",
                static_cast<long long>(T), worst);
  }
}

// ------------------------------------------------------------ tiny models

constexpr int64_t kHidden = 64, kInter = 96, kVocab = 97, kLayers = 2;

json tiny_config(bool tied, bool bias) {
  return {{"model_type", "llama"},      {"hidden_size", kHidden},      {"intermediate_size", kInter},
          {"num_hidden_layers", kLayers}, {"num_attention_heads", 4},  {"num_key_value_heads", 2},
          {"head_dim", 16},             {"vocab_size", kVocab},        {"rms_norm_eps", 1e-5},
          {"max_position_embeddings", 64}, {"tie_word_embeddings", tied}, {"attention_bias", bias},
          {"mlp_bias", bias},
          {"quantization_config", {{"quant_method", "exl2"}, {"bits", 4.0}, {"head_bits", 6}}}};
}

struct TinyPair {
  std::map<std::string, Tensor> exl2, twin;  // twin: EXL2 layers replaced by their dequantized weights
};

// Every linear of both layers (and the head) EXL2 with mixed widths, except layer 1's o_proj.
TinyPair tiny_pair(bool bias, uint32_t seed = 3) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  TinyPair p;
  auto add = [&](const std::string& name, Shape shape, bool norm = false) {
    Tensor t(DType::F16, shape), u(DType::F16, shape);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<uint16_t>()[i] = u.data<uint16_t>()[i] = float_to_half(norm ? 1.0f + 0.1f * nd(rng) : nd(rng));
    p.exl2[name] = std::move(t);
    p.twin[name] = std::move(u);
  };
  add("model.embed_tokens.weight", {kVocab, kHidden});
  add("model.norm.weight", {kHidden}, true);
  add("lm_head.weight", {kVocab, kHidden});
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string pre = fmt::format("model.layers.{}.", l);
    add(pre + "input_layernorm.weight", {kHidden}, true);
    add(pre + "post_attention_layernorm.weight", {kHidden}, true);
    const std::pair<const char*, Shape> lin[] = {
        {"self_attn.q_proj", {64, kHidden}}, {"self_attn.k_proj", {32, kHidden}}, {"self_attn.v_proj", {32, kHidden}},
        {"self_attn.o_proj", {kHidden, 64}}, {"mlp.gate_proj", {kInter, kHidden}}, {"mlp.up_proj", {kInter, kHidden}},
        {"mlp.down_proj", {kHidden, kInter}}};
    for (const auto& [name, shape] : lin) {
      add(pre + name + ".weight", shape);
      if (bias) add(pre + name + ".bias", {shape[0]});
    }
  }
  const std::vector<std::vector<int>> widths = {{8, 4}, {6, 3}, {5, 2}, {4, 4, 3}};
  uint32_t s = seed * 100;
  for (int64_t l = 0; l < kLayers; ++l)
    for (const char* name : test::kLlamaLinears) {
      if (l == 1 && std::string(name) == "self_attn.o_proj") continue;  // a plain layer in between
      test::exl2ify(p.exl2, p.twin, fmt::format("model.layers.{}.{}", l, name), widths[s % widths.size()], s);
      ++s;
    }
  test::exl2ify(p.exl2, p.twin, "lm_head", {6, 4}, s);
  return p;
}

void write_folder(const fs::path& dir, const json& config, const std::map<std::string, Tensor>& tensors,
                  const std::string& file = "output.safetensors") {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(1);
  std::vector<io::NamedTensor> list;
  for (const auto& [name, t] : tensors) list.push_back({name, t.view()});
  io::write_safetensors(dir / file, list);
}

TEST(Exl2Tiny, MatchesDequantizedTwinWithHeadAndBias) {
  for (bool bias : {false, true}) {
    const fs::path root = test::temp_dir(fmt::format("exl2_tiny_{}", bias));
    const TinyPair p = tiny_pair(bias);
    json twin_config = tiny_config(false, bias);
    twin_config.erase("quantization_config");
    write_folder(root / "q", tiny_config(false, bias), p.exl2);
    write_folder(root / "r", twin_config, p.twin, "model.safetensors");
    LlamaModel q = LlamaModel::load(root / "q");
    LlamaModel r = LlamaModel::load(root / "r");
    EXPECT_NE(dynamic_cast<const Exl2Linear*>(q.weights().head.get()), nullptr);
    EXPECT_FALSE(q.weights().head_tied);
    EXPECT_NE(dynamic_cast<const DenseLinear*>(q.weights().layers[1].o.get()), nullptr);
    const std::vector<int32_t> ids = {5, 17, 3, 96, 42, 0, 61, 8, 29, 77, 13};
    KvCache cq = q.make_cache(32), cr = r.make_cache(32);
    const Tensor lq = q.forward(ids, cq, true), lr = r.forward(ids, cr, true);
    const double rel = rel_max_abs(lq, lr);
    std::printf("[tiny all-EXL2, bias %d] logits relative max-abs diff: %.3g\n", bias, rel);
    EXPECT_LE(rel, 1e-5);
    EXPECT_EQ(greedy(q, {1, 2, 3}, 12), greedy(r, {1, 2, 3}, 12));
    // A quantized head wins over tie_word_embeddings.
    write_folder(root / "qt", tiny_config(true, bias), p.exl2);
    LlamaModel qt = LlamaModel::load(root / "qt");
    EXPECT_NE(dynamic_cast<const Exl2Linear*>(qt.weights().head.get()), nullptr);
    fs::remove_all(root);
  }
}

TEST(Exl2Tiny, BitsOfMixedWidths) {
  const fs::path root = test::temp_dir("exl2_tiny_bits");
  const TinyPair p = tiny_pair(false);
  write_folder(root, tiny_config(false, false), p.exl2);
  const auto files = io::SafetensorsModel::open(root);
  const ModelBits b = linear_bits(io::load_model_config(root), files, root);
  // layer 0 q_proj got widths {8, 4}: two groups of 32 rows over 64 outputs.
  const LinearBits& q = b.layers[0].linears[0];
  EXPECT_EQ(q.format, "exl2");
  EXPECT_EQ(q.groups, 2);
  EXPECT_DOUBLE_EQ(q.bits.bpw(), (32.0 * 64 * (8 + 4) + 2 * (16 + 32 + 4 * 64) + 32 * 64) / (64.0 * 64));
  EXPECT_EQ(b.layers[1].linears[3].format, "F16");
  EXPECT_EQ(b.head.format, "exl2");
  double total = 0;
  int64_t weights = 0;
  for (const auto& l : b.layers)
    for (const auto& lin : l.linears) {
      total += lin.bits.total_bits;
      weights += lin.bits.weights;
    }
  EXPECT_DOUBLE_EQ(b.decoder.bpw(), total / static_cast<double>(weights));
  fs::remove_all(root);
}

// Loads a broken variant of the tiny model and returns its error.
Error load_error(const std::string& name, const std::function<void(json&, std::map<std::string, Tensor>&)>& edit) {
  const fs::path root = test::temp_dir("exl2_bad_" + name);
  TinyPair p = tiny_pair(false);
  json config = tiny_config(false, false);
  edit(config, p.exl2);
  write_folder(root, config, p.exl2);
  try {
    LlamaModel::load(root);
  } catch (const Error& e) {
    fs::remove_all(root);
    return e;
  }
  fs::remove_all(root);
  ADD_FAILURE() << name << ": loaded without error";
  return Error("none");
}

void expect_names(const Error& e, const std::string& tensor, const std::string& text) {
  EXPECT_EQ(e.context().tensor, tensor) << e.what();
  EXPECT_NE(e.context().file.find("output.safetensors"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find(tensor), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
}

TEST(Exl2Tiny, BadInputsNameTensorAndFile) {
  const std::string down = "model.layers.1.mlp.down_proj";
  // Group 1 claims to start at q_weight row 3: the first group's words no longer hold whole rows.
  expect_names(load_error("groups",
                          [&](json&, auto& t) { t.at(down + ".q_groups").template data<int16_t>()[3] = 3; }),
               down + ".q_groups", "group");
  expect_names(load_error("scale", [&](json&, auto& t) { t.erase(down + ".q_scale"); }), down + ".q_scale",
               "missing");
  expect_names(load_error("gptq",
                          [&](json&, auto& t) { t["model.layers.0.self_attn.k_proj.qweight"] = Tensor::zeros(DType::I32, {8, 32}); }),
               "model.layers.0.self_attn.k_proj.qweight", "GPTQ format is not supported");
  expect_names(load_error("perm",
                          [&](json&, auto& t) { t.at(down + ".q_invperm").template data<int32_t>()[5] = 96; }),
               down + ".q_invperm", "not a permutation");
  expect_names(load_error("head", [&](json&, auto& t) { t["lm_head.q_weight"] = Tensor::zeros(DType::I32, {10, 96}); }),
               "lm_head.q_weight", "expected 128 columns");
  const Error gptq_config = load_error("gptq_config", [](json& c, auto&) { c["quantization_config"]["quant_method"] = "gptq"; });
  EXPECT_NE(std::string(gptq_config.what()).find("GPTQ format is not supported"), std::string::npos);
  EXPECT_NE(gptq_config.context().file.find("config.json"), std::string::npos);
}

// --lora merges at load: a dense layer of an EXL2 model takes it, an EXL2 layer (and the EXL2
// head) is dequantized to fp16 and merged, biases kept; the model then matches its dequantized
// twin with the same adapter. A target the model lacks is refused naming the tensor.
TEST(Exl2Tiny, LoraMergesIntoDenseAndExl2Layers) {
  const fs::path root = test::temp_dir("exl2_tiny_lora");
  const TinyPair p = tiny_pair(true);
  json twin_config = tiny_config(false, true);
  twin_config.erase("quantization_config");
  write_folder(root / "q", tiny_config(false, true), p.exl2);
  write_folder(root / "r", twin_config, p.twin, "model.safetensors");
  auto adapter = [&](const std::string& name, const std::vector<std::tuple<std::string, int64_t, int64_t>>& mods) {
    const fs::path dir = root / name;
    fs::create_directories(dir);
    std::ofstream(dir / "adapter_config.json") << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4})";
    std::vector<Tensor> keep;
    std::vector<io::NamedTensor> list;
    for (const auto& [module, out, in] : mods) {
      Tensor a(DType::F32, {2, in}), b(DType::F32, {out, 2});
      for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = 0.01f * static_cast<float>(i % 7);
      for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = 0.02f * static_cast<float>(i % 5);
      const std::string pre = "base_model.model." + module;
      keep.push_back(std::move(a));
      list.push_back({pre + ".lora_A.weight", keep.back().view()});
      keep.push_back(std::move(b));
      list.push_back({pre + ".lora_B.weight", keep.back().view()});
    }
    io::write_safetensors(dir / "adapter_model.safetensors", list);
    return load_lora(dir);
  };
  const std::vector<std::tuple<std::string, int64_t, int64_t>> mods = {
      {"model.layers.1.self_attn.o_proj", kHidden, 64},  // dense in the EXL2 model
      {"model.layers.0.self_attn.q_proj", 64, kHidden},  // EXL2
      {"lm_head", kVocab, kHidden}};                     // EXL2 head
  LlamaModel q = LlamaModel::load(root / "q");
  LlamaModel r = LlamaModel::load(root / "r");
  const Tensor bias = Tensor::copy_of(dynamic_cast<const DenseLinear&>(*q.weights().layers[1].o).bias().view());
  const LoraAdapter ad = adapter("a", mods);
  q.merge_lora(ad);
  r.merge_lora(ad);
  const Tensor want = merge_lora(p.twin.at("model.layers.0.self_attn.q_proj.weight").view(),
                                 ad.pairs.at("model.layers.0.self_attn.q_proj.weight"), 2.0, "q");
  const auto* q0 = dynamic_cast<const DenseLinear*>(q.weights().layers[0].q.get());
  ASSERT_NE(q0, nullptr);
  EXPECT_EQ(std::memcmp(q0->weight().raw(), want.raw(), want.nbytes()), 0);
  const auto* o1 = dynamic_cast<const DenseLinear*>(q.weights().layers[1].o.get());
  ASSERT_NE(o1, nullptr);
  EXPECT_EQ(std::memcmp(o1->bias().raw(), bias.raw(), bias.nbytes()), 0);
  EXPECT_NE(dynamic_cast<const DenseLinear*>(q.weights().head.get()), nullptr);
  EXPECT_NE(dynamic_cast<const Exl2Linear*>(q.weights().layers[0].k.get()), nullptr);  // untouched
  const std::vector<int32_t> ids = {5, 17, 3, 96, 42, 0, 61, 8};
  KvCache cq = q.make_cache(16), cr = r.make_cache(16);
  const double rel = rel_max_abs(q.forward(ids, cq, true), r.forward(ids, cr, true));
  std::printf("[tiny EXL2 + LoRA vs its twin + LoRA] logits relative max-abs diff: %.3g\n", rel);
  EXPECT_LE(rel, 1e-5);
  try {
    q.merge_lora(adapter("l9", {{"model.layers.9.mlp.up_proj", kInter, kHidden}}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, "model.layers.9.mlp.up_proj.weight") << e.what();
    EXPECT_NE(e.context().file.find("adapter_model.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a linear layer of this model"), std::string::npos) << e.what();
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace exq::model
