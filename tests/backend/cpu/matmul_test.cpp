#include "backend/cpu/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "backend/cpu/matmul_kernel.h"
#include "core/half.h"

namespace exq::cpu {
namespace {

Tensor random_f32(Shape shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t(DType::F32, std::move(shape));
  std::normal_distribution<float> d(0.0f, scale);
  for (float& v : t.span<float>()) v = d(rng);
  return t;
}

// The weight in the requested dtype; `ref` gets the exact f32 values it holds.
Tensor make_weight(DType dt, int64_t out, int64_t in, std::mt19937& rng, Tensor& ref) {
  ref = random_f32({out, in}, rng);
  if (dt == DType::F32) return Tensor::copy_of(ref);
  Tensor w(dt, {out, in});
  auto src = ref.span<float>();
  auto dst = w.span<uint16_t>();
  for (size_t i = 0; i < src.size(); ++i) {
    dst[i] = dt == DType::F16 ? float_to_half(src[i]) : float_to_bf16(src[i]);
    src[i] = dt == DType::F16 ? half_to_float(dst[i]) : bf16_to_float(dst[i]);
  }
  return w;
}

// Naive double-precision reference and a bound on float32 rounding: |error| <= c * sum|x||w|.
void expect_matches(const TensorView& x, const TensorView& wref, const TensorView& y) {
  const int64_t T = x.dim(0), in = x.dim(1), out = wref.dim(0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double s = 0, mag = 0;
      for (int64_t i = 0; i < in; ++i) {
        const double a = x.data<float>()[t * x.strides()[0] + i];
        const double b = wref.data<float>()[o * in + i];
        s += a * b;
        mag += std::fabs(a * b);
      }
      const float got = y.data<float>()[t * y.strides()[0] + o];
      ASSERT_NEAR(got, s, 1e-5 * mag + 1e-6) << "t=" << t << " o=" << o << " shape T=" << T
                                             << " in=" << in << " out=" << out;
    }
  }
}

using kernel::Isa;
using Case = std::tuple<DType, MatmulImpl, Isa>;

// Runs each case with the kernels limited to one instruction set (skipped above the CPU's).
class MatmulTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Isa isa = std::get<2>(GetParam());
    if (isa > kernel::detected_isa()) GTEST_SKIP() << kernel::isa_name(isa) << " not on this CPU";
    const MatmulImpl impl = std::get<1>(GetParam());
    const bool blas = impl == MatmulImpl::Blas || impl == MatmulImpl::BlasThreaded;
    if (blas && isa != kernel::detected_isa()) GTEST_SKIP() << "BLAS runs on the CPU's own ISA only";
    saved_ = kernel::active_isa();
    kernel::set_max_isa(isa);
  }
  void TearDown() override { kernel::set_max_isa(saved_); }
  Isa saved_ = Isa::Portable;
};

TEST_P(MatmulTest, OddShapesMatchNaive) {
  const auto [dt, impl, isa] = GetParam();
  if (impl == MatmulImpl::BlasThreaded && dt != DType::F32) GTEST_SKIP() << "f32 weights only";
  std::mt19937 rng(7);
  const int64_t Ts[] = {1, 2, 3, 4, 5, 7, 13, 33};
  const int64_t ins[] = {1, 7, 8, 9, 16, 17, 31, 64, 130};
  const int64_t outs[] = {1, 2, 3, 5, 17, 100};
  for (int64_t T : Ts) {
    for (int64_t in : ins) {
      for (int64_t out : outs) {
        Tensor wref;
        Tensor w = make_weight(dt, out, in, rng, wref);
        Tensor x = random_f32({T, in}, rng);
        Tensor y = Tensor::zeros(DType::F32, {T, out});
        matmul(x, w, y, impl);
        expect_matches(x, wref, y);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(MatmulTest, StridedRowsAndModelShape) {
  const auto [dt, impl, isa] = GetParam();
  if (impl == MatmulImpl::BlasThreaded && dt != DType::F32) GTEST_SKIP() << "f32 weights only";
  std::mt19937 rng(11);
  for (int64_t T : {1, 6, 37}) {
    Tensor wref;
    Tensor w = make_weight(dt, 192, 576, rng, wref);
    // x and y are column windows of wider buffers (row strides 600 and 200).
    Tensor xbuf = random_f32({T, 600}, rng);
    Tensor ybuf = Tensor::zeros(DType::F32, {T, 200});
    TensorView x(xbuf.data<float>() + 3, DType::F32, {T, 576}, {600, 1});
    TensorView y(ybuf.data<float>() + 5, DType::F32, {T, 192}, {200, 1});
    matmul(x, w, y, impl);
    expect_matches(x, wref, y);
    // The columns outside the window are untouched.
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c : {0, 1, 2, 3, 4, 197, 198, 199}) EXPECT_EQ(ybuf.data<float>()[t * 200 + c], 0.0f);
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  static const char* const kImpls[] = {"Auto", "Kernel", "Blas", "BlasThreaded"};
  return std::string(dtype_name(std::get<0>(info.param))) + "_" +
         kImpls[static_cast<int>(std::get<1>(info.param))] + "_" + kernel::isa_name(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(DTypesAndImpls, MatmulTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::F16, DType::BF16),
                                            ::testing::Values(MatmulImpl::Auto, MatmulImpl::Kernel,
                                                              MatmulImpl::Blas, MatmulImpl::BlasThreaded),
                                            ::testing::Values(Isa::Portable, Isa::Avx2, Isa::Avx512)),
                         case_name);

// Each output is computed the same way whatever the tiling and T: decoding one row at a time
// gives bit-identical results to a batched prefill (16-bit weights take another path at T <= 4).
TEST(Matmul, RowByRowEqualsBatched) {
  std::mt19937 rng(3);
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    Tensor wref;
    Tensor w = make_weight(dt, 100, 70, rng, wref);
    Tensor x = random_f32({9, 70}, rng);
    Tensor all = Tensor::zeros(DType::F32, {9, 100}), one = Tensor::zeros(DType::F32, {9, 100});
    matmul(x, w, all);
    for (int64_t t = 0; t < 9; ++t) matmul(x.view().slice0(t, t + 1), w, one.view().slice0(t, t + 1));
    for (int64_t i = 0; i < all.numel(); ++i) ASSERT_EQ(all.data<float>()[i], one.data<float>()[i]) << i;
  }
}

TEST(Matmul, EmptyAndZeroInner) {
  Tensor w = Tensor::zeros(DType::F32, {3, 0});
  Tensor x = Tensor::zeros(DType::F32, {2, 0});
  Tensor y(DType::F32, {2, 3});
  matmul(x, w, y);
  for (float v : y.span<float>()) EXPECT_EQ(v, 0.0f);
  Tensor x0 = Tensor::zeros(DType::F32, {0, 4}), w0 = Tensor::zeros(DType::F16, {3, 4});
  Tensor y0 = Tensor::zeros(DType::F32, {0, 3});
  matmul(x0, w0, y0);
}

TEST(Matmul, RejectsBadShapesAndDtypes) {
  Tensor x = Tensor::zeros(DType::F32, {2, 4});
  Tensor w = Tensor::zeros(DType::F16, {3, 5});
  Tensor y = Tensor::zeros(DType::F32, {2, 3});
  EXPECT_THROW(matmul(x, w, y), Error);
  Tensor wi = Tensor::zeros(DType::I8, {3, 4});
  EXPECT_THROW(matmul(x, wi, y), Error);
  Tensor w16 = Tensor::zeros(DType::F16, {3, 4});
  EXPECT_THROW(matmul(x, w16, y, MatmulImpl::BlasThreaded), Error);
  Tensor ybad = Tensor::zeros(DType::F32, {2, 4});
  EXPECT_THROW(matmul(x, w16, ybad), Error);
  Tensor x16 = Tensor::zeros(DType::F16, {2, 4});
  EXPECT_THROW(matmul(x16, w16, y), Error);
}

TEST(Matmul, AddBias) {
  Tensor y = Tensor::zeros(DType::F32, {2, 3});
  Tensor b(DType::F16, {3});
  for (int i = 0; i < 3; ++i) b.data<uint16_t>()[i] = float_to_half(static_cast<float>(i) + 0.5f);
  add_bias(y, b);
  add_bias(y, b);
  for (int t = 0; t < 2; ++t)
    for (int i = 0; i < 3; ++i) EXPECT_EQ(y.data<float>()[t * 3 + i], 2.0f * (static_cast<float>(i) + 0.5f));
  Tensor bad = Tensor::zeros(DType::F32, {4});
  EXPECT_THROW(add_bias(y, bad), Error);
}

TEST(MatmulKernel, ConvertRowsIsExact) {
  std::mt19937 rng(5);
  std::vector<uint16_t> h(1001);
  for (auto& v : h) v = static_cast<uint16_t>(rng());
  std::vector<float> f(h.size());
  const Isa saved = kernel::active_isa();
  kernel::set_max_isa(Isa::Avx2);
  kernel::convert_rows(h.data(), DType::BF16, 7, 143, f.data());
  for (size_t i = 0; i < h.size(); ++i) {
    const float want = bf16_to_float(h[i]);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(f[i]));
    else EXPECT_EQ(f[i], want);
  }
  kernel::convert_rows(h.data(), DType::F16, 1, 1001, f.data());
  for (size_t i = 0; i < h.size(); ++i) {
    const float want = half_to_float(h[i]);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(f[i]));
    else EXPECT_EQ(f[i], want) << std::hex << h[i];
  }
  kernel::set_max_isa(saved);
}

}  // namespace
}  // namespace exq::cpu
