// Helpers of the CUDA engine tests: GPU gate, comparisons of measurements and quantized steps
// between engines (CUDA vs CPU within tolerances, CUDA vs CUDA byte for byte).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "backend/cuda/device.h"
#include "core/error.h"
#include "io/exl2.h"
#include "quant/engine.h"
#include "quant/measure.h"
#include "quant/quantize.h"

namespace exq::quant::cuda::test {

inline bool have_gpu() {
  return exq::cuda::device_count() > 0 &&
         exq::cuda::device_info(0).cc_major >= exq::cuda::kMinComputeMajor;
}

#define EXQ_REQUIRE_GPU()                                              \
  do {                                                                 \
    if (!::exq::quant::cuda::test::have_gpu())                         \
      GTEST_SKIP() << "no CUDA device with compute capability >= 8.0"; \
  } while (0)

// Empty tensors (no bias, the head's output) have no data to compare, whatever their shape.
inline bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.empty() || b.empty()) return a.empty() == b.empty();
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// Same rows, options and bits; accuracies within `tol`; targets within `target_rtol`
// (relative Frobenius error). Prints the worst differences.
inline void expect_measurements_close(const ModuleResult& got, const ModuleResult& want, double tol,
                                      double target_rtol) {
  const std::string& key = want.measurement.key;
  EXPECT_EQ(got.measurement.key, key);
  ASSERT_TRUE(got.measurement.rows && want.measurement.rows) << key;
  const auto& g = *got.measurement.rows;
  const auto& w = *want.measurement.rows;
  ASSERT_EQ(g.size(), w.size()) << key;
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_EQ(g[i].total_bits, w[i].total_bits) << key << " row " << i;
    ASSERT_EQ(g[i].linears.size(), w[i].linears.size()) << key << " row " << i;
    for (size_t c = 0; c < g[i].linears.size(); ++c) {
      EXPECT_EQ(g[i].linears[c].first, w[i].linears[c].first) << key << " row " << i;
      EXPECT_EQ(g[i].linears[c].second, w[i].linears[c].second) << key << " row " << i;
    }
    const double d = std::fabs(g[i].accuracy - w[i].accuracy);
    worst = std::max(worst, d);
    EXPECT_LE(d, tol) << key << " row " << i << ": accuracy " << g[i].accuracy << " vs "
                      << w[i].accuracy;
  }
  const double target = relative_error(got.target, want.target);
  EXPECT_LE(target, target_rtol) << key << " target";
  std::printf("%-26s max |accuracy diff| %.2e  target rel diff %.2e  error row 0 %.5f vs %.5f\n",
              key.c_str(), worst, target, got.errors.empty() ? 0.0 : got.errors[0],
              want.errors.empty() ? 0.0 : want.errors[0]);
}

// Bit-identical results (another budget or a second run).
inline void expect_measurements_identical(const ModuleResult& a, const ModuleResult& b) {
  const std::string& key = a.measurement.key;
  ASSERT_EQ(a.errors.size(), b.errors.size()) << key;
  for (size_t i = 0; i < a.errors.size(); ++i)
    EXPECT_EQ(a.errors[i], b.errors[i]) << key << " row " << i;
  EXPECT_TRUE(same_bytes(a.target, b.target)) << key << " target";
}

inline void expect_packed_identical(const QuantStep& a, const QuantStep& b) {
  ASSERT_EQ(a.packed.size(), b.packed.size());
  for (size_t i = 0; i < a.packed.size(); ++i) {
    const auto& [ka, pa] = a.packed[i];
    const auto& [kb, pb] = b.packed[i];
    EXPECT_EQ(ka, kb);
    EXPECT_TRUE(same_bytes(pa.q_weight, pb.q_weight)) << ka << ".q_weight";
    EXPECT_TRUE(same_bytes(pa.q_scale, pb.q_scale)) << ka << ".q_scale";
    EXPECT_TRUE(same_bytes(pa.q_scale_max, pb.q_scale_max)) << ka << ".q_scale_max";
    EXPECT_TRUE(same_bytes(pa.q_groups, pb.q_groups)) << ka << ".q_groups";
    EXPECT_TRUE(same_bytes(pa.q_invperm, pb.q_invperm)) << ka << ".q_invperm";
    EXPECT_TRUE(same_bytes(pa.bias, pb.bias)) << ka << ".bias";
  }
  EXPECT_TRUE(same_bytes(a.output, b.output)) << "output";
  EXPECT_EQ(a.rfn, b.rfn);
}

// Packed tensors that io accepts for layers of the given [out, in], keys as the CPU engine's.
inline void expect_packed_valid(const QuantStep& got, const QuantStep& cpu,
                                const std::vector<std::pair<int64_t, int64_t>>& dims) {
  ASSERT_EQ(got.packed.size(), cpu.packed.size());
  ASSERT_EQ(got.packed.size(), dims.size());
  for (size_t i = 0; i < got.packed.size(); ++i) {
    const auto& [key, p] = got.packed[i];
    EXPECT_EQ(key, cpu.packed[i].first);
    const auto [out, in] = dims[i];
    try {
      io::validate_exl2(p.view(), in, out, key);
      io::check_exl2_linear(io::unpack_exl2(p.view(), in, out, key), key);
    } catch (const Error& e) {
      ADD_FAILURE() << key << ": " << e.what();
    }
    EXPECT_EQ(p.q_groups.shape(), cpu.packed[i].second.q_groups.shape()) << key;
    EXPECT_EQ(p.bias.empty(), cpu.packed[i].second.bias.empty()) << key;
  }
}

// rfn within 10 % (+1e-4) of the CPU's; output within the triangle bound of both errors.
inline void expect_step_close(const QuantStep& got, const QuantStep& cpu) {
  EXPECT_NEAR(got.rfn, cpu.rfn, 0.1 * cpu.rfn + 1e-4);
  const double out = relative_error(got.output, cpu.output);
  EXPECT_LE(out, 2.5 * cpu.rfn + 1e-4);
  std::printf("quantize: rfn %.6f (cpu %.6f), output rel diff %.2e\n", got.rfn, cpu.rfn, out);
}

inline std::string stats_line(Engine& engine) { return engine.module_stats().dump(); }

}  // namespace exq::quant::cuda::test
