// The fast paths of cpu::exl2_matmul (fused decode-and-dot, dequantized tiles + dense kernel)
// on every instruction set this CPU has, against io::dequantize_exl2: weights bit-identical,
// products equal to a float64 dequantize-then-matmul within rtol 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "backend/cpu/exl2_matmul.h"
#include "backend/cpu/matmul_kernel.h"
#include "core/half.h"
#include "io/exl2.h"
#include "model/exl2_linear.h"
#include "exl2_test_models.h"
#include "test_support.h"

namespace exq {
namespace {

using cpu::kernel::Isa;

// Restores the instruction set the tests found.
struct IsaGuard {
  Isa saved = cpu::kernel::active_isa();
  ~IsaGuard() { cpu::kernel::set_max_isa(saved); }
};

std::vector<Isa> isas() {
  std::vector<Isa> v{Isa::Portable};
  if (cpu::kernel::detected_isa() >= Isa::Avx2) v.push_back(Isa::Avx2);
  if (cpu::kernel::detected_isa() >= Isa::Avx512) v.push_back(Isa::Avx512);
  return v;
}

const char* path_name(cpu::Exl2Path p) {
  if (p == cpu::Exl2Path::Fused) return "fused";
  return p == cpu::Exl2Path::Dequantize ? "dequantize" : "auto";
}

// Every fp16 weight bit of exl2_dequantize (all instruction sets) equals io::dequantize_exl2;
// so does every weight the fused path decodes, read out as W x for one-hot x (T = in; only
// for finite weights, since 0 * inf is NaN; compared as values, since 0 + -0 is +0).
void expect_weights_identical(const io::Exl2Tensors& t, int64_t in, int64_t out,
                              const std::string& what) {
  const Tensor ref = io::dequantize_exl2(t, in, out, "w", DType::F16);
  const uint16_t* rp = ref.data<uint16_t>();
  const model::Exl2Linear layer(t, in, out, "w");
  cpu::Exl2MatmulWeight nobias = layer.matmul_weight();
  nobias.bias = nullptr;
  bool finite = true;
  for (int64_t i = 0; i < in * out; ++i) finite = finite && (rp[i] & 0x7c00) != 0x7c00;
  std::vector<float> onehot(static_cast<size_t>(in * in), 0.0f);
  for (int64_t i = 0; i < in; ++i) onehot[i * in + i] = 1.0f;
  IsaGuard guard;
  for (Isa isa : isas()) {
    cpu::kernel::set_max_isa(isa);
    std::vector<uint16_t> got(static_cast<size_t>(in * out), 0xffff);
    cpu::exl2_dequantize(layer.matmul_weight(), got.data());
    int64_t diff = 0;
    for (int64_t i = 0; i < in * out; ++i) diff += got[i] != rp[i];
    EXPECT_EQ(diff, 0) << what << " on " << cpu::kernel::isa_name(isa);
    if (!finite || isa == Isa::Portable) continue;  // portable fused decodes with the tile code
    std::vector<float> y(static_cast<size_t>(in * out), NAN);
    cpu::exl2_matmul(nobias, onehot.data(), in, y.data(), cpu::Exl2Path::Fused);
    diff = 0;
    for (int64_t c = 0; c < out; ++c)
      for (int64_t i = 0; i < in; ++i) diff += !(y[i * out + c] == half_to_float(rp[c * in + i]));
    EXPECT_EQ(diff, 0) << what << ", fused on " << cpu::kernel::isa_name(isa);
  }
}

// All paths x instruction sets x token counts against a float64 product with the weights of
// io::dequantize_exl2: |y - ref| <= 1e-5 |ref| + 1e-6 sum|w x| (the second term only matters
// for sums that cancel). Returns the largest error as a fraction of that tolerance.
double expect_paths_match(const io::Exl2Tensors& t, int64_t in, int64_t out,
                          const std::string& what, uint32_t seed) {
  const Tensor wd = io::dequantize_exl2(t, in, out, "w", DType::F32);  // [out, in]
  const float* wp = wd.data<float>();
  const model::Exl2Linear layer(t, in, out, "w");
  IsaGuard guard;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  double worst = 0.0;
  for (int64_t tokens : {1, 2, 3, 4, 5, 17, 64}) {
    std::vector<float> x(static_cast<size_t>(tokens * in));
    for (auto& v : x) v = nd(rng);
    std::vector<double> ref(static_cast<size_t>(tokens * out)), mag(ref.size());
    for (int64_t s = 0; s < tokens; ++s)
      for (int64_t o = 0; o < out; ++o) {
        double r = t.bias.empty() ? 0.0 : half_to_float(t.bias.data<uint16_t>()[o]);
        double a = std::fabs(r);
        for (int64_t i = 0; i < in; ++i) {
          const double p = static_cast<double>(wp[o * in + i]) * x[s * in + i];
          r += p;
          a += std::fabs(p);
        }
        ref[s * out + o] = r;
        mag[s * out + o] = a;
      }
    for (Isa isa : isas()) {
      cpu::kernel::set_max_isa(isa);
      for (cpu::Exl2Path path :
           {cpu::Exl2Path::Fused, cpu::Exl2Path::Dequantize, cpu::Exl2Path::Auto}) {
        std::vector<float> y(static_cast<size_t>(tokens * out), NAN);
        cpu::exl2_matmul(layer.matmul_weight(), x.data(), tokens, y.data(), path);
        int64_t bad = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          const double tol = 1e-5 * std::fabs(ref[i]) + 1e-6 * mag[i];
          const double err = std::fabs(y[i] - ref[i]);
          bad += !(err <= tol);
          worst = std::max(worst, err / tol);
        }
        EXPECT_EQ(bad, 0) << what << ", " << tokens << " tokens, " << path_name(path) << " path on "
                          << cpu::kernel::isa_name(isa);
      }
    }
  }
  return worst;
}

// A random layer: groups {bits, rows}, out columns, per-group scale_max, optional bias.
io::Exl2Packed random_layer(const std::vector<std::pair<int, int64_t>>& groups, int64_t out,
                            const std::vector<float>& scale_max, bool bias, uint32_t seed) {
  std::mt19937 rng(seed);
  io::Exl2Linear l;
  l.groups = io::exl2_group_table(groups);
  l.in = 0;
  for (const auto& g : groups) l.in += g.second;
  l.out = out;
  l.q.resize(static_cast<size_t>(l.in * l.out));
  for (const auto& g : l.groups)
    for (int64_t i = g.row_begin * l.out; i < (g.row_begin + g.rows) * l.out; ++i)
      l.q[i] = static_cast<uint8_t>(rng() % (1u << g.bits));
  for (size_t i = 0; i < l.groups.size() * static_cast<size_t>(l.out); ++i)
    l.qs.push_back(static_cast<uint8_t>(1 + rng() % 16));
  for (float s : scale_max) l.scale_max.push_back(float_to_half(s));
  for (int64_t i = 0; i < l.in; ++i) l.perm.push_back(static_cast<int32_t>(i));
  std::shuffle(l.perm.begin(), l.perm.end(), rng);
  l.invperm.resize(static_cast<size_t>(l.in));
  for (int64_t i = 0; i < l.in; ++i) l.invperm[l.perm[i]] = static_cast<int32_t>(i);
  if (bias)
    for (int64_t c = 0; c < l.out; ++c)
      l.bias.push_back(float_to_half(0.125f * static_cast<float>(c % 50) - 3));
  return io::pack_exl2(l);
}

// Mixed widths, whole 32-row chunks and tails (group rows not a multiple of 32 or of 8;
// rows * bits must fill whole words).
const std::vector<std::pair<int, int64_t>> kMixed = {{2, 64}, {3, 96}, {4, 40}, {5, 32},
                                                     {6, 48}, {8, 36}, {2, 16}, {4, 8}};

TEST(Exl2MatmulPaths, FixtureLayers) {
  const auto& linears = test::smollm2_layer0_linears();
  for (const char* bpw : {"4.0", "2.5"}) {
    const auto f = io::SafetensorsFile::open(test::exl2_layer0_fixture(bpw));
    double worst = 0.0;
    for (const auto& [name, shape] : linears) {
      const auto t = io::exl2_tensors(f, "model.layers.0." + name);
      const std::string what = fmt::format("{} bpw {}", bpw, name);
      expect_weights_identical(t, shape.first, shape.second, what);
      worst = std::max(worst, expect_paths_match(t, shape.first, shape.second, what, 7));
    }
    std::printf("[%s bpw] largest error / tolerance: %.3g\n", bpw, worst);
  }
}

TEST(Exl2MatmulPaths, RandomMixedBitLayers) {
  // Odd output sizes (padded to 32), with and without bias; scales include fp16-subnormal
  // weights (tiny scale_max) and a negative scale_max (signed zeros).
  const std::vector<float> sm = {0.02f, 0.5f, 0.003f, -0.07f, 1.5f, 0.01f, 0.0004f, 0.2f};
  double worst = 0.0;
  uint32_t seed = 100;
  for (int64_t out : {1, 7, 33, 97, 263}) {
    for (bool bias : {false, true}) {
      const io::Exl2Packed p = random_layer(kMixed, out, sm, bias, ++seed);
      const int64_t in = p.q_invperm.dim(0);
      const std::string what = fmt::format("random out {} bias {}", out, bias);
      expect_weights_identical(p.view(), in, out, what);
      worst = std::max(worst, expect_paths_match(p.view(), in, out, what, seed));
    }
  }
  // One bit width throughout, the layout of a uniform layer.
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const io::Exl2Packed p = random_layer({{bits, 128}, {bits, 128}, {bits, 64}}, 75,
                                          {0.1f, 0.05f, 0.2f}, true, ++seed);
    const std::string what = fmt::format("uniform {} bits", bits);
    expect_weights_identical(p.view(), 320, 75, what);
    worst = std::max(worst, expect_paths_match(p.view(), 320, 75, what, seed));
  }
  std::printf("[random] largest error / tolerance: %.3g\n", worst);
}

TEST(Exl2MatmulPaths, WeightsOverflowingFp16) {
  // qs^2 * fp16(60000 / 256) * |q - z| exceeds 65504: both sides must give the same infinities.
  const io::Exl2Packed p = random_layer(kMixed, 45, {60000, 30000, 0.1f, 60000, 20000, 1, 9000, 5},
                                        false, 9);
  expect_weights_identical(p.view(), p.q_invperm.dim(0), 45, "overflowing scales");
}

TEST(Exl2MatmulPaths, RejectsBadDescriptions) {
  const io::Exl2Packed p = random_layer({{4, 64}}, 40, {0.1f}, false, 3);
  const model::Exl2Linear layer(p.view(), 64, 40, "w");
  cpu::Exl2MatmulWeight w = layer.matmul_weight();
  std::vector<float> x(64), y(40);
  cpu::Exl2MatmulGroup bad = w.groups[0];
  bad.bits = 7;
  w.groups = &bad;
  EXPECT_THROW(cpu::exl2_matmul(w, x.data(), 1, y.data()), Error);
  bad.bits = 4;
  bad.rows = 32;
  EXPECT_THROW(cpu::exl2_matmul(w, x.data(), 1, y.data()), Error);
}

}  // namespace
}  // namespace exq
