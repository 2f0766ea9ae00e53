// The q8 KV cache (model/kv_quant.h): the rounding of one group against its definition, the
// cache rows it rounds, and SmolLM2 with the q8 cache: the same cache behaviour in prefill,
// single steps and batched steps (its perplexity cost: runtime/perplexity_test.cpp).
#include "model/kv_quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/half.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "test_support.h"

namespace exq::model {
namespace {

// max |a - b| / max |b|.
double rel_max_abs(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const auto x = a.span<const float>(), y = b.span<const float>();
  double diff = 0.0, mag = 0.0;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - y[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(y[i])));
  }
  return diff / mag;
}

TEST(KvQuant, Names) {
  EXPECT_EQ(kv_quant_from_name("f16"), KvQuant::kNone);
  EXPECT_EQ(kv_quant_from_name("q8_0"), KvQuant::kQ8);
  EXPECT_EQ(kv_quant_from_name("q8"), KvQuant::kQ8);
  EXPECT_EQ(kv_quant_from_name("q4"), KvQuant::kQ4);
  EXPECT_FALSE(kv_quant_from_name("q4_0").has_value());  // llama.cpp's unrotated layout
  EXPECT_FALSE(kv_quant_from_name("").has_value());
  EXPECT_EQ(kv_quant_name(KvQuant::kQ8), "q8_0");
  EXPECT_EQ(kv_quant_name(KvQuant::kNone), "f16");
  EXPECT_EQ(kv_quant_name(KvQuant::kQ4), "q4");
  // Bytes a token (1 layer, 2 kv heads of 64): f16 2 x 128 x 2, q8 a byte and 2 / 32, q4 half a
  // byte and 4 / 32.
  EXPECT_EQ(kv_cache_bytes_per_token(1, 2, 64, KvQuant::kNone), 512);
  EXPECT_EQ(kv_cache_bytes_per_token(1, 2, 64, KvQuant::kQ8), 256 + 16);
  EXPECT_EQ(kv_cache_bytes_per_token(1, 2, 64, KvQuant::kQ4), 128 + 32);
  EXPECT_EQ(kv_cache_bytes_per_token(1, 2, 48, KvQuant::kQ4), 0);
}

// The rotation is orthogonal and its own inverse: twice gives the group back (to f32 rounding),
// the norm is kept, and one channel spreads over all 32 at 1 / sqrt(32).
TEST(KvQ4, RotationIsItsOwnInverse) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  float x[kKvQ4Group], r[kKvQ4Group];
  double n0 = 0.0, n1 = 0.0;
  for (int i = 0; i < kKvQ4Group; ++i) {
    r[i] = x[i] = nd(rng);
    n0 += static_cast<double>(x[i]) * x[i];
  }
  kv_q4_rotate(r);
  for (int i = 0; i < kKvQ4Group; ++i) n1 += static_cast<double>(r[i]) * r[i];
  EXPECT_NEAR(n1, n0, 1e-5 * n0);
  kv_q4_rotate(r);
  for (int i = 0; i < kKvQ4Group; ++i) EXPECT_NEAR(r[i], x[i], 1e-6f * (1.0f + std::fabs(x[i]))) << i;
  float one[kKvQ4Group] = {};
  one[5] = 1.0f;
  kv_q4_rotate(one);
  for (int i = 0; i < kKvQ4Group; ++i) EXPECT_NEAR(std::fabs(one[i]), 0.17677669529663687f, 1e-7f) << i;
}

// u = fp16(q d + m) is the fp16 number nearest the exact value (ties to even), as one fp16 fma
// rounds it, also where rounding through f32 first would not be (checked against both
// neighbours of the result).
TEST(KvQ4, ValueIsRoundedOnce) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> bits(0, 0x7bff), code(0, 15), sign(0, 1);
  int checked = 0, through_f32 = 0;
  for (int n = 0; n < 20000; ++n) {
    const uint16_t d = static_cast<uint16_t>(bits(rng)), m = static_cast<uint16_t>(bits(rng) | (sign(rng) << 15));
    const auto q = static_cast<uint8_t>(code(rng));
    const double exact = q * static_cast<double>(half_to_float(d)) + half_to_float(m);
    const uint16_t u = kv_q4_value(q, {d, m});
    const double got = half_to_float(u);
    if (!std::isfinite(got)) {
      EXPECT_GT(std::fabs(exact), 65504.0) << n;
      continue;
    }
    const double err = std::fabs(got - exact);
    // Neighbours by the bit pattern (the same sign; 0 has two).
    for (const int step : {-1, 1}) {
      const int nb = static_cast<int>(u & 0x7fff) + step;
      if (nb < 0 || nb > 0x7bff) continue;
      const double other = half_to_float(static_cast<uint16_t>((u & 0x8000) | nb));
      const double e2 = std::fabs(other - exact);
      EXPECT_TRUE(err < e2 || (err == e2 && (u & 1) == 0)) << n << ": q " << int(q) << " d " << d << " m " << m;
    }
    ++checked;
    through_f32 += float_to_half(static_cast<float>(exact)) != u;
  }
  std::printf("  %d values checked; rounding through f32 first would differ for %d\n", checked, through_f32);
  EXPECT_GT(checked, 18000);
  EXPECT_GT(through_f32, 0);  // the sample holds cases a second rounding would get wrong
}

// Codes span 0..15 with the group's minimum at 0 and maximum at 15, and a group read back lies
// within half a step of each rotated value (plus fp16's rounding of u) in every direction: its
// distance from x is at most sqrt(32) of that. Zeros stay zeros.
TEST(KvQ4, RoundsWithinHalfAStepOfTheRotatedGroup) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int g = 0; g < 200; ++g) {
    float x[kKvQ4Group];
    const float spread = std::ldexp(1.0f, g % 14 - 4);
    for (float& v : x) v = nd(rng) * spread;
    if (g % 3 == 0) x[g % kKvQ4Group] *= 40.0f;  // an outlier channel
    uint8_t q[kKvQ4Group];
    const KvQ4Step st = kv_q4_quantize(x, q);
    const float d = half_to_float(st.scale);
    int lo = 15, hi = 0;
    for (uint8_t c : q) {
      ASSERT_LE(c, 15) << g;
      lo = std::min<int>(lo, c);
      hi = std::max<int>(hi, c);
    }
    EXPECT_EQ(lo, 0) << g;
    EXPECT_EQ(hi, 15) << g;
    float r[kKvQ4Group];
    std::copy(x, x + kKvQ4Group, r);
    kv_q4_round(r, kKvQ4Group);
    float back[kKvQ4Group];
    kv_q4_dequantize(q, st, back);
    double dist = 0.0, umax = 0.0;
    for (int i = 0; i < kKvQ4Group; ++i) {
      EXPECT_EQ(r[i], back[i]) << g << " " << i;
      dist += (static_cast<double>(r[i]) - x[i]) * (static_cast<double>(r[i]) - x[i]);
      umax = std::max(umax, std::fabs(static_cast<double>(half_to_float(kv_q4_value(q[i], st)))));
    }
    EXPECT_LE(std::sqrt(dist), std::sqrt(32.0) * (0.5 * d * 1.002 + umax * 0x1p-11)) << g;
  }
  float zeros[2 * kKvQ4Group] = {};
  kv_q4_round(zeros, 2 * kKvQ4Group);
  for (float v : zeros) EXPECT_EQ(v, 0.0f);
  EXPECT_THROW(kv_q4_round(zeros, kKvQ4Group + 1), Error);
}

// The rotation is what makes 4 bits hold an outlier channel: a group of small values with one
// channel 40 times larger reads back closer than the same codes without the rotation would
// (4-bit min / max rounding of x itself).
TEST(KvQ4, RotationSpreadsAnOutlier) {
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  double err_rot = 0.0, err_plain = 0.0;
  for (int g = 0; g < 100; ++g) {
    float x[kKvQ4Group], r[kKvQ4Group];
    for (float& v : x) v = nd(rng);
    x[g % kKvQ4Group] = 40.0f;
    std::copy(x, x + kKvQ4Group, r);
    kv_q4_round(r, kKvQ4Group);
    const float lo = *std::min_element(x, x + kKvQ4Group), hi = *std::max_element(x, x + kKvQ4Group);
    const float step = (hi - lo) / 15.0f;
    for (int i = 0; i < kKvQ4Group; ++i) {
      const float plain = lo + std::rint((x[i] - lo) / step) * step;
      err_rot += (r[i] - x[i]) * (r[i] - x[i]);
      err_plain += (plain - x[i]) * (plain - x[i]);
    }
  }
  std::printf("  one outlier of 40 in N(0, 1): rms error %.4f rotated, %.4f unrotated\n",
              std::sqrt(err_rot / 3200), std::sqrt(err_plain / 3200));
  EXPECT_LT(err_rot, 0.5 * err_plain);
}

// Every value lands within half a step of the group's scale (plus the fp16 rounding of the value
// read back); the largest one gets code +-127; groups of zeros stay zero, and a group too small
// for a normal fp16 scale stays within its (subnormal) step.
TEST(KvQuant, RoundsWithinHalfAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int g = 0; g < 200; ++g) {
    float x[kKvQ8Group];
    const float spread = std::ldexp(1.0f, g % 18 - 6);  // scales stay normal fp16 numbers
    for (float& v : x) v = nd(rng) * spread;
    if (g % 3 == 0) x[g % kKvQ8Group] *= 40.0f;  // an outlier channel
    int8_t q[kKvQ8Group];
    const float s = half_to_float(kv_q8_quantize(x, q));
    float amax = 0.0f;
    int at = 0;
    for (int i = 0; i < kKvQ8Group; ++i)
      if (std::fabs(x[i]) > amax) amax = std::fabs(x[at = i]);
    EXPECT_NEAR(s, amax / 127.0f, amax / 127.0f * 1e-3f) << "group " << g;
    EXPECT_EQ(std::abs(static_cast<int>(q[at])), 127) << "group " << g;
    float r[kKvQ8Group];
    std::copy(x, x + kKvQ8Group, r);
    kv_q8_round(r, kKvQ8Group);
    for (int i = 0; i < kKvQ8Group; ++i) {
      EXPECT_EQ(r[i], half_to_float(float_to_half(static_cast<float>(q[i]) * s))) << "group " << g << " value " << i;
      EXPECT_LE(std::fabs(r[i] - x[i]), 0.5f * s * 1.002f + std::fabs(r[i]) * 0x1p-11f) << "group " << g << " " << i;
    }
  }
  float tiny[kKvQ8Group];
  for (int i = 0; i < kKvQ8Group; ++i) tiny[i] = 1e-5f * static_cast<float>(i - 16);
  float tr[kKvQ8Group];
  std::copy(tiny, tiny + kKvQ8Group, tr);
  kv_q8_round(tr, kKvQ8Group);
  int8_t tq[kKvQ8Group];
  const float ts = half_to_float(kv_q8_quantize(tiny, tq));
  // Half a step, or where the largest value is clamped to 127 codes, 127 times the scale's own
  // rounding (half a subnormal step).
  for (int i = 0; i < kKvQ8Group; ++i) EXPECT_NEAR(tr[i], tiny[i], 0.5f * ts + 128.0f * 0x1p-25f) << i;
  float zeros[kKvQ8Group] = {};
  kv_q8_round(zeros, kKvQ8Group);
  for (float v : zeros) EXPECT_EQ(v, 0.0f);
}

// Values that are whole multiples of an fp16 scale, the largest 127 of them, come back exactly.
TEST(KvQuant, MultiplesOfTheScaleAreExact) {
  float x[2 * kKvQ8Group];
  for (int i = 0; i < 2 * kKvQ8Group; ++i) x[i] = 0.25f * static_cast<float>((i * 37) % 255 - 127);
  x[5] = 0.25f * 127.0f;
  x[kKvQ8Group + 3] = -0.25f * 127.0f;
  float r[2 * kKvQ8Group];
  std::copy(x, x + 2 * kKvQ8Group, r);
  kv_q8_round(r, 2 * kKvQ8Group);
  for (int i = 0; i < 2 * kKvQ8Group; ++i) EXPECT_EQ(r[i], x[i]) << i;
  EXPECT_THROW(kv_q8_round(r, kKvQ8Group + 1), Error);
}

TEST(KvQuant, CacheRoundsTheRowsItIsGiven) {
  KvCache q8(1, 4, 2, 64, KvQuant::kQ8), plain(1, 4, 2, 64);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (KvCache* c : {&q8, &plain})
    for (int64_t i = 0; i < 4 * 2 * 64; ++i) {
      c->keys(0).data<float>()[i] = nd(rng);
      c->values(0).data<float>()[i] = nd(rng);
    }
  std::vector<float> before(q8.keys(0).data<float>(), q8.keys(0).data<float>() + 4 * 128);
  std::vector<float> plain_before(plain.keys(0).data<float>(), plain.keys(0).data<float>() + 4 * 128);
  q8.finish_rows(0, 1, 3);
  plain.finish_rows(0, 1, 3);
  std::vector<float> want(before.begin() + 128, before.begin() + 3 * 128);
  kv_q8_round(want.data(), static_cast<int64_t>(want.size()));
  int changed = 0;
  for (int64_t i = 0; i < 4 * 128; ++i) {
    const float got = q8.keys(0).data<float>()[i];
    if (i < 128 || i >= 3 * 128) {
      EXPECT_EQ(got, before[static_cast<size_t>(i)]) << "row outside the range, value " << i;
    } else {
      EXPECT_EQ(got, want[static_cast<size_t>(i - 128)]) << i;
      changed += got != before[static_cast<size_t>(i)];
    }
    EXPECT_EQ(plain.keys(0).data<float>()[i], plain_before[static_cast<size_t>(i)]);
  }
  EXPECT_GT(changed, 200);
  EXPECT_THROW(KvCache(1, 4, 2, 48, KvQuant::kQ8), Error);  // head_dim not a multiple of 32
  EXPECT_THROW(KvCache(1, 4, 2, 48, KvQuant::kQ4), Error);
  // q4: the rows in range become what kv_q4_round makes of them, the others stay.
  KvCache q4(1, 4, 2, 64, KvQuant::kQ4);
  for (int64_t i = 0; i < 4 * 128; ++i) q4.values(0).data<float>()[i] = before[static_cast<size_t>(i)];
  q4.finish_rows(0, 2, 3);
  std::vector<float> want4(before.begin() + 256, before.begin() + 384);
  kv_q4_round(want4.data(), 128);
  for (int64_t i = 0; i < 4 * 128; ++i) {
    const float got = q4.values(0).data<float>()[i];
    EXPECT_EQ(got, i >= 256 && i < 384 ? want4[static_cast<size_t>(i - 256)] : before[static_cast<size_t>(i)]) << i;
  }
}

LlamaModel& smollm2_q8() {
  static LlamaModel m = [] {
    LlamaModel model = LlamaModel::load(test::test_model());
    model.set_kv_quant(KvQuant::kQ8);
    return model;
  }();
  return m;
}

// With the q8 cache a prompt's prefill, the same tokens one step at a time and batched steps of
// two sequences give the same logits (up to the f32 sums' order).
TEST(KvQuantSmolLM2, PrefillStepsAndBatchesAgree) {
  EXQ_REQUIRE_MODEL();
  LlamaModel& m = smollm2_q8();
  const std::vector<int32_t> ids = {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198, 1, 4093, 198};
  KvCache whole = m.make_cache(32), steps = m.make_cache(32);
  ASSERT_EQ(whole.quant(), KvQuant::kQ8);
  const Tensor all = m.forward(ids, whole, /*all_logits=*/true);
  double worst = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const Tensor one = m.forward(std::span(&ids[t], 1), steps);
    const auto row = static_cast<int64_t>(t);
    worst = std::max(worst, rel_max_abs(one, Tensor::copy_of(all.view().slice0(row, row + 1))));
  }
  std::printf("  q8 cache: prefill vs %zu single steps, worst rel max-abs diff %.3g\n", ids.size(), worst);
  EXPECT_LE(worst, 1e-4);
  // Two sequences stepping together: the same as each stepping alone.
  KvCache a = m.make_cache(32), b = m.make_cache(32), a1 = m.make_cache(32), b1 = m.make_cache(32);
  m.forward(std::span(ids.data(), 6), a);
  m.forward(std::span(ids.data(), 6), a1);
  m.forward(std::span(ids.data() + 6, 9), b);
  m.forward(std::span(ids.data() + 6, 9), b1);
  const std::vector<int32_t> next = {2683, 198};
  KvCache* both[] = {&a, &b};
  const Tensor batch = m.forward_batch(next, both);
  const Tensor ra = m.forward(std::span(&next[0], 1), a1), rb = m.forward(std::span(&next[1], 1), b1);
  EXPECT_LE(rel_max_abs(Tensor::copy_of(batch.view().slice0(0, 1)), ra), 1e-4);
  EXPECT_LE(rel_max_abs(Tensor::copy_of(batch.view().slice0(1, 2)), rb), 1e-4);
}

}  // namespace
}  // namespace exq::model
