// Test helper: writes small GGUF files in memory (valid by default; tests then corrupt them).
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"

namespace exq::test {

class GgufBuilder {
 public:
  enum Type : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 };

  uint32_t version = 3;
  uint64_t alignment = 32;

  // Raw value encoders, for building arrays.
  template <typename T>
  static void put(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static void put_str(std::string& out, const std::string& s) {
    put<uint64_t>(out, s.size());
    out += s;
  }

  template <typename T>
  void kv(const std::string& key, Type t, T v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, t);
    put<T>(kv_, v);
    ++n_kv_;
  }
  void kv_str(const std::string& key, const std::string& v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, STR);
    put_str(kv_, v);
    ++n_kv_;
  }
  void kv_strs(const std::string& key, const std::vector<std::string>& v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, ARR);
    put<uint32_t>(kv_, STR);
    put<uint64_t>(kv_, v.size());
    for (const auto& s : v) put_str(kv_, s);
    ++n_kv_;
  }
  void kv_f32s(const std::string& key, const std::vector<float>& v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, ARR);
    put<uint32_t>(kv_, F32);
    put<uint64_t>(kv_, v.size());
    for (float x : v) put<float>(kv_, x);
    ++n_kv_;
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, ARR);
    put<uint32_t>(kv_, I32);
    put<uint64_t>(kv_, v.size());
    for (int32_t x : v) put<int32_t>(kv_, x);
    ++n_kv_;
  }
  // Value bytes already encoded (type id first).
  void kv_raw(const std::string& key, const std::string& type_and_value) {
    put_str(kv_, key);
    kv_ += type_and_value;
    ++n_kv_;
  }

  // dims innermost first, as GGUF stores them; data is the raw block bytes.
  void tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
              const std::string& data) {
    tensors_.push_back({name, std::move(dims), type, data});
  }

  std::string build() const {
    std::string out = "GGUF";
    put<uint32_t>(out, version);
    put<uint64_t>(out, tensors_.size());
    put<uint64_t>(out, n_kv_);
    out += kv_;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      put_str(out, t.name);
      put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) put<uint64_t>(out, d);
      put<uint32_t>(out, t.type);
      put<uint64_t>(out, offset);
      offsets.push_back(offset);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    for (const auto& t : tensors_) {
      out += t.data;
      out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    }
    return out;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::string data;
  };
  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

// Random block bytes for `n` values of ggml type `type` (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0,
// 30 BF16), with finite scales.
inline std::string random_blocks(uint32_t type, size_t n, std::mt19937& rng) {
  std::string out;
  auto half = [&](float lo, float hi) {
    const float v = lo + (hi - lo) * static_cast<float>(rng() % 10000) / 10000.0f;
    GgufBuilder::put<uint16_t>(out, float_to_half(v));
  };
  auto bytes = [&](int k) {
    for (int i = 0; i < k; ++i) out.push_back(static_cast<char>(rng()));
  };
  for (size_t i = 0; i < (type == 0 || type == 1 || type == 30 ? n : n / 32); ++i) {
    switch (type) {
      case 0:
        GgufBuilder::put<float>(out,
                                static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 997.0f);
        break;
      case 1:
        half(-2, 2);
        break;
      case 30:
        GgufBuilder::put<uint16_t>(
            out, float_to_bf16(static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 331.0f));
        break;
      case 2:
        half(0.001f, 0.1f);
        bytes(16);
        break;
      case 3:
        half(0.001f, 0.1f);
        half(-1, 0);
        bytes(16);
        break;
      case 8:
        half(0.001f, 0.01f);
        bytes(32);
        break;
    }
  }
  return out;
}

// GGUF rows [H, D, 2] (llama.cpp's q/k order for llama) -> HF rows [H, 2, D], rows of
// `row_bytes` bytes (whole blocks).
inline std::string hf_row_order(const std::string& data, int64_t heads, size_t row_bytes) {
  const int64_t rows = static_cast<int64_t>(data.size() / row_bytes), d = rows / heads / 2;
  std::string out(data.size(), '\0');
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t k = 0; k < d; ++k)
        out.replace(static_cast<size_t>(h * 2 * d + i * d + k) * row_bytes, row_bytes, data,
                    static_cast<size_t>(h * 2 * d + k * 2 + i) * row_bytes, row_bytes);
  return out;
}

// A complete tiny llama GGUF (1 layer, hidden 32, 2 heads of 16, 1 KV head, vocab 12) with a
// gpt2/smollm tokenizer and every dequantizable tensor type.
// `strings` overrides string metadata values by key. With `arch` "qwen2" the same weights are
// written as llama.cpp writes a qwen2 model: q/k rows in HF order, plus F32 q/k/v biases
// (unless `qwen2_biases` is false); "qwen3": HF row order and F32 q/k norms [16] (unless
// `qwen2_biases`, here the norms, is false).
inline GgufBuilder tiny_llama_builder(uint32_t seed = 1,
                                      const std::map<std::string, std::string>& strings = {},
                                      const std::string& arch = "llama", bool qwen2_biases = true) {
  std::mt19937 rng(seed);
  GgufBuilder b;
  auto str = [&](const std::string& key, const std::string& value) {
    auto it = strings.find(key);
    b.kv_str(key, it == strings.end() ? value : it->second);
  };
  const std::string a = arch + ".";
  str("general.architecture", arch);
  str("general.name", "tiny");
  b.kv<uint32_t>(a + "block_count", GgufBuilder::U32, 1);
  b.kv<uint32_t>(a + "context_length", GgufBuilder::U32, 128);
  b.kv<uint32_t>(a + "embedding_length", GgufBuilder::U32, 32);
  b.kv<uint32_t>(a + "feed_forward_length", GgufBuilder::U32, 64);
  b.kv<uint32_t>(a + "attention.head_count", GgufBuilder::U32, 2);
  b.kv<uint32_t>(a + "attention.head_count_kv", GgufBuilder::U32, 1);
  b.kv<float>(a + "rope.freq_base", GgufBuilder::F32, 10000.0f);
  b.kv<float>(a + "attention.layer_norm_rms_epsilon", GgufBuilder::F32, 1e-5f);
  b.kv<uint32_t>(a + "vocab_size", GgufBuilder::U32, 12);
  str("tokenizer.ggml.model", "gpt2");
  str("tokenizer.ggml.pre", "smollm");
  b.kv_strs("tokenizer.ggml.tokens", {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "c",
                                      "Ġ", "ab", "Ġa", "Ġab", "1", "<tool>"});
  b.kv_i32s("tokenizer.ggml.token_type", {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4});
  b.kv_strs("tokenizer.ggml.merges", {"a b", "Ġ a", "Ġa b"});
  b.kv<uint32_t>("tokenizer.ggml.bos_token_id", GgufBuilder::U32, 1);
  b.kv<uint32_t>("tokenizer.ggml.eos_token_id", GgufBuilder::U32, 2);
  b.kv<uint32_t>("tokenizer.ggml.unknown_token_id", GgufBuilder::U32, 0);
  b.kv<uint32_t>("tokenizer.ggml.padding_token_id", GgufBuilder::U32, 2);
  b.kv<uint8_t>("tokenizer.ggml.add_bos_token", GgufBuilder::BOOL, 0);
  b.kv_str("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}");
  const bool qwen2 = arch == "qwen2" || arch == "qwen3";  // both keep HF's q/k row order
  b.tensor("token_embd.weight", {32, 12}, 8, random_blocks(8, 32 * 12, rng));
  b.tensor("blk.0.attn_norm.weight", {32}, 0, random_blocks(0, 32, rng));
  const std::string q = random_blocks(3, 32 * 32, rng), k = random_blocks(2, 32 * 16, rng);
  b.tensor("blk.0.attn_q.weight", {32, 32}, 3, qwen2 ? hf_row_order(q, 2, 20) : q);
  b.tensor("blk.0.attn_k.weight", {32, 16}, 2, qwen2 ? hf_row_order(k, 1, 18) : k);
  b.tensor("blk.0.attn_v.weight", {32, 16}, 1, random_blocks(1, 32 * 16, rng));
  b.tensor("blk.0.attn_output.weight", {32, 32}, 30, random_blocks(30, 32 * 32, rng));
  b.tensor("blk.0.ffn_gate.weight", {32, 64}, 3, random_blocks(3, 32 * 64, rng));
  b.tensor("blk.0.ffn_up.weight", {32, 64}, 8, random_blocks(8, 32 * 64, rng));
  b.tensor("blk.0.ffn_down.weight", {64, 32}, 0, random_blocks(0, 64 * 32, rng));
  b.tensor("blk.0.ffn_norm.weight", {32}, 0, random_blocks(0, 32, rng));
  b.tensor("output_norm.weight", {32}, 0, random_blocks(0, 32, rng));
  if (arch == "qwen3" && qwen2_biases) {
    b.tensor("blk.0.attn_q_norm.weight", {16}, 0, random_blocks(0, 16, rng));
    b.tensor("blk.0.attn_k_norm.weight", {16}, 0, random_blocks(0, 16, rng));
  } else if (qwen2 && qwen2_biases) {
    b.tensor("blk.0.attn_q.bias", {32}, 0, random_blocks(0, 32, rng));
    b.tensor("blk.0.attn_k.bias", {16}, 0, random_blocks(0, 16, rng));
    b.tensor("blk.0.attn_v.bias", {16}, 0, random_blocks(0, 16, rng));
  }
  return b;
}

}  // namespace exq::test
