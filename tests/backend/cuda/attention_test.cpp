// Prefill and decode attention on the GPU against a naive double-precision causal GQA loop.
// Cache slots past the valid length hold NaN, so any read beyond it shows up in the output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

struct Cache {
  Tensor k, v;  // [kv_heads, capacity, head_dim] in the cache dtype
};

Cache random_cache(DType dtype, int64_t kv_heads, int64_t capacity, int64_t hd, int64_t valid,
                   uint32_t seed) {
  Cache c{test::random_f32({kv_heads, capacity, hd}, seed, -1.0f, 1.0f),
          test::random_f32({kv_heads, capacity, hd}, seed + 1000, -1.0f, 1.0f)};
  for (Tensor* t : {&c.k, &c.v}) {
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t p = valid; p < capacity; ++p)
        for (int64_t d = 0; d < hd; ++d)
          t->data<float>()[(h * capacity + p) * hd + d] = std::numeric_limits<float>::quiet_NaN();
    if (dtype == DType::F16) {
      Tensor h16(DType::F16, t->shape());
      for (int64_t i = 0; i < t->numel(); ++i) h16.data<uint16_t>()[i] = float_to_half(t->data<float>()[i]);
      *t = std::move(h16);
    }
  }
  return c;
}

// q: [tokens, heads, hd]; token t at position start_pos + t sees keys [0, start_pos + t].
// softcap > 0: each scaled score s becomes softcap * tanh(s / softcap) (gemma2).
std::vector<double> attention_ref(const Tensor& q, const Cache& c, int start_pos, double scale,
                                  double softcap = 0.0) {
  const int64_t tokens = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  const int64_t kv_heads = c.k.dim(0), capacity = c.k.dim(1);
  std::vector<double> out(static_cast<size_t>(q.numel()));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / (heads / kv_heads), keys = start_pos + t + 1;
      const float* qv = q.data<float>() + (t * heads + h) * hd;
      std::vector<double> s(static_cast<size_t>(keys));
      double m = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        double acc = 0.0;
        for (int64_t d = 0; d < hd; ++d) acc += qv[d] * test::value_at(c.k, (kvh * capacity + j) * hd + d);
        const double x = softcap > 0.0 ? softcap * std::tanh(acc * scale / softcap) : acc * scale;
        s[static_cast<size_t>(j)] = x;
        m = std::max(m, x);
      }
      double l = 0.0;
      for (double& x : s) l += (x = std::exp(x - m));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0.0;
        for (int64_t j = 0; j < keys; ++j)
          acc += s[static_cast<size_t>(j)] * test::value_at(c.v, (kvh * capacity + j) * hd + d);
        out[static_cast<size_t>((t * heads + h) * hd + d)] = acc / l;
      }
    }
  return out;
}

struct Case {
  int64_t tokens, heads, kv_heads, hd;
  int start_pos;
  float q_range;         // larger q: sharper softmax
  float softcap = 0.0f;  // Gemma 2's: scores s -> softcap * tanh(s / softcap)
};

// With a softcap the case's q bends the scores enough that the outputs move without it.
void expect_cap_matters(const Case& c, const Tensor& q, const Cache& cache, float scale,
                        const std::vector<double>& want) {
  if (c.softcap <= 0.0f) return;
  const auto uncapped = attention_ref(q, cache, c.start_pos, scale);
  double moved = 0.0;
  for (size_t i = 0; i < want.size(); ++i) moved = std::max(moved, std::fabs(want[i] - uncapped[i]));
  EXPECT_GT(moved, 1e-2) << "hd=" << c.hd << " start=" << c.start_pos;
}

std::string case_name(const char* what, DType dtype, const Case& c) {
  return std::string(what) + " " + std::string(dtype_name(dtype)) + " T=" + std::to_string(c.tokens) +
         " H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
         " hd=" + std::to_string(c.hd) + " start=" + std::to_string(c.start_pos) +
         (c.softcap > 0.0f ? " softcap=" + std::to_string(c.softcap) : "");
}

class Attention : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(Attention, PrefillMatchesCpu) {
  const DType dtype = GetParam();
  const std::vector<Case> cases = {
      {1, 9, 3, 64, 0, 1.0f},    {7, 9, 3, 64, 0, 1.0f},   {37, 9, 3, 64, 0, 4.0f},
      {100, 4, 1, 128, 29, 1.0f}, {5, 2, 2, 80, 3, 1.0f},  {3, 4, 2, 256, 40, 1.0f},
      {17, 3, 1, 7, 0, 1.0f},    {200, 9, 3, 64, 0, 8.0f}, {16, 8, 8, 96, 500, 2.0f},
      {20, 8, 4, 256, 30, 4.0f, 5.0f}, {7, 32, 8, 128, 100, 4.0f, 5.0f}};
  uint32_t seed = 71;
  for (const Case& c : cases) {
    const int64_t valid = c.start_pos + c.tokens, capacity = valid + 19;
    const Cache cache = random_cache(dtype, c.kv_heads, capacity, c.hd, valid, seed);
    const Tensor q = test::random_f32({c.tokens, c.heads, c.hd}, seed + 1, -c.q_range, c.q_range);
    seed += 2;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    DeviceTensor dq = upload(q), dk = upload(cache.k), dv = upload(cache.v);
    DeviceTensor dout = empty(DType::F32, q.shape());
    attention_prefill(dq, dk, dv, dout, c.start_pos, scale, stream(), 0, c.softcap);
    const auto want = attention_ref(q, cache, c.start_pos, scale, c.softcap);
    expect_cap_matters(c, q, cache, scale, want);
    test::expect_close(want, download(dout), 3e-5, 1e-4,
                       case_name("prefill", dtype, c));
  }
}

TEST_P(Attention, DecodeMatchesCpu) {
  const DType dtype = GetParam();
  // tokens is 1; start_pos + 1 keys. Lengths cross the 32-key split granule and the tiles
  // (128 keys at hd 64 f16, 64 at hd 128 f16, 32 at hd 128 f32, 16 at hd 256 f32); GQA groups
  // of 1, 2, 3, 4, 8 and 12 (two blocks of q heads); odd head dims take the scalar path. hd 256
  // (f16: the tensor-core kernel, 16-key chunks, q from shared memory): Gemma 2 2B / 9B's and
  // Gemma 3 1B's groups (2, 2, 4) and the largest (16). Gemma 2's softcap (the tensor-core kernel
  // over f16: q carries the scale without log2(e)).
  const std::vector<Case> cases = {
      {1, 9, 3, 64, 0, 1.0f},      {1, 9, 3, 64, 32, 1.0f},    {1, 9, 3, 64, 127, 1.0f},
      {1, 9, 3, 64, 128, 4.0f},    {1, 9, 3, 64, 999, 1.0f},   {1, 9, 3, 64, 4096, 8.0f},
      {1, 32, 8, 128, 1999, 1.0f}, {1, 64, 8, 128, 3000, 1.0f}, {1, 4, 2, 96, 700, 2.0f},
      {1, 2, 1, 256, 300, 1.0f},   {1, 300, 300, 16, 50, 1.0f}, {1, 3, 1, 7, 12, 1.0f},
      {1, 32, 8, 128, 2047, 2.0f}, {1, 32, 8, 128, 64, 1.0f},  {1, 24, 2, 128, 513, 1.0f},
      {1, 8, 1, 64, 257, 1.0f},    {1, 6, 3, 5, 90, 1.0f},     {1, 16, 16, 128, 100, 1.0f},
      {1, 8, 4, 256, 1000, 2.0f},  {1, 16, 8, 256, 2100, 1.0f}, {1, 4, 1, 256, 70, 4.0f},
      {1, 16, 1, 256, 255, 1.0f},  {1, 32, 32, 96, 1500, 1.0f}, {1, 9, 3, 64, 300, 6.0f, 5.0f}, {1, 32, 8, 128, 1500, 4.0f, 5.0f},
      {1, 8, 4, 256, 700, 4.0f, 5.0f}, {1, 16, 8, 256, 40, 6.0f, 5.0f}};
  uint32_t seed = 171;
  for (const Case& c : cases) {
    const int64_t valid = c.start_pos + 1, capacity = valid + 33;
    const Cache cache = random_cache(dtype, c.kv_heads, capacity, c.hd, valid, seed);
    const Tensor q = test::random_f32({1, c.heads, c.hd}, seed + 1, -c.q_range, c.q_range);
    seed += 2;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    DeviceTensor dq = upload(q), dk = upload(cache.k), dv = upload(cache.v);
    DeviceTensor dout = empty(DType::F32, q.shape());
    const auto ws_floats =
        static_cast<int64_t>(attention_decode_workspace_floats(static_cast<int>(c.heads), static_cast<int>(c.hd)));
    DeviceTensor ws = empty(DType::F32, {ws_floats});
    const auto want = attention_ref(q, cache, c.start_pos, scale, c.softcap);
    expect_cap_matters(c, q, cache, scale, want);
    // 0: the default split for this device; then forced splits (one block, uneven, the most).
    for (int splits : {0, 1, 2, 3, 7, kDecodeMaxSplits}) {
      attention_decode(dq, dk, dv, dout, c.start_pos, scale, ws, stream(), splits, 0, c.softcap);
      test::expect_close(want, download(dout), 3e-5, 1e-4,
                         case_name("decode", dtype, c) + " splits=" + std::to_string(splits));
    }
    // The prefill kernel on the same single token agrees too.
    attention_prefill(dq, dk, dv, dout, c.start_pos, scale, stream(), 0, c.softcap);
    test::expect_close(want, download(dout), 3e-5, 1e-4, case_name("prefill as decode", dtype, c));
  }
}

// The runtime's form: position read from device memory, q and the new k rotated and k, v
// appended by the kernel itself, launched with programmatic dependent launch, several steps in
// a row on one workspace (its counters must come back to zero). Row `position` of the cache
// holds NaN before each step: the kernel must use the new key, never the stale row.
TEST_P(Attention, DecodeFusedRotaryAppend) {
  const DType dtype = GetParam();
  struct Fused {
    int64_t heads, kv_heads, hd;
    int start;
    int splits;
  };
  const std::vector<Fused> cases = {{32, 8, 128, 0, 0},   {32, 8, 128, 190, 0}, {32, 8, 128, 1021, 5},
                                    {9, 3, 64, 126, 0},   {9, 3, 64, 700, 64},  {24, 2, 128, 63, 3},
                                    {4, 4, 64, 31, 1},    {6, 2, 6, 40, 2},     {8, 4, 256, 300, 0},
                                    {16, 1, 256, 40, 2},  {32, 32, 96, 300, 0}, {8, 2, 96, 20, 3}};
  constexpr int kSteps = 4;
  uint32_t seed = 901;
  for (const Fused& c : cases) {
    const int64_t capacity = c.start + kSteps + 5;
    Cache cache = random_cache(dtype, c.kv_heads, capacity, c.hd, c.start, seed++);
    const test::RopeTable rope(capacity, c.hd);
    DeviceTensor dk = upload(cache.k), dv = upload(cache.v), dcos = upload(rope.cos), dsin = upload(rope.sin);
    DeviceTensor dpos = empty(DType::I32, {1});
    // The tensor-core kernel's staged copy of the output: a permutation of [heads * hd] as the
    // positions, 16 scales.
    const int64_t n_out = c.heads * c.hd;
    Tensor xpos(DType::I32, {n_out});
    for (int64_t i = 0; i < n_out; ++i) xpos.data<int32_t>()[i] = static_cast<int32_t>((i * 7919) % n_out);
    std::vector<bool> seen(static_cast<size_t>(n_out));
    for (int64_t i = 0; i < n_out; ++i) seen[static_cast<size_t>(xpos.data<int32_t>()[i])] = true;
    const bool is_perm = std::find(seen.begin(), seen.end(), false) == seen.end();
    DeviceTensor dxpos = upload(xpos), dxq = empty(DType::F16, {n_out}), dxs = empty(DType::F32, {16});
    DeviceTensor dout = empty(DType::F32, {1, c.heads, c.hd});
    DeviceTensor ws = empty(DType::F32, {static_cast<int64_t>(attention_decode_workspace_floats(
                                            static_cast<int>(c.heads), static_cast<int>(c.hd)))});
    attention_decode_reset_cuda(ws.view().data<float>(), static_cast<int>(c.heads), static_cast<int>(c.hd), stream());
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    auto rotate = [&](const float* x, float* y, int64_t p) { rope.rotate(x, y, p); };
    // Odd steps: qwen3 / gemma3's per-head RMSNorm of q and k, inside the kernel.
    const Tensor q_w = test::random_f32({c.hd}, seed++, 0.5f, 1.5f), k_w = test::random_f32({c.hd}, seed++, 0.5f, 1.5f);
    DeviceTensor dqw = upload(q_w), dkw = upload(k_w);
    constexpr float kEps = 1e-6f;
    auto rms_normed = [&](Tensor t, const Tensor& w) {  // each row of [rows, hd], in place
      for (int64_t r = 0; r < t.numel() / c.hd; ++r) {
        float* x = t.data<float>() + r * c.hd;
        double ss = 0;
        for (int64_t d = 0; d < c.hd; ++d) ss += static_cast<double>(x[d]) * x[d];
        const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(c.hd) + kEps));
        for (int64_t d = 0; d < c.hd; ++d) x[d] = x[d] * inv * w.data<float>()[d];
      }
      return t;
    };
    for (int step = 0; step < kSteps; ++step) {
      const int pos = c.start + step;
      const bool qk_norm = step % 2 == 1;
      const Tensor q = test::random_f32({1, c.heads, c.hd}, seed++, -2.0f, 2.0f);
      const Tensor k = test::random_f32({c.kv_heads, c.hd}, seed++);
      const Tensor v = test::random_f32({c.kv_heads, c.hd}, seed++);
      const Tensor qh = qk_norm ? rms_normed(Tensor::copy_of(q.view()), q_w) : Tensor::copy_of(q.view());
      const Tensor kh = qk_norm ? rms_normed(Tensor::copy_of(k.view()), k_w) : Tensor::copy_of(k.view());
      // Host expectation: rotated q; the cache with the rotated k and v at row pos.
      Tensor qr(DType::F32, q.shape());
      for (int64_t h = 0; h < c.heads; ++h) rotate(qh.data<float>() + h * c.hd, qr.data<float>() + h * c.hd, pos);
      for (int64_t h = 0; h < c.kv_heads; ++h) {
        std::vector<float> kr(static_cast<size_t>(c.hd));
        rotate(kh.data<float>() + h * c.hd, kr.data(), pos);
        for (int64_t d = 0; d < c.hd; ++d) {
          const int64_t at = (h * capacity + pos) * c.hd + d;
          const float kv = kr[static_cast<size_t>(d)], vv = v.data<float>()[h * c.hd + d];
          if (dtype == DType::F16) {
            cache.k.data<uint16_t>()[at] = float_to_half(kv);
            cache.v.data<uint16_t>()[at] = float_to_half(vv);
          } else {
            cache.k.data<float>()[at] = kv;
            cache.v.data<float>()[at] = vv;
          }
        }
      }
      const auto want = attention_ref(qr, cache, pos, scale);
      DeviceTensor dq = upload(q), dkn = upload(k), dvn = upload(v);
      const int32_t pos32 = pos;
      CUDA_CHECK(cudaMemcpyAsync(dpos.raw(), &pos32, sizeof(pos32), cudaMemcpyHostToDevice, stream()));
      auto run = [&](auto* kc, auto* vc, bool simt, int mma_warps) {
        using C = std::remove_pointer_t<decltype(kc)>;
        DecodeAttention<C> a;
        a.q = dq.view().data<float>();
        a.k_new = dkn.view().data<float>();
        a.v_new = dvn.view().data<float>();
        a.cos = dcos.view().data<float>();
        a.sin = dsin.view().data<float>();
        a.k_cache = kc;
        a.v_cache = vc;
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
        a.simt = simt;
        a.mma_warps = mma_warps;
        if (qk_norm) {
          a.q_norm = dqw.view().data<float>();
          a.k_norm = dkw.view().data<float>();
          a.norm_eps = kEps;
        }
        if constexpr (std::is_same_v<C, __half>) {
          if (is_perm && attention_decode_uses_mma(a)) {
            a.xq16 = static_cast<__half*>(dxq.raw());
            a.x_pos = dxpos.view().data<int32_t>();
            a.xscale = dxs.view().data<float>();
            a.xscale_n = 16;
            CUDA_CHECK(cudaMemsetAsync(dxq.raw(), 0xff, dxq.nbytes(), stream()));
            CUDA_CHECK(cudaMemsetAsync(dxs.raw(), 0, dxs.nbytes(), stream()));
          }
        }
        attention_decode_cuda(a, stream());
        return a.xq16 != nullptr;
      };
      const std::string what = "fused H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                               " hd=" + std::to_string(c.hd) + " pos=" + std::to_string(pos) + " " +
                               std::string(dtype_name(dtype)) + (qk_norm ? " q/k norms" : "");
      if (dtype == DType::F16) {
        // Every kernel on the same step (the tensor-core one where it applies, with the
        // device's warp count and with 4, then the SIMT one): each rewrites row pos with the
        // same values.
        for (int variant = 0; variant < 3; ++variant) {
          const bool simt = variant == 2;
          const bool staged = run(static_cast<__half*>(dk.raw()), static_cast<__half*>(dv.raw()),
                                  simt, variant == 1 ? 4 : 0);
          const Tensor out = download(dout);
          test::expect_close(want, out, 3e-5, 1e-4,
                             what + (simt ? " simt" : variant == 1 ? " 4 warps" : " default"));
          if (staged) {  // f16 of each output at its position, scales 1
            const Tensor xq = download(dxq), xs = download(dxs);
            for (int64_t i = 0; i < n_out; ++i)
              ASSERT_EQ(xq.data<uint16_t>()[xpos.data<int32_t>()[i]], float_to_half(out.data<float>()[i]))
                  << what << " staged output " << i;
            for (int i = 0; i < 16; ++i) ASSERT_EQ(xs.data<float>()[i], 1.0f) << what << " scale " << i;
          }
        }
      } else {
        run(dk.view().data<float>(), dv.view().data<float>(), true, 0);
        test::expect_close(want, download(dout), 3e-5, 1e-4, what);
      }
      // The appended rows (f16 rounding of a 1-ulp f32 difference may differ by one f16 ulp).
      const Tensor gk = download(dk), gv = download(dv);
      for (int64_t h = 0; h < c.kv_heads; ++h)
        for (int64_t d = 0; d < c.hd; ++d) {
          const int64_t at = (h * capacity + pos) * c.hd + d;
          ASSERT_NEAR(test::value_at(gk, at), test::value_at(cache.k, at), 2e-3) << what << " k row";
          ASSERT_EQ(test::value_at(gv, at), test::value_at(cache.v, at)) << what << " v row";
        }
      // The next step reads this row from the cache as the device wrote it.
      cache.k = Tensor::copy_of(gk.view());
    }
  }
}

// Several sequences in one launch (rows, cache_index): each row's output and appended cache row
// equal a one-row launch of the same split count over that sequence's cache, bit for bit.
TEST_P(Attention, DecodeRowsMatchOneRowLaunches) {
  const DType dtype = GetParam();
  struct Shape3 {
    int64_t heads, kv_heads, hd;
  };
  constexpr int64_t kSeqs = 4, kCapacity = 160;
  const int rows = 3;
  const int32_t seq_of[rows] = {2, 0, 3}, pos_of[rows] = {100, 5, 37};
  uint32_t seed = 4100;
  for (const Shape3& c :
       {Shape3{32, 8, 128}, Shape3{9, 3, 64}, Shape3{6, 2, 6}, Shape3{8, 4, 256}, Shape3{12, 4, 96}}) {
    const int64_t half = c.hd / 2, per_seq = c.kv_heads * kCapacity * c.hd;
    // Sequence caches one after another, each valid up to the largest position.
    Cache all = random_cache(dtype, kSeqs * c.kv_heads, kCapacity, c.hd, 101, seed++);
    Tensor cos_t(DType::F32, {kCapacity, half}), sin_t(DType::F32, {kCapacity, half});
    for (int64_t i = 0; i < cos_t.numel(); ++i) {
      cos_t.data<float>()[i] = std::cos(0.01f * static_cast<float>(i));
      sin_t.data<float>()[i] = std::sin(0.01f * static_cast<float>(i));
    }
    const Tensor q = test::random_f32({rows, c.heads, c.hd}, seed++, -2.0f, 2.0f);
    const Tensor kn = test::random_f32({rows, c.kv_heads, c.hd}, seed++);
    const Tensor vn = test::random_f32({rows, c.kv_heads, c.hd}, seed++);
    DeviceTensor dq = upload(q), dkn = upload(kn), dvn = upload(vn), dcos = upload(cos_t), dsin = upload(sin_t);
    Tensor io(DType::I32, {2 * rows});
    for (int r = 0; r < rows; ++r) {
      io.data<int32_t>()[r] = pos_of[r];
      io.data<int32_t>()[rows + r] = seq_of[r];
    }
    DeviceTensor dio = upload(io);
    const int64_t row_floats = attention_decode_row_floats(static_cast<int>(c.heads), static_cast<int>(c.hd));
    DeviceTensor ws = empty(DType::F32, {rows * row_floats});
    for (int r = 0; r < rows; ++r)
      attention_decode_reset_cuda(ws.view().data<float>() + r * row_floats, static_cast<int>(c.heads),
                                  static_cast<int>(c.hd), stream());
    for (int variant = 0; variant < (dtype == DType::F16 ? 2 : 1); ++variant) {
      const bool simt = dtype == DType::F32 || variant == 1;
      DeviceTensor bk = upload(all.k), bv = upload(all.v), sk = upload(all.k), sv = upload(all.v);
      DeviceTensor bout = empty(DType::F32, {rows, c.heads, c.hd}), sout = empty(DType::F32, {rows, c.heads, c.hd});
      auto launch = [&](DeviceTensor& kc, DeviceTensor& vc, DeviceTensor& out, int row) {
        auto go = [&](auto* type) {
          using C = std::remove_pointer_t<decltype(type)>;
          DecodeAttention<C> a;
          const int r0 = row < 0 ? 0 : row;
          a.q = dq.view().data<float>() + r0 * c.heads * c.hd;
          a.k_new = dkn.view().data<float>() + r0 * c.kv_heads * c.hd;
          a.v_new = dvn.view().data<float>() + r0 * c.kv_heads * c.hd;
          a.cos = dcos.view().data<float>();
          a.sin = dsin.view().data<float>();
          a.k_cache = static_cast<C*>(kc.raw());
          a.v_cache = static_cast<C*>(vc.raw());
          a.out = out.view().data<float>() + r0 * c.heads * c.hd;
          a.workspace = ws.view().data<float>();
          a.heads = static_cast<int>(c.heads);
          a.kv_heads = static_cast<int>(c.kv_heads);
          a.head_dim = static_cast<int>(c.hd);
          a.capacity = static_cast<int>(kCapacity);
          a.position_ptr = dio.view().data<int32_t>() + r0;
          a.max_keys = static_cast<int>(kCapacity);
          a.splits = 3;
          a.scale = 0.1f;
          a.pdl = true;
          a.simt = simt;
          if (row < 0) {  // all rows, sequences through cache_index
            a.rows = rows;
            a.cache_index = dio.view().data<int32_t>() + rows;
            a.cache_stride = per_seq;
          } else if (row == 1) {  // one row naming its sequence through cache_index
            a.cache_index = dio.view().data<int32_t>() + rows + row;
            a.cache_stride = per_seq;
          } else {
            a.k_cache += seq_of[row] * per_seq;
            a.v_cache += seq_of[row] * per_seq;
          }
          attention_decode_cuda(a, stream());
        };
        if (dtype == DType::F16)
          go(static_cast<__half*>(nullptr));
        else
          go(static_cast<float*>(nullptr));
      };
      launch(bk, bv, bout, -1);
      for (int r = 0; r < rows; ++r) launch(sk, sv, sout, r);
      const std::string what = "H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                               " hd=" + std::to_string(c.hd) + (simt ? " simt" : " mma");
      const Tensor bo = download(bout), so = download(sout);
      for (int64_t i = 0; i < bo.numel(); ++i)
        ASSERT_EQ(bo.data<float>()[i], so.data<float>()[i]) << what << " output " << i;
      const Tensor bk_h = download(bk), sk_h = download(sk), bv_h = download(bv), sv_h = download(sv);
      ASSERT_EQ(std::memcmp(static_cast<const uint8_t*>(bk_h.view().raw()), static_cast<const uint8_t*>(sk_h.view().raw()), bk_h.nbytes()), 0) << what << " k caches";
      ASSERT_EQ(std::memcmp(static_cast<const uint8_t*>(bv_h.view().raw()), static_cast<const uint8_t*>(sv_h.view().raw()), bv_h.nbytes()), 0) << what << " v caches";
      // Each row wrote its own sequence's row: the other sequences' caches are untouched.
      const Tensor orig = Tensor::copy_of(all.k.view());
      const size_t esz = dtype_size(dtype);
      const auto* a8 = static_cast<const uint8_t*>(bk_h.view().raw());
      const auto* o8 = static_cast<const uint8_t*>(orig.view().raw());
      ASSERT_EQ(std::memcmp(a8 + 1 * per_seq * esz, o8 + 1 * per_seq * esz, per_seq * esz), 0) << what << " sequence 1";
      EXPECT_NE(std::memcmp(a8 + 2 * per_seq * esz, o8 + 2 * per_seq * esz, per_seq * esz), 0) << what << " sequence 2";
      const Tensor out_one = Tensor::copy_of(so.view());
      // And the rows differ from each other (distinct queries, caches and positions).
      EXPECT_NE(std::memcmp(static_cast<const uint8_t*>(out_one.view().raw()), static_cast<const uint8_t*>(out_one.view().raw()) + c.heads * c.hd * 4, c.heads * c.hd * 4), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CacheDtypes, Attention, ::testing::Values(DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(AttentionArgs, RejectBadShapes) {
  using test::fake_view;
  const DeviceView kc = fake_view(DType::F16, {3, 64, 64}), vc = fake_view(DType::F16, {3, 64, 64});
  const DeviceView q = fake_view(DType::F32, {4, 9, 64}), out = fake_view(DType::F32, {4, 9, 64});
  test::expect_error([&] { attention_prefill(q, kc, vc, out, 61, 0.125f, nullptr); },
                     "positions [61, 65) exceed the cache capacity 64");
  test::expect_error([&] { attention_prefill(fake_view(DType::F32, {4, 8, 64}), kc, vc,
                                             fake_view(DType::F32, {4, 8, 64}), 0, 0.125f, nullptr); },
                     "8 query heads are not a multiple of 3 kv heads");
  test::expect_error([&] { attention_prefill(fake_view(DType::F32, {4, 9, 32}), kc, vc,
                                             fake_view(DType::F32, {4, 9, 32}), 0, 0.125f, nullptr); },
                     "cache head_dim 64 differs from q's 32");
  test::expect_error([&] { attention_prefill(q, kc, fake_view(DType::F32, {3, 64, 64}), out, 0, 0.125f, nullptr); },
                     "v_cache must be F16, got F32");
  const DeviceView q1 = fake_view(DType::F32, {1, 9, 64}), out1 = fake_view(DType::F32, {1, 9, 64});
  test::expect_error([&] { attention_decode(q, kc, vc, out, 0, 0.125f, fake_view(DType::F32, {100000}), nullptr); },
                     "q must hold one token");
  test::expect_error([&] { attention_decode(q1, kc, vc, out1, 3, 0.125f, fake_view(DType::F32, {10}), nullptr); },
                     "workspace has 10 floats, needs");
  test::expect_error([&] { attention_decode(q1, kc, vc, out1, 3, 0.125f, fake_view(DType::F32, {1000000}), nullptr,
                                            kDecodeMaxSplits + 1); },
                     "splits 65 outside [0, 64]");
  const DeviceView big_kc = fake_view(DType::F16, {1, 64, 512}), big_vc = fake_view(DType::F16, {1, 64, 512});
  test::expect_error([&] { attention_prefill(fake_view(DType::F32, {1, 1, 512}), big_kc, big_vc,
                                             fake_view(DType::F32, {1, 1, 512}), 0, 0.1f, nullptr); },
                     "head_dim 512 is not supported");
  EXPECT_TRUE(attention_supports(DType::F16, 128));
  EXPECT_FALSE(attention_supports(DType::BF16, 128));
}

// The split count of a decode launch (requested > 0 needs no device): capped by
// kDecodeMaxSplits and by the 32-key granules of the longest length.
TEST(AttentionArgs, DecodeSplits) {
  EXPECT_EQ(attention_decode_splits(32, 8, 2048, 33), 33);
  EXPECT_EQ(attention_decode_splits(32, 8, 2048, 100), kDecodeMaxSplits);
  EXPECT_EQ(attention_decode_splits(32, 8, 100, 33), 4);
  EXPECT_EQ(attention_decode_splits(32, 8, 1, 33), 1);
  EXPECT_EQ(attention_decode_splits(9, 3, 4096, 5), 5);
  EXPECT_EQ(attention_decode_workspace_floats(32, 128), size_t{32} * kDecodeMaxSplits * 132 + 32);
  EXPECT_EQ(attention_decode_workspace_floats(3, 7), size_t{3} * kDecodeMaxSplits * 12 + 3);
}

}  // namespace
}  // namespace exq::cuda
