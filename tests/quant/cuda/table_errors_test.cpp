// Table errors from the device's error sums (quant/cuda/table_errors.h), hand-computed; no GPU.
#include "quant/cuda/table_errors.h"

#include <gtest/gtest.h>

#include <cmath>

namespace exq::quant::cuda {
namespace {

TEST(TableErrors, MeanOverRowsOfEachMetric) {
  // [n_table = 2, R = 2, 2]: (a, b) per table row and calibration row.
  const std::vector<double> sums = {4.0, 16.0, 9.0, 9.0,   // table row 0
                                    0.0, 0.0, 1.0, 0.0};   // table row 1: zero references
  const std::vector<double> row = table_errors(sums, 2, 2, ErrorMetric::kRow);
  EXPECT_DOUBLE_EQ(row[0], (0.5 + 1.0) / 2);
  EXPECT_TRUE(std::isinf(row[1]));  // 0/0 counts 0, 1/0 is infinite, as relative_error
  EXPECT_DOUBLE_EQ(table_errors(sums, 2, 2, ErrorMetric::kSkip0)[0], 0.75);
  // kToken: a = sum of per-token errors, b = tokens counted; no tokens counts as 0.
  const std::vector<double> token = table_errors(sums, 2, 2, ErrorMetric::kToken);
  EXPECT_DOUBLE_EQ(token[0], (4.0 / 16.0 + 1.0) / 2);
  EXPECT_DOUBLE_EQ(token[1], 0.0);
  EXPECT_DOUBLE_EQ(relative(0.0, 0.0), 0.0);
}

}  // namespace
}  // namespace exq::quant::cuda
