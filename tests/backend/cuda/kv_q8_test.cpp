// The q8 KV cache on the GPU: the append against model/kv_quant.h bit for bit, and the
// tensor-core decode attention (new row quantized by the kernel) and prefill attention over a q8
// cache against a double-precision loop over the values the cache reads back. Scales past the
// filled rows are NaN, so any read beyond them shows up in the output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
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

constexpr int kG = model::kKvQ8Group;
constexpr uint16_t kNanHalf = 0x7e00;

// Host mirror of a q8 cache [kv_heads, capacity, hd]: codes, scales, and the values read back.
struct Q8Mirror {
  int64_t kv_heads, capacity, hd;
  Tensor codes, scales;
  Q8Mirror(int64_t h, int64_t c, int64_t d)
      : kv_heads(h), capacity(c), hd(d), codes(Tensor::zeros(DType::I8, {h, c, d})), scales(DType::F16, {h, c, d / kG}) {
    for (uint16_t& s : scales.span<uint16_t>()) s = kNanHalf;
  }
  // Stores x (hd values) at (head, pos) as the cache would.
  void put(int64_t head, int64_t pos, const float* x) {
    const int64_t row = head * capacity + pos;
    for (int64_t g = 0; g < hd / kG; ++g)
      scales.data<uint16_t>()[row * (hd / kG) + g] =
          model::kv_q8_quantize(x + g * kG, codes.data<int8_t>() + row * hd + g * kG);
  }
  float value(int64_t i) const {
    return half_to_float(float_to_half(static_cast<float>(codes.data<int8_t>()[i]) *
                                       half_to_float(scales.data<uint16_t>()[i / kG])));
  }
  Tensor values() const {  // f32 [kv_heads, capacity, hd]
    Tensor t(DType::F32, {kv_heads, capacity, hd});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = value(i);
    return t;
  }
};

class KvQ8 : public test::KvQuantTest<Q8Mirror>, public ::testing::WithParamInterface<int64_t> {};

TEST_P(KvQ8, AppendMatchesCpu) {
  append_matches_cpu(GetParam(), [](auto&&... a) { kv_append_q8(a...); });
}

INSTANTIATE_TEST_SUITE_P(HeadDims, KvQ8, ::testing::Values(int64_t{64}, int64_t{128}),
                         [](const auto& info) { return "hd" + std::to_string(info.param); });

// The runtime's step over a q8 cache: rotary, the new row quantized into the cache and attended
// as read back, pdl, several steps on one workspace, 8 and 4 warps.
class KvQ8Attention : public test::KvQuantTest<Q8Mirror> {};

// Prefill chunks over a q8 cache (tensor cores, q rounded to fp16 as attention_prefill_fast
// does), the start also from device memory.
TEST_F(KvQ8Attention, PrefillOverTheCacheAsItReadsBack) {
  prefill_matches_cpu("q8", [](auto&&... a) { attention_prefill_q8(a...); });
}

TEST_F(KvQ8Attention, DecodeOverTheCacheAsItReadsBack) {
  ASSERT_TRUE(attention_decode_q8_supports(32, 8, 128));
  ASSERT_TRUE(attention_decode_q8_supports(32, 32, 96));
  ASSERT_FALSE(attention_decode_q8_supports(4, 2, 80));
  ASSERT_FALSE(attention_decode_q8_supports(34, 2, 128));  // 17 q heads per kv head
  // The new rows: v exactly as the host quantizes it; k from the kernel's own rotation (an ulp
  // apart from the host's at most: a code may move by one).
  const auto check = [](const Tensor& gkc, const Tensor& gks, const Tensor& gvc, const Tensor& gvs,
                        const Q8Mirror& k_m, const Q8Mirror& v_m, int64_t row, int64_t hd, const std::string& what) {
    for (int64_t d = 0; d < hd; ++d) {
      ASSERT_EQ(gvc.data<int8_t>()[row * hd + d], v_m.codes.data<int8_t>()[row * hd + d]) << what;
      ASSERT_LE(std::abs(gkc.data<int8_t>()[row * hd + d] - k_m.codes.data<int8_t>()[row * hd + d]), 1) << what;
    }
    for (int64_t g = 0; g < hd / kG; ++g) {
      const int64_t si = row * (hd / kG) + g;
      ASSERT_EQ(gvs.data<uint16_t>()[si], v_m.scales.data<uint16_t>()[si]) << what;
      ASSERT_NEAR(half_to_float(gks.data<uint16_t>()[si]), half_to_float(k_m.scales.data<uint16_t>()[si]),
                  1e-3 * half_to_float(k_m.scales.data<uint16_t>()[si]))
          << what;
    }
  };
  decode_matches_cpu<int8_t>("q8", /*fp16_operands=*/false, check);
}

TEST(KvQ8Args, RejectBadLayouts) {
  using test::fake_view;
  const DeviceView k = fake_view(DType::F32, {4, 3, 64}), v = fake_view(DType::F32, {4, 3, 64});
  const DeviceView kc = fake_view(DType::I8, {3, 16, 64}), ks = fake_view(DType::F16, {3, 16, 2});
  test::expect_error([&] { kv_append_q8(k, v, kc, ks, kc, ks, 13, nullptr); },
                     "positions [13, 17) exceed the cache capacity 16");
  test::expect_error([&] { kv_append_q8(k, v, kc, fake_view(DType::F16, {3, 16, 4}), kc, ks, 0, nullptr); },
                     "scales must be contiguous F16 [3, 16, 2]");
  test::expect_error([&] { kv_append_q8(k, v, fake_view(DType::F16, {3, 16, 64}), ks, kc, ks, 0, nullptr); },
                     "must be contiguous I8");
  const DeviceView k48 = fake_view(DType::F32, {4, 3, 48});
  test::expect_error([&] { kv_append_q8(k48, k48, fake_view(DType::I8, {3, 16, 48}), ks, kc, ks, 0, nullptr); },
                     "head_dim 48 is not a multiple of 32");
  const DeviceView q = fake_view(DType::F32, {10, 6, 64});
  test::expect_error([&] { attention_prefill_q8(q, kc, ks, kc, ks, q, 7, 0.125f, nullptr); },
                     "positions [7, 17) exceed the cache capacity 16");
  const DeviceView q160 = fake_view(DType::F32, {2, 6, 160}), c160 = fake_view(DType::I8, {3, 16, 160});
  const DeviceView s160 = fake_view(DType::F16, {3, 16, 5});
  test::expect_error([&] { attention_prefill_q8(q160, c160, s160, c160, s160, q160, 0, 0.1f, nullptr); },
                     "needs head_dim 64, 96, 128 or 256, got 160");
}

}  // namespace
}  // namespace exq::cuda
