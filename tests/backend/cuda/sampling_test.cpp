// Greedy argmax on the GPU against std::max_element semantics (first maximum, NaN ignored).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "backend/cuda/sampling.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

std::vector<int32_t> argmax_ref(const Tensor& logits) {
  const int64_t vocab = logits.dim(-1), rows = logits.numel() / vocab;
  std::vector<int32_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    int32_t best = 0;
    float best_v = -INFINITY;
    bool found = false;
    for (int64_t i = 0; i < vocab; ++i) {
      const float v = logits.data<float>()[r * vocab + i];
      if (std::isnan(v)) continue;
      if (!found || v > best_v) {
        best = static_cast<int32_t>(i);
        best_v = v;
        found = true;
      }
    }
    out.push_back(best);
  }
  return out;
}

class Argmax : public CudaTest {
 protected:
  std::vector<int32_t> run(const Tensor& logits) {
    const int64_t rows = logits.shape().size() == 2 ? logits.dim(0) : 1;
    DeviceTensor dl = upload(logits), dout = empty(DType::I32, {rows});
    argmax(dl, dout, stream());
    const Tensor out = download(dout);
    return {out.data<int32_t>(), out.data<int32_t>() + rows};
  }
};

TEST_F(Argmax, MatchesCpuOnRandomLogits) {
  uint32_t seed = 101;
  for (Shape shape : {Shape{49152}, Shape{3, 49152}, Shape{5, 1001}, Shape{2, 1}, Shape{1, 32000}}) {
    const Tensor logits = test::random_f32(shape, seed++, -30.0f, 30.0f);
    EXPECT_EQ(run(logits), argmax_ref(logits)) << shape_str(shape);
  }
}

TEST_F(Argmax, TiesPickTheFirstAndNaNIsIgnored) {
  Tensor logits = Tensor::zeros(DType::F32, {4, 5000});
  float* p = logits.data<float>();
  p[0 * 5000 + 4000] = 7.0f;  // row 0: ties at 4000 and 4999 -> 4000
  p[0 * 5000 + 4999] = 7.0f;
  p[1 * 5000 + 10] = std::numeric_limits<float>::quiet_NaN();  // row 1: NaN beside a max
  p[1 * 5000 + 11] = 3.0f;
  for (int i = 0; i < 5000; ++i) p[2 * 5000 + i] = -INFINITY;  // row 2: all -inf -> 0
  for (int i = 0; i < 5000; ++i) p[3 * 5000 + i] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<int32_t> got = run(logits);
  EXPECT_EQ(got, (std::vector<int32_t>{4000, 11, 0, 0}));
  EXPECT_EQ(got, argmax_ref(logits));
}

TEST(ArgmaxArgs, RejectBadShapes) {
  using test::fake_view;
  test::expect_error([] { argmax(fake_view(DType::F32, {2, 100}), fake_view(DType::I32, {3}), nullptr); },
                     "out must have shape [2], got [3]");
  test::expect_error([] { argmax(fake_view(DType::F16, {100}), fake_view(DType::I32, {1}), nullptr); },
                     "logits must be F32, got F16");
  test::expect_error([] { argmax(fake_view(DType::F32, {2, 0}), fake_view(DType::I32, {2}), nullptr); },
                     "empty vocabulary");
}

}  // namespace
}  // namespace exq::cuda
