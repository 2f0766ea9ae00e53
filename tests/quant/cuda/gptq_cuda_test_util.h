// Shared by the GPU quantizer tests: a fixture with a GptqContext (skips without a GPU),
// calibration-like inputs, uploads of host data and of a CPU-prepared Hessian, and the GPTQ
// proxy error.
#pragma once

#include <cblas.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "../../backend/cuda/cuda_test_util.h"
#include "backend/cuda/cublas.h"
#include "gptq_inputs.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/hessian.h"

namespace exq::quant::cuda::test {

class GptqCudaTest : public exq::cuda::test::CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped()) return;
    cublas_ = std::make_unique<exq::cuda::CublasHandle>();
    ctx_ = GptqContext{&alloc(), stream(), cublas_.get(), nullptr};
  }

  template <typename T>
  DeviceTensor upload_vec(const std::vector<T>& v, DType dtype, Shape shape) {
    Tensor t(dtype, std::move(shape));
    EXPECT_EQ(t.nbytes(), v.size() * sizeof(T));
    std::memcpy(t.raw(), v.data(), t.nbytes());
    return upload(t);
  }
  std::vector<float> download_f32(const DeviceView& v) {
    const Tensor t = download(v);
    const float* p = t.data<float>();
    return std::vector<float>(p, p + t.numel());
  }
  std::vector<uint16_t> download_u16(const DeviceView& v) {
    const Tensor t = download(v);
    const uint16_t* p = t.data<uint16_t>();
    return std::vector<uint16_t>(p, p + t.numel());
  }
  // The CPU's act-order and factor on the device: GPTQ then starts from identical inputs.
  DevicePreparedHessian upload_prepared(const PreparedHessian& h) {
    DevicePreparedHessian d;
    d.in = h.in;
    d.perm = h.perm;
    d.perm_d = upload_vec(h.perm, DType::I32, {h.in});
    d.u = upload_vec(h.u, DType::F32, {h.in, h.in});
    d.damp = h.damp;
    d.dampings = h.dampings;
    return d;
  }

  std::unique_ptr<exq::cuda::CublasHandle> cublas_;
  GptqContext ctx_;
};

using exq::test::make_inputs;

// Weights [out, in]: normal with a few large outliers, as trained layers have.
inline std::vector<float> make_weights(int64_t out, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::uniform_int_distribution<int> pick(0, 199);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (auto& v : w) v = pick(rng) == 0 ? 8.0f * nd(rng) : nd(rng);
  return w;
}

// CPU Hessian of `batches` batches of `rows` tokens each (x holds batches * rows rows).
inline std::vector<float> cpu_hessian(const std::vector<float>& x, int64_t batches, int64_t rows,
                                      int64_t in) {
  HessianAccumulator acc(in);
  for (int64_t b = 0; b < batches; ++b) acc.add_batch(&x[static_cast<size_t>(b * rows * in)], rows);
  return acc.hessian();
}

// GPTQ's proxy error: sum over output columns of (w - q)^T H (w - q); w, q: [out, in].
inline double proxy_error(const std::vector<float>& w, const std::vector<float>& q,
                          const std::vector<float>& h, int64_t out, int64_t in) {
  std::vector<float> d(w.size()), dh(w.size());
  for (size_t i = 0; i < w.size(); ++i) d[i] = w[i] - q[i];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out),
              static_cast<int>(in), static_cast<int>(in), 1.0f, d.data(), static_cast<int>(in),
              h.data(), static_cast<int>(in), 0.0f, dh.data(), static_cast<int>(in));
  double sum = 0.0;
  for (size_t i = 0; i < d.size(); ++i) sum += static_cast<double>(d[i]) * dh[i];
  return sum;
}

// ||a - b||_F / ||b||_F.
inline double rel_frobenius(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace exq::quant::cuda::test
