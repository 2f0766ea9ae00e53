// DeviceHessian and the GPU prepare_hessian against quant/hessian.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>

#include "core/error.h"
#include "gptq_cuda_test_util.h"
#include "quant/cuda/gptq_batch.h"

namespace exq::quant::cuda::test {
namespace {

std::vector<float> slice_rows(const std::vector<float>& x, int64_t row0, int64_t rows,
                               int64_t in) {
  return std::vector<float>(x.begin() + row0 * in, x.begin() + (row0 + rows) * in);
}

TEST_F(GptqCudaTest, DeviceHessianMatchesCpu) {
  for (int64_t in : {160, 576, 1536}) {
    const int64_t batches = 3, rows = 400;
    const auto x = make_inputs(batches * rows, in, static_cast<uint32_t>(in));
    const auto want = cpu_hessian(x, batches, rows, in);
    DeviceHessian dh(in, ctx_);
    for (int64_t b = 0; b < batches; ++b)
      dh.add_batch(upload_vec(slice_rows(x, b * rows, rows, in), DType::F32, {rows, in}));
    EXPECT_EQ(dh.batches(), batches);
    EXPECT_EQ(dh.in(), in);
    const auto got = download_f32(dh.hessian());
    ASSERT_EQ(got.size(), want.size());
    const double err = rel_frobenius(got, want);
    std::cout << "DeviceHessian in=" << in << " relative Frobenius error " << err << "\n";
    EXPECT_LT(err, 1e-4) << "in=" << in;
    int asymmetric = 0;
    for (int64_t r = 0; r < in; ++r)
      for (int64_t c = 0; c < r; ++c) asymmetric += got[r * in + c] != got[c * in + r];
    EXPECT_EQ(asymmetric, 0);
  }
}

TEST_F(GptqCudaTest, DeviceHessianChecksItsInputs) {
  DeviceHessian dh(64, ctx_);
  EXPECT_THROW(dh.hessian(), Error);  // no batches
  EXPECT_THROW(dh.add_batch(empty(DType::F32, {8, 63})), Error);
  EXPECT_THROW(dh.add_batch(empty(DType::F16, {8, 64})), Error);
  EXPECT_THROW(dh.add_batch(empty(DType::F32, {8, 64, 1})), Error);
  EXPECT_THROW(DeviceHessian(0, ctx_), Error);
}

void expect_prepared_close(const DevicePreparedHessian& got, const PreparedHessian& want,
                           const std::vector<float>& u_got, double tol, const std::string& what) {
  EXPECT_EQ(got.in, want.in) << what;
  EXPECT_EQ(got.perm, want.perm) << what;
  EXPECT_EQ(got.damp, want.damp) << what;
  EXPECT_EQ(got.dampings, want.dampings) << what;
  const int64_t in = want.in;
  int64_t nonzero_lower = 0;
  for (int64_t r = 0; r < in; ++r)
    for (int64_t c = 0; c < r; ++c) nonzero_lower += u_got[r * in + c] != 0.0f;
  EXPECT_EQ(nonzero_lower, 0) << what;
  const double err = rel_frobenius(u_got, want.u);
  std::cout << "prepare_hessian " << what << ": U relative Frobenius error " << err
            << ", dampings " << got.dampings << "\n";
  EXPECT_LT(err, tol) << what;
}

constexpr GptqImpl kImpls[] = {GptqImpl::kV1, GptqImpl::kV2};

TEST_F(GptqCudaTest, PrepareHessianMatchesCpu) {
  for (GptqImpl impl : kImpls) {
    for (int64_t in : {100, 160, 576, 1536}) {
      const int64_t batches = 4, rows = 512;
      const auto x = make_inputs(batches * rows, in, static_cast<uint32_t>(in + 7));
      const auto h = cpu_hessian(x, batches, rows, in);
      const PreparedHessian want = quant::prepare_hessian(h, in, 0.12f);
      const DevicePreparedHessian got =
          prepare_hessian(upload_vec(h, DType::F32, {in, in}), 0.12f, ctx_, impl);
      const auto u = download_f32(got.u);
      expect_prepared_close(got, want, u, 1e-3,
                            std::string(gptq_impl_name(impl)) + " in=" + std::to_string(in));
      const Tensor perm_d = download(got.perm_d);
      EXPECT_EQ(0, std::memcmp(perm_d.raw(), want.perm.data(), perm_d.nbytes()));
    }
  }
}

TEST_F(GptqCudaTest, PrepareHessianRetriesDampingLikeTheCpu) {
  // Diagonal 1 except one entry -x, x = 2.5 damping steps: Cholesky fails twice, then succeeds.
  const int64_t in = 64;
  const float x = 18.9f / 64.3f;  // x = 0.3 * (63 - x) / 64
  std::vector<float> h(static_cast<size_t>(in * in), 0.0f);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> small(-1e-3f, 1e-3f);
  for (int64_t r = 0; r < in; ++r)
    for (int64_t c = 0; c < r; ++c) h[r * in + c] = h[c * in + r] = small(rng);
  for (int64_t i = 0; i < in; ++i) h[i * (in + 1)] = i == 17 ? -x : 1.0f + 0.01f * small(rng);
  const PreparedHessian want = quant::prepare_hessian(h, in, 0.12f);
  ASSERT_EQ(want.dampings, 3);
  for (GptqImpl impl : kImpls) {
    const DevicePreparedHessian got =
        prepare_hessian(upload_vec(h, DType::F32, {in, in}), 0.12f, ctx_, impl);
    expect_prepared_close(got, want, download_f32(got.u), 1e-4,
                          std::string("retry ") + gptq_impl_name(impl));
  }
}

TEST_F(GptqCudaTest, PrepareHessianGivesUpLikeTheCpu) {
  const int64_t in = 32;
  std::vector<float> h(static_cast<size_t>(in * in), 0.0f);
  for (int64_t i = 0; i < in; ++i) h[i * (in + 1)] = -1.0f;
  EXPECT_THROW(quant::prepare_hessian(h, in, 0.12f), Error);
  for (GptqImpl impl : kImpls) {
    EXPECT_THROW(prepare_hessian(upload_vec(h, DType::F32, {in, in}), 0.12f, ctx_, impl), Error);
    EXPECT_THROW(prepare_hessian(empty(DType::F32, {in, in + 1}), 0.12f, ctx_, impl), Error);
    EXPECT_THROW(prepare_hessian(empty(DType::F16, {in, in}), 0.12f, ctx_, impl), Error);
  }
}

TEST_F(GptqCudaTest, HessianAndPrepareAreDeterministic) {
  const int64_t in = 576, rows = 300;
  const auto x = make_inputs(2 * rows, in, 11);
  for (GptqImpl impl : kImpls) {
    std::vector<float> runs[2], us[2];
    for (int k = 0; k < 2; ++k) {
      DeviceHessian dh(in, ctx_);
      dh.add_batch(upload_vec(slice_rows(x, 0, rows, in), DType::F32, {rows, in}));
      dh.add_batch(upload_vec(slice_rows(x, rows, rows, in), DType::F32, {rows, in}));
      runs[k] = download_f32(dh.hessian());
      us[k] = download_f32(prepare_hessian(dh.hessian(), 0.12f, ctx_, impl).u);
    }
    EXPECT_EQ(0, std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(us[0].data(), us[1].data(), us[0].size() * sizeof(float)));
  }
}

}  // namespace
}  // namespace exq::quant::cuda::test
