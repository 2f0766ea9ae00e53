// GPTQ as exllamav2 runs it for EXL2 (docs exl2.md section 3): per group of the option's
// layout, a scale search (4-bit per-column scale codes, one fp16 maximum, 97-point grid over
// [0.70, 1.20] minimising sum |w - q|^3.5), then row-by-row rounding with the fp16 scales the
// kernel will use and error propagation through the Cholesky factor of H^-1.
#pragma once

#include <cstdint>
#include <vector>

#include "io/exl2.h"
#include "quant/hessian.h"
#include "quant/options.h"

namespace exq::quant {

struct GptqResult {
  io::Exl2Linear layer;       // ready for io::pack_exl2
  std::vector<float> weight;  // [out, in] HF layout: exactly what io::dequantize_exl2 gives
};

// w: f32 [out, in] (HF layout). Options quantized against the same PreparedHessian share it.
GptqResult gptq_quantize(const float* w, int64_t out, int64_t in, const PreparedHessian& h,
                         const QuantOption& option);

// The per-group scale search alone, on rows [rows, out] of the (permuted, transposed) weight.
struct GroupScales {
  std::vector<uint8_t> qs;   // [out] codes 1..16
  uint16_t scale_max = 0;    // fp16
  std::vector<float> scale;  // [out] fp16-rounded qs^2 * fp16(scale_max/256), as float
};
GroupScales search_group_scales(const float* rows_data, int64_t rows, int64_t out, int bits);

}  // namespace exq::quant
