// Helpers for the CUDA backend tests: a fixture that skips without a usable GPU, seeded random
// host data, host <-> device round trips and a tolerance check that reports the worst element.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/device.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/stream.h"
#include "core/half.h"
#include "core/tensor.h"

namespace exq::cuda::test {

// True when a device with compute capability >= 8.0 is present.
inline bool have_usable_device() {
  if (device_count() == 0) return false;
  return device_info(0).cc_major >= kMinComputeMajor;
}

#define EXQ_REQUIRE_CUDA()                                                            \
  do {                                                                                \
    if (!::exq::cuda::test::have_usable_device())                                     \
      GTEST_SKIP() << "no CUDA device with compute capability >= 8.0";                \
  } while (0)

// Fixture for tests that run kernels: skips without a GPU, else gives a stream and allocator.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EXQ_REQUIRE_CUDA();
    require_device(0);
    stream_ = std::make_unique<Stream>();
    alloc_ = std::make_unique<CachingAllocator>();
  }
  cudaStream_t stream() const { return stream_->get(); }
  CachingAllocator& alloc() { return *alloc_; }

  DeviceTensor upload(const Tensor& host) { return to_device(host.view(), *alloc_, stream()); }
  DeviceTensor empty(DType dtype, Shape shape) { return DeviceTensor(dtype, std::move(shape), *alloc_, stream()); }
  Tensor download(const DeviceView& v) { return to_host(v, stream()); }

 private:
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<CachingAllocator> alloc_;
};

inline Tensor random_f32(Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(DType::F32, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : t.span<float>()) v = dist(rng);
  return t;
}

// f16 / bf16 tensor from random values in [lo, hi).
inline Tensor random_half(DType dtype, Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(dtype, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (uint16_t& v : t.span<uint16_t>())
    v = dtype == DType::F16 ? float_to_half(dist(rng)) : float_to_bf16(dist(rng));
  return t;
}

// Any float dtype read as float.
inline float value_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F16: return half_to_float(t.data<uint16_t>()[i]);
    case DType::BF16: return bf16_to_float(t.data<uint16_t>()[i]);
    default: return t.data<float>()[i];
  }
}

// Every |got - want| <= atol + rtol * |want|; on failure names the worst element.
inline void expect_close(const std::vector<double>& want, const Tensor& got, double atol,
                         double rtol, const std::string& what) {
  ASSERT_EQ(static_cast<int64_t>(want.size()), got.numel()) << what;
  const float* g = got.data<float>();
  int64_t worst = -1;
  double worst_excess = 0.0, max_err = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(g[i]) - want[i]);
    const double excess = err - (atol + rtol * std::fabs(want[i]));
    max_err = std::max(max_err, std::isnan(err) ? INFINITY : err);
    if (std::isnan(err) || (excess > 0 && (worst < 0 || excess > worst_excess))) {
      worst = static_cast<int64_t>(i);
      worst_excess = std::isnan(err) ? INFINITY : excess;
    }
  }
  EXPECT_LT(worst, 0) << what << ": element " << worst << " got " << g[worst < 0 ? 0 : worst]
                      << " want " << want[static_cast<size_t>(worst < 0 ? 0 : worst)]
                      << " (max abs error " << max_err << ", atol " << atol << ", rtol " << rtol
                      << ")";
}

// The rotary table of positions [0, capacity) for head_dim hd (theta 10000, HF rotate_half
// pairs i, i + hd / 2): cos, sin [capacity, hd / 2], and the rotation of one head on the host.
struct RopeTable {
  Tensor cos, sin;
  int64_t half;
  RopeTable(int64_t capacity, int64_t hd)
      : cos(DType::F32, {capacity, hd / 2}), sin(DType::F32, {capacity, hd / 2}), half(hd / 2) {
    for (int64_t p = 0; p < capacity; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double a = static_cast<double>(p) * std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
        cos.data<float>()[p * half + i] = static_cast<float>(std::cos(a));
        sin.data<float>()[p * half + i] = static_cast<float>(std::sin(a));
      }
  }
  void rotate(const float* x, float* y, int64_t p) const {
    for (int64_t i = 0; i < half; ++i) {
      const float co = cos.data<float>()[p * half + i], si = sin.data<float>()[p * half + i];
      y[i] = x[i] * co - x[i + half] * si;
      y[i + half] = x[i + half] * co + x[i] * si;
    }
  }
};

// A device pointer that is never dereferenced: for tests of argument checks, which throw
// before anything is launched, so they run without a GPU.
inline DeviceView fake_view(DType dtype, Shape shape) {
  static char dummy[16];
  return DeviceView(dummy, dtype, std::move(shape));
}

// Runs `fn`, expecting an exq::Error whose message contains `needle`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected exq::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace exq::cuda::test
