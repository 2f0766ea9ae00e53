#include "backend/cpu/matmul_kernel.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

#include "core/half.h"

namespace exq::cpu::kernel {
namespace {

// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports has no "f16c".
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
}

Isa detect() {
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c())
    return Isa::Avx2;
  return Isa::Portable;
}

Isa initial_isa() {
  Isa isa = detected_isa();
  if (const char* env = std::getenv("EXQ_MAX_ISA")) {
    const std::string_view v = env;
    const Isa cap = v == "portable" ? Isa::Portable : v == "avx2" ? Isa::Avx2 : Isa::Avx512;
    if (cap < isa) isa = cap;
  }
  return isa;
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> a{initial_isa()};
  return a;
}

template <typename Load>
void gemm_portable(const float* x, int64_t ldx, int64_t T, int64_t n, int64_t k, float* y,
                   int64_t ldy, Load w) {
  // Eight partial sums per dot product, which compilers vectorize as is.
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * ldx;
    for (int64_t o = 0; o < n; ++o) {
      float acc[8] = {};
      int64_t p = 0;
      for (; p + 8 <= k; p += 8)
        for (int j = 0; j < 8; ++j) acc[j] += xr[p + j] * w(o * k + p + j);
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; p < k; ++p) s += xr[p] * w(o * k + p);
      y[t * ldy + o] = s;
    }
  }
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "portable";
  }
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return active().load(std::memory_order_relaxed); }

void set_max_isa(Isa isa) { active().store(isa < detected_isa() ? isa : detected_isa()); }

void convert_rows(const uint16_t* w, DType dtype, int64_t rows, int64_t k, float* dst) {
  const int64_t count = rows * k;
  if (active_isa() >= Isa::Avx2) return detail::convert_avx2(w, dtype, count, dst);
  if (dtype == DType::F16) {
    for (int64_t i = 0; i < count; ++i) dst[i] = half_to_float(w[i]);
  } else {
    for (int64_t i = 0; i < count; ++i) dst[i] = bf16_to_float(w[i]);
  }
}

void gemm(const float* x, int64_t ldx, int64_t T, const void* w, DType wtype, int64_t n, int64_t k,
          float* y, int64_t ldy) {
  switch (active_isa()) {
    case Isa::Avx512: return detail::gemm_avx512(x, ldx, T, w, wtype, n, k, y, ldy);
    case Isa::Avx2: return detail::gemm_avx2(x, ldx, T, w, wtype, n, k, y, ldy);
    case Isa::Portable: break;
  }
  const auto* w16 = static_cast<const uint16_t*>(w);
  if (wtype == DType::F32) {
    const auto* w32 = static_cast<const float*>(w);
    gemm_portable(x, ldx, T, n, k, y, ldy, [w32](int64_t i) { return w32[i]; });
  } else if (wtype == DType::F16) {
    gemm_portable(x, ldx, T, n, k, y, ldy, [w16](int64_t i) { return half_to_float(w16[i]); });
  } else {
    gemm_portable(x, ldx, T, n, k, y, ldy, [w16](int64_t i) { return bf16_to_float(w16[i]); });
  }
}

}  // namespace exq::cpu::kernel
