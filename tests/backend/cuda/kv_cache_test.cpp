// KV-cache append: layout, positions, rounding to f16, and untouched slots.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "backend/cuda/kv_cache.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class KvAppend : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(KvAppend, PrefillThenDecodeMatchesCpu) {
  const DType dtype = GetParam();
  const int64_t kv_heads = 3, capacity = 40, hd = 64;
  const Shape cache_shape = {kv_heads, capacity, hd};
  // Host mirror of the cache; the device cache starts as the same sentinel bytes.
  Tensor mirror = Tensor::zeros(dtype, cache_shape);
  DeviceTensor kc = upload(mirror), vc = upload(mirror);
  Tensor kmirror = Tensor::zeros(dtype, cache_shape), vmirror = Tensor::zeros(dtype, cache_shape);
  auto store = [&](Tensor& m, int64_t idx, float v) {
    if (dtype == DType::F16) m.data<uint16_t>()[idx] = float_to_half(v);
    else m.data<float>()[idx] = v;
  };
  uint32_t seed = 61;
  int start = 0;
  for (int64_t tokens : {11, 1, 1, 5}) {
    const Tensor k = test::random_f32({tokens, kv_heads, hd}, seed++, -8.0f, 8.0f);
    const Tensor v = test::random_f32({tokens, kv_heads, hd}, seed++, -8.0f, 8.0f);
    DeviceTensor dk = upload(k), dv = upload(v);
    kv_append(dk, dv, kc, vc, start, stream());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < kv_heads; ++h)
        for (int64_t d = 0; d < hd; ++d) {
          const int64_t src = (t * kv_heads + h) * hd + d;
          const int64_t dst = (h * capacity + start + t) * hd + d;
          store(kmirror, dst, k.data<float>()[src]);
          store(vmirror, dst, v.data<float>()[src]);
        }
    start += static_cast<int>(tokens);
  }
  const Tensor kback = download(kc), vback = download(vc);
  EXPECT_EQ(std::memcmp(kback.raw(), kmirror.raw(), kmirror.nbytes()), 0);
  EXPECT_EQ(std::memcmp(vback.raw(), vmirror.raw(), vmirror.nbytes()), 0);
}

INSTANTIATE_TEST_SUITE_P(CacheDtypes, KvAppend, ::testing::Values(DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(KvAppendArgs, RejectOverflowAndLayoutMismatch) {
  using test::fake_view;
  const DeviceView k = fake_view(DType::F32, {4, 3, 64}), v = fake_view(DType::F32, {4, 3, 64});
  const DeviceView kc = fake_view(DType::F16, {3, 16, 64}), vc = fake_view(DType::F16, {3, 16, 64});
  test::expect_error([&] { kv_append(k, v, kc, vc, 13, nullptr); },
                     "positions [13, 17) exceed the cache capacity 16");
  test::expect_error([&] { kv_append(k, v, kc, vc, -1, nullptr); }, "exceed the cache capacity");
  test::expect_error([&] { kv_append(k, v, fake_view(DType::F16, {2, 16, 64}), fake_view(DType::F16, {2, 16, 64}), 0, nullptr); },
                     "does not hold k");
  test::expect_error([&] { kv_append(k, v, kc, fake_view(DType::F32, {3, 16, 64}), 0, nullptr); },
                     "v_cache must be F16, got F32");
  test::expect_error([&] { kv_append(k, v, fake_view(DType::BF16, {3, 16, 64}), fake_view(DType::BF16, {3, 16, 64}), 0, nullptr); },
                     "k_cache dtype BF16 is not supported");
}

}  // namespace
}  // namespace exq::cuda
