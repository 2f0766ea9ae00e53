#include "model/kv_quant.h"

#include <cmath>

#include "core/error.h"
#include "core/half.h"

namespace exq::model {

std::optional<KvQuant> kv_quant_from_name(std::string_view name) {
  if (name == "f16") return KvQuant::kNone;
  if (name == "q8" || name == "q8_0") return KvQuant::kQ8;
  return std::nullopt;
}

std::string_view kv_quant_name(KvQuant q) { return q == KvQuant::kQ8 ? "q8_0" : "f16"; }

void check_kv_quant(KvQuant q, int64_t head_dim) {
  EXQ_CHECK(q != KvQuant::kQ8 || head_dim % kKvQ8Group == 0,
            "the q8_0 KV cache needs a head_dim that is a multiple of {}; this model's is {}", kKvQ8Group, head_dim);
}

int64_t kv_cache_bytes_per_token(int64_t layers, int64_t kv_heads, int64_t head_dim, KvQuant q) {
  const int64_t values = 2 * layers * kv_heads * head_dim;  // keys and values
  if (q == KvQuant::kNone) return 2 * values;
  return head_dim % kKvQ8Group == 0 ? values + values / kKvQ8Group * 2 : 0;
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

}  // namespace exq::model
