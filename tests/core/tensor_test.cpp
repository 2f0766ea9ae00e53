#include "core/tensor.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"

namespace exq {
namespace {

TEST(Half, RoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t x = static_cast<uint16_t>(h);
    if ((x & 0x7c00) == 0x7c00) continue;  // inf/nan
    EXPECT_EQ(float_to_half(half_to_float(x)), x) << std::hex << h;
  }
}

TEST(Half, RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and the next half (1 + 2^-10): ties to even -> 1.
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up.
  EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);  // tie rounds to even -> overflow
  EXPECT_EQ(float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie to even zero
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(bits_to_float(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(float_to_bf16(bits_to_float(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(bf16_to_float(0x4049), bits_to_float(0x40490000u));
}

TEST(Tensor, ShapesStridesAndSlices) {
  Tensor t = Tensor::zeros(DType::F32, {3, 4});
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  float* p = t.data<float>();
  for (int i = 0; i < 12; ++i) p[i] = static_cast<float>(i);
  TensorView s = t.view().slice0(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 4}));
  EXPECT_EQ(s.data<float>()[0], 4.0f);
  EXPECT_THROW(t.view().slice0(2, 4), Error);
  EXPECT_THROW(t.data<int32_t>(), Error);
  EXPECT_THROW(t.view().reshape({5}), Error);
  EXPECT_EQ(t.view().reshape({12}).dim(0), 12);
  EXPECT_THROW(t.view().expect(DType::F32, {4, 3}, "w"), Error);
}

TEST(Tensor, StridedCopyTransposes) {
  Tensor t(DType::F32, {2, 3});
  for (int i = 0; i < 6; ++i) t.data<float>()[i] = static_cast<float>(i);
  TensorView tr(t.raw(), DType::F32, {3, 2}, {1, 3});
  EXPECT_FALSE(tr.is_contiguous());
  Tensor c = Tensor::copy_of(tr);
  const float want[] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.data<float>()[i], want[i]);
}

TEST(Tensor, NonFiniteDetection) {
  Tensor t = Tensor::zeros(DType::F16, {4});
  t.data<uint16_t>()[2] = 0x7e00;  // NaN
  int64_t at = -1;
  EXPECT_TRUE(has_non_finite(t, &at));
  EXPECT_EQ(at, 2);
  Tensor f = to_f32(t);
  EXPECT_TRUE(std::isnan(f.data<float>()[2]));
}

TEST(Error, ContextIsFormatted) {
  Error e = Error("bad shape").with_file("m.safetensors").with_tensor("w").with_layer(3);
  EXPECT_STREQ(e.what(), "m.safetensors: tensor 'w': layer 3: bad shape");
}

}  // namespace
}  // namespace exq
