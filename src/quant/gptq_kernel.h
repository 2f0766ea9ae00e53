// Inner loop of GPTQ's scale search (quant/gptq.cpp), vectorized with AVX2 when the CPU has it,
// else portable loops; both do the same IEEE operations in the same order, so the sums are
// bit-identical and the chosen scales do not depend on the CPU. Internal to quant/.
#pragma once

#include <cstdint>

namespace exq::quant::kernel {

// err[i * out + c] for grid points i < grid and columns c in [c0, c1): the sum over rows r
// (ascending) of |w - (clamp(round(w / s) + zero, 0, maxq) - zero) * s|^3.5, where
// w = x[r * out + c], s = sw[c] * p[i] and round is to nearest, ties to even.
void scale_errors(const float* x, int64_t rows, int64_t out, int64_t c0, int64_t c1,
                  const float* sw, const float* p, int grid, float zero, float maxq, float* err);

// round(v) to nearest, ties to even, as std::nearbyint in the default rounding mode, for the
// range GPTQ uses (|v| is clamped to 2^22 first, beyond any code).
float round_half_even(float v);

}  // namespace exq::quant::kernel
