// GGUF block dequantization to float16. Built with -ffp-contract=off (src/CMakeLists.txt):
// the reference values are float32(d) * q, rounded, then + float32(m), rounded; a fused
// multiply-add would round once and change some fp16 results.
#include <atomic>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "io/gguf.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace exq::io {
namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void dequant_f32(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, src + 4 * i, 4);
    dst[i] = float_to_half(f);
  }
}

void dequant_bf16(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half(bf16_to_float(load_u16(src + 2 * i)));
}

// Q8_0: fp16 d, 32 x int8 q. value = d * q.
void dequant_q8_0(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const auto* q = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < 32; ++j) dst[j] = float_to_half(d * static_cast<float>(q[j]));
  }
}

// Q4_0: fp16 d, 16 bytes of nibbles (low nibbles values 0..15, high 16..31). value = d * (q - 8).
// A block has only 16 distinct values, so each is converted once and looked up.
void dequant_q4_0(const uint8_t* src, uint16_t* dst, int64_t n) {
  uint16_t lut[16];
  for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
    const float d = half_to_float(load_u16(src));
    for (int q = 0; q < 16; ++q) lut[q] = float_to_half(d * static_cast<float>(q - 8));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = lut[qs[j] & 0x0f];
      dst[j + 16] = lut[qs[j] >> 4];
    }
  }
}

// Q4_1: fp16 d, fp16 m, 16 bytes of nibbles. value = d * q + m (multiply rounded, then add).
void dequant_q4_1(const uint8_t* src, uint16_t* dst, int64_t n) {
  uint16_t lut[16];
  for (int64_t b = 0; b < n / 32; ++b, src += 20, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const float m = half_to_float(load_u16(src + 2));
    for (int q = 0; q < 16; ++q) {
      const float scaled = d * static_cast<float>(q);
      lut[q] = float_to_half(scaled + m);
    }
    const uint8_t* qs = src + 4;
    for (int j = 0; j < 16; ++j) {
      dst[j] = lut[qs[j] & 0x0f];
      dst[j + 16] = lut[qs[j] >> 4];
    }
  }
}


// The 5th bit of value j of a Q5_0 / Q5_1 block: bit j of the little-endian word qh.
int nibble_or_fifth(const uint8_t* qs, uint32_t qh, int j) {
  const int lo = j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4;
  return lo | static_cast<int>((qh >> j) & 1u) << 4;
}

// Q5_0: fp16 d, 4 bytes qh, 16 bytes of nibbles (as Q4_0). value = d * (q - 16).
void dequant_q5_0(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, src += 22, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const uint32_t qh = load_u32(src + 2);
    for (int j = 0; j < 32; ++j)
      dst[j] = float_to_half(d * static_cast<float>(nibble_or_fifth(src + 6, qh, j) - 16));
  }
}

// Q5_1: fp16 d, fp16 m, 4 bytes qh, 16 bytes of nibbles. value = d * q + m.
void dequant_q5_1(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, src += 24, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const float m = half_to_float(load_u16(src + 2));
    const uint32_t qh = load_u32(src + 4);
    for (int j = 0; j < 32; ++j) {
      const float scaled = d * static_cast<float>(nibble_or_fifth(src + 8, qh, j));
      dst[j] = float_to_half(scaled + m);
    }
  }
}

// K-quants: super-blocks of 256 values in sub-blocks of 16 or 32, each with its own scale
// (and min) as small integers times the block's fp16 d (and dmin). Values are
// float32(d * scale) * q, then - float32(dmin * min), each step rounded.

// Q2_K (84 bytes): 16 bytes of 4-bit scale | 4-bit min per 16 values, 64 bytes of 2-bit q,
// fp16 d, fp16 dmin. Value e: byte 32 * (e / 128) + e % 32, bits 2 * ((e / 32) % 4).
void dequant_q2_k(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, src += 84, dst += 256) {
    const float d = half_to_float(load_u16(src + 80)), dmin = half_to_float(load_u16(src + 82));
    const uint8_t* qs = src + 16;
    for (int e = 0; e < 256; ++e) {
      const uint8_t sc = src[e / 16];
      const float dl = d * static_cast<float>(sc & 0x0f), ml = dmin * static_cast<float>(sc >> 4);
      const int q = qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4)) & 3;
      const float scaled = dl * static_cast<float>(q);
      dst[e] = float_to_half(scaled - ml);
    }
  }
}

// Q3_K (110 bytes): 32 bytes hmask, 64 bytes of 2-bit q (as Q2_K), 12 bytes of 6-bit signed
// scales (+32) per 16 values, fp16 d. Value e has bit e / 32 of hmask[e % 32]; when it is
// clear the value is 4 lower: q = low2 - 4 * !hbit.
void dequant_q3_k(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, src += 110, dst += 256) {
    const uint8_t *hmask = src, *qs = src + 32, *sc = src + 96;
    const float d = half_to_float(load_u16(src + 108));
    float dl[16];
    for (int j = 0; j < 16; ++j) {
      const int lo = sc[j % 8] >> (4 * (j / 8)) & 0x0f;
      const int hi = sc[8 + j % 4] >> (2 * (j / 4)) & 3;
      dl[j] = d * static_cast<float>((lo | hi << 4) - 32);
    }
    for (int e = 0; e < 256; ++e) {
      const int low = qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4)) & 3;
      const int hbit = hmask[e % 32] >> (e / 32) & 1;
      dst[e] = float_to_half(dl[e / 16] * static_cast<float>(low - (hbit ? 0 : 4)));
    }
  }
}

// The 6-bit scale and min of sub-block j (of 8) from Q4_K / Q5_K's 12 packed bytes: bytes
// 0-3 scales 0-3, 4-7 mins 0-3 (low 6 bits; their top 2 bits are the top bits of scales /
// mins 4-7), 8-11 the low 4 bits of scales (low nibble) and mins (high nibble) 4-7.
void k_scale_min(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4;
    *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
  }
}

// Q4_K (144 bytes) and Q5_K (176 bytes): fp16 d, fp16 dmin, 12 bytes of scales and mins per
// 32 values, (Q5_K: 32 bytes qh, value e's 5th bit is bit e / 32 of qh[e % 32]), 128 bytes
// of nibbles: value e in byte 32 * (e / 64) + e % 32, high nibble when (e / 32) is odd.
template <bool FIVE>
void dequant_q45_k(const uint8_t* src, uint16_t* dst, int64_t n) {
  constexpr int kBytes = FIVE ? 176 : 144;
  for (int64_t b = 0; b < n / 256; ++b, src += kBytes, dst += 256) {
    const float d = half_to_float(load_u16(src)), dmin = half_to_float(load_u16(src + 2));
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + (FIVE ? 48 : 16);
    for (int j = 0; j < 8; ++j) {
      int sc = 0, mn = 0;
      k_scale_min(src + 4, j, &sc, &mn);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
      for (int l = 0; l < 32; ++l) {
        int q = qs[32 * (j / 2) + l] >> (4 * (j % 2)) & 0x0f;
        if constexpr (FIVE) q |= (qh[l] >> j & 1) << 4;
        const float scaled = d1 * static_cast<float>(q);
        dst[32 * j + l] = float_to_half(scaled - m1);
      }
    }
  }
}

// Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2 bits, 16 int8 scales per 16
// values, fp16 d. value = float32(d * scale) * (q - 32). Value e = 128 h + r: low nibble of
// ql[64 h + r % 64] (high nibble when r >= 64), high bits 2 * (r / 32) of qh[32 h + r % 32].
void dequant_q6_k(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, src += 210, dst += 256) {
    const uint8_t *ql = src, *qh = src + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(src + 192);
    const float d = half_to_float(load_u16(src + 208));
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = ql[64 * h + r % 64] >> (4 * (r / 64)) & 0x0f;
      const int hi = qh[32 * h + r % 32] >> (2 * (r / 32)) & 3;
      const float dl = d * static_cast<float>(scales[e / 16]);
      dst[e] = float_to_half(dl * static_cast<float>((lo | hi << 4) - 32));
    }
  }
}

// IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-linear table of int8 levels.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

// IQ4_NL (18 bytes): fp16 d, 16 bytes of indices (as Q4_0). value = d * level.
void dequant_iq4_nl(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = float_to_half(d * static_cast<float>(kIq4Levels[qs[j] & 0x0f]));
      dst[j + 16] = float_to_half(d * static_cast<float>(kIq4Levels[qs[j] >> 4]));
    }
  }
}

// IQ4_XS (136 bytes): fp16 d, 16 bits of high scale bits (2 per sub-block), 4 bytes of low
// scale nibbles, 128 bytes of indices, 16 bytes (as IQ4_NL) per 32 values. The 6-bit scale
// of sub-block j is signed (+32). value = float32(d * scale) * level.
void dequant_iq4_xs(const uint8_t* src, uint16_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b, src += 136, dst += 256) {
    const float d = half_to_float(load_u16(src));
    const uint16_t scales_h = load_u16(src + 2);
    for (int j = 0; j < 8; ++j) {
      const int lo = src[4 + j / 2] >> (4 * (j % 2)) & 0x0f;
      const int hi = scales_h >> (2 * j) & 3;
      const float dl = d * static_cast<float>((lo | hi << 4) - 32);
      const uint8_t* qs = src + 8 + 16 * j;
      for (int l = 0; l < 16; ++l) {
        dst[32 * j + l] = float_to_half(dl * static_cast<float>(kIq4Levels[qs[l] & 0x0f]));
        dst[32 * j + l + 16] = float_to_half(dl * static_cast<float>(kIq4Levels[qs[l] >> 4]));
      }
    }
  }
}

void copy_f16(const uint8_t* src, uint16_t* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * 2);
}

using DequantFn = void (*)(const uint8_t*, uint16_t*, int64_t);

// The block function of a ggml type, or nullptr when exq does not dequantize it.
DequantFn dequant_fn(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32: return dequant_f32;
    case GgmlType::F16: return copy_f16;
    case GgmlType::BF16: return dequant_bf16;
    case GgmlType::Q8_0: return dequant_q8_0;
    case GgmlType::Q4_0: return dequant_q4_0;
    case GgmlType::Q4_1: return dequant_q4_1;
    case GgmlType::Q5_0: return dequant_q5_0;
    case GgmlType::Q5_1: return dequant_q5_1;
    case GgmlType::Q2_K: return dequant_q2_k;
    case GgmlType::Q3_K: return dequant_q3_k;
    case GgmlType::Q4_K: return dequant_q45_k<false>;
    case GgmlType::Q5_K: return dequant_q45_k<true>;
    case GgmlType::Q6_K: return dequant_q6_k;
    case GgmlType::IQ4_NL: return dequant_iq4_nl;
    case GgmlType::IQ4_XS: return dequant_iq4_xs;
    default: return nullptr;
  }
}

}  // namespace

bool gguf_dequant_supported(uint32_t type) { return dequant_fn(type) != nullptr; }

void dequantize_to_f16(uint32_t type, const uint8_t* src, uint16_t* dst, int64_t n) {
  const DequantFn fn = dequant_fn(type);
  if (fn == nullptr) throw Error(fmt::format("unsupported tensor type {}", ggml_type_name(type)));
  fn(src, dst, n);
}

Tensor GgufFile::dequantize_f16(const GgufTensorInfo& info) const {
  if (!gguf_dequant_supported(info.type))
    throw Error(fmt::format("unsupported tensor type {}", ggml_type_name(info.type)),
                ErrorContext{.file = path().string(), .tensor = info.name});
  Tensor out(DType::F16, info.hf_shape());
  const int64_t numel = info.numel();
  if (numel == 0) return out;
  int64_t block = 0, type_size = 0;
  ggml_type_block(info.type, &block, &type_size);
  const int64_t row = info.dims.empty() ? 1 : info.dims[0];
  const int64_t rows = numel / row;
  const int64_t row_bytes = row / block * type_size;
  auto* dst = out.data<uint16_t>();
  const uint8_t* src = info.data;
  const int64_t min_rows = std::max<int64_t>(1, (1 << 16) / row);
  std::atomic<int64_t> first_bad{numel};  // first value that is inf or NaN in float16
  parallel_for(
      rows,
      [&](int64_t begin, int64_t end) {
        uint16_t* d = dst + begin * row;
        const int64_t count = (end - begin) * row;
        dequantize_to_f16(info.type, src + begin * row_bytes, d, count);
        for (int64_t i = 0; i < count; ++i)
          if ((d[i] & 0x7c00u) == 0x7c00u) {
            int64_t seen = first_bad.load();
            const int64_t at = begin * row + i;
            while (at < seen && !first_bad.compare_exchange_weak(seen, at)) {
            }
            break;
          }
      },
      min_rows);
  if (const int64_t at = first_bad.load(); at < numel) {
    const bool nan = (dst[at] & 0x03ffu) != 0;
    throw Error(fmt::format("value [{}, {}] ({}) is {} in float16", at / row, at % row,
                            ggml_type_name(info.type), nan ? "NaN" : "infinite"),
                ErrorContext{.file = path().string(), .tensor = info.name});
  }
  return out;
}

}  // namespace exq::io
