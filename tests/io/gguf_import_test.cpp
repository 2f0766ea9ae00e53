#include "io/gguf_import.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numbers>
#include <cmath>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <tuple>

#include "core/error.h"
#include "core/half.h"
#include "gguf_builder.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "sha256.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace exq::io {
namespace fs = std::filesystem;
using nlohmann::json;
using test::GgufBuilder;

namespace {

GgufFile parse_str(const std::string& s) {
  return GgufFile::parse(
      MappedFile::from_bytes(std::vector<uint8_t>(s.begin(), s.end()), "mem.gguf"));
}

json read_json(const fs::path& p) { return json::parse(test::read_file(p)); }

// The tiny llama with one metadata string replaced.
std::string tiny_with(const std::string& key, const std::string& value) {
  return test::tiny_llama_builder(1, {{key, value}}).build();
}

}  // namespace

TEST(GgufImport, HfNames) {
  EXPECT_EQ(gguf_to_hf_name("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_to_hf_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(gguf_to_hf_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.12.attn_k.weight"), "model.layers.12.self_attn.k_proj.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.0.ffn_norm.weight"),
            "model.layers.0.post_attention_layernorm.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_THROW(gguf_to_hf_name("rope_freqs.weight"), Error);
  EXPECT_THROW(gguf_to_hf_name("blk.0.attn_qkv.weight"), Error);
}

TEST(GgufImport, TinyModelTensors) {
  const GgufFile g = parse_str(test::tiny_llama_builder().build());
  const std::vector<HfTensor> ts = gguf_to_hf_tensors(g);
  ASSERT_EQ(ts.size(), 11u);
  for (size_t i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(ts[i].name, gguf_to_hf_name(g.tensors()[i].name));
    EXPECT_EQ(ts[i].tensor.shape(), g.tensors()[i].hf_shape());
  }
  // q: 2 heads of 16 rows; GGUF row h*16 + 2k + i is HF row h*16 + i*8 + k.
  const Tensor q = g.dequantize_f16(g.tensor("blk.0.attn_q.weight"));
  const Tensor& hq = ts[2].tensor;
  ASSERT_EQ(ts[2].name, "model.layers.0.self_attn.q_proj.weight");
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 8; ++k)
        for (int c = 0; c < 32; ++c)
          ASSERT_EQ(hq.data<uint16_t>()[(h * 16 + i * 8 + k) * 32 + c],
                    q.data<uint16_t>()[(h * 16 + 2 * k + i) * 32 + c]);
  // k: 1 KV head of 16 rows.
  const Tensor k = g.dequantize_f16(g.tensor("blk.0.attn_k.weight"));
  for (int i = 0; i < 2; ++i)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 32; ++c)
        ASSERT_EQ(ts[3].tensor.data<uint16_t>()[(i * 8 + r) * 32 + c],
                  k.data<uint16_t>()[(2 * r + i) * 32 + c]);
}

TEST(GgufImport, TinyModelFolder) {
  const fs::path dir = test::temp_dir("gguf_import_tiny");
  const fs::path gguf = dir / "tiny.gguf";
  std::ofstream(gguf, std::ios::binary) << test::tiny_llama_builder().build();
  const fs::path out = dir / "out" / "nested";
  const auto files = import_gguf(gguf, out);
  EXPECT_EQ(files.size(), 6u);
  const json config = read_json(out / "config.json");
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(config["hidden_size"], 32);
  EXPECT_EQ(config["intermediate_size"], 64);
  EXPECT_EQ(config["num_hidden_layers"], 1);
  EXPECT_EQ(config["num_attention_heads"], 2);
  EXPECT_EQ(config["num_key_value_heads"], 1);
  EXPECT_EQ(config["head_dim"], 16);
  EXPECT_EQ(config["rms_norm_eps"].get<double>(), 1e-5);
  EXPECT_EQ(config["rope_theta"].get<double>(), 10000.0);
  EXPECT_EQ(config["max_position_embeddings"], 128);
  EXPECT_EQ(config["vocab_size"], 12);
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_EQ(config["bos_token_id"], 1);
  EXPECT_EQ(config["eos_token_id"], 2);
  EXPECT_EQ(config["torch_dtype"], "float16");
  EXPECT_EQ(read_json(out / "generation_config.json"),
            json::parse(R"({"bos_token_id":1,"eos_token_id":2,"pad_token_id":2})"));

  const json tok = read_json(out / "tokenizer.json");
  EXPECT_EQ(tok["model"]["type"], "BPE");
  EXPECT_EQ(tok["model"]["vocab"].size(), 12u);
  EXPECT_EQ(tok["model"]["vocab"]["Ġab"], 9);
  EXPECT_EQ(tok["model"]["merges"], json::array({"a b", "Ġ a", "Ġa b"}));
  ASSERT_EQ(tok["added_tokens"].size(), 4u);  // 3 control + 1 user-defined
  EXPECT_EQ(tok["added_tokens"][3]["content"], "<tool>");
  EXPECT_EQ(tok["added_tokens"][3]["id"], 11);
  EXPECT_EQ(tok["added_tokens"][3]["special"], true);
  EXPECT_EQ(tok["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
  const json tc = read_json(out / "tokenizer_config.json");
  EXPECT_EQ(tc["chat_template"], "{% for m in messages %}{{ m['content'] }}{% endfor %}");
  EXPECT_EQ(tc["bos_token"], "<|im_start|>");
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["pad_token"], "<|im_end|>");
  EXPECT_EQ(tc["unk_token"], "<|endoftext|>");
  EXPECT_EQ(tc["add_bos_token"], false);

  const SafetensorsModel m = SafetensorsModel::open(out);
  EXPECT_EQ(m.names().size(), 11u);
  EXPECT_EQ(m.get("model.embed_tokens.weight").shape(), (Shape{12, 32}));
  EXPECT_EQ(m.get("model.embed_tokens.weight").dtype(), DType::F16);
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

// The same weights as llama.cpp writes them for llama (q/k rows interleaved per head) and for
// qwen2 (HF order, plus q/k/v biases) must import to the same HF tensors; the qwen2 folder adds
// the biases and a qwen2 config.
// Every tensor of the llama import in `llama_dir` (q/k rows unpermuted) is in `other`, byte for
// byte, and `other` has `extra` tensors more (its biases or norms).
void expect_llama_tensors_equal(const fs::path& llama_dir, const SafetensorsModel& other, size_t extra) {
  const SafetensorsModel llama = SafetensorsModel::open(llama_dir);
  EXPECT_EQ(other.names().size(), llama.names().size() + extra);
  for (const std::string& name : llama.names()) {
    const TensorView a = llama.get(name), b = other.get(name);
    ASSERT_EQ(a.shape(), b.shape()) << name;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << name;
  }
}

// qwen3: HF row order like qwen2, no biases, and the per-head q/k norms under HF's names; the
// result loads as a qwen3 model.
TEST(GgufImport, Qwen3KeepsRowOrderAndImportsQkNorms) {
  const fs::path dir = test::temp_dir("gguf_import_qwen3");
  std::ofstream(dir / "llama.gguf", std::ios::binary) << test::tiny_llama_builder(4).build();
  std::ofstream(dir / "qwen3.gguf", std::ios::binary) << test::tiny_llama_builder(4, {}, "qwen3").build();
  import_gguf(dir / "llama.gguf", dir / "llama");
  import_gguf(dir / "qwen3.gguf", dir / "qwen3");
  const json config = read_json(dir / "qwen3" / "config.json");
  EXPECT_EQ(config["model_type"], "qwen3");
  EXPECT_EQ(config["architectures"], json::array({"Qwen3ForCausalLM"}));
  EXPECT_EQ(config["attention_bias"], false);
  const ModelConfig c = parse_model_config(config.dump(), "config.json");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_qkv_bias);

  const SafetensorsModel qwen3 = SafetensorsModel::open(dir / "qwen3");
  expect_llama_tensors_equal(dir / "llama", qwen3, 2);
  const GgufFile g = GgufFile::open(dir / "qwen3.gguf");
  for (const char* p : {"q", "k"}) {
    const TensorView norm = qwen3.get(fmt::format("model.layers.0.self_attn.{}_norm.weight", p));
    const Tensor want = g.dequantize_f16(g.tensor(fmt::format("blk.0.attn_{}_norm.weight", p)));
    EXPECT_EQ(norm.shape(), (Shape{16})) << p;
    EXPECT_EQ(std::memcmp(norm.raw(), want.raw(), want.nbytes()), 0) << p;
  }

  // qwen3 without its norms is refused before anything is written.
  std::ofstream(dir / "nonorm.gguf", std::ios::binary)
      << test::tiny_llama_builder(4, {}, "qwen3", false).build();
  try {
    import_gguf(dir / "nonorm.gguf", dir / "nonorm");
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen3 needs q/k norms"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "nonorm"));
  fs::remove_all(dir);
}

TEST(GgufImport, Qwen2KeepsRowOrderAndBiases) {
  const fs::path dir = test::temp_dir("gguf_import_qwen2");
  std::ofstream(dir / "llama.gguf", std::ios::binary) << test::tiny_llama_builder(3).build();
  std::ofstream(dir / "qwen2.gguf", std::ios::binary)
      << test::tiny_llama_builder(3, {}, "qwen2").build();
  import_gguf(dir / "llama.gguf", dir / "llama");
  import_gguf(dir / "qwen2.gguf", dir / "qwen2");

  const json config = read_json(dir / "qwen2" / "config.json");
  EXPECT_EQ(config["model_type"], "qwen2");
  EXPECT_EQ(config["architectures"], json::array({"Qwen2ForCausalLM"}));
  EXPECT_EQ(config["use_sliding_window"], false);
  EXPECT_FALSE(config.contains("attention_bias"));
  EXPECT_EQ(config["num_key_value_heads"], 1);
  const ModelConfig c = parse_model_config(config.dump(), "config.json");
  EXPECT_TRUE(c.attention_qkv_bias);
  EXPECT_TRUE(c.tie_word_embeddings);

  const SafetensorsModel qwen2 = SafetensorsModel::open(dir / "qwen2");
  expect_llama_tensors_equal(dir / "llama", qwen2, 3);
  const GgufFile g = GgufFile::open(dir / "qwen2.gguf");
  for (const char* p : {"q", "k", "v"}) {
    const TensorView bias = qwen2.get(fmt::format("model.layers.0.self_attn.{}_proj.bias", p));
    const Tensor want = g.dequantize_f16(g.tensor(fmt::format("blk.0.attn_{}.bias", p)));
    EXPECT_EQ(bias.shape(), (Shape{*p == 'q' ? 32 : 16})) << p;
    EXPECT_EQ(bias.dtype(), DType::F16);
    EXPECT_EQ(std::memcmp(bias.raw(), want.raw(), want.nbytes()), 0) << p;
  }

  // qwen2 without its biases is refused before anything is written.
  std::ofstream(dir / "nobias.gguf", std::ios::binary)
      << test::tiny_llama_builder(3, {}, "qwen2", false).build();
  try {
    import_gguf(dir / "nobias.gguf", dir / "nobias");
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen2 needs q/k/v biases"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "nobias"));
}

// llama with attention biases: the q/k biases are interleaved like their rows and come back in
// HF order (config attention_bias true).
TEST(GgufImport, LlamaBiasesFollowTheirRows) {
  std::mt19937 rng(9);
  GgufBuilder b = test::tiny_llama_builder(3);
  const std::string qb = test::random_blocks(0, 32, rng), kb = test::random_blocks(0, 16, rng);
  b.tensor("blk.0.attn_q.bias", {32}, 0, qb);
  b.tensor("blk.0.attn_k.bias", {16}, 0, kb);
  const GgufFile g = parse_str(b.build());
  EXPECT_EQ(hf_config_from_gguf(g)["attention_bias"], true);
  const std::vector<HfTensor> tensors = gguf_to_hf_tensors(g);
  for (const auto& [name, gguf_bytes, heads] :
       {std::tuple{"model.layers.0.self_attn.q_proj.bias", qb, 2},
        std::tuple{"model.layers.0.self_attn.k_proj.bias", kb, 1}}) {
    const auto it = std::find_if(tensors.begin(), tensors.end(),
                                 [&](const HfTensor& t) { return t.name == name; });
    ASSERT_NE(it, tensors.end()) << name;
    std::string f16;  // the file's values as fp16, then into HF order
    for (size_t i = 0; i < gguf_bytes.size() / 4; ++i) {
      float v;
      std::memcpy(&v, gguf_bytes.data() + 4 * i, 4);
      GgufBuilder::put<uint16_t>(f16, float_to_half(v));
    }
    const std::string want = test::hf_row_order(f16, heads, 2);
    ASSERT_EQ(it->tensor.nbytes(), want.size()) << name;
    EXPECT_EQ(std::memcmp(it->tensor.raw(), want.data(), want.size()), 0) << name;
  }
}

// llama.cpp's rope.scaling.* keys become transformers' rope_scaling, which exq's config reader
// takes: yarn (Qwen2.5's long context), linear, the old rope.scale_linear; other kinds refused.
TEST(GgufImport, RopeScaling) {
  auto config = [](const std::function<void(GgufBuilder&)>& add) {
    GgufBuilder b = test::tiny_llama_builder(1);
    add(b);
    return hf_config_from_gguf(parse_str(b.build()));
  };
  EXPECT_TRUE(config([](GgufBuilder&) {})["rope_scaling"].is_null());
  const json yarn = config([](GgufBuilder& b) {
    b.kv_str("llama.rope.scaling.type", "yarn");
    b.kv<float>("llama.rope.scaling.factor", GgufBuilder::F32, 4.0f);
    b.kv<uint32_t>("llama.rope.scaling.original_context_length", GgufBuilder::U32, 32);
    b.kv<float>("llama.rope.scaling.yarn_beta_fast", GgufBuilder::F32, 16.0f);
    b.kv<float>("llama.rope.scaling.yarn_attn_factor", GgufBuilder::F32, 1.1f);
  });
  EXPECT_EQ(yarn["rope_scaling"], json({{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32},
                                        {"beta_fast", 16.0}, {"attention_factor", 1.1}}));
  const ModelConfig c = parse_model_config(yarn.dump(), "imported.json");
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Yarn);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_EQ(c.context_length(), 128);  // context_length 128 already exceeds 32 x 4
  const json linear = config([](GgufBuilder& b) {
    b.kv_str("llama.rope.scaling.type", "linear");
    b.kv<float>("llama.rope.scaling.factor", GgufBuilder::F32, 2.0f);
  });
  EXPECT_EQ(linear["rope_scaling"], json({{"rope_type", "linear"}, {"factor", 2.0}}));
  const json old = config([](GgufBuilder& b) { b.kv<float>("llama.rope.scale_linear", GgufBuilder::F32, 8.0f); });
  EXPECT_EQ(old["rope_scaling"], json({{"rope_type", "linear"}, {"factor", 8.0}}));

  auto expect_error = [&](const std::function<void(GgufBuilder&)>& add, const std::string& needle) {
    try {
      config(add);
      ADD_FAILURE() << "expected Error: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(e.context().file, "mem.gguf");
    }
  };
  expect_error([](GgufBuilder& b) { b.kv_str("llama.rope.scaling.type", "longrope"); },
               "rope scaling 'longrope' is not supported by import-gguf (linear or yarn)");
  expect_error([](GgufBuilder& b) { b.kv_str("llama.rope.scaling.type", "yarn"); },
               "rope scaling 'yarn' without llama.rope.scaling.factor");
  expect_error(
      [](GgufBuilder& b) {
        b.kv_str("llama.rope.scaling.type", "yarn");
        b.kv<float>("llama.rope.scaling.factor", GgufBuilder::F32, 40.0f);
        b.kv<float>("llama.rope.scaling.yarn_log_multiplier", GgufBuilder::F32, 0.1f);
      },
      "rope.scaling.yarn_log_multiplier is not supported");
}

// llama.cpp's divisors of a llama3 scaling (its converter's generate_extra_tensors), for the tiny
// llama's 8 frequencies (head_dim 16, theta 10000).
std::string llama3_divisors(double factor, double low, double high, double old_len) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) {
    const float freq = 1.0f / static_cast<float>(std::pow(10000.0, static_cast<float>(2 * i) / 16.0f));
    const double wavelen = 2 * std::numbers::pi / freq;
    float d = 1.0f;
    if (wavelen > old_len / low) {
      d = static_cast<float>(factor);
    } else if (wavelen >= old_len / high) {
      const double s = (old_len / wavelen - low) / (high - low);
      d = static_cast<float>(1.0 / ((1 - s) / factor + s));
    }
    bytes.append(reinterpret_cast<const char*>(&d), sizeof d);
  }
  return bytes;
}

// Llama 3.1+ GGUFs carry their llama3 scaling as rope_freqs.weight: the import recovers the
// parameters (Meta's 8 / 1 / 4 / 8192, and another band) and leaves the tensor out of the weights.
TEST(GgufImport, Llama3RopeFreqs) {
  auto imported = [](const std::string& divisors) {
    GgufBuilder b = test::tiny_llama_builder(1);
    b.tensor("rope_freqs.weight", {divisors.size() / 4}, 0, divisors);
    const fs::path dir = test::temp_dir("gguf_import_rope_freqs");
    std::ofstream(dir / "l3.gguf", std::ios::binary) << b.build();
    import_gguf(dir / "l3.gguf", dir / "out");
    return dir / "out";
  };
  const fs::path out = imported(llama3_divisors(8.0, 1.0, 4.0, 8192));
  const json config = read_json(out / "config.json");
  EXPECT_EQ(config["rope_scaling"], json({{"rope_type", "llama3"},
                                          {"factor", 8.0},
                                          {"low_freq_factor", 1.0},
                                          {"high_freq_factor", 4.0},
                                          {"original_max_position_embeddings", 8192}}));
  const ModelConfig c = load_model_config(out);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Llama3);
  const auto names = SafetensorsFile::open(out / "model.safetensors").names();
  EXPECT_EQ(std::count(names.begin(), names.end(), "rope_freqs.weight"), 0);
  // Two blended frequencies (wavelengths 628 and 1987 inside 512..2048).
  EXPECT_EQ(read_json(imported(llama3_divisors(32.0, 1.0, 4.0, 2048)) / "config.json")["rope_scaling"],
            json({{"rope_type", "llama3"},
                  {"factor", 32.0},
                  {"low_freq_factor", 1.0},
                  {"high_freq_factor", 4.0},
                  {"original_max_position_embeddings", 2048}}));
  // All ones: no scaling.
  EXPECT_TRUE(read_json(imported(llama3_divisors(1.0, 1.0, 4.0, 8192)) / "config.json")["rope_scaling"].is_null());
  // Divisors no llama3 scaling gives (a blend at a fast frequency, ones after it), a wrong length.
  std::string odd = llama3_divisors(8.0, 1.0, 4.0, 8192);
  const float three = 3.0f;
  odd.replace(2 * sizeof(float), sizeof(float), reinterpret_cast<const char*>(&three), sizeof(float));
  try {
    imported(odd);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a rope scaling import-gguf can express"), std::string::npos) << e.what();
    EXPECT_EQ(e.context().tensor, "rope_freqs.weight");
  }
  try {
    imported(llama3_divisors(8.0, 1.0, 4.0, 8192).substr(4));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected 8 float32 values"), std::string::npos) << e.what();
  }
}

TEST(GgufImport, UnsupportedInputsAreClearErrors) {
  auto expect = [](const std::string& gguf, const std::string& needle) {
    const GgufFile g = parse_str(gguf);
    try {
      (void)hf_config_from_gguf(g);
      (void)hf_tokenizer_from_gguf(g);
      ADD_FAILURE() << "expected Error: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(e.context().file, "mem.gguf");
    }
  };
  expect(tiny_with("tokenizer.ggml.pre", "falcon"), "unsupported tokenizer.ggml.pre 'falcon'");
  expect(tiny_with("tokenizer.ggml.model", "bert"), "unsupported tokenizer.ggml.model 'bert'");
  // A SentencePiece vocabulary needs its scores (the merge ranks).
  expect(tiny_with("tokenizer.ggml.model", "llama"), "missing metadata key 'tokenizer.ggml.scores'");
  expect(tiny_with("general.architecture", "gemma"), "unsupported architecture 'gemma'");
  // Each supported pre type gives its own pre-tokenizer.
  for (const char* pre : {"llama-bpe", "qwen2", "gpt2"}) {
    const json t = hf_tokenizer_from_gguf(parse_str(tiny_with("tokenizer.ggml.pre", pre)));
    if (std::string(pre) == "gpt2") {
      EXPECT_EQ(t["pre_tokenizer"]["type"], "ByteLevel");
    } else {
      EXPECT_EQ(t["pre_tokenizer"]["pretokenizers"][0]["type"], "Split") << pre;
      EXPECT_EQ(t["model"]["ignore_merges"], std::string(pre) == "llama-bpe") << pre;
    }
  }
  EXPECT_THROW(import_gguf("/nonexistent/model.gguf", test::temp_dir("gguf_import_missing")),
               Error);
}

// The real SmolLM2 GGUF: every tensor must hash to the reference fp16 bytes, and the
// config/tokenizer files must match the shipped HF ones.
TEST(GgufImport, SmolLM2MatchesReference) {
  EXQ_REQUIRE_GGUF();
  const fs::path ref = test::shared_dir() / "models/smollm2-135m-instruct";
  const fs::path out = test::temp_dir("gguf_import_smollm2");
  const auto t0 = std::chrono::steady_clock::now();
  import_gguf(test::test_gguf(), out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("import-gguf of %s: %.2f s\n", test::test_gguf().filename().c_str(), secs);

  const SafetensorsFile st = SafetensorsFile::open(out / "model.safetensors");
  std::istringstream lines(test::read_file(ref / "tensors.sha256"));
  std::string line;
  int matched = 0, total = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    ++total;
    std::istringstream ls(line);
    std::string hash, name;
    ls >> hash >> name;
    std::string shape;
    std::getline(ls, shape);
    shape.erase(0, shape.find_first_not_of(' '));
    ASSERT_TRUE(st.contains(name)) << name;
    const TensorView v = st.get(name);
    EXPECT_EQ(shape_str(v.shape()), shape) << name;
    EXPECT_EQ(v.dtype(), DType::F16) << name;
    const std::string got = test::sha256_hex(v.raw(), v.nbytes());
    EXPECT_EQ(got, hash) << name;
    matched += got == hash;
  }
  EXPECT_EQ(total, 272);
  EXPECT_EQ(matched, 272);
  EXPECT_EQ(st.names().size(), 272u);
  std::printf("tensors matching tensors.sha256: %d / %d\n", matched, total);

  EXPECT_EQ(read_json(out / "config.json"), read_json(ref / "config.json"));
  EXPECT_EQ(read_json(out / "generation_config.json"), read_json(ref / "generation_config.json"));
  const json tok = read_json(out / "tokenizer.json"), ref_tok = read_json(ref / "tokenizer.json");
  EXPECT_EQ(tok["model"], ref_tok["model"]);
  EXPECT_EQ(tok["model"]["vocab"].size(), 49152u);
  EXPECT_EQ(tok["model"]["merges"].size(), 48900u);
  EXPECT_EQ(tok["added_tokens"], ref_tok["added_tokens"]);
  for (const char* k :
       {"normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"})
    EXPECT_EQ(tok[k], ref_tok[k]) << k;
  EXPECT_EQ(tok, ref_tok);
  const json tc = read_json(out / "tokenizer_config.json"),
             ref_tc = read_json(ref / "tokenizer_config.json");
  for (const char* k :
       {"chat_template", "bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token",
        "add_prefix_space", "clean_up_tokenization_spaces", "model_max_length", "tokenizer_class"})
    EXPECT_EQ(tc[k], ref_tc[k]) << k;
  const json sm = read_json(out / "special_tokens_map.json"),
             ref_sm = read_json(ref / "special_tokens_map.json");
  for (const char* k : {"bos_token", "eos_token", "pad_token", "unk_token"})
    EXPECT_EQ(sm[k], ref_sm[k]) << k;

  // The written tokenizer.json encodes every fixture case like HF's tokenizer does.
  const auto tk = tokenizer::Tokenizer::from_file(out / "tokenizer.json");
  std::ifstream cases(test::shared_dir() / "fixtures/smollm2/tokenizer_cases.jsonl");
  int n_cases = 0, n_same = 0;
  while (std::getline(cases, line)) {
    if (line.empty()) continue;
    const json c = json::parse(line);
    const auto ids = tk.encode(c["text"].get<std::string>());
    ++n_cases;
    n_same += ids == c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << c["text"];
    EXPECT_EQ(tk.decode(ids), c["decoded"].get<std::string>());
  }
  EXPECT_EQ(n_cases, 21);
  EXPECT_EQ(n_same, n_cases);
  std::printf("tokenizer cases encoded exactly: %d / %d\n", n_same, n_cases);
  fs::remove_all(out);
}

}  // namespace exq::io
