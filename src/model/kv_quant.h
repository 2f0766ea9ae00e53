// KV cache quantization. The q8 cache (llama.cpp's q8_0 layout): each 32 consecutive values of
// a key or value row (one token, one kv head) are stored as int8 q and one fp16 scale
// s = fp16(max |x| / 127); q = clamp(rint(x / s), -127, 127) (0 where s is 0) and the value read
// back is fp16(q * s). The CUDA cache (backend/cuda/kv_q8.cuh) stores exactly this; the CPU
// cache keeps f32 rows and rounds them to these values as they are written.
//
// The q4 cache (exllamav2's Q4 cache's idea: a rotation spreads a head's outlier channels over
// its group before 4-bit codes): each 32 consecutive values x are rotated, r = H x / sqrt(32)
// (H the 32 x 32 Walsh-Hadamard matrix; H / sqrt(32) is orthogonal and its own inverse), and
// stored as 4-bit codes q with an fp16 step d = fp16((max r - min r) / 15) and minimum
// m = fp16(min r): q = clamp(rint((r - m) / d), 0, 15) (0 where d is 0). A group reads back as
// H u / sqrt(32) with u = fp16(q d + m) (one rounding), in f32 in one fixed order
// (kv_q4_rotate); that is what the CPU cache holds. The CUDA cache (backend/cuda/kv_q4.cuh)
// attends to u itself: the rotation is orthogonal, so it rotates q instead of the keys
// (q . k = Rq . Rk, R = H / sqrt(32)) and the attention output instead of the values. 5 bits a
// value: 31 % of the f16 cache.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace exq::model {

enum class KvQuant : uint8_t { kNone, kQ8, kQ4 };

inline constexpr int kKvQ8Group = 32;
inline constexpr int kKvQ4Group = 32;

// "f16" -> kNone, "q8" or "q8_0" -> kQ8, "q4" -> kQ4.
std::optional<KvQuant> kv_quant_from_name(std::string_view name);
std::string_view kv_quant_name(KvQuant q);  // "f16", "q8_0", "q4"

// Throws exq::Error when a cache of this kind cannot hold rows of head_dim values.
void check_kv_quant(KvQuant q, int64_t head_dim);

// Bytes a token takes in a KV cache of `layers` layers as the GPU stores it: f16 (kNone), q8_0 or
// q4 (codes, scales and minimums; 0 when head_dim is not a multiple of the group). The CPU keeps
// f32: twice the f16 figure.
int64_t kv_cache_bytes_per_token(int64_t layers, int64_t kv_heads, int64_t head_dim, KvQuant q);

// One group of kKvQ8Group values: the int8 codes and the scale's fp16 bits.
uint16_t kv_q8_quantize(const float* x, int8_t* q);
// Replaces n values (a multiple of kKvQ8Group) by what the q8 cache reads back.
void kv_q8_round(float* x, int64_t n);

// x <- H x / sqrt(32) for one group of kKvQ4Group values: butterfly stages over index bits 0 to
// 4 ((a, b) -> (a + b, a - b)), then the product with 1 / sqrt(32) in f32.
void kv_q4_rotate(float* x);
struct KvQ4Step {
  uint16_t scale = 0, min = 0;  // fp16 bits of d and m
};
// One group: the codes (0..15) of its rotated values, and their step.
KvQ4Step kv_q4_quantize(const float* x, uint8_t* q);
// u = fp16(q d + m) of one code, rounded once (as the GPU's fp16 fma): its fp16 bits.
uint16_t kv_q4_value(uint8_t q, KvQ4Step step);
// The values a q4 group reads back: H u / sqrt(32), u = fp16(q d + m) (f32).
void kv_q4_dequantize(const uint8_t* q, KvQ4Step step, float* x);
// Replaces n values (a multiple of kKvQ4Group) by what the q4 cache reads back.
void kv_q4_round(float* x, int64_t n);

}  // namespace exq::model
