// The q4 KV cache on the GPU: the append against model/kv_quant.h bit for bit (codes, steps and
// the nibble layout of kv_q4.cuh), and the tensor-core decode attention (new row quantized by the
// kernel, q rotated, the output rotated back) and prefill attention over a q4 cache against a
// double-precision loop over the values the CPU cache holds. Steps past the filled rows are NaN,
// so any read beyond them shows up in the output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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

constexpr int kG = model::kKvQ4Group;
constexpr uint16_t kNanHalf = 0x7e00;

// Host mirror of a q4 cache [kv_heads, capacity, hd]: packed codes, (step, minimum) pairs, and the
// values the CPU cache holds.
struct Q4Mirror {
  int64_t kv_heads, capacity, hd;
  Tensor codes, steps;
  Q4Mirror(int64_t h, int64_t c, int64_t d)
      : kv_heads(h), capacity(c), hd(d), codes(Tensor::zeros(DType::U8, {h, c, d / 2})), steps(DType::F16, {h, c, d / 16}) {
    for (uint16_t& s : steps.span<uint16_t>()) s = kNanHalf;
  }
  // Value v of a word in bits (v & 1) * 16 + (v >> 1) * 4 (kv_q4.cuh).
  static int shift(int v) { return (v & 1) * 16 + (v >> 1) * 4; }
  void put(int64_t head, int64_t pos, const float* x) {
    const int64_t row = head * capacity + pos;
    for (int64_t g = 0; g < hd / kG; ++g) {
      uint8_t q[kG];
      const model::KvQ4Step st = model::kv_q4_quantize(x + g * kG, q);
      uint16_t* sp = steps.data<uint16_t>() + (row * (hd / kG) + g) * 2;
      sp[0] = st.scale;
      sp[1] = st.min;
      for (int w = 0; w < kG / 8; ++w) {
        uint32_t word = 0;
        for (int v = 0; v < 8; ++v) word |= static_cast<uint32_t>(q[w * 8 + v]) << shift(v);
        std::memcpy(codes.data<uint8_t>() + row * (hd / 2) + g * (kG / 2) + w * 4, &word, 4);
      }
    }
  }
  Tensor values() const {  // f32 [kv_heads, capacity, hd]
    Tensor t(DType::F32, {kv_heads, capacity, hd});
    for (int64_t g = 0; g < t.numel() / kG; ++g) {
      uint8_t q[kG];
      for (int w = 0; w < kG / 8; ++w) {
        uint32_t word = 0;
        std::memcpy(&word, codes.data<uint8_t>() + g * (kG / 2) + w * 4, 4);
        for (int v = 0; v < 8; ++v) q[w * 8 + v] = static_cast<uint8_t>((word >> shift(v)) & 15u);
      }
      const uint16_t* sp = steps.data<uint16_t>() + g * 2;
      model::kv_q4_dequantize(q, {sp[0], sp[1]}, t.data<float>() + g * kG);
    }
    return t;
  }
};

// Random rows with an outlier channel in every other group.
Tensor rows_with_outliers(Shape shape, uint32_t seed) {
  Tensor t = test::random_f32(std::move(shape), seed, -2.0f, 2.0f);
  for (int64_t i = 0; i < t.numel(); i += 2 * kG) t.data<float>()[i + (i / 64) % kG] *= 30.0f;
  return t;
}

class KvQ4 : public CudaTest, public ::testing::WithParamInterface<int64_t> {};

TEST_P(KvQ4, AppendMatchesCpu) {
  const int64_t kv_heads = 3, capacity = 40, hd = GetParam();
  Q4Mirror k_m(kv_heads, capacity, hd), v_m(kv_heads, capacity, hd);
  DeviceTensor kc = upload(k_m.codes), vc = upload(v_m.codes), ks = upload(k_m.steps), vs = upload(v_m.steps);
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
      kv_append_q4(dk, dv, kc, ks, vc, vs, StartPos(start, dstart.view().data<int32_t>()), stream());
    } else {
      kv_append_q4(dk, dv, kc, ks, vc, vs, start, stream());
    }
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < kv_heads; ++h) {
        k_m.put(h, start + t, k.data<float>() + (t * kv_heads + h) * hd);
        v_m.put(h, start + t, v.data<float>() + (t * kv_heads + h) * hd);
      }
    start += static_cast<int>(tokens);
  }
  for (const auto& [dev, host, what] : {std::tuple{&kc, &k_m.codes, "key codes"}, {&vc, &v_m.codes, "value codes"},
                                        {&ks, &k_m.steps, "key steps"}, {&vs, &v_m.steps, "value steps"}}) {
    const Tensor back = download(*dev);
    EXPECT_EQ(std::memcmp(back.raw(), host->raw(), host->nbytes()), 0) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDims, KvQ4, ::testing::Values(int64_t{64}, int64_t{128}),
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

class KvQ4Attention : public CudaTest {};

// Prefill chunks over a q4 cache (tensor cores, the rotated q rounded to fp16 as
// attention_prefill_fast rounds q), the start also from device memory.
TEST_F(KvQ4Attention, PrefillOverTheCacheAsItReadsBack) {
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
    Q4Mirror k_m(c.kv_heads, capacity, c.hd), v_m(c.kv_heads, capacity, c.hd);
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
    DeviceTensor dq = upload(q), kc = upload(k_m.codes), ks = upload(k_m.steps), vc = upload(v_m.codes),
                 vs = upload(v_m.steps), out = empty(DType::F32, q.shape());
    const std::string what = "prefill q4 T=" + std::to_string(c.tokens) + " H=" + std::to_string(c.heads) + "/" +
                             std::to_string(c.kv_heads) + " hd=" + std::to_string(c.hd) +
                             " start=" + std::to_string(c.start);
    attention_prefill_q4(dq, kc, ks, vc, vs, out, c.start, scale, stream());
    test::expect_close(want, download(out), 2e-3 * max_abs, 2e-3, what);
    const int32_t s32 = c.start;
    CUDA_CHECK(cudaMemcpyAsync(dstart.raw(), &s32, 4, cudaMemcpyHostToDevice, stream()));
    CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream()));
    attention_prefill_q4(dq, kc, ks, vc, vs, out, StartPos(c.start, dstart.view().data<int32_t>()), scale, stream());
    test::expect_close(want, download(out), 2e-3 * max_abs, 2e-3, what + " (device start)");
  }
}

// The runtime's step over a q4 cache: rotary, the new row quantized into the cache, q rotated
// and the output rotated back, pdl, several steps on one workspace, 8 and 4 warps.
TEST_F(KvQ4Attention, DecodeOverTheCacheAsItReadsBack) {
  struct Case {
    int64_t heads, kv_heads, hd;
    int start, splits;
  };
  const std::vector<Case> cases = {{32, 8, 128, 0, 0},  {32, 8, 128, 190, 0}, {32, 8, 128, 1021, 5},
                                   {9, 3, 64, 126, 0},  {9, 3, 64, 700, 64},  {24, 2, 128, 63, 3},
                                   {4, 4, 64, 300, 1},  {16, 1, 64, 2100, 0}};
  constexpr int kSteps = 3;
  uint32_t seed = 301;
  for (const Case& c : cases) {
    const int64_t capacity = c.start + kSteps + 5;
    Q4Mirror k_m(c.kv_heads, capacity, c.hd), v_m(c.kv_heads, capacity, c.hd);
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
    DeviceTensor kc = upload(k_m.codes), vc = upload(v_m.codes), ks = upload(k_m.steps), vs = upload(v_m.steps);
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
      const std::string what = "q4 H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                               " hd=" + std::to_string(c.hd) + " pos=" + std::to_string(pos);
      for (int warps : {0, 4}) {
        DecodeAttention<uint8_t> a;
        a.q = dq.view().data<float>();
        a.k_new = dkn.view().data<float>();
        a.v_new = dvn.view().data<float>();
        a.cos = dcos.view().data<float>();
        a.sin = dsin.view().data<float>();
        a.k_cache = static_cast<uint8_t*>(kc.raw());
        a.v_cache = static_cast<uint8_t*>(vc.raw());
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
        // The new rows: v exactly as the host quantizes it; k from the kernel's own rotary (an
        // ulp apart from the host's: a code may move by one, the step and minimum by an ulp).
        for (int64_t h = 0; h < c.kv_heads; ++h) {
          std::vector<float> kr(static_cast<size_t>(c.hd));
          rope.rotate(k.data<float>() + h * c.hd, kr.data(), pos);
          k_m.put(h, pos, kr.data());
          v_m.put(h, pos, v.data<float>() + h * c.hd);
        }
        const Tensor gkc = download(kc), gks = download(ks), gvc = download(vc), gvs = download(vs);
        for (int64_t h = 0; h < c.kv_heads; ++h) {
          const int64_t row = h * capacity + pos;
          ASSERT_EQ(std::memcmp(gvc.data<uint8_t>() + row * c.hd / 2, v_m.codes.data<uint8_t>() + row * c.hd / 2,
                                static_cast<size_t>(c.hd / 2)),
                    0)
              << what;
          ASSERT_EQ(std::memcmp(gvs.data<uint16_t>() + row * c.hd / 16, v_m.steps.data<uint16_t>() + row * c.hd / 16,
                                static_cast<size_t>(c.hd / 16) * 2),
                    0)
              << what;
          for (int64_t i = 0; i < c.hd / 16; ++i) {
            const float want = half_to_float(k_m.steps.data<uint16_t>()[row * c.hd / 16 + i]);
            ASSERT_NEAR(half_to_float(gks.data<uint16_t>()[row * c.hd / 16 + i]), want, 2e-3 * std::fabs(want) + 1e-6)
                << what;
          }
        }
        k_m.codes = Tensor::copy_of(gkc.view());  // later steps read the row as the device wrote it
        k_m.steps = Tensor::copy_of(gks.view());
        test::expect_close(attention_ref(qr, k_m.values(), v_m.values(), pos, scale), download(dout), 3e-5, 1e-4,
                           what + " warps=" + std::to_string(warps));
      }
    }
  }
}

TEST(KvQ4Args, RejectBadLayouts) {
  using test::fake_view;
  const DeviceView k = fake_view(DType::F32, {4, 3, 64}), v = fake_view(DType::F32, {4, 3, 64});
  const DeviceView kc = fake_view(DType::U8, {3, 16, 32}), ks = fake_view(DType::F16, {3, 16, 4});
  test::expect_error([&] { kv_append_q4(k, v, kc, ks, kc, ks, 13, nullptr); },
                     "positions [13, 17) exceed the cache capacity 16");
  test::expect_error([&] { kv_append_q4(k, v, kc, fake_view(DType::F16, {3, 16, 2}), kc, ks, 0, nullptr); },
                     "steps must be contiguous F16 [3, 16, 4]");
  test::expect_error([&] { kv_append_q4(k, v, fake_view(DType::I8, {3, 16, 32}), ks, kc, ks, 0, nullptr); },
                     "must be contiguous U8");
  const DeviceView c128 = fake_view(DType::U8, {3, 16, 64}), s128 = fake_view(DType::F16, {3, 16, 8});
  test::expect_error([&] { kv_append_q4(k, v, c128, s128, c128, s128, 0, nullptr); }, "does not hold k");
  const DeviceView k48 = fake_view(DType::F32, {4, 3, 48});
  test::expect_error([&] { kv_append_q4(k48, k48, fake_view(DType::U8, {3, 16, 24}), ks, kc, ks, 0, nullptr); },
                     "head_dim 48 is not a multiple of 32");
  const DeviceView q = fake_view(DType::F32, {10, 6, 64});
  test::expect_error([&] { attention_prefill_q4(q, kc, ks, kc, ks, q, 7, 0.125f, nullptr); },
                     "positions [7, 17) exceed the cache capacity 16");
  const DeviceView q96 = fake_view(DType::F32, {2, 6, 96}), c96 = fake_view(DType::U8, {3, 16, 48});
  const DeviceView s96 = fake_view(DType::F16, {3, 16, 6});
  test::expect_error([&] { attention_prefill_q4(q96, c96, s96, c96, s96, q96, 0, 0.1f, nullptr); },
                     "needs head_dim 64 or 128, got 96");
}

}  // namespace
}  // namespace exq::cuda
