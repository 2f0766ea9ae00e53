// The measurement's error metrics (quant::output_error) on hand-computed [T, hidden] outputs:
// row = relative Frobenius error over all tokens, skip0 = the same without token 0, token =
// mean of per-token relative errors; and the metric names.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "quant/measure.h"

namespace exq::quant {
namespace {

Tensor make(std::initializer_list<float> v, int64_t T, int64_t H) {
  Tensor t(DType::F32, {T, H});
  float* p = t.data<float>();
  for (float x : v) *p++ = x;
  return t;
}

TEST(MeasureMetric, HandComputedErrors) {
  // Reference: token 0 huge (norm 100), tokens 1, 2 of norm 1 and 2.
  const Tensor ref = make({100, 0, 1, 0, 0, 2}, 3, 2);
  // Quantized: error 1 on token 0, 0.5 on token 1, 1 on token 2.
  const Tensor q = make({101, 0, 1, 0.5f, 0, 3}, 3, 2);
  const double row = std::sqrt((1.0 + 0.25 + 1.0) / (10000.0 + 1.0 + 4.0));
  const double skip0 = std::sqrt((0.25 + 1.0) / (1.0 + 4.0));
  const double token = (0.01 + 0.5 + 0.5) / 3.0;
  EXPECT_NEAR(output_error(q.view(), ref.view(), ErrorMetric::kRow), row, 1e-12);
  EXPECT_NEAR(relative_error(q.view(), ref.view()), row, 1e-12);
  EXPECT_NEAR(output_error(q.view(), ref.view(), ErrorMetric::kSkip0), skip0, 1e-12);
  EXPECT_NEAR(output_error(q.view(), ref.view(), ErrorMetric::kToken), token, 1e-12);
  // Tokens whose reference is zero do not count in the token metric.
  const Tensor ref0 = make({0, 0, 1, 0}, 2, 2);
  const Tensor q0 = make({0, 0, 1.5f, 0}, 2, 2);
  EXPECT_NEAR(output_error(q0.view(), ref0.view(), ErrorMetric::kToken), 0.5, 1e-12);
  EXPECT_THROW(output_error(q.view(), ref0.view(), ErrorMetric::kSkip0), Error);
}

TEST(MeasureMetric, NamesRoundTripAndBadNamesAreRefused) {
  for (ErrorMetric m : {ErrorMetric::kRow, ErrorMetric::kSkip0, ErrorMetric::kToken})
    EXPECT_EQ(parse_error_metric(error_metric_name(m)), m);
  EXPECT_EQ(MeasureOptions{}.metric, ErrorMetric::kRow);  // the library keeps exllamav2's
  try {
    parse_error_metric("bogus", "--error-metric");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("--error-metric"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("bogus"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace exq::quant
