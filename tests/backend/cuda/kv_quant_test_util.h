// Shared by the q8 and q4 KV cache tests (kv_q8_test.cpp, kv_q4_test.cpp): rows with outlier
// channels, and causal attention in double over a cache's values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/cuda/attention_decode.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_tensor.h"
#include "core/tensor.h"
#include "cuda_test_util.h"

namespace exq::cuda::test {

// Random rows with an outlier channel (x30) in every other group of 32.
inline Tensor rows_with_outliers(Shape shape, uint32_t seed) {
  constexpr int64_t kG = 32;
  Tensor t = random_f32(std::move(shape), seed, -2.0f, 2.0f);
  for (int64_t i = 0; i < t.numel(); i += 2 * kG) t.data<float>()[i + (i / 64) % kG] *= 30.0f;
  return t;
}

// q [tokens, heads, hd]: token t at position pos + t sees keys [0, pos + t] of k, v [kv_heads, capacity, hd].
inline std::vector<double> attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, int pos, double scale) {
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

// The decode launch of the tests: the runtime's fused step (rotary, the new row appended) over
// caches of C with their scales, the position from device memory, pdl on.
template <typename C>
DecodeAttention<C> fused_decode_args(const DeviceTensor& q, const DeviceTensor& k_new, const DeviceTensor& v_new,
                                     const DeviceTensor& cos, const DeviceTensor& sin, DeviceTensor& k_cache,
                                     DeviceTensor& v_cache, DeviceTensor& k_scale, DeviceTensor& v_scale,
                                     DeviceTensor& out, DeviceTensor& workspace, const DeviceTensor& pos,
                                     int heads, int kv_heads, int hd, int capacity) {
  DecodeAttention<C> a;
  a.q = q.view().data<float>();
  a.k_new = k_new.view().data<float>();
  a.v_new = v_new.view().data<float>();
  a.cos = cos.view().data<float>();
  a.sin = sin.view().data<float>();
  a.k_cache = static_cast<C*>(k_cache.raw());
  a.v_cache = static_cast<C*>(v_cache.raw());
  a.k_scale = static_cast<__half*>(k_scale.raw());
  a.v_scale = static_cast<__half*>(v_scale.raw());
  a.out = out.view().data<float>();
  a.workspace = workspace.view().data<float>();
  a.heads = heads;
  a.kv_heads = kv_heads;
  a.head_dim = hd;
  a.capacity = capacity;
  a.position_ptr = pos.view().data<int32_t>();
  a.max_keys = capacity;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.pdl = true;
  return a;
}

// The append and prefill checks of a quantized cache, over its host mirror M (codes, scales,
// put(head, pos, row) as the cache stores a row, values() as the CPU cache holds them).
template <class M>
class KvQuantTest : public CudaTest {
 protected:
  // Chunks of rows appended through append(k, v, kc, ks, vc, vs, StartPos, stream), the start
  // from host or device memory: codes and scales equal the mirror's byte for byte.
  template <class Append>
  void append_matches_cpu(int64_t hd, Append append) {
    const int64_t kv_heads = 3, capacity = 40;
    M k_m(kv_heads, capacity, hd), v_m(kv_heads, capacity, hd);
    DeviceTensor kc = upload(k_m.codes), vc = upload(v_m.codes), ks = upload(k_m.scales), vs = upload(v_m.scales);
    DeviceTensor dstart = empty(DType::I32, {1});
    uint32_t seed = 11;
    int start = 0, chunk = 0;
    for (int64_t tokens : {11, 1, 1, 5, 7}) {
      const Tensor k = rows_with_outliers({tokens, kv_heads, hd}, seed++);
      const Tensor v = rows_with_outliers({tokens, kv_heads, hd}, seed++);
      DeviceTensor dk = upload(k), dv = upload(v);
      if (chunk++ % 2 == 1) {  // the position from device memory (a graph's pass)
        const int32_t s32 = start;
        CUDA_CHECK(cudaMemcpyAsync(dstart.raw(), &s32, 4, cudaMemcpyHostToDevice, stream()));
        append(dk, dv, kc, ks, vc, vs, StartPos(start, dstart.view().data<int32_t>()), stream());
      } else {
        append(dk, dv, kc, ks, vc, vs, StartPos(start), stream());
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

  // Prefill chunks over the cache through attend(q, kc, ks, vc, vs, out, StartPos, scale, stream)
  // (tensor cores, q rounded to fp16), the start also from device memory, against attention in
  // double over the mirror's values.
  template <class Attend>
  void prefill_matches_cpu(const std::string& tag, Attend attend) {
    struct Case {
      int64_t tokens, heads, kv_heads, hd;
      int start;
    };
    const std::vector<Case> cases = {{1, 9, 3, 64, 0},      {7, 9, 3, 64, 0},      {37, 9, 3, 64, 100},
                                     {100, 32, 8, 128, 29}, {130, 4, 1, 128, 0},   {65, 24, 2, 128, 700},
                                     {16, 16, 16, 64, 500}, {1, 32, 8, 128, 2000}, {33, 8, 4, 256, 100},
                                     {1, 16, 8, 256, 300},  {70, 4, 1, 256, 0},    {40, 32, 32, 96, 50}};
    uint32_t seed = 501;
    DeviceTensor dstart = empty(DType::I32, {1});
    for (const Case& c : cases) {
      const int64_t valid = c.start + c.tokens, capacity = valid + 19;
      M k_m(c.kv_heads, capacity, c.hd), v_m(c.kv_heads, capacity, c.hd);
      const Tensor k0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
      const Tensor v0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
      for (int64_t h = 0; h < c.kv_heads; ++h)
        for (int64_t p = 0; p < valid; ++p) {
          k_m.put(h, p, k0.data<float>() + (h * capacity + p) * c.hd);
          v_m.put(h, p, v0.data<float>() + (h * capacity + p) * c.hd);
        }
      const Tensor q = random_f32({c.tokens, c.heads, c.hd}, seed++, -1.0f, 1.0f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      const auto want = attention_ref(q, k_m.values(), v_m.values(), c.start, scale);
      double max_abs = 0.0;
      for (double w : want) max_abs = std::max(max_abs, std::fabs(w));
      DeviceTensor dq = upload(q), kc = upload(k_m.codes), ks = upload(k_m.scales), vc = upload(v_m.codes),
                   vs = upload(v_m.scales), out = empty(DType::F32, q.shape());
      const std::string what = "prefill " + tag + " T=" + std::to_string(c.tokens) + " H=" + std::to_string(c.heads) +
                               "/" + std::to_string(c.kv_heads) + " hd=" + std::to_string(c.hd) +
                               " start=" + std::to_string(c.start);
      attend(dq, kc, ks, vc, vs, out, StartPos(c.start), scale, stream());
      expect_close(want, download(out), 2e-3 * max_abs, 2e-3, what);
      const int32_t s32 = c.start;
      CUDA_CHECK(cudaMemcpyAsync(dstart.raw(), &s32, 4, cudaMemcpyHostToDevice, stream()));
      CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream()));
      attend(dq, kc, ks, vc, vs, out, StartPos(c.start, dstart.view().data<int32_t>()), scale, stream());
      expect_close(want, download(out), 2e-3 * max_abs, 2e-3, what + " (device start)");
    }
  }
  // The runtime's fused decode step over the cache (attention_decode_cuda over C): rotary, the
  // new row quantized into the cache, pdl, several steps on one workspace, 8 and 4 warps (head_dim
  // 256: 8 either way, 96: 6), 1-64 splits, up to 2,100 keys, head_dim 64, 96, 128 and 256. check(gkc, gks, gvc, gvs, k_m, v_m, row, hd, what) compares the
  // device's new row (codes and scales downloaded) with the mirror's; later steps read the key
  // row as the device wrote it. Outputs against attention in double over the mirror's values:
  // within 3e-5 (q and p as fp16 hi + lo), or with `fp16_operands` within 2e-3 of the largest
  // output (one fp16 half each, as the prefill kernel).
  template <typename C, class Check>
  void decode_matches_cpu(const std::string& tag, bool fp16_operands, Check check) {
    struct Case {
      int64_t heads, kv_heads, hd;
      int start, splits;
    };
    const std::vector<Case> cases = {{32, 8, 128, 0, 0},  {32, 8, 128, 190, 0}, {32, 8, 128, 1021, 5},
                                     {9, 3, 64, 126, 0},  {9, 3, 64, 700, 64},  {24, 2, 128, 63, 3},
                                     {4, 4, 64, 300, 1},  {16, 1, 64, 2100, 0}, {8, 4, 256, 300, 0},
                                     {16, 8, 256, 1500, 7}, {4, 1, 256, 20, 0},   {32, 32, 96, 700, 0},
                                     {6, 2, 96, 40, 2}};
    constexpr int kSteps = 3;
    uint32_t seed = 301;
    for (const Case& c : cases) {
      const int64_t capacity = c.start + kSteps + 5;
      M k_m(c.kv_heads, capacity, c.hd), v_m(c.kv_heads, capacity, c.hd);
      {
        const Tensor k0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
        const Tensor v0 = rows_with_outliers({c.kv_heads, capacity, c.hd}, seed++);
        for (int64_t h = 0; h < c.kv_heads; ++h)
          for (int64_t p = 0; p < c.start; ++p) {
            k_m.put(h, p, k0.data<float>() + (h * capacity + p) * c.hd);
            v_m.put(h, p, v0.data<float>() + (h * capacity + p) * c.hd);
          }
      }
      const RopeTable rope(capacity, c.hd);
      DeviceTensor kc = upload(k_m.codes), vc = upload(v_m.codes), ks = upload(k_m.scales), vs = upload(v_m.scales);
      DeviceTensor dcos = upload(rope.cos), dsin = upload(rope.sin), dpos = empty(DType::I32, {1});
      DeviceTensor dout = empty(DType::F32, {1, c.heads, c.hd});
      DeviceTensor ws = empty(DType::F32, {static_cast<int64_t>(attention_decode_workspace_floats(
                                              static_cast<int>(c.heads), static_cast<int>(c.hd)))});
      attention_decode_reset_cuda(ws.view().data<float>(), static_cast<int>(c.heads), static_cast<int>(c.hd),
                                  stream());
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      for (int step = 0; step < kSteps; ++step) {
        const int pos = c.start + step;
        const Tensor q = random_f32({1, c.heads, c.hd}, seed++, -2.0f, 2.0f);
        const Tensor k = rows_with_outliers({c.kv_heads, c.hd}, seed++);
        const Tensor v = rows_with_outliers({c.kv_heads, c.hd}, seed++);
        Tensor qr(DType::F32, q.shape());
        for (int64_t h = 0; h < c.heads; ++h) rope.rotate(q.data<float>() + h * c.hd, qr.data<float>() + h * c.hd, pos);
        DeviceTensor dq = upload(q), dkn = upload(k), dvn = upload(v);
        const int32_t pos32 = pos;
        CUDA_CHECK(cudaMemcpyAsync(dpos.raw(), &pos32, sizeof(pos32), cudaMemcpyHostToDevice, stream()));
        const std::string what = tag + " H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                                 " hd=" + std::to_string(c.hd) + " pos=" + std::to_string(pos);
        for (int warps : {0, 4}) {
          DecodeAttention<C> a = fused_decode_args<C>(dq, dkn, dvn, dcos, dsin, kc, vc, ks, vs, dout, ws, dpos,
                                                      static_cast<int>(c.heads), static_cast<int>(c.kv_heads),
                                                      static_cast<int>(c.hd), static_cast<int>(capacity));
          a.splits = c.splits;
          a.mma_warps = warps;
          attention_decode_cuda(a, stream());
          for (int64_t h = 0; h < c.kv_heads; ++h) {
            std::vector<float> kr(static_cast<size_t>(c.hd));
            rope.rotate(k.data<float>() + h * c.hd, kr.data(), pos);
            k_m.put(h, pos, kr.data());
            v_m.put(h, pos, v.data<float>() + h * c.hd);
          }
          const Tensor gkc = download(kc), gks = download(ks), gvc = download(vc), gvs = download(vs);
          for (int64_t h = 0; h < c.kv_heads; ++h) {
            check(gkc, gks, gvc, gvs, k_m, v_m, h * capacity + pos, c.hd, what);
            if (::testing::Test::HasFatalFailure()) return;
          }
          k_m.codes = Tensor::copy_of(gkc.view());
          k_m.scales = Tensor::copy_of(gks.view());
          const auto want = attention_ref(qr, k_m.values(), v_m.values(), pos, scale);
          double max_abs = 0.0;
          for (double w : want) max_abs = std::max(max_abs, std::fabs(w));
          expect_close(want, download(dout), fp16_operands ? 2e-3 * max_abs : 3e-5, fp16_operands ? 2e-3 : 1e-4,
                       what + " warps=" + std::to_string(warps));
        }
      }
    }
  }
};

}  // namespace exq::cuda::test
