// The vectorized scale-search loop against the plain formula (std::nearbyint, std::clamp, the
// row order of the sum): the sums must be bit-identical, tails and odd widths included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "quant/gptq_kernel.h"

namespace exq::quant {
namespace {

TEST(GptqKernel, ScaleErrorsMatchPlainFormulaBitForBit) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (const int64_t out : {1, 7, 64, 1003}) {
    for (const int bits : {2, 3, 4, 8}) {
      const int64_t rows = 37;
      std::vector<float> x(static_cast<size_t>(rows * out)), sw(static_cast<size_t>(out));
      for (float& v : x) v = nd(rng);
      for (float& v : sw) v = std::fabs(nd(rng)) / static_cast<float>(1 << bits) + 1e-4f;
      const float grid[3] = {0.7f, 0.95f, 1.2f};
      const float maxq = static_cast<float>((1 << bits) - 1);
      const float zero = static_cast<float>(1 << (bits - 1));
      std::vector<float> err(3 * static_cast<size_t>(out), -1.0f);
      kernel::scale_errors(x.data(), rows, out, 0, out, sw.data(), grid, 3, zero, maxq,
                           err.data());
      for (int i = 0; i < 3; ++i)
        for (int64_t c = 0; c < out; ++c) {
          const float s = sw[c] * grid[i];
          float e = 0.0f;
          for (int64_t r = 0; r < rows; ++r) {
            const float w = x[r * out + c];
            const float q = std::clamp(std::nearbyint(w / s) + zero, 0.0f, maxq);
            const float a = std::fabs(w - (q - zero) * s);
            e += a * a * a * std::sqrt(a);
          }
          ASSERT_EQ(e, err[i * out + c]) << "out " << out << " bits " << bits << " c " << c;
        }
    }
  }
  EXPECT_EQ(kernel::round_half_even(2.5f), 2.0f);
  EXPECT_EQ(kernel::round_half_even(-3.5f), -4.0f);
  EXPECT_EQ(kernel::round_half_even(1e30f), 4194304.0f);
}

}  // namespace
}  // namespace exq::quant
