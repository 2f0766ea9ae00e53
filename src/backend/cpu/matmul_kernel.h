// Raw-pointer matmul kernels behind cpu::matmul (internal to backend/cpu). Each entry point
// runs the widest instruction set the CPU has (AVX-512, else AVX2+FMA+F16C, else portable
// loops), checked once at runtime; the library itself is built for baseline x86-64.
// No threading here: callers split the output rows.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace exq::cpu::kernel {

enum class Isa { Portable, Avx2, Avx512 };
const char* isa_name(Isa isa);
Isa detected_isa();  // what this CPU (and OS) supports
Isa active_isa();    // what the kernels use: detected_isa() unless lowered
// Uses at most `isa` (clamped to detected_isa()); for tests and benchmarks of each path.
// EXQ_MAX_ISA=portable|avx2|avx512 in the environment sets the initial value.
void set_max_isa(Isa isa);

// dst[r * k + i] = float(w[r * k + i]) for r < rows, i < k; w is f16 or bf16 (uint16_t bits).
void convert_rows(const uint16_t* w, DType dtype, int64_t rows, int64_t k, float* dst);

// y[t * ldy + o] = sum_i x[t * ldx + i] * w[o * k + i] for t < T, o < n. w holds n rows of k
// weights of `wtype` (F32, or F16/BF16 converted in registers, meant for small T where a
// converted tile would not be reused enough to pay for its store).
void gemm(const float* x, int64_t ldx, int64_t T, const void* w, DType wtype, int64_t n, int64_t k,
          float* y, int64_t ldy);

namespace detail {
// Per instruction set; only called when active_isa() allows them.
void gemm_avx2(const float* x, int64_t ldx, int64_t T, const void* w, DType wtype, int64_t n,
               int64_t k, float* y, int64_t ldy);
void gemm_avx512(const float* x, int64_t ldx, int64_t T, const void* w, DType wtype, int64_t n,
                 int64_t k, float* y, int64_t ldy);
void convert_avx2(const uint16_t* w, DType dtype, int64_t count, float* dst);
}  // namespace detail

}  // namespace exq::cpu::kernel
