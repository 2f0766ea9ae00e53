// KV cache quantization: the q8 cache (llama.cpp's q8_0 layout): each 32 consecutive values of
// a key or value row (one token, one kv head) are stored as int8 q and one fp16 scale
// s = fp16(max |x| / 127); q = clamp(rint(x / s), -127, 127) (0 where s is 0) and the value read
// back is fp16(q * s). The CUDA cache (backend/cuda/kv_q8.cuh) stores exactly this; the CPU
// cache keeps f32 rows and rounds them to these values as they are written.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace exq::model {

enum class KvQuant : uint8_t { kNone, kQ8 };

inline constexpr int kKvQ8Group = 32;

// "f16" -> kNone, "q8" or "q8_0" -> kQ8.
std::optional<KvQuant> kv_quant_from_name(std::string_view name);
std::string_view kv_quant_name(KvQuant q);  // "f16", "q8_0"

// Throws exq::Error when a cache of this kind cannot hold rows of head_dim values.
void check_kv_quant(KvQuant q, int64_t head_dim);

// Bytes a token takes in a KV cache of `layers` layers as the GPU stores it: f16 (kNone) or q8_0
// (codes and scales; 0 when head_dim is not a multiple of kKvQ8Group). The CPU keeps f32: twice
// the f16 figure.
int64_t kv_cache_bytes_per_token(int64_t layers, int64_t kv_heads, int64_t head_dim, KvQuant q);

// One group of kKvQ8Group values: the int8 codes and the scale's fp16 bits.
uint16_t kv_q8_quantize(const float* x, int8_t* q);
// Replaces n values (a multiple of kKvQ8Group) by what the q8 cache reads back.
void kv_q8_round(float* x, int64_t n);

}  // namespace exq::model
