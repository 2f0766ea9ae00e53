// The q4 KV cache on the GPU: the append against model/kv_quant.h bit for bit (codes, steps and
// the nibble layout of kv_q4.cuh), and the tensor-core decode attention (new row quantized by the
// kernel, q rotated, the output rotated back) and prefill attention over a q4 cache against a
// double-precision loop over the values the CPU cache holds. Steps past the filled rows are NaN,
// so any read beyond them shows up in the output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_cache.h"
#include "cuda_test_util.h"
#include "kv_quant_test_util.h"
#include "model/kv_quant.h"

namespace exq::cuda {
namespace {

using test::attention_ref;
using test::CudaTest;
using test::rows_with_outliers;

constexpr int kG = model::kKvQ4Group;
constexpr uint16_t kNanHalf = 0x7e00;

// Host mirror of a q4 cache [kv_heads, capacity, hd]: packed codes, (step, minimum) pairs, and the
// values the CPU cache holds.
struct Q4Mirror {
  int64_t kv_heads, capacity, hd;
  Tensor codes, scales;  // scales: (step, minimum) pairs
  Q4Mirror(int64_t h, int64_t c, int64_t d)
      : kv_heads(h), capacity(c), hd(d), codes(Tensor::zeros(DType::U8, {h, c, d / 2})), scales(DType::F16, {h, c, d / 16}) {
    for (uint16_t& s : scales.span<uint16_t>()) s = kNanHalf;
  }
  // Value v of a word in bits (v & 1) * 16 + (v >> 1) * 4 (kv_q4.cuh).
  static int shift(int v) { return (v & 1) * 16 + (v >> 1) * 4; }
  void put(int64_t head, int64_t pos, const float* x) {
    const int64_t row = head * capacity + pos;
    for (int64_t g = 0; g < hd / kG; ++g) {
      uint8_t q[kG];
      const model::KvQ4Step st = model::kv_q4_quantize(x + g * kG, q);
      uint16_t* sp = scales.data<uint16_t>() + (row * (hd / kG) + g) * 2;
      sp[0] = st.scale;
      sp[1] = st.min;
      for (int w = 0; w < kG / 8; ++w) {
        uint32_t word = 0;
        for (int v = 0; v < 8; ++v) word |= static_cast<uint32_t>(q[w * 8 + v]) << shift(v);
        std::memcpy(codes.data<uint8_t>() + row * (hd / 2) + g * (kG / 2) + w * 4, &word, 4);
      }
    }
  }
  Tensor values() const {  // f32 [kv_heads, capacity, hd]
    Tensor t(DType::F32, {kv_heads, capacity, hd});
    for (int64_t g = 0; g < t.numel() / kG; ++g) {
      uint8_t q[kG];
      for (int w = 0; w < kG / 8; ++w) {
        uint32_t word = 0;
        std::memcpy(&word, codes.data<uint8_t>() + g * (kG / 2) + w * 4, 4);
        for (int v = 0; v < 8; ++v) q[w * 8 + v] = static_cast<uint8_t>((word >> shift(v)) & 15u);
      }
      const uint16_t* sp = scales.data<uint16_t>() + g * 2;
      model::kv_q4_dequantize(q, {sp[0], sp[1]}, t.data<float>() + g * kG);
    }
    return t;
  }
};

class KvQ4 : public test::KvQuantTest<Q4Mirror>, public ::testing::WithParamInterface<int64_t> {};

TEST_P(KvQ4, AppendMatchesCpu) {
  append_matches_cpu(GetParam(), [](auto&&... a) { kv_append_q4(a...); });
}

INSTANTIATE_TEST_SUITE_P(HeadDims, KvQ4, ::testing::Values(int64_t{64}, int64_t{128}),
                         [](const auto& info) { return "hd" + std::to_string(info.param); });

class KvQ4Attention : public test::KvQuantTest<Q4Mirror> {};

// Prefill chunks over a q4 cache (tensor cores, the rotated q rounded to fp16 as
// attention_prefill_fast rounds q), the start also from device memory.
TEST_F(KvQ4Attention, PrefillOverTheCacheAsItReadsBack) {
  prefill_matches_cpu("q4", [](auto&&... a) { attention_prefill_q4(a...); });
}

// The runtime's step over a q4 cache: rotary, the new row quantized into the cache, q rotated
// and the output rotated back, q and p as one fp16 half each (within 2e-3 of the largest output),
// pdl, several steps on one workspace, 8 and 4 warps.
TEST_F(KvQ4Attention, DecodeOverTheCacheAsItReadsBack) {
  // The new rows: v exactly as the host quantizes it; k from the kernel's own rotary (an ulp
  // apart from the host's: a code may move by one, the step and minimum by an ulp).
  const auto check = [](const Tensor& gkc, const Tensor& gks, const Tensor& gvc, const Tensor& gvs,
                        const Q4Mirror& k_m, const Q4Mirror& v_m, int64_t row, int64_t hd, const std::string& what) {
    (void)gkc;
    ASSERT_EQ(std::memcmp(gvc.data<uint8_t>() + row * hd / 2, v_m.codes.data<uint8_t>() + row * hd / 2,
                          static_cast<size_t>(hd / 2)),
              0)
        << what;
    ASSERT_EQ(std::memcmp(gvs.data<uint16_t>() + row * hd / 16, v_m.scales.data<uint16_t>() + row * hd / 16,
                          static_cast<size_t>(hd / 16) * 2),
              0)
        << what;
    for (int64_t i = 0; i < hd / 16; ++i) {
      const float want = half_to_float(k_m.scales.data<uint16_t>()[row * hd / 16 + i]);
      ASSERT_NEAR(half_to_float(gks.data<uint16_t>()[row * hd / 16 + i]), want, 2e-3 * std::fabs(want) + 1e-6) << what;
    }
  };
  decode_matches_cpu<uint8_t>("q4", /*fp16_operands=*/true, check);
}

TEST(KvQ4Args, RejectBadLayouts) {
  using test::fake_view;
  const DeviceView k = fake_view(DType::F32, {4, 3, 64}), v = fake_view(DType::F32, {4, 3, 64});
  const DeviceView kc = fake_view(DType::U8, {3, 16, 32}), ks = fake_view(DType::F16, {3, 16, 4});
  test::expect_error([&] { kv_append_q4(k, v, kc, ks, kc, ks, 13, nullptr); },
                     "positions [13, 17) exceed the cache capacity 16");
  test::expect_error([&] { kv_append_q4(k, v, kc, fake_view(DType::F16, {3, 16, 2}), kc, ks, 0, nullptr); },
                     "steps must be contiguous F16 [3, 16, 4]");
  test::expect_error([&] { kv_append_q4(k, v, fake_view(DType::I8, {3, 16, 32}), ks, kc, ks, 0, nullptr); },
                     "must be contiguous U8");
  const DeviceView c128 = fake_view(DType::U8, {3, 16, 64}), s128 = fake_view(DType::F16, {3, 16, 8});
  test::expect_error([&] { kv_append_q4(k, v, c128, s128, c128, s128, 0, nullptr); }, "does not hold k");
  const DeviceView k48 = fake_view(DType::F32, {4, 3, 48});
  test::expect_error([&] { kv_append_q4(k48, k48, fake_view(DType::U8, {3, 16, 24}), ks, kc, ks, 0, nullptr); },
                     "head_dim 48 is not a multiple of 32");
  const DeviceView q = fake_view(DType::F32, {10, 6, 64});
  test::expect_error([&] { attention_prefill_q4(q, kc, ks, kc, ks, q, 7, 0.125f, nullptr); },
                     "positions [7, 17) exceed the cache capacity 16");
  const DeviceView q160 = fake_view(DType::F32, {2, 6, 160}), c160 = fake_view(DType::U8, {3, 16, 80});
  const DeviceView s160 = fake_view(DType::F16, {3, 16, 10});
  test::expect_error([&] { attention_prefill_q4(q160, c160, s160, c160, s160, q160, 0, 0.1f, nullptr); },
                     "needs head_dim 64, 96, 128 or 256, got 160");
}

}  // namespace
}  // namespace exq::cuda
