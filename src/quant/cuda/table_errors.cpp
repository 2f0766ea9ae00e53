#include "quant/cuda/table_errors.h"

#include <cmath>

namespace exq::quant::cuda {

double relative(double num, double den) {
  if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

double row_error(double a, double b, ErrorMetric metric) {
  if (metric == ErrorMetric::kToken) return b == 0.0 ? 0.0 : a / b;
  return relative(a, b);
}

std::vector<double> table_errors(const std::vector<double>& sums, size_t n_table, int64_t R,
                                 ErrorMetric metric) {
  std::vector<double> errors(n_table, 0.0);
  for (size_t i = 0; i < n_table; ++i) {
    double err = 0.0;
    for (int64_t r = 0; r < R; ++r) {
      const size_t at = (i * static_cast<size_t>(R) + static_cast<size_t>(r)) * 2;
      err += row_error(sums[at], sums[at + 1], metric);
    }
    errors[i] = err / static_cast<double>(R);
  }
  return errors;
}

}  // namespace exq::quant::cuda
