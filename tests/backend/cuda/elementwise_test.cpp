// SwiGLU, residual add and to_f32 on the GPU against CPU loops.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cuda/elementwise.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class Elementwise : public CudaTest {};

const std::vector<Shape> kShapes = {{1}, {1, 1536}, {7, 1536}, {3, 1001}, {1 << 20}};

TEST_F(Elementwise, SwigluMatchesCpu) {
  uint32_t seed = 31;
  for (const Shape& shape : kShapes) {
    const Tensor gate = test::random_f32(shape, seed++, -12.0f, 12.0f);
    const Tensor up = test::random_f32(shape, seed++, -4.0f, 4.0f);
    std::vector<double> want(static_cast<size_t>(gate.numel()));
    for (size_t i = 0; i < want.size(); ++i) {
      const double g = gate.data<float>()[i];
      want[i] = g / (1.0 + std::exp(-g)) * up.data<float>()[i];
    }
    DeviceTensor dg = upload(gate), du = upload(up), dout = empty(DType::F32, shape);
    swiglu(dg, du, dout, stream());
    test::expect_close(want, download(dout), 1e-6, 4e-7 * 4, "swiglu " + shape_str(shape));
    swiglu(dg, du, dg, stream());  // in place over gate
    test::expect_close(want, download(dg), 1e-6, 4e-7 * 4, "swiglu in place");
  }
}

TEST_F(Elementwise, ResidualAddIsExact) {
  uint32_t seed = 41;
  for (const Shape& shape : kShapes) {
    const Tensor r = test::random_f32(shape, seed++, -25000.0f, 25000.0f);
    const Tensor d = test::random_f32(shape, seed++, -3.0f, 3.0f);
    std::vector<double> want(static_cast<size_t>(r.numel()));
    for (size_t i = 0; i < want.size(); ++i) want[i] = r.data<float>()[i] + d.data<float>()[i];
    DeviceTensor dr = upload(r), dd = upload(d);
    residual_add(dr, dd, stream());
    test::expect_close(want, download(dr), 0.0, 0.0, "residual_add " + shape_str(shape));
  }
}

TEST_F(Elementwise, ToF32IsExact) {
  uint32_t seed = 51;
  for (DType dtype : {DType::F16, DType::BF16, DType::F32}) {
    for (const Shape& shape : kShapes) {
      const Tensor src = dtype == DType::F32 ? test::random_f32(shape, seed++, -60000.0f, 60000.0f)
                                             : test::random_half(dtype, shape, seed++, -60000.0f, 60000.0f);
      std::vector<double> want(static_cast<size_t>(src.numel()));
      for (size_t i = 0; i < want.size(); ++i) want[i] = test::value_at(src, static_cast<int64_t>(i));
      DeviceTensor ds = upload(src), dd = empty(DType::F32, shape);
      to_f32(ds, dd, stream());
      test::expect_close(want, download(dd), 0.0, 0.0,
                         "to_f32 " + std::string(dtype_name(dtype)) + " " + shape_str(shape));
    }
  }
}

TEST(ElementwiseArgs, RejectMismatchedShapes) {
  using test::fake_view;
  test::expect_error([] { swiglu(fake_view(DType::F32, {2, 8}), fake_view(DType::F32, {2, 9}),
                                 fake_view(DType::F32, {2, 8}), nullptr); },
                     "up must have shape [2, 8], got [2, 9]");
  test::expect_error([] { residual_add(fake_view(DType::F32, {8}), fake_view(DType::F16, {8}), nullptr); },
                     "delta must be F32, got F16");
  test::expect_error([] { to_f32(fake_view(DType::I32, {8}), fake_view(DType::F32, {8}), nullptr); },
                     "src dtype I32 is not supported");
  EXPECT_TRUE(to_f32_supports(DType::BF16));
}

}  // namespace
}  // namespace exq::cuda
