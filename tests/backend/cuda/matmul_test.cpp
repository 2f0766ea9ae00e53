// f16/bf16-weight matmul through cuBLAS against a double-precision CPU loop. The tolerance
// follows from the precision design (matmul.cu): x is rounded to the weight type after an exact
// power-of-two row scaling, so |error| <= u * sum_k |x_k w_k| plus f32 accumulation, with
// u = 2^-11 (f16) or 2^-8 (bf16); the test allows twice that.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cuda/matmul.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class MatmulEdges : public CudaTest {};

struct Result {
  std::vector<double> y;
  std::vector<double> abs_sum;  // sum_k |x_k w_k| per output, the error scale
};

Result matmul_ref(const Tensor& x, const Tensor& w) {
  const int64_t rows = x.dim(0), k = x.dim(1), n = w.dim(0);
  Result r{std::vector<double>(static_cast<size_t>(rows * n)), std::vector<double>(static_cast<size_t>(rows * n))};
  std::vector<double> wf(static_cast<size_t>(w.numel()));
  for (int64_t i = 0; i < w.numel(); ++i) wf[static_cast<size_t>(i)] = test::value_at(w, i);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0, mag = 0.0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const double p = double(x.data<float>()[i * k + kk]) * wf[static_cast<size_t>(j * k + kk)];
        acc += p;
        mag += std::fabs(p);
      }
      r.y[static_cast<size_t>(i * n + j)] = acc;
      r.abs_sum[static_cast<size_t>(i * n + j)] = mag;
    }
  return r;
}

void expect_within_bound(const Result& want, const Tensor& got, double unit, const std::string& what) {
  const float* g = got.data<float>();
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < want.y.size(); ++i) {
    const double err = std::fabs(g[i] - want.y[i]);
    const double bound = 2.0 * unit * want.abs_sum[i] + 1e-6;
    worst = std::max(worst, err / bound);
    if (!(err <= bound) && bad++ < 5)
      ADD_FAILURE() << what << ": y[" << i << "] = " << g[i] << ", want " << want.y[i]
                    << " (bound " << bound << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": worst error / bound = " << worst;
}

class Matmul : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(Matmul, MatchesCpu) {
  const DType wdtype = GetParam();
  const double unit = wdtype == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  struct Case {
    int64_t rows, in, out;
    float x_range;
  };
  // SmolLM2 projections (q/o 576x576, k/v 192x576, up 1536x576, down 576x1536, head 49152x576)
  // at decode and prefill sizes, odd shapes, and activations far beyond f16's range.
  const std::vector<Case> cases = {
      {1, 576, 576, 4.0f},     {7, 576, 192, 4.0f},    {5, 576, 1536, 4.0f},
      {3, 1536, 576, 30.0f},   {2, 576, 49152, 4.0f},  {3, 13, 7, 1.0f},
      {65, 100, 37, 1.0f},     {1, 1, 1, 1.0f},        {130, 576, 576, 25000.0f},
      {4, 777, 33, 3e5f},      {9, 576, 64, 0.01f},    {6, 300, 20, 1e-6f}};
  uint32_t seed = 91;
  CublasHandle cublas;
  for (const Case& c : cases) {
    Tensor x = test::random_f32({c.rows, c.in}, seed++, -c.x_range, c.x_range);
    if (c.rows > 1) x.data<float>()[c.in] = 1e-30f;  // tiny values must not poison the row
    const Tensor w = test::random_half(wdtype, {c.out, c.in}, seed++, -0.2f, 0.2f);
    DeviceTensor dx = upload(x), dw = upload(w), dy = empty(DType::F32, {c.rows, c.out});
    DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(c.rows, c.in))});
    matmul(cublas, dx, dw, dy, ws, stream());
    expect_within_bound(matmul_ref(x, w), download(dy), unit,
                        "matmul " + std::string(dtype_name(wdtype)) + " x" + shape_str(x.shape()) +
                            " w" + shape_str(w.shape()));
  }
}

INSTANTIATE_TEST_SUITE_P(WeightDtypes, Matmul, ::testing::Values(DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// k -> (k * mul + add) % n, a permutation when mul and n are coprime.
std::vector<int32_t> permutation(int64_t n, int64_t mul, int64_t add) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) p[static_cast<size_t>(k)] = static_cast<int32_t>((k * mul + add) % n);
  return p;
}

// x_perm: column c of w multiplies x[:, x_perm[c]] (the EXL2 prefill's q_perm order); rows
// inside and outside the unscaled range [2^-4, 2^14).
TEST_F(MatmulEdges, GathersPermutedInput) {
  CublasHandle cublas;
  const int64_t rows = 11, in = 200, out = 48;
  Tensor x = test::random_f32({rows, in}, 7, -3.0f, 3.0f);
  for (int64_t k = 0; k < in; ++k) {
    x.data<float>()[in + k] *= 1e-4f;  // scaled up
    x.data<float>()[2 * in + k] *= 3e4f;  // scaled down
  }
  const std::vector<int32_t> perm = permutation(in, 73, 5);
  Tensor p(DType::I32, {in});
  std::copy(perm.begin(), perm.end(), p.data<int32_t>());
  Tensor xg(DType::F32, {rows, in});  // x in w's column order, for the reference
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < in; ++k)
      xg.data<float>()[r * in + k] = x.data<float>()[r * in + perm[static_cast<size_t>(k)]];
  const Tensor w = test::random_half(DType::F16, {out, in}, 8, -0.2f, 0.2f);
  DeviceTensor dx = upload(x), dw = upload(w), dp = upload(p), dy = empty(DType::F32, {rows, out});
  DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(rows, in))});
  matmul(cublas, dx, dw, dy, ws, stream(), static_cast<const int32_t*>(dp.raw()));
  expect_within_bound(matmul_ref(xg, w), download(dy), std::ldexp(1.0, -11), "permuted matmul");
}

// up: the rows multiplied are silu(x) * up (the MLP's SwiGLU), also with a permutation.
TEST_F(MatmulEdges, FormsSwigluInput) {
  CublasHandle cublas;
  const int64_t rows = 13, in = 320, out = 40;
  const Tensor x = test::random_f32({rows, in}, 11, -6.0f, 6.0f);
  const Tensor up = test::random_f32({rows, in}, 12, -2.0f, 2.0f);
  const std::vector<int32_t> perm = permutation(in, 37, 11);
  Tensor p(DType::I32, {in});
  std::copy(perm.begin(), perm.end(), p.data<int32_t>());
  const Tensor w = test::random_half(DType::F16, {out, in}, 13, -0.2f, 0.2f);
  DeviceTensor dx = upload(x), du = upload(up), dw = upload(w), dp = upload(p);
  DeviceTensor dy = empty(DType::F32, {rows, out});
  DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(rows, in))});
  const DeviceView uv = du;
  for (bool permuted : {false, true}) {
    Tensor h(DType::F32, {rows, in});  // silu(x) * up in w's column order (float, as the kernel)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < in; ++k) {
        const int64_t c = r * in + (permuted ? perm[static_cast<size_t>(k)] : k);
        const float g = x.data<float>()[c];
        h.data<float>()[r * in + k] = g / (1.0f + std::exp(-g)) * up.data<float>()[c];
      }
    matmul(cublas, dx, dw, dy, ws, stream(), permuted ? static_cast<const int32_t*>(dp.raw()) : nullptr,
           &uv);
    expect_within_bound(matmul_ref(h, w), download(dy), std::ldexp(1.0, -11),
                        permuted ? "SwiGLU matmul, permuted" : "SwiGLU matmul");
  }
}

TEST_F(MatmulEdges, ZeroRowAndHugeRowStayAccurate) {
  CublasHandle cublas;
  Tensor x = Tensor::zeros(DType::F32, {2, 64});
  x.data<float>()[64] = 70000.0f;  // one row beyond f16 range, one all-zero row
  const Tensor w = test::random_half(DType::F16, {8, 64}, 5);
  DeviceTensor dx = upload(x), dw = upload(w), dy = empty(DType::F32, {2, 8});
  DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(2, 64))});
  matmul(cublas, dx, dw, dy, ws, stream());
  const Tensor y = download(dy);
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(y.data<float>()[j], 0.0f);
    const double want = 70000.0 * half_to_float(w.data<uint16_t>()[j * 64]);
    EXPECT_NEAR(y.data<float>()[8 + j], want, std::fabs(want) * 1e-3 + 1e-6);
  }
}

TEST(MatmulArgs, RejectBadShapesAndWorkspace) {
  using test::fake_view;
  CublasHandle* no_handle = nullptr;  // never used: the checks throw first
  const DeviceView x = fake_view(DType::F32, {4, 576}), w = fake_view(DType::F16, {192, 576});
  const DeviceView y = fake_view(DType::F32, {4, 192});
  const DeviceView ws = fake_view(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(4, 576))});
  test::expect_error([&] { matmul(*no_handle, x, fake_view(DType::F16, {192, 575}), y, ws, nullptr); },
                     "has 575 input features");
  test::expect_error([&] { matmul(*no_handle, x, w, fake_view(DType::F32, {4, 191}), ws, nullptr); },
                     "y must have shape [4, 192]");
  test::expect_error([&] { matmul(*no_handle, x, fake_view(DType::F32, {192, 576}), y, ws, nullptr); },
                     "w dtype F32 is not supported");
  test::expect_error([&] { matmul(*no_handle, x, w, y, fake_view(DType::U8, {100}), nullptr); },
                     "workspace has 100 bytes, needs");
  EXPECT_EQ(matmul_workspace_bytes(4, 576), 4608u + 16u);
  EXPECT_TRUE(matmul_supports(DType::BF16));
  EXPECT_FALSE(matmul_supports(DType::F32));
}

}  // namespace
}  // namespace exq::cuda
