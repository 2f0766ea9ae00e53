#include "backend/cpu/elementwise.h"

#include <algorithm>
#include <cmath>

#include "core/half.h"
#include "core/thread_pool.h"

namespace exq::cpu {
namespace {

void check_f32_contiguous(const TensorView& t, const char* op, const char* name) {
  EXQ_CHECK(t.dtype() == DType::F32 && t.is_contiguous(), "{}: {} must be contiguous F32, got {} {}",
            op, name, dtype_name(t.dtype()), shape_str(t.shape()));
}

void check_rows(const TensorView& x, const char* op) {
  check_f32_contiguous(x, op, "x");
  EXQ_CHECK(x.rank() == 2, "{}: expected [T, n], got {}", op, shape_str(x.shape()));
}

// Elementwise loops are split into chunks of at least this many elements: below it the
// thread wake-up costs more than the work.
constexpr int64_t kMinChunk = 1 << 14;

}  // namespace

namespace {

// out = act(gate) * up over F32 tensors of one shape (the MLP's gated unit).
template <typename Act>
void gated_unit(const TensorView& gate, const TensorView& up, const TensorView& out, const char* op, Act act) {
  check_f32_contiguous(gate, op, "gate");
  check_f32_contiguous(up, op, "up");
  check_f32_contiguous(out, op, "out");
  EXQ_CHECK(gate.shape() == up.shape() && gate.shape() == out.shape(), "{}: shapes {} {} {} differ", op,
            shape_str(gate.shape()), shape_str(up.shape()), shape_str(out.shape()));
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  parallel_for(gate.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = act(g[i]) * u[i];
  }, kMinChunk);
}

}  // namespace

void swiglu(const TensorView& gate, const TensorView& up, const TensorView& out) {
  gated_unit(gate, up, out, "swiglu", [](float g) { return g / (1.0f + std::exp(-g)); });
}

void geglu(const TensorView& gate, const TensorView& up, const TensorView& out) {
  gated_unit(gate, up, out, "geglu", gelu_tanh);
}

void scale_inplace(const TensorView& x, float s) {
  check_f32_contiguous(x, "scale", "x");
  float* xp = x.data<float>();
  parallel_for(x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) xp[i] *= s;
  }, kMinChunk);
}

void softcap_inplace(const TensorView& x, float cap) {
  check_f32_contiguous(x, "softcap", "x");
  EXQ_CHECK(cap > 0.0f, "softcap: cap {} must be positive", cap);
  float* xp = x.data<float>();
  parallel_for(x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) xp[i] = cap * std::tanh(xp[i] / cap);
  }, kMinChunk);
}

void add_inplace(const TensorView& x, const TensorView& y) {
  check_f32_contiguous(x, "add", "x");
  check_f32_contiguous(y, "add", "y");
  EXQ_CHECK(x.shape() == y.shape(), "add: shapes {} and {} differ", shape_str(x.shape()),
            shape_str(y.shape()));
  float* xp = x.data<float>();
  const float* yp = y.data<float>();
  parallel_for(x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) xp[i] += yp[i];
  }, kMinChunk);
}

void embedding(const TensorView& table, std::span<const int32_t> ids, const TensorView& out) {
  EXQ_CHECK(table.rank() == 2 && table.is_contiguous(), "embedding: table must be contiguous [V, d], got {}",
            shape_str(table.shape()));
  check_f32_contiguous(out, "embedding", "out");
  const int64_t V = table.dim(0), d = table.dim(1), T = static_cast<int64_t>(ids.size());
  EXQ_CHECK(out.shape() == Shape({T, d}), "embedding: out must be [{}, {}], got {}", T, d,
            shape_str(out.shape()));
  for (int64_t t = 0; t < T; ++t)
    EXQ_CHECK(ids[t] >= 0 && ids[t] < V, "embedding: token id {} at position {} is outside the vocabulary [0, {})",
              ids[t], t, V);
  float* o = out.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = ids[t];
    float* dst = o + t * d;
    switch (table.dtype()) {
      case DType::F32: std::copy_n(table.data<float>() + row * d, d, dst); break;
      case DType::F16: {
        const uint16_t* src = table.data<uint16_t>() + row * d;
        for (int64_t i = 0; i < d; ++i) dst[i] = half_to_float(src[i]);
        break;
      }
      case DType::BF16: {
        const uint16_t* src = table.data<uint16_t>() + row * d;
        for (int64_t i = 0; i < d; ++i) dst[i] = bf16_to_float(src[i]);
        break;
      }
      default:
        throw Error(fmt::format("embedding: unsupported table dtype {} on CPU", dtype_name(table.dtype())));
    }
  }
}

void softmax_rows(const TensorView& x) {
  check_rows(x, "softmax");
  const int64_t T = x.dim(0), n = x.dim(1);
  float* p = x.data<float>();
  parallel_for(T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* r = p + t * n;
      const float mx = n ? *std::max_element(r, r + n) : 0.0f;
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        r[i] = std::exp(r[i] - mx);
        sum += r[i];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t i = 0; i < n; ++i) r[i] *= inv;
    }
  });
}

std::vector<double> logsumexp_rows(const TensorView& x) {
  check_rows(x, "logsumexp");
  const int64_t T = x.dim(0), n = x.dim(1);
  EXQ_CHECK(n > 0, "logsumexp: empty rows");
  const float* p = x.data<float>();
  std::vector<double> out(static_cast<size_t>(T));
  parallel_for(T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* r = p + t * n;
      const float mx = *std::max_element(r, r + n);
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += std::exp(r[i] - mx);
      out[static_cast<size_t>(t)] = static_cast<double>(mx) + std::log(sum);
    }
  });
  return out;
}

}  // namespace exq::cpu
