#include "backend/cpu/attention_prefill.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"

namespace exq::cpu {
namespace {

// Query rows per block: a block sees keys up to its last row, so the masked (wasted) part of
// a block is at most half of it, while blocks stay large enough for the GEMM kernel.
constexpr int64_t kBlock = 256;

// In place on S [rows, n]: row i (position t0 + i) sees keys 0..t0+i; scale, softmax over the
// visible keys, zero for the others.
void masked_softmax(float* s, int64_t rows, int64_t n, int64_t t0, float scale) {
  parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* r = s + i * n;
      const int64_t visible = t0 + i + 1;
      float mx = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        r[j] *= scale;
        mx = std::max(mx, r[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        r[j] = std::exp(r[j] - mx);
        sum += r[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j < visible; ++j) r[j] *= inv;
      std::fill(r + visible, r + n, 0.0f);
    }
  }, 8);
}

}  // namespace

void attention_prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out) {
  auto f32_3d = [](const TensorView& t) {
    return t.rank() == 3 && t.dtype() == DType::F32 && t.is_contiguous();
  };
  EXQ_CHECK(f32_3d(q) && f32_3d(k) && f32_3d(v) && f32_3d(out),
            "attention_prefill: q, k, v, out must be contiguous F32 rank 3, got {} {} {} {}",
            shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), KVH = k.dim(1);
  EXQ_CHECK(k.shape() == v.shape() && k.dim(0) == T && k.dim(2) == D && out.shape() == q.shape() &&
                KVH > 0 && H % KVH == 0,
            "attention_prefill: q {} k {} v {} out {} do not match", shape_str(q.shape()),
            shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  if (T == 0) return;
  const int64_t group = H / KVH;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* op = out.data<float>();

  Tensor kc(DType::F32, {T, D});                           // keys of one kv head
  Tensor vt(DType::F32, {D, T});                           // its values, transposed
  Tensor vn(DType::F32, {D, T});                           // visible prefix of vt, contiguous
  Tensor s(DType::F32, {std::min(kBlock, T), T});          // scores / probabilities of a block
  for (int64_t g = 0; g < KVH; ++g) {
    float* kcp = kc.data<float>();
    float* vtp = vt.data<float>();
    parallel_for(T, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        std::copy_n(kp + (t * KVH + g) * D, D, kcp + t * D);
        for (int64_t d = 0; d < D; ++d) vtp[d * T + t] = vp[(t * KVH + g) * D + d];
      }
    }, 64);
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t t1 = std::min(T, t0 + kBlock), rows = t1 - t0, n = t1;
      TensorView vw = vt.view();
      if (n < T) {
        float* vnp = vn.data<float>();
        for (int64_t d = 0; d < D; ++d) std::copy_n(vtp + d * T, n, vnp + d * n);
        vw = TensorView(vnp, DType::F32, {D, n});
      }
      const TensorView sv(s.data<float>(), DType::F32, {rows, n});
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const TensorView qv(qp + (t0 * H + h) * D, DType::F32, {rows, D}, {H * D, 1});
        matmul(qv, kc.view().slice0(0, n), sv);  // S [rows, n] = Q K^T
        masked_softmax(sv.data<float>(), rows, n, t0, scale);
        const TensorView ov(op + (t0 * H + h) * D, DType::F32, {rows, D}, {H * D, 1});
        matmul(sv, vw, ov);  // O [rows, D] = P V
      }
    }
  }
}

}  // namespace exq::cpu
