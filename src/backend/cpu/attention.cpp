#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"

namespace exq::cpu {
namespace {

// Built for three instruction sets and picked at load time (GCC function multiversioning), so
// the portable library still runs these loops with AVX2 / AVX-512 where the CPU has them.
#define EXQ_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// Eight partial sums so the compiler vectorizes without reassociating on its own.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// One query row of one head against keys/values 0..n-1 (rows `stride` floats apart).
EXQ_MULTIVERSION void attend_row(const float* q, const float* k, const float* v, int64_t n, int64_t stride,
                                 int64_t D, float scale, float softcap, float* scores, float* out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = dot(q, k + j * stride, D) * scale;
    if (softcap > 0.0f) scores[j] = softcap * std::tanh(scores[j] / softcap);
    mx = std::max(mx, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  std::fill_n(out, D, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float p = scores[j];
    const float* vr = v + j * stride;
    for (int64_t d = 0; d < D; ++d) out[d] += p * vr[d];
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}

// Query rows per block of the GEMM path: a block computes scores for every key its last row
// sees, so the masked (wasted) part is at most kBlock^2 / 2 per block.
constexpr int64_t kBlock = 64;
// From this many query rows on, attention runs as blocked GEMMs (S = Q K^T, P V) on the
// matmul kernel; below it (decode), row by row.
constexpr int64_t kGemmMinRows = 16;

// In place on S [rows, n]: a row sees keys [first, visible); scale, softmax over them, zero for
// the others.
EXQ_MULTIVERSION void masked_softmax_row(float* r, int64_t n, int64_t first, int64_t visible, float scale,
                                         float softcap) {
  float mx = -INFINITY;
  if (softcap > 0.0f)
    for (int64_t j = first; j < visible; ++j) mx = std::max(mx, r[j] = softcap * std::tanh(r[j] * scale / softcap));
  else
    for (int64_t j = first; j < visible; ++j) mx = std::max(mx, r[j] *= scale);
  float sum = 0.0f;
  for (int64_t j = first; j < visible; ++j) sum += (r[j] = std::exp(r[j] - mx));
  const float inv = 1.0f / sum;
  for (int64_t j = first; j < visible; ++j) r[j] *= inv;
  std::fill(r, r + first, 0.0f);
  std::fill(r + visible, r + n, 0.0f);
}

// The first key position p sees: 0, or with a sliding window its window-th latest.
inline int64_t first_key(int64_t p, int64_t window) { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; }

void attention_gemm(const float* qp, const float* kp, const float* vp, float* op, int64_t T, int64_t start,
                    int64_t H, int64_t KVH, int64_t D, float scale, float softcap, int64_t window) {
  const int64_t L = start + T, group = H / KVH;
  Tensor kc(DType::F32, {L, D});                         // keys of one kv head
  Tensor vt(DType::F32, {D, L});                         // its values, transposed
  Tensor vn(DType::F32, {D, L});                         // a visible prefix of vt, contiguous
  Tensor s(DType::F32, {std::min(kBlock, T), L});        // scores / probabilities of a block
  float* kcp = kc.data<float>();
  float* vtp = vt.data<float>();
  for (int64_t g = 0; g < KVH; ++g) {
    parallel_for(L, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        std::copy_n(kp + (j * KVH + g) * D, D, kcp + j * D);
        for (int64_t d = 0; d < D; ++d) vtp[d * L + j] = vp[(j * KVH + g) * D + d];
      }
    }, 256);
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t t1 = std::min(T, t0 + kBlock), rows = t1 - t0, n = start + t1;
      TensorView vw = vt.view();                                           // [D, n]
      if (n < L) {
        float* vnp = vn.data<float>();
        for (int64_t d = 0; d < D; ++d) std::copy_n(vtp + d * L, n, vnp + d * n);
        vw = TensorView(vnp, DType::F32, {D, n});
      }
      const TensorView sv(s.data<float>(), DType::F32, {rows, n});        // [rows, n]
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const TensorView qv(const_cast<float*>(qp) + (t0 * H + h) * D, DType::F32, {rows, D}, {H * D, 1});
        matmul(qv, kc.view().slice0(0, n), sv);                            // S = Q K^T
        parallel_for(rows, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            const int64_t p = start + t0 + i;
            masked_softmax_row(sv.data<float>() + i * n, n, first_key(p, window), p + 1, scale, softcap);
          }
        }, 8);
        const TensorView ov(op + (t0 * H + h) * D, DType::F32, {rows, D}, {H * D, 1});
        matmul(sv, vw, ov);                                                // O = P V
      }
    }
  }
}

}  // namespace

void attention(const TensorView& q, const TensorView& k, const TensorView& v, int64_t start,
               const TensorView& out, int64_t window, float scale, float softcap) {
  auto f32_3d = [](const TensorView& t) {
    return t.rank() == 3 && t.dtype() == DType::F32 && t.is_contiguous();
  };
  EXQ_CHECK(f32_3d(q) && f32_3d(k) && f32_3d(v) && f32_3d(out),
            "attention: q, k, v, out must be contiguous F32 rank 3, got {} {} {} {}",
            shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), KVH = k.dim(1);
  EXQ_CHECK(k.shape() == v.shape() && k.dim(2) == D && out.shape() == q.shape() && KVH > 0 &&
                H % KVH == 0,
            "attention: q {} k {} v {} out {} do not match", shape_str(q.shape()), shape_str(k.shape()),
            shape_str(v.shape()), shape_str(out.shape()));
  EXQ_CHECK(start >= 0 && start + T <= k.dim(0), "attention: rows [{}, {}) exceed the cache of {}",
            start, start + T, k.dim(0));
  const int64_t group = H / KVH;
  if (scale <= 0.0f) scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* op = out.data<float>();
  EXQ_CHECK(window >= 0, "attention: window {} is negative", window);
  if (T >= kGemmMinRows) return attention_gemm(qp, kp, vp, op, T, start, H, KVH, D, scale, softcap, window);
  // Item i -> row t: early and late rows alternate, so contiguous chunks cost about the same
  // although row t attends to start + t + 1 keys.
  auto row_of = [T](int64_t i) { return i % 2 == 0 ? i / 2 : T - 1 - i / 2; };
  parallel_for(T * H, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores;
    if (scores.size() < static_cast<size_t>(start + T)) scores.resize(static_cast<size_t>(start + T));
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = row_of(item / H), h = item % H, kvh = h / group;
      const int64_t lo = first_key(start + t, window);
      attend_row(qp + (t * H + h) * D, kp + (lo * KVH + kvh) * D, vp + (lo * KVH + kvh) * D, start + t + 1 - lo,
                 KVH * D, D, scale, softcap, scores.data(), op + (t * H + h) * D);
    }
  }, 4);
}

}  // namespace exq::cpu
