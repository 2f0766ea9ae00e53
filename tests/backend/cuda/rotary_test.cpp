// Rotary embedding: the host table against the closed form, the kernel against a CPU loop.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "backend/cpu/rotary.h"
#include "backend/cuda/rotary.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class Rotary : public CudaTest {};

TEST(RotaryTable, MatchesClosedFormInDouble) {
  const RotaryTable t = make_rotary_table(64, 8192, 100000.0);
  ASSERT_EQ(t.cos.shape(), (Shape{8192, 32}));
  for (int p : {0, 1, 17, 4095, 8191}) {
    for (int i : {0, 1, 15, 31}) {
      const double angle = p * (1.0 / std::pow(100000.0, 2.0 * i / 64));
      EXPECT_EQ(t.cos.data<float>()[p * 32 + i], static_cast<float>(std::cos(angle))) << p << " " << i;
      EXPECT_EQ(t.sin.data<float>()[p * 32 + i], static_cast<float>(std::sin(angle))) << p << " " << i;
    }
  }
  EXPECT_EQ(t.cos.data<float>()[0], 1.0f);
  EXPECT_EQ(t.sin.data<float>()[0], 0.0f);
}

TEST(RotaryTable, RejectsBadArguments) {
  test::expect_error([] { make_rotary_table(63, 16, 10000.0); }, "head_dim must be even");
  test::expect_error([] { make_rotary_table(64, 0, 10000.0); }, "positions must be positive");
  test::expect_error([] { make_rotary_table(64, 16, -1.0); }, "rope_theta must be positive");
}

// HF apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, with cos/sin repeated over halves.
std::vector<double> rotary_ref(const Tensor& x, const RotaryTable& t, int start_pos) {
  const int64_t tokens = x.dim(0), heads = x.dim(1), hd = x.dim(2), half = hd / 2;
  std::vector<double> out(static_cast<size_t>(x.numel()));
  for (int64_t tok = 0; tok < tokens; ++tok)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t base = (tok * heads + h) * hd;
        const double c = t.cos.data<float>()[(start_pos + tok) * half + i];
        const double s = t.sin.data<float>()[(start_pos + tok) * half + i];
        const double x1 = x.data<float>()[base + i], x2 = x.data<float>()[base + i + half];
        out[static_cast<size_t>(base + i)] = x1 * c - x2 * s;
        out[static_cast<size_t>(base + i + half)] = x2 * c + x1 * s;
      }
  return out;
}

TEST_F(Rotary, MatchesCpu) {
  struct Case {
    int64_t tokens, heads, head_dim;
    int start_pos;
  };
  const std::vector<Case> cases = {{7, 9, 64, 0},  {1, 3, 64, 100}, {5, 2, 6, 3},
                                   {33, 4, 128, 17}, {1, 1, 2, 8000}, {64, 9, 64, 4000}};
  uint32_t seed = 21;
  for (const Case& c : cases) {
    const RotaryTable table = make_rotary_table(static_cast<int>(c.head_dim), 8192, 100000.0);
    DeviceTensor cos = upload(table.cos), sin = upload(table.sin);
    const Tensor x = test::random_f32({c.tokens, c.heads, c.head_dim}, seed++, -3.0f, 3.0f);
    DeviceTensor dx = upload(x);
    rotary(dx, cos, sin, c.start_pos, stream());
    test::expect_close(rotary_ref(x, table, c.start_pos), download(dx), 2e-6, 1e-6,
                       "rotary " + shape_str(x.shape()) + " at " + std::to_string(c.start_pos));
  }
}

// A partial rotary (Phi-4-mini: 96 of 128 dims): a table of 48 frequencies turns the pairs
// (i, i + 48) and leaves dims 96..127 as they were; the CPU's apply_rotary does the same.
TEST_F(Rotary, PartialTableMatchesCpu) {
  for (const auto& [hd, rot, start] : {std::tuple{128, 96, 37}, std::tuple{64, 48, 5}, std::tuple{32, 2, 300}}) {
    std::vector<float> inv(static_cast<size_t>(rot / 2));
    for (size_t i = 0; i < inv.size(); ++i) inv[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / rot));
    const cpu::RopeTable table = cpu::make_rope_table(inv, 512, 1.1f);
    DeviceTensor cos = upload(table.cos), sin = upload(table.sin);
    const Tensor x = test::random_f32({9, 3, hd}, 77, -3.0f, 3.0f);
    DeviceTensor dx = upload(x);
    rotary(dx, cos, sin, start, stream());
    Tensor want = Tensor::copy_of(x);
    cpu::apply_rotary(want, table, start);
    const Tensor got = download(dx);
    test::expect_close(std::vector<double>(want.span<const float>().begin(), want.span<const float>().end()), got,
                       1e-6, 1e-6, "partial rotary " + std::to_string(rot) + " of " + std::to_string(hd));
    for (int64_t r = 0; r < 27; ++r)  // the unrotated tail is bit for bit the input
      EXPECT_EQ(std::memcmp(got.data<float>() + r * hd + rot, x.data<float>() + r * hd + rot, (hd - rot) * sizeof(float)),
                0);
  }
}

TEST(RotaryArgs, RejectPositionsBeyondTable) {
  using test::fake_view;
  const DeviceView cos = fake_view(DType::F32, {16, 32}), sin = fake_view(DType::F32, {16, 32});
  test::expect_error([&] { rotary(fake_view(DType::F32, {4, 9, 64}), cos, sin, 13, nullptr); },
                     "positions [13, 17) exceed the table's 16 positions");
  test::expect_error([&] { rotary(fake_view(DType::F32, {4, 9, 32}), cos, sin, 0, nullptr); },
                     "table has 32 frequencies, head_dim 32 takes 1..16");
  test::expect_error([&] { rotary(fake_view(DType::F32, {4, 9, 63}), cos, sin, 0, nullptr); },
                     "head_dim must be even");
}

}  // namespace
}  // namespace exq::cuda
