// Composition check: a 2-layer SmolLM2-shaped decoder (random f16 weights) run with the CUDA
// ops — prefill of a prompt, then token-by-token decode through the KV cache — against a naive
// double-precision CPU forward of the whole sequence. This is the op sequence the CUDA runtime
// uses, so it also documents how the ops fit together.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/elementwise.h"
#include "backend/cuda/embedding.h"
#include "backend/cuda/kv_cache.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/norm.h"
#include "backend/cuda/rotary.h"
#include "backend/cuda/sampling.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

constexpr int64_t kHidden = 576, kHeads = 9, kKvHeads = 3, kHeadDim = 64, kInter = 1536;
constexpr int64_t kVocab = 1000, kLayers = 2, kCapacity = 32;
constexpr double kEps = 1e-5, kTheta = 100000.0;

struct HostLayer {
  Tensor attn_norm, wq, wk, wv, wo, mlp_norm, gate, up, down;
};

// Host weights as doubles for the reference.
std::vector<double> as_double(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = test::value_at(t, i);
  return v;
}

// y[n] = sum_k x[k] w[n, k]
std::vector<double> linear(const std::vector<double>& x, const Tensor& w) {
  const int64_t n = w.dim(0), k = w.dim(1);
  std::vector<double> y(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    double acc = 0.0;
    for (int64_t i = 0; i < k; ++i) acc += x[static_cast<size_t>(i)] * half_to_float(w.data<uint16_t>()[j * k + i]);
    y[static_cast<size_t>(j)] = acc;
  }
  return y;
}

std::vector<double> rmsnorm_ref(const std::vector<double>& x, const Tensor& w) {
  double ss = 0.0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + kEps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * half_to_float(w.data<uint16_t>()[i]);
  return out;
}

void rope_ref(std::vector<double>& v, int64_t heads, int64_t pos) {
  const int64_t half = kHeadDim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos) * (1.0 / std::pow(kTheta, 2.0 * i / kHeadDim));
      double& x1 = v[static_cast<size_t>(h * kHeadDim + i)];
      double& x2 = v[static_cast<size_t>(h * kHeadDim + i + half)];
      const double n1 = x1 * std::cos(a) - x2 * std::sin(a), n2 = x2 * std::cos(a) + x1 * std::sin(a);
      x1 = n1;
      x2 = n2;
    }
}

// Logits [tokens, vocab] of the whole sequence, causal, in double.
std::vector<std::vector<double>> forward_ref(const std::vector<int32_t>& ids, const Tensor& embed,
                                             const std::vector<HostLayer>& layers, const Tensor& final_norm) {
  const size_t n = ids.size();
  std::vector<std::vector<double>> h(n);
  for (size_t t = 0; t < n; ++t)
    for (int64_t d = 0; d < kHidden; ++d) h[t].push_back(half_to_float(embed.data<uint16_t>()[ids[t] * kHidden + d]));
  for (const HostLayer& L : layers) {
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (size_t t = 0; t < n; ++t) {
      const auto x = rmsnorm_ref(h[t], L.attn_norm);
      q[t] = linear(x, L.wq);
      k[t] = linear(x, L.wk);
      v[t] = linear(x, L.wv);
      rope_ref(q[t], kHeads, static_cast<int64_t>(t));
      rope_ref(k[t], kKvHeads, static_cast<int64_t>(t));
    }
    for (size_t t = 0; t < n; ++t) {
      std::vector<double> attn(static_cast<size_t>(kHidden));
      for (int64_t hh = 0; hh < kHeads; ++hh) {
        const int64_t g = hh / (kHeads / kKvHeads);
        std::vector<double> s(t + 1);
        double m = -INFINITY, l = 0.0;
        for (size_t j = 0; j <= t; ++j) {
          double acc = 0.0;
          for (int64_t d = 0; d < kHeadDim; ++d)
            acc += q[t][static_cast<size_t>(hh * kHeadDim + d)] * k[j][static_cast<size_t>(g * kHeadDim + d)];
          s[j] = acc / std::sqrt(static_cast<double>(kHeadDim));
          m = std::max(m, s[j]);
        }
        for (double& x : s) l += (x = std::exp(x - m));
        for (int64_t d = 0; d < kHeadDim; ++d) {
          double acc = 0.0;
          for (size_t j = 0; j <= t; ++j) acc += s[j] * v[j][static_cast<size_t>(g * kHeadDim + d)];
          attn[static_cast<size_t>(hh * kHeadDim + d)] = acc / l;
        }
      }
      const auto o = linear(attn, L.wo);
      for (int64_t d = 0; d < kHidden; ++d) h[t][static_cast<size_t>(d)] += o[static_cast<size_t>(d)];
      const auto x = rmsnorm_ref(h[t], L.mlp_norm);
      auto gate = linear(x, L.gate);
      const auto up = linear(x, L.up);
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const auto down = linear(gate, L.down);
      for (int64_t d = 0; d < kHidden; ++d) h[t][static_cast<size_t>(d)] += down[static_cast<size_t>(d)];
    }
  }
  std::vector<std::vector<double>> logits(n);
  for (size_t t = 0; t < n; ++t) logits[t] = linear(rmsnorm_ref(h[t], final_norm), embed);
  return logits;
}

struct DeviceLayer {
  DeviceTensor attn_norm, wq, wk, wv, wo, mlp_norm, gate, up, down, k_cache, v_cache;
};

class DecoderLayers : public CudaTest {
 protected:
  // Runs `tokens` ids at positions [start, start + n) through the model; returns logits [n, vocab].
  DeviceTensor forward(const std::vector<int32_t>& tokens, int start) {
    const auto n = static_cast<int64_t>(tokens.size());
    Tensor ids(DType::I32, {n});
    std::copy(tokens.begin(), tokens.end(), ids.data<int32_t>());
    DeviceTensor d_ids = upload(ids);
    DeviceTensor h = empty(DType::F32, {n, kHidden}), x = empty(DType::F32, {n, kHidden});
    DeviceTensor q = empty(DType::F32, {n, kHeads, kHeadDim}), attn = empty(DType::F32, {n, kHeads, kHeadDim});
    DeviceTensor k = empty(DType::F32, {n, kKvHeads, kHeadDim}), v = empty(DType::F32, {n, kKvHeads, kHeadDim});
    DeviceTensor o = empty(DType::F32, {n, kHidden});
    DeviceTensor g = empty(DType::F32, {n, kInter}), u = empty(DType::F32, {n, kInter});
    DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(n, kInter))});
    DeviceTensor attn_ws = empty(DType::F32, {static_cast<int64_t>(attention_decode_workspace_floats(kHeads, kHeadDim))});
    auto flat = [n](const DeviceTensor& t, int64_t cols) { return t.view().reshape({n, cols}); };
    const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));

    embedding(d_ids, embed_, h, stream());
    for (DeviceLayer& L : layers_) {
      rmsnorm(h, L.attn_norm, x, static_cast<float>(kEps), stream());
      matmul(*cublas_, x, L.wq, flat(q, kHidden), ws, stream());
      matmul(*cublas_, x, L.wk, flat(k, kKvHeads * kHeadDim), ws, stream());
      matmul(*cublas_, x, L.wv, flat(v, kKvHeads * kHeadDim), ws, stream());
      rotary(q, cos_, sin_, start, stream());
      rotary(k, cos_, sin_, start, stream());
      kv_append(k, v, L.k_cache, L.v_cache, start, stream());
      if (n == 1)
        attention_decode(q, L.k_cache, L.v_cache, attn, start, scale, attn_ws, stream());
      else
        attention_prefill(q, L.k_cache, L.v_cache, attn, start, scale, stream());
      matmul(*cublas_, flat(attn, kHidden), L.wo, o, ws, stream());
      residual_add(h, o, stream());
      rmsnorm(h, L.mlp_norm, x, static_cast<float>(kEps), stream());
      matmul(*cublas_, x, L.gate, g, ws, stream());
      matmul(*cublas_, x, L.up, u, ws, stream());
      swiglu(g, u, g, stream());
      matmul(*cublas_, g, L.down, o, ws, stream());
      residual_add(h, o, stream());
    }
    rmsnorm(h, final_norm_, x, static_cast<float>(kEps), stream());
    DeviceTensor logits = empty(DType::F32, {n, kVocab});
    matmul(*cublas_, x, embed_, logits, ws, stream());  // tied LM head
    return logits;
  }

  void build(DType cache_dtype) {
    cublas_ = std::make_unique<CublasHandle>();
    uint32_t seed = 500;
    auto w = [&](int64_t out, int64_t in) {
      const float a = std::sqrt(3.0f / static_cast<float>(in));
      return test::random_half(DType::F16, {out, in}, seed++, -a, a);
    };
    auto norm = [&] { return test::random_half(DType::F16, {kHidden}, seed++, 0.7f, 1.3f); };
    embed_host_ = test::random_half(DType::F16, {kVocab, kHidden}, seed++, -1.0f, 1.0f);
    final_norm_host_ = norm();
    for (int64_t l = 0; l < kLayers; ++l)
      host_.push_back({norm(), w(kHidden, kHidden), w(kKvHeads * kHeadDim, kHidden),
                       w(kKvHeads * kHeadDim, kHidden), w(kHidden, kHidden), norm(),
                       w(kInter, kHidden), w(kInter, kHidden), w(kHidden, kInter)});
    embed_ = upload(embed_host_);
    final_norm_ = upload(final_norm_host_);
    for (const HostLayer& H : host_)
      layers_.push_back({upload(H.attn_norm), upload(H.wq), upload(H.wk), upload(H.wv), upload(H.wo),
                         upload(H.mlp_norm), upload(H.gate), upload(H.up), upload(H.down),
                         empty(cache_dtype, {kKvHeads, kCapacity, kHeadDim}),
                         empty(cache_dtype, {kKvHeads, kCapacity, kHeadDim})});
    const RotaryTable table = make_rotary_table(static_cast<int>(kHeadDim), kCapacity, kTheta);
    cos_ = upload(table.cos);
    sin_ = upload(table.sin);
  }

  std::unique_ptr<CublasHandle> cublas_;  // created in build(): needs a device
  Tensor embed_host_, final_norm_host_;
  std::vector<HostLayer> host_;
  DeviceTensor embed_, final_norm_, cos_, sin_;
  std::vector<DeviceLayer> layers_;
};

// Logits within 1% of the largest reference logit, and the same greedy token wherever the
// reference's top-2 margin is clear of that error.
void check_logits(const std::vector<double>& want, const Tensor& got, int32_t got_argmax, const std::string& what) {
  const double scale = *std::max_element(want.begin(), want.end(), [](double a, double b) { return std::fabs(a) < std::fabs(b); });
  test::expect_close(want, got, 1e-2 * std::fabs(scale), 0.0, what);
  std::vector<double> sorted = want;
  std::sort(sorted.rbegin(), sorted.rend());
  const auto ref_argmax = static_cast<int32_t>(std::max_element(want.begin(), want.end()) - want.begin());
  if (sorted[0] - sorted[1] > 2e-2 * std::fabs(scale)) {
    EXPECT_EQ(got_argmax, ref_argmax) << what;
  }
}

class DecoderLayersCache : public DecoderLayers, public ::testing::WithParamInterface<DType> {};

TEST_P(DecoderLayersCache, PrefillThenDecodeMatchesCpu) {
  build(GetParam());
  const std::vector<int32_t> seq = {1, 17, 503, 999, 42, 42, 7, 0, 250, 861, 12, 3, 640, 77, 5};
  const size_t prompt = 12;
  const auto want = forward_ref(seq, embed_host_, host_, final_norm_host_);

  DeviceTensor logits = forward({seq.begin(), seq.begin() + prompt}, 0);
  DeviceTensor greedy = empty(DType::I32, {static_cast<int64_t>(prompt)});
  argmax(logits, greedy, stream());
  const Tensor got = download(logits), got_ids = download(greedy);
  for (size_t t = 0; t < prompt; ++t) {
    const Tensor row = Tensor::copy_of(got.view().slice0(static_cast<int64_t>(t), static_cast<int64_t>(t) + 1));
    check_logits(want[t], row, got_ids.data<int32_t>()[t], "prefill token " + std::to_string(t));
  }
  for (size_t t = prompt; t < seq.size(); ++t) {
    DeviceTensor step = forward({seq[t]}, static_cast<int>(t));
    DeviceTensor id = empty(DType::I32, {1});
    argmax(step, id, stream());
    check_logits(want[t], download(step), download(id).data<int32_t>()[0], "decode token " + std::to_string(t));
  }
}

INSTANTIATE_TEST_SUITE_P(CacheDtypes, DecoderLayersCache, ::testing::Values(DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace exq::cuda
