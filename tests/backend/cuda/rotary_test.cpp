// Rotary embedding: the host table against the closed form, the kernel against a CPU loop.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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

TEST(RotaryArgs, RejectPositionsBeyondTable) {
  using test::fake_view;
  const DeviceView cos = fake_view(DType::F32, {16, 32}), sin = fake_view(DType::F32, {16, 32});
  test::expect_error([&] { rotary(fake_view(DType::F32, {4, 9, 64}), cos, sin, 13, nullptr); },
                     "positions [13, 17) exceed the table's 16 positions");
  test::expect_error([&] { rotary(fake_view(DType::F32, {4, 9, 32}), cos, sin, 0, nullptr); },
                     "table has 32 frequencies, head_dim 32 needs 16");
  test::expect_error([&] { rotary(fake_view(DType::F32, {4, 9, 63}), cos, sin, 0, nullptr); },
                     "head_dim must be even");
}

}  // namespace
}  // namespace exq::cuda
