// The measurement's table errors from the device's error sums (engine_kernels.h,
// error_partials_cuda): host arithmetic only, so it is tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/measure.h"

namespace exq::quant::cuda {

// ||a - b|| / ||b|| from sum (a - b)^2 and sum b^2, with quant::relative_error's conventions.
double relative(double num, double den);

// One calibration row's error from its two sums under `metric` (kToken: sum of per-token
// errors and token count; else squared-error and squared-norm sums).
double row_error(double a, double b, ErrorMetric metric);

// Per table row: mean over the R calibration rows of the row errors in sums [n_table, R, 2].
std::vector<double> table_errors(const std::vector<double>& sums, size_t n_table, int64_t R,
                                 ErrorMetric metric);

}  // namespace exq::quant::cuda
