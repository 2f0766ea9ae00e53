// The q8 KV cache on the GPU: the append against model/kv_quant.h bit for bit, and the
// tensor-core decode attention (new row quantized by the kernel) and prefill attention over a q8
// cache against a double-precision loop over the values the cache reads back. Scales past the
// filled rows are NaN, so any read beyond them shows up in the output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_cache.h"
#include "cuda_test_util.h"
#include "model/kv_quant.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

constexpr int kG = model::kKvQ8Group;
constexpr uint16_t kNanHalf = 0x7e00;

// Host mirror of a q8 cache [kv_heads, capacity, hd]: codes, scales, and the values read back.
struct Q8Mirror {
  int64_t kv_heads, capacity, hd;
  Tensor codes, scales;
  Q8Mirror(int64_t h, int64_t c, int64_t d)
      : kv_heads(h), capacity(c), hd(d), codes(Tensor::zeros(DType::I8, {h, c, d})), scales(DType::F16, {h, c, d / kG}) {
    for (uint16_t& s : scales.span<uint16_t>()) s = kNanHalf;
  }
  // Stores x (hd values) at (head, pos) as the cache would.
  void put(int64_t head, int64_t pos, const float* x) {
    const int64_t row = head * capacity + pos;
    for (int64_t g = 0; g < hd / kG; ++g)
      scales.data<uint16_t>()[row * (hd / kG) + g] =
          model::kv_q8_quantize(x + g * kG, codes.data<int8_t>() + row * hd + g * kG);
  }
  float value(int64_t i) const {
    return half_to_float(float_to_half(static_cast<float>(codes.data<int8_t>()[i]) *
                                       half_to_float(scales.data<uint16_t>()[i / kG])));
  }
  Tensor values() const {  // f32 [kv_heads, capacity, hd]
    Tensor t(DType::F32, {kv_heads, capacity, hd});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = value(i);
    return t;
  }
};

// Random rows with an outlier channel in every other group.
Tensor rows_with_outliers(Shape shape, uint32_t seed) {
  Tensor t = test::random_f32(std::move(shape), seed, -2.0f, 2.0f);
  for (int64_t i = 0; i < t.numel(); i += 2 * kG) t.data<float>()[i + (i / 64) % kG] *= 30.0f;
  return t;
}

class KvQ8 : public CudaTest, public ::testing::WithParamInterface<int64_t> {};

TEST_P(KvQ8, AppendMatchesCpu) {
  const int64_t kv_heads = 3, capacity = 40, hd = GetParam();
  Q8Mirror k_m(kv_heads, capacity, hd), v_m(kv_heads, capacity, hd);
  DeviceTensor kc = upload(k_m.codes), vc = upload(v_m.codes), ks = upload(k_m.scales), vs = upload(v_m.scales);
  DeviceTensor dstart = empty(DType::I32, {1});
  uint32_t seed = 11;
  int start = 0;
  int chunk = 0;
  for (int64_t tokens : {11, 1, 1, 5, 7}) {
    const Tensor k = rows_with_outliers({tokens, kv_heads, hd}, seed++);
    const Tensor v = rows_with_outliers({tokens, kv_heads, hd}, seed++);
    DeviceTensor dk = upload(k), dv = upload(v);
    if (chunk++ % 2 == 1) {  // the position from device memory (a graph's pass)
      const int32_t s32 = start;
      CUDA_CHECK(cudaMemcpyAsync(dstart.raw(), &s32, 4, cudaMemcpyHostToDevice, stream()));
      kv_append_q8(dk, dv, kc, ks, vc, vs, StartPos(start, dstart.view().data<int32_t>()), stream());
    } else {
      kv_append_q8(dk, dv, kc, ks, vc, vs, start, stream());
    }
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < kv_heads; ++h) {
        k_m.put(h, start + t, k.data<float>() + (t * kv_heads + h) * hd);
        v_m.put(h, start + t, v.data<float>() + (t * kv_heads + h) * hd);
      }
    start += static_cast<int>(tokens);
  }
  for (const auto& [dev, host, what] : {std::tuple{&kc, &k_m.codes, "key codes"}, {&vc, &v_m.codes, "value codes"},
                                        {&ks, &k_m.scales, "key scales"}, {&vs, &v_m.scales, "value scales"}}) {
    const Tensor back = download(*dev);
    EXPECT_EQ(std::memcmp(back.raw(), host->raw(), host->nbytes()), 0) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDims, KvQ8, ::testing::Values(int64_t{64}, int64_t{128}),
                         [](const auto& info) { return "hd" + std::to_string(info.param); });

// q [tokens, heads, hd]: token t at position pos + t sees keys [0, pos + t] of k, v [kv_heads, capacity, hd].
std::vector<double> attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, int pos, double scale) {
  const int64_t tokens = q.dim(0), heads = q.dim(1), hd = q.dim(2), kv_heads = k.dim(0), capacity = k.dim(1);
  std::vector<double> out(static_cast<size_t>(q.numel()));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / (heads / kv_heads), keys = pos + t + 1;
      const float* qv = q.data<float>() + (t * heads + h) * hd;
      std::vector<double> s(static_cast<size_t>(keys));
      double m = -INFINITY, l = 0.0;
      for (int64_t j = 0; j < keys; ++j) {
        double acc = 0.0;
        for (int64_t d = 0; d < hd; ++d) acc += static_cast<double>(qv[d]) * k.data<float>()[(kvh * capacity + j) * hd + d];
        m = std::max(m, s[static_cast<size_t>(j)] = acc * scale);
      }
      for (double& x : s) l += (x = std::exp(x - m));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0.0;
        for (int64_t j = 0; j < keys; ++j) acc += s[static_cast<size_t>(j)] * v.data<float>()[(kvh * capacity + j) * hd + d];
        out[static_cast<size_t>((t * heads + h) * hd + d)] = acc / l;
      }
    }
  return out;
}

// The runtime's step over a q8 cache: rotary, the new row quantized into the cache and attended
// as read back, pdl, several steps on one workspace, 8 and 4 warps.
class KvQ8Attention : public CudaTest {};

// Prefill chunks over a q8 cache (tensor cores, q rounded to fp16 as attention_prefill_fast
// does), the start also from device memory.
TEST_F(KvQ8Attention, PrefillOverTheCacheAsItReadsBack) {
  struct Case {
    int64_t tokens, heads, kv_heads, hd;
    int start;
  };
  const std::vector<Case> cases = {{1, 9, 3, 64, 0},      {7, 9, 3, 64, 0},      {37, 9, 3, 64, 100},
                                   {100, 32, 8, 128, 29}, {130, 4, 1, 128, 0},   {65, 24, 2, 128, 700},
                                   {16, 16, 16, 64, 500}, {1, 32, 8, 128, 2000}};
  uint32_t seed = 501;
  DeviceTensor dstart = empty(DType::I32, {1});
  for (const Case& c : cases) {
    const int64_t valid = c.start + c.tokens, capacity = valid + 19;
    Q8Mirror k_m(c.kv_heads, capacity, c.hd), v_m(c.kv_heads, capacity, c.hd);
    const Tensor k0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
    const Tensor v0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t p = 0; p < valid; ++p) {
        k_m.put(h, p, k0.data<float>() + (h * capacity + p) * c.hd);
        v_m.put(h, p, v0.data<float>() + (h * capacity + p) * c.hd);
      }
    const Tensor q = test::random_f32({c.tokens, c.heads, c.hd}, seed++, -1.0f, 1.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    const auto want = attention_ref(q, k_m.values(), v_m.values(), c.start, scale);
    double max_abs = 0.0;
    for (double w : want) max_abs = std::max(max_abs, std::fabs(w));
    DeviceTensor dq = upload(q), kc = upload(k_m.codes), ks = upload(k_m.scales), vc = upload(v_m.codes),
                 vs = upload(v_m.scales), out = empty(DType::F32, q.shape());
    const std::string what = "prefill q8 T=" + std::to_string(c.tokens) + " H=" + std::to_string(c.heads) + "/" +
                             std::to_string(c.kv_heads) + " hd=" + std::to_string(c.hd) +
                             " start=" + std::to_string(c.start);
    attention_prefill_q8(dq, kc, ks, vc, vs, out, c.start, scale, stream());
    test::expect_close(want, download(out), 2e-3 * max_abs, 2e-3, what);
    const int32_t s32 = c.start;
    CUDA_CHECK(cudaMemcpyAsync(dstart.raw(), &s32, 4, cudaMemcpyHostToDevice, stream()));
    CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream()));
    attention_prefill_q8(dq, kc, ks, vc, vs, out, StartPos(c.start, dstart.view().data<int32_t>()), scale, stream());
    test::expect_close(want, download(out), 2e-3 * max_abs, 2e-3, what + " (device start)");
  }
}

TEST_F(KvQ8Attention, DecodeOverTheCacheAsItReadsBack) {
  struct Case {
    int64_t heads, kv_heads, hd;
    int start, splits;
  };
  const std::vector<Case> cases = {{32, 8, 128, 0, 0},  {32, 8, 128, 190, 0}, {32, 8, 128, 1021, 5},
                                   {9, 3, 64, 126, 0},  {9, 3, 64, 700, 64},  {24, 2, 128, 63, 3},
                                   {4, 4, 64, 300, 1},  {16, 1, 64, 2100, 0}};
  ASSERT_TRUE(attention_decode_q8_supports(32, 8, 128));
  ASSERT_FALSE(attention_decode_q8_supports(4, 2, 96));
  ASSERT_FALSE(attention_decode_q8_supports(34, 2, 128));  // 17 q heads per kv head
  constexpr int kSteps = 3;
  uint32_t seed = 301;
  for (const Case& c : cases) {
    const int64_t capacity = c.start + kSteps + 5;
    Q8Mirror k_m(c.kv_heads, capacity, c.hd), v_m(c.kv_heads, capacity, c.hd);
    {
      const Tensor k0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
      const Tensor v0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
      for (int64_t h = 0; h < c.kv_heads; ++h)
        for (int64_t p = 0; p < c.start; ++p) {
          k_m.put(h, p, k0.data<float>() + (h * capacity + p) * c.hd);
          v_m.put(h, p, v0.data<float>() + (h * capacity + p) * c.hd);
        }
    }
    const test::RopeTable rope(capacity, c.hd);
    DeviceTensor kc = upload(k_m.codes), vc = upload(v_m.codes), ks = upload(k_m.scales), vs = upload(v_m.scales);
    DeviceTensor dcos = upload(rope.cos), dsin = upload(rope.sin), dpos = empty(DType::I32, {1});
    DeviceTensor dout = empty(DType::F32, {1, c.heads, c.hd});
    DeviceTensor ws = empty(DType::F32, {static_cast<int64_t>(attention_decode_workspace_floats(
                                            static_cast<int>(c.heads), static_cast<int>(c.hd)))});
    attention_decode_reset_cuda(ws.view().data<float>(), static_cast<int>(c.heads), static_cast<int>(c.hd), stream());
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    for (int step = 0; step < kSteps; ++step) {
      const int pos = c.start + step;
      const Tensor q = test::random_f32({1, c.heads, c.hd}, seed++, -2.0f, 2.0f);
      const Tensor k = rows_with_outliers({c.kv_heads, c.hd}, seed++);
      const Tensor v = rows_with_outliers({c.kv_heads, c.hd}, seed++);
      Tensor qr(DType::F32, q.shape());
      for (int64_t h = 0; h < c.heads; ++h) rope.rotate(q.data<float>() + h * c.hd, qr.data<float>() + h * c.hd, pos);
      DeviceTensor dq = upload(q), dkn = upload(k), dvn = upload(v);
      const int32_t pos32 = pos;
      CUDA_CHECK(cudaMemcpyAsync(dpos.raw(), &pos32, sizeof(pos32), cudaMemcpyHostToDevice, stream()));
      const std::string what = "q8 H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                               " hd=" + std::to_string(c.hd) + " pos=" + std::to_string(pos);
      for (int warps : {0, 4}) {
        DecodeAttention<int8_t> a;
        a.q = dq.view().data<float>();
        a.k_new = dkn.view().data<float>();
        a.v_new = dvn.view().data<float>();
        a.cos = dcos.view().data<float>();
        a.sin = dsin.view().data<float>();
        a.k_cache = static_cast<int8_t*>(kc.raw());
        a.v_cache = static_cast<int8_t*>(vc.raw());
        a.k_scale = static_cast<__half*>(ks.raw());
        a.v_scale = static_cast<__half*>(vs.raw());
        a.out = dout.view().data<float>();
        a.workspace = ws.view().data<float>();
        a.heads = static_cast<int>(c.heads);
        a.kv_heads = static_cast<int>(c.kv_heads);
        a.head_dim = static_cast<int>(c.hd);
        a.capacity = static_cast<int>(capacity);
        a.position_ptr = dpos.view().data<int32_t>();
        a.max_keys = static_cast<int>(capacity);
        a.splits = c.splits;
        a.scale = scale;
        a.pdl = true;
        a.mma_warps = warps;
        attention_decode_cuda(a, stream());
        // The new rows: v exactly as the host quantizes it; k from the kernel's own rotation
        // (an ulp apart from the host's at most: a code may move by one).
        for (int64_t h = 0; h < c.kv_heads; ++h) {
          std::vector<float> kr(static_cast<size_t>(c.hd));
          rope.rotate(k.data<float>() + h * c.hd, kr.data(), pos);
          k_m.put(h, pos, kr.data());
          v_m.put(h, pos, v.data<float>() + h * c.hd);
        }
        const Tensor gkc = download(kc), gks = download(ks), gvc = download(vc), gvs = download(vs);
        for (int64_t h = 0; h < c.kv_heads; ++h) {
          const int64_t row = h * capacity + pos;
          for (int64_t d = 0; d < c.hd; ++d) {
            ASSERT_EQ(gvc.data<int8_t>()[row * c.hd + d], v_m.codes.data<int8_t>()[row * c.hd + d]) << what;
            ASSERT_LE(std::abs(gkc.data<int8_t>()[row * c.hd + d] - k_m.codes.data<int8_t>()[row * c.hd + d]), 1)
                << what;
          }
          for (int64_t g = 0; g < c.hd / kG; ++g) {
            const int64_t si = row * (c.hd / kG) + g;
            ASSERT_EQ(gvs.data<uint16_t>()[si], v_m.scales.data<uint16_t>()[si]) << what;
            ASSERT_NEAR(half_to_float(gks.data<uint16_t>()[si]), half_to_float(k_m.scales.data<uint16_t>()[si]),
                        1e-3 * half_to_float(k_m.scales.data<uint16_t>()[si]))
                << what;
          }
        }
        k_m.codes = Tensor::copy_of(gkc.view());  // later steps read the row as the device wrote it
        k_m.scales = Tensor::copy_of(gks.view());
        test::expect_close(attention_ref(qr, k_m.values(), v_m.values(), pos, scale), download(dout), 3e-5, 1e-4,
                           what + " warps=" + std::to_string(warps));
      }
    }
  }
}

TEST(KvQ8Args, RejectBadLayouts) {
  using test::fake_view;
  const DeviceView k = fake_view(DType::F32, {4, 3, 64}), v = fake_view(DType::F32, {4, 3, 64});
  const DeviceView kc = fake_view(DType::I8, {3, 16, 64}), ks = fake_view(DType::F16, {3, 16, 2});
  test::expect_error([&] { kv_append_q8(k, v, kc, ks, kc, ks, 13, nullptr); },
                     "positions [13, 17) exceed the cache capacity 16");
  test::expect_error([&] { kv_append_q8(k, v, kc, fake_view(DType::F16, {3, 16, 4}), kc, ks, 0, nullptr); },
                     "scales must be contiguous F16 [3, 16, 2]");
  test::expect_error([&] { kv_append_q8(k, v, fake_view(DType::F16, {3, 16, 64}), ks, kc, ks, 0, nullptr); },
                     "must be contiguous I8");
  const DeviceView k48 = fake_view(DType::F32, {4, 3, 48});
  test::expect_error([&] { kv_append_q8(k48, k48, fake_view(DType::I8, {3, 16, 48}), ks, kc, ks, 0, nullptr); },
                     "head_dim 48 is not a multiple of 32");
  const DeviceView q = fake_view(DType::F32, {10, 6, 64});
  test::expect_error([&] { attention_prefill_q8(q, kc, ks, kc, ks, q, 7, 0.125f, nullptr); },
                     "positions [7, 17) exceed the cache capacity 16");
  const DeviceView q96 = fake_view(DType::F32, {2, 6, 96}), c96 = fake_view(DType::I8, {3, 16, 96});
  const DeviceView s96 = fake_view(DType::F16, {3, 16, 3});
  test::expect_error([&] { attention_prefill_q8(q96, c96, s96, c96, s96, q96, 0, 0.1f, nullptr); },
                     "needs head_dim 64 or 128, got 96");
}

}  // namespace
}  // namespace exq::cuda
