// GGUF block dequantization to float16. Built with -ffp-contract=off (src/CMakeLists.txt):
// the reference values are float32(d) * q, rounded, then + float32(m), rounded; a fused
// multiply-add would round once and change some fp16 results.
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

}  // namespace

bool gguf_dequant_supported(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
      return true;
    default:
      return false;
  }
}

void dequantize_to_f16(uint32_t type, const uint8_t* src, uint16_t* dst, int64_t n) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32:
      return dequant_f32(src, dst, n);
    case GgmlType::F16:
      std::memcpy(dst, src, static_cast<size_t>(n) * 2);
      return;
    case GgmlType::BF16:
      return dequant_bf16(src, dst, n);
    case GgmlType::Q8_0:
      return dequant_q8_0(src, dst, n);
    case GgmlType::Q4_0:
      return dequant_q4_0(src, dst, n);
    case GgmlType::Q4_1:
      return dequant_q4_1(src, dst, n);
    default:
      throw Error(fmt::format("unsupported tensor type {}", ggml_type_name(type)));
  }
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
  parallel_for(
      rows,
      [&](int64_t begin, int64_t end) {
        dequantize_to_f16(info.type, src + begin * row_bytes, dst + begin * row,
                          (end - begin) * row);
      },
      min_rows);
  return out;
}

}  // namespace exq::io
