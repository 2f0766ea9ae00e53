// DeviceHessian and the GPU prepare_hessian against quant/hessian.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

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

// A 64 x 64 Hessian whose Cholesky fails at the first two damping steps of 0.12 (diagonal 1
// except one entry -x, x = 2.5 damping steps) and succeeds at the third.
std::vector<float> three_damping_hessian(int64_t in) {
  const float x = 18.9f / 64.3f;  // x = 0.3 * (63 - x) / 64
  std::vector<float> h(static_cast<size_t>(in * in), 0.0f);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> small(-1e-3f, 1e-3f);
  for (int64_t r = 0; r < in; ++r)
    for (int64_t c = 0; c < r; ++c) h[r * in + c] = h[c * in + r] = small(rng);
  for (int64_t i = 0; i < in; ++i) h[i * (in + 1)] = i == 17 ? -x : 1.0f + 0.01f * small(rng);
  return h;
}

TEST_F(GptqCudaTest, PrepareHessianRetriesDampingLikeTheCpu) {
  const int64_t in = 64;
  const std::vector<float> h = three_damping_hessian(in);
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

std::vector<int32_t> download_i32(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

// Act-order with many ties (stable order, -0 == +0), values spanning several rank-kernel
// slices (1024 keys) and sum chunks (8192), and the damping's double sum: the device's
// act-order and damp are the CPU's, bit for bit.
TEST_F(GptqCudaTest, DeviceActOrderMatchesTheCpuWithTies) {
  for (int64_t in : {5, 300, 2100, 9000}) {
    std::vector<float> h(static_cast<size_t>(in * in), 0.0f);
    std::mt19937 rng(static_cast<uint32_t>(in));
    std::uniform_int_distribution<int> level(0, 6);
    std::uniform_real_distribution<float> value(0.5f, 3.0f);
    for (int64_t i = 0; i < in; ++i)  // diagonal only: always positive definite
      h[i * (in + 1)] = level(rng) == 0 ? value(rng) : 0.25f * static_cast<float>(level(rng));
    h[0] = 0.0f;  // a zero diagonal entry sorts last among ties
    for (int64_t i = 7; i < in; i += 97) h[i * (in + 1)] = -0.0f;  // ties with +0
    // quant::prepare_hessian up to 2100 inputs; beyond, its act-order and damping arithmetic
    // alone (its f32 factorization of a 9000 x 9000 matrix would take long).
    PreparedHessian want;
    if (in <= 2100) {
      want = quant::prepare_hessian(h, in, 0.12f);
    } else {
      want.perm.resize(static_cast<size_t>(in));
      std::iota(want.perm.begin(), want.perm.end(), 0);
      std::stable_sort(want.perm.begin(), want.perm.end(), [&](int32_t a, int32_t b) {
        return h[static_cast<size_t>(a * (in + 1))] > h[static_cast<size_t>(b * (in + 1))];
      });
      double diag_sum = 0.0;
      for (const int32_t r : want.perm) diag_sum += h[static_cast<size_t>(r * (in + 1))];
      want.damp =
          std::max(static_cast<float>(0.12f * diag_sum / static_cast<double>(in)), 1e-5f);
    }
    for (GptqImpl impl : kImpls) {
      const std::string what = std::string(gptq_impl_name(impl)) + " in=" + std::to_string(in);
      const DevicePreparedHessian got =
          prepare_hessian(upload_vec(h, DType::F32, {in, in}), 0.12f, ctx_, impl);
      EXPECT_EQ(got.perm, want.perm) << what;
      EXPECT_EQ(got.damp, want.damp) << what;
      EXPECT_EQ(got.dampings, 1) << what;
      const std::vector<int32_t> invperm = download_i32(download(got.invperm_d));
      for (int64_t i = 0; i < in; ++i)
        ASSERT_EQ(invperm[static_cast<size_t>(want.perm[static_cast<size_t>(i)])], i) << what;
    }
  }
}

// Without a wait: the same perm, damping steps and U (bit for bit) as the checked call; the
// status says it succeeded.
TEST_F(GptqCudaTest, PrepareHessianAsyncEqualsTheCheckedCall) {
  for (GptqImpl impl : kImpls) {
    for (int64_t in : {100, 576}) {
      const auto x = make_inputs(4 * 256, in, static_cast<uint32_t>(in + 3));
      const auto h = cpu_hessian(x, 4, 256, in);
      const DeviceTensor hd = upload_vec(h, DType::F32, {in, in});
      const std::string what = std::string(gptq_impl_name(impl)) + " in=" + std::to_string(in);
      const DevicePreparedHessian checked = prepare_hessian(hd, 0.12f, ctx_, impl);
      DeviceTensor status = upload_vec(std::vector<int32_t>(kPrepareStatusInts, 7), DType::I32,
                                       {kPrepareStatusInts});
      const DevicePreparedHessian got = prepare_hessian_async(
          hd, 0.12f, ctx_, impl, static_cast<int*>(status.raw()));
      EXPECT_TRUE(got.perm.empty()) << what;
      EXPECT_EQ(got.dampings, 1) << what;
      EXPECT_EQ(download_i32(download(status)), std::vector<int32_t>(kPrepareStatusInts, 0))
          << what;
      EXPECT_EQ(download_i32(download(got.perm_d)), checked.perm) << what;
      const auto u = download_f32(got.u), want_u = download_f32(checked.u);
      EXPECT_EQ(0, std::memcmp(u.data(), want_u.data(), u.size() * sizeof(float))) << what;
    }
  }
}

// The measurement's slow path: a failed attempt without a wait shows in the status; the checked
// call that skips the failed step, and one attempt with the larger damping without a wait, give
// what the checked call gives from the start, bit for bit.
TEST_F(GptqCudaTest, FailedAsyncAttemptAndItsRetryMatchTheCheckedCall) {
  const int64_t in = 64;
  const std::vector<float> h = three_damping_hessian(in);
  const DeviceTensor hd = upload_vec(h, DType::F32, {in, in});
  for (GptqImpl impl : kImpls) {
    const std::string what = gptq_impl_name(impl);
    const DevicePreparedHessian direct = prepare_hessian(hd, 0.12f, ctx_, impl);
    ASSERT_EQ(direct.dampings, 3) << what;
    const auto want_u = download_f32(direct.u);
    DeviceTensor status = upload_vec(std::vector<int32_t>(kPrepareStatusInts, 0), DType::I32,
                                     {kPrepareStatusInts});
    prepare_hessian_async(hd, 0.12f, ctx_, impl, static_cast<int*>(status.raw()));
    EXPECT_NE(download_i32(download(status)), std::vector<int32_t>(kPrepareStatusInts, 0))
        << what;
    for (int skip : {1, 2}) {
      const DevicePreparedHessian retry = prepare_hessian(hd, 0.12f, ctx_, impl, skip);
      EXPECT_EQ(retry.dampings, 3) << what << " skip " << skip;
      EXPECT_EQ(retry.perm, direct.perm) << what;
      EXPECT_EQ(retry.damp, direct.damp) << what;
      const auto u = download_f32(retry.u);
      EXPECT_EQ(0, std::memcmp(u.data(), want_u.data(), u.size() * sizeof(float))) << what;
    }
    const DevicePreparedHessian larger =
        prepare_hessian_async(hd, 0.12f, ctx_, impl, static_cast<int*>(status.raw()), 3);
    EXPECT_EQ(download_i32(download(status)), std::vector<int32_t>(kPrepareStatusInts, 0))
        << what;
    const auto u = download_f32(larger.u);
    EXPECT_EQ(0, std::memcmp(u.data(), want_u.data(), u.size() * sizeof(float))) << what;
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
