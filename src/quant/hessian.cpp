#include "quant/hessian.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

// LAPACK from OpenBLAS (column-major; trailing hidden Fortran string length).
extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info, size_t);
void spotri_(const char* uplo, const int* n, float* a, const int* lda, int* info, size_t);
}

namespace exq::quant {
namespace {

constexpr int kMaxDampings = 10;

// In-place lower Cholesky of a symmetric column-major matrix; false when not positive definite.
bool cholesky_lower(std::vector<float>& a, int n) {
  int info = 0;
  spotrf_("L", &n, a.data(), &n, &info, 1);
  return info == 0;
}

// U (row-major upper) with U^T U = inv(H), or false when a factorization fails or yields NaN.
bool inverse_cholesky_upper(const std::vector<float>& h, int n, std::vector<float>& u) {
  u = h;
  if (!cholesky_lower(u, n)) return false;
  int info = 0;
  spotri_("L", &n, u.data(), &n, &info, 1);  // lower triangle of inv(H)
  if (info != 0) return false;
  for (float v : u)
    if (std::isnan(v)) return false;
  if (!cholesky_lower(u, n)) return false;  // inv(H) = L L^T, column-major lower L
  // The column-major lower L read row-major is L^T = U; clear the unused triangle.
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < r; ++c) u[static_cast<size_t>(r) * n + c] = 0.0f;
  for (float v : u)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t in)
    : in_(in), upper_(static_cast<size_t>(in * in), 0.0f) {
  EXQ_CHECK(in > 0 && in < (int64_t{1} << 31), "Hessian size {} out of range", in);
}

void HessianAccumulator::add_batch(const float* x, int64_t rows) {
  EXQ_CHECK(rows > 0 && rows < (int64_t{1} << 31), "Hessian batch of {} rows", rows);
  const int n = static_cast<int>(in_);
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, static_cast<int>(rows), 2.0f, x, n, 1.0f,
              upper_.data(), n);
  ++batches_;
}

std::vector<float> HessianAccumulator::hessian() const {
  EXQ_CHECK(batches_ > 0, "Hessian of {} inputs has no batches", in_);
  std::vector<float> h(upper_.size());
  const float inv = 1.0f / static_cast<float>(batches_);
  for (int64_t r = 0; r < in_; ++r)
    for (int64_t c = r; c < in_; ++c) h[r * in_ + c] = h[c * in_ + r] = upper_[r * in_ + c] * inv;
  return h;
}

PreparedHessian prepare_hessian(const std::vector<float>& h, int64_t in, float percdamp) {
  EXQ_CHECK(in > 0 && in < (int64_t{1} << 31) && h.size() == static_cast<size_t>(in * in),
            "Hessian has {} values, expected {}x{}", h.size(), in, in);
  PreparedHessian p;
  p.in = in;
  p.perm.resize(static_cast<size_t>(in));
  std::iota(p.perm.begin(), p.perm.end(), 0);
  std::stable_sort(p.perm.begin(), p.perm.end(),
                   [&](int32_t a, int32_t b) { return h[a * (in + 1)] > h[b * (in + 1)]; });
  std::vector<float> hp(h.size());
  double diag_sum = 0.0;
  for (int64_t r = 0; r < in; ++r) {
    for (int64_t c = 0; c < in; ++c) hp[r * in + c] = h[p.perm[r] * in + p.perm[c]];
    diag_sum += hp[r * (in + 1)];
  }
  p.damp = std::max(static_cast<float>(percdamp * diag_sum / static_cast<double>(in)), 1e-5f);
  const int n = static_cast<int>(in);
  while (p.dampings < kMaxDampings) {
    for (int64_t r = 0; r < in; ++r) hp[r * (in + 1)] += p.damp;
    ++p.dampings;
    if (inverse_cholesky_upper(hp, n, p.u)) return p;
  }
  throw Error(fmt::format("Hessian [{}x{}] is not invertible after {} damping steps of {}", in, in,
                          kMaxDampings, p.damp));
}

PreparedHessian identity_hessian(int64_t in) {
  PreparedHessian p;
  p.in = in;
  p.perm.resize(static_cast<size_t>(in));
  std::iota(p.perm.begin(), p.perm.end(), 0);
  p.u.assign(static_cast<size_t>(in * in), 0.0f);
  for (int64_t i = 0; i < in; ++i) p.u[i * (in + 1)] = 1.0f;
  return p;
}

}  // namespace exq::quant
