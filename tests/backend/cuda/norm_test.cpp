// RMSNorm on the GPU against a naive double-precision CPU loop.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cuda/norm.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

std::vector<double> rmsnorm_ref(const Tensor& x, const Tensor& w, double eps) {
  const int64_t rows = x.dim(0), dim = x.dim(1);
  std::vector<double> out(static_cast<size_t>(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x.data<float>()[r * dim + i]) * x.data<float>()[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i)
      out[static_cast<size_t>(r * dim + i)] = x.data<float>()[r * dim + i] * inv * test::value_at(w, i);
  }
  return out;
}

// Residual-like rows: mostly O(1), with a few SmolLM2-sized outliers (~25,000).
Tensor residual_rows(int64_t rows, int64_t dim, uint32_t seed) {
  Tensor x = test::random_f32({rows, dim}, seed, -2.0f, 2.0f);
  float* p = x.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    p[r * dim] = 25000.0f;
    if (dim > 7) p[r * dim + 7] = -18000.5f;
  }
  return x;
}

class RmsNormShapes : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(RmsNormShapes, MatchesCpu) {
  const DType wdtype = GetParam();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 576}, {7, 576}, {3, 1}, {5, 1000}, {2, 4096}, {33, 65}};
  uint32_t seed = 1;
  for (auto [rows, dim] : shapes) {
    const Tensor x = residual_rows(rows, dim, seed++);
    const Tensor w = wdtype == DType::F32 ? test::random_f32({dim}, seed++, 0.5f, 1.5f)
                                          : test::random_half(wdtype, {dim}, seed++, 0.5f, 1.5f);
    DeviceTensor dx = upload(x), dw = upload(w), dout = empty(DType::F32, {rows, dim});
    rmsnorm(dx, dw, dout, 1e-5f, stream());
    const auto want = rmsnorm_ref(x, w, 1e-5);
    test::expect_close(want, download(dout), 1e-6, 2e-6,
                       "rmsnorm " + std::string(dtype_name(wdtype)) + " " + shape_str(x.shape()));
    // In place (out aliases x) gives the same result.
    rmsnorm(dx, dw, dx, 1e-5f, stream());
    test::expect_close(want, download(dx), 1e-6, 2e-6, "rmsnorm in place");
  }
}

INSTANTIATE_TEST_SUITE_P(WeightDtypes, RmsNormShapes,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(RmsNormArgs, RejectBadShapesAndDtypes) {
  using test::fake_view;
  const DeviceView x = fake_view(DType::F32, {4, 576});
  const DeviceView out = fake_view(DType::F32, {4, 576});
  test::expect_error([&] { rmsnorm(x, fake_view(DType::F16, {575}), out, 1e-5f, nullptr); },
                     "weight must have shape [576], got [575]");
  test::expect_error([&] { rmsnorm(x, fake_view(DType::I8, {576}), out, 1e-5f, nullptr); },
                     "weight dtype I8 is not supported");
  test::expect_error([&] { rmsnorm(fake_view(DType::F16, {4, 576}), fake_view(DType::F16, {576}), out, 1e-5f, nullptr); },
                     "x must be F32, got F16");
  test::expect_error([&] { rmsnorm(x, fake_view(DType::F32, {576}), fake_view(DType::F32, {4, 57}), 1e-5f, nullptr); },
                     "out must have shape [4, 576]");
  test::expect_error([&] { rmsnorm(x, fake_view(DType::F32, {576}), out, 0.0f, nullptr); },
                     "eps must be positive");
  EXPECT_TRUE(rmsnorm_supports(DType::F16));
  EXPECT_FALSE(rmsnorm_supports(DType::I32));
}

}  // namespace
}  // namespace exq::cuda
