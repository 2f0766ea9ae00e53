#include "model/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace exq::model {

std::optional<KvQuant> kv_quant_from_name(std::string_view name) {
  if (name == "f16") return KvQuant::kNone;
  if (name == "q8" || name == "q8_0") return KvQuant::kQ8;
  if (name == "q4") return KvQuant::kQ4;
  return std::nullopt;
}

std::string_view kv_quant_name(KvQuant q) {
  return q == KvQuant::kQ8 ? "q8_0" : q == KvQuant::kQ4 ? "q4" : "f16";
}

void check_kv_quant(KvQuant q, int64_t head_dim) {
  EXQ_CHECK(q == KvQuant::kNone || head_dim % kKvQ8Group == 0,
            "the {} KV cache needs a head_dim that is a multiple of {}; this model's is {}", kv_quant_name(q),
            kKvQ8Group, head_dim);
}

int64_t kv_cache_bytes_per_token(int64_t layers, int64_t kv_heads, int64_t head_dim, KvQuant q) {
  const int64_t values = 2 * layers * kv_heads * head_dim;  // keys and values
  if (q == KvQuant::kNone) return 2 * values;
  if (head_dim % kKvQ8Group != 0) return 0;
  // q8: a byte a value and an fp16 scale a group; q4: half a byte and an fp16 step and minimum.
  return q == KvQuant::kQ8 ? values + values / kKvQ8Group * 2 : values / 2 + values / kKvQ4Group * 4;
}

uint16_t kv_q8_quantize(const float* x, int8_t* q) {
  float amax = 0.0f;
  for (int i = 0; i < kKvQ8Group; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  // The largest finite fp16 caps the scale (|x| above ~8.3e6 saturates instead of becoming inf).
  const uint16_t bits = float_to_half(std::fmin(amax / 127.0f, 65504.0f));
  const float s = half_to_float(bits);
  for (int i = 0; i < kKvQ8Group; ++i) {
    // fmin / fmax: a NaN input gives a code, never undefined behaviour.
    const float r = s == 0.0f ? 0.0f : std::fmax(std::fmin(std::rint(x[i] / s), 127.0f), -127.0f);
    q[i] = static_cast<int8_t>(r);
  }
  return bits;
}

void kv_q8_round(float* x, int64_t n) {
  EXQ_CHECK(n % kKvQ8Group == 0, "q8 KV cache: a row of {} values is not a multiple of {}", n, kKvQ8Group);
  int8_t q[kKvQ8Group];
  for (int64_t g = 0; g < n; g += kKvQ8Group) {
    const float s = half_to_float(kv_q8_quantize(x + g, q));
    for (int i = 0; i < kKvQ8Group; ++i) x[g + i] = half_to_float(float_to_half(static_cast<float>(q[i]) * s));
  }
}

void kv_q4_rotate(float* x) {
  for (int s = 1; s < kKvQ4Group; s <<= 1)
    for (int i = 0; i < kKvQ4Group; ++i)
      if ((i & s) == 0) {
        const float a = x[i], b = x[i + s];
        x[i] = a + b;
        x[i + s] = a - b;
      }
  for (int i = 0; i < kKvQ4Group; ++i) x[i] *= 0.17677669529663687f;  // 1 / sqrt(32) in f32
}

KvQ4Step kv_q4_quantize(const float* x, uint8_t* q) {
  float r[kKvQ4Group];
  std::copy(x, x + kKvQ4Group, r);
  kv_q4_rotate(r);
  float lo = r[0], hi = r[0];
  for (int i = 1; i < kKvQ4Group; ++i) {
    lo = std::fmin(lo, r[i]);
    hi = std::fmax(hi, r[i]);
  }
  // Capped to the largest finite fp16, as the q8 scale (NaN inputs still give codes).
  const uint16_t dbits = float_to_half(std::fmin((hi - lo) / 15.0f, 65504.0f));
  const uint16_t mbits = float_to_half(std::fmax(std::fmin(lo, 65504.0f), -65504.0f));
  const float d = half_to_float(dbits), m = half_to_float(mbits);
  for (int i = 0; i < kKvQ4Group; ++i) {
    const float c = d == 0.0f ? 0.0f : std::fmax(std::fmin(std::rint((r[i] - m) / d), 15.0f), 0.0f);
    q[i] = static_cast<uint8_t>(c);
  }
  return {dbits, mbits};
}

namespace {

// fp16 of a double in one rounding, as the GPU's fp16 fma rounds: the f32 rounded to odd keeps
// what decides the fp16 rounding (24 bits >= 11 + 2).
uint16_t half_of(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) != x && std::isfinite(f)) {
    if (std::fabs(static_cast<double>(f)) > std::fabs(x)) f = std::nextafter(f, 0.0f);  // toward zero
    uint32_t u = 0;
    std::memcpy(&u, &f, 4);
    u |= 1u;  // the odd one of the two neighbours
    std::memcpy(&f, &u, 4);
  }
  return float_to_half(f);
}

}  // namespace

uint16_t kv_q4_value(uint8_t q, KvQ4Step step) {
  // q d + m is exact in double: q has 4 bits, d and m 11, all within fp16's 2^-24 .. 2^16.
  return half_of(static_cast<double>(q) * half_to_float(step.scale) + half_to_float(step.min));
}

void kv_q4_dequantize(const uint8_t* q, KvQ4Step step, float* x) {
  for (int i = 0; i < kKvQ4Group; ++i) x[i] = half_to_float(kv_q4_value(q[i], step));
  kv_q4_rotate(x);
}

void kv_q4_round(float* x, int64_t n) {
  EXQ_CHECK(n % kKvQ4Group == 0, "q4 KV cache: a row of {} values is not a multiple of {}", n, kKvQ4Group);
  uint8_t q[kKvQ4Group];
  for (int64_t g = 0; g < n; g += kKvQ4Group) kv_q4_dequantize(q, kv_q4_quantize(x + g, q), x + g);
}

}  // namespace exq::model
