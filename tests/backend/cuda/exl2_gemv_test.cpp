// CUDA EXL2 GEMV, dequantize and prefill matmul against the CPU exl2_matmul (backend/cpu) and
// io::dequantize_exl2, on exllamav2's layer-0 fixtures and on random packed layers of every
// bit width (the launch variants: exl2_gemv_launch_test.cpp). Tolerances follow the precision
// design (exl2_gemv.cu): weights are exllamav2's fp16 values bit for bit (kernel 1, the prefill
// path, kernel 2's runs of groups under 128 rows) or the exact (q - z) * scale (kernel 2's offset
// decode, checked against a double reference with those weights), f16 activations enter the
// products exactly, f32 activations are rounded to f16 after an exact power-of-two scaling, so
// |error| <= u * sum_k |w_k x_k| with u = 2^-11 (f32 x) plus f32 accumulation (both sides); the
// test allows 2u for f32 x and 2e-5 for f16 x, 1e-4 for kernel 2 (its offset decode's mma sums
// carry 2^(10-o) x_k per row, up to 512 times the weight's own term at 2 bits, and the tensor
// cores' f32 sums truncate relative to the largest term: 3.7e-5 measured at 2 bits on an H200).
#include "backend/cuda/exl2_gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "backend/cpu/elementwise.h"
#include "backend/cpu/exl2_matmul.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul.h"
#include "core/half.h"
#include "cuda_test_util.h"
#include "exl2_test_layers.h"
#include "io/exl2.h"
#include "test_support.h"

namespace exq::cuda {
namespace {

using test::CudaTest;
using namespace exl2_test;

class Exl2Gemv : public CudaTest {
 protected:
  // x [8, in] normal * x_range; returns the reference y [8, out] (CPU, f32 x as given) and
  // sum |w x| per output.
  struct Reference {
    std::vector<double> y, mag;
  };
  static Reference reference(const BothLayers& l, const Tensor& x, int64_t rows) {
    const int64_t out = l.host.out;
    std::vector<float> y(static_cast<size_t>(rows * out));
    cpu::exl2_matmul(l.cpu, x.data<float>(), rows, y.data());
    Reference r = with_weights(l.wd, nullptr, x, rows);
    r.y.assign(y.begin(), y.end());
    return r;
  }
  // y = x w^T + bias (in double) and sum |w x| of f32 weights w [out, in].
  static Reference with_weights(const Tensor& wt, const uint16_t* bias, const Tensor& x,
                                int64_t rows) {
    const int64_t out = wt.dim(0), in = wt.dim(1);
    Reference r{std::vector<double>(static_cast<size_t>(rows * out)),
                std::vector<double>(static_cast<size_t>(rows * out))};
    const float* w = wt.data<float>();
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t o = 0; o < out; ++o) {
        double y = bias ? half_to_float(bias[o]) : 0.0, m = 0.0;
        for (int64_t i = 0; i < in; ++i) {
          const double p = double(w[o * in + i]) * x.data<float>()[t * in + i];
          y += p;
          m += std::fabs(p);
        }
        r.y[static_cast<size_t>(t * out + o)] = y;
        r.mag[static_cast<size_t>(t * out + o)] = m + 1e-30;
      }
    return r;
  }

  // got [rows, out] against the first rows of want; returns the worst error / bound.
  static double check(const Reference& want, const Tensor& got, double unit,
                      const std::string& what) {
    const float* g = got.data<float>();
    int bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      const double err = std::fabs(double(g[i]) - want.y[static_cast<size_t>(i)]);
      const double bound = unit * want.mag[static_cast<size_t>(i)] + 1e-6;
      worst = std::max(worst, std::isnan(err) ? INFINITY : err / bound);
      if (!(err <= bound) && bad++ < 5)
        ADD_FAILURE() << what << ": y[" << i << "] = " << g[i] << ", want "
                      << want.y[static_cast<size_t>(i)] << " (bound " << bound << ")";
    }
    EXPECT_EQ(bad, 0) << what << ": worst error / bound " << worst;
    return worst;
  }

  Tensor poisoned_run(const Exl2Layer& layer, const Tensor& x, Exl2Workspace& ws) {
    DeviceTensor dx = upload(x);
    DeviceTensor dy = empty(DType::F32, {x.dim(0), layer.out()});
    CUDA_CHECK(cudaMemsetAsync(dy.raw(), 0xff, dy.nbytes(), stream()));  // NaN everywhere
    exl2_gemv(layer, dx, dy, ws, stream());
    return download(dy);
  }

  // GEMV for every batch 1..8 with f32 and f16 x, bit-exact dequantization, and (when
  // `prefill_rows` > 8) the dequantize + cuBLAS path. Returns the worst error / bound.
  double check_layer(const io::Exl2Tensors& t, int64_t in, int64_t out, uint32_t seed,
                     const std::string& what, float x_range = 1.0f, int64_t prefill_rows = 0,
                     const std::vector<Exl2Split>& splits = {}) {
    BothLayers l(t, in, out);
    Exl2Layer layer(l.host, stream(), what.c_str());
    const bool mixed2 = layer.kernel2_ok() && layer.desc().uniform_bits == 0;
    if (std::getenv("EXQ_EXL2_GEMV") == nullptr && std::getenv("EXQ_EXL2_MIXED") == nullptr) {
      EXPECT_EQ(layer.split().runs, mixed2 && layer.weight_bytes() >= (size_t{4} << 20))
          << what << ": mixed widths of >= 4 MB on kernel 2, a run per warp";
    }
    Exl2Workspace ws;
    ws.reserve(layer, stream());
    double worst = 0.0;

    // The prefill's dequantization is bit-exact with io's, column k holding channel q_perm[k].
    DeviceTensor dw = empty(DType::F16, {out, in});
    CUDA_CHECK(cudaMemsetAsync(dw.raw(), 0xff, dw.nbytes(), stream()));  // NaN everywhere
    exl2_dequantize_permuted(layer, dw, stream());
    const Tensor wp = download(dw);
    const Tensor ref16 = io::dequantize_exl2(t, in, out, "layer", DType::F16);
    int64_t diff = 0;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < in; ++k)
        diff += wp.data<uint16_t>()[o * in + k] != ref16.data<uint16_t>()[o * in + l.host.q_perm[k]];
    EXPECT_EQ(diff, 0) << what << ": dequantized values differing from io";

    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, x_range);
    Tensor x32(DType::F32, {kExl2MaxBatch, in});
    for (float& v : x32.span<float>()) v = nd(rng);
    Tensor x16(DType::F16, {kExl2MaxBatch, in});
    Tensor x16f(DType::F32, {kExl2MaxBatch, in});  // the f16 values as f32, for the CPU
    // f16 x stays within f16's range (at most ~1000 sigma).
    const float to16 = std::min(x_range, 1000.0f) / x_range;
    for (int64_t i = 0; i < x32.numel(); ++i) {
      x16.data<uint16_t>()[i] = float_to_half(x32.data<float>()[i] * to16);
      x16f.data<float>()[i] = half_to_float(x16.data<uint16_t>()[i]);
    }
    const Reference r32_1 = reference(l, x32, kExl2MaxBatch);
    const Reference r16_1 = reference(l, x16f, kExl2MaxBatch);
    // Both GEMV kernels (2: exl2_gemv_v2.cu, where the layer allows it; 1: session 2's).
    for (int kernel : {2, 1}) {
      if (kernel == 2 && !layer.kernel2_ok()) continue;
      const Reference r32 = kernel == 2 ? with_weights(l.w2, l.host.bias, x32, kExl2MaxBatch) : r32_1;
      const Reference r16 = kernel == 2 ? with_weights(l.w2, l.host.bias, x16f, kExl2MaxBatch) : r16_1;
      layer.set_kernel(kernel);
      ws.reserve(layer, stream());
      const std::string kw = what + " kernel " + std::to_string(kernel);
      for (int64_t b = 1; b <= kExl2MaxBatch; ++b) {
        const Tensor y32 = poisoned_run(layer, Tensor::copy_of(x32.view().slice0(0, b)), ws);
        worst = std::max(worst, check(r32, y32, 2 * std::ldexp(1.0, -11),
                                      kw + " f32 x, batch " + std::to_string(b)));
        const Tensor y16 = poisoned_run(layer, Tensor::copy_of(x16.view().slice0(0, b)), ws);
        check(r16, y16, kernel == 2 ? 1e-4 : 2e-5, kw + " f16 x, batch " + std::to_string(b));
        if (b == kExl2MaxBatch) {  // repeatable: the cross-block reduction has a fixed order
          const Tensor again = poisoned_run(layer, Tensor::copy_of(x16.view()), ws);
          EXPECT_EQ(std::memcmp(again.raw(), y16.raw(), y16.nbytes()), 0) << kw;
        }
      }

      // Forced launch shapes: clusters along K, warps along K, partial sums without clusters,
      // several tiles per block; batch 1, 3 and 8 for each.
      for (Exl2Split sp : splits) {
        sp.kernel = kernel;
        layer.set_split(sp);
        ws.reserve(layer, stream());
        const std::string name = kw + " split ksplit " + std::to_string(sp.ksplit) + " ksub " +
                                 std::to_string(sp.ksub) + " tpb " +
                                 std::to_string(sp.tiles_per_block) + " spw " +
                                 std::to_string(sp.steps_per_warp) +
                                 (sp.cluster ? " cluster" : " partials");
        for (int64_t b : {int64_t{1}, int64_t{3}, int64_t{8}}) {
          const Tensor y = poisoned_run(layer, Tensor::copy_of(x32.view().slice0(0, b)), ws);
          check(r32, y, 2 * std::ldexp(1.0, -11), name + " batch " + std::to_string(b));
        }
      }
    }

    // Mixed widths on kernel 2 with a run per warp (the default for large layers), same
    // bounds as kernel 2, repeatable.
    if (mixed2) {
      EXPECT_TRUE(layer.set_runs()) << what;
      ws.reserve(layer, stream());
      const Reference r32 = with_weights(l.w2, l.host.bias, x32, kExl2MaxBatch);
      const Reference r16 = with_weights(l.w2, l.host.bias, x16f, kExl2MaxBatch);
      for (int64_t b = 1; b <= kExl2MaxBatch; ++b) {
        const std::string kw = what + " a run per warp, batch " + std::to_string(b);
        const Tensor y32 = poisoned_run(layer, Tensor::copy_of(x32.view().slice0(0, b)), ws);
        worst = std::max(worst, check(r32, y32, 2 * std::ldexp(1.0, -11), kw + " f32 x"));
        const Tensor y16 = poisoned_run(layer, Tensor::copy_of(x16.view().slice0(0, b)), ws);
        check(r16, y16, 1e-4, kw + " f16 x");
      }
      const Tensor a = poisoned_run(layer, Tensor::copy_of(x32.view()), ws);
      const Tensor again = poisoned_run(layer, Tensor::copy_of(x32.view()), ws);
      EXPECT_EQ(std::memcmp(again.raw(), a.raw(), a.nbytes()), 0) << what << " a run per warp";
    }

    if (prefill_rows > kExl2MaxBatch) {
      Tensor xp(DType::F32, {prefill_rows, in});
      for (float& v : xp.span<float>()) v = nd(rng);
      const Reference rp = reference(l, xp, prefill_rows);
      CublasHandle cublas;
      DeviceTensor dx = upload(xp);
      DeviceTensor dy = empty(DType::F32, {prefill_rows, out});
      DeviceTensor mm_ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(prefill_rows, in))});
      CUDA_CHECK(cudaMemsetAsync(dy.raw(), 0xff, dy.nbytes(), stream()));
      exl2_matmul(cublas, layer, dx, dy, ws, dw, mm_ws, stream());
      check(rp, download(dy), 2 * std::ldexp(1.0, -11), what + " prefill");
      // With `up`: (silu(x) * up) @ W^T, the SwiGLU formed as swiglu_kernel does (f32).
      Tensor up(DType::F32, {prefill_rows, in}), h(DType::F32, {prefill_rows, in});
      for (float& v : up.span<float>()) v = nd(rng);
      for (int64_t i = 0; i < h.numel(); ++i) {
        const float g = xp.data<float>()[i];
        h.data<float>()[i] = g / (1.0f + std::exp(-g)) * up.data<float>()[i];
      }
      const Reference rh = reference(l, h, prefill_rows);
      DeviceTensor dup = upload(up);
      const DeviceView upv = dup;
      CUDA_CHECK(cudaMemsetAsync(dy.raw(), 0xff, dy.nbytes(), stream()));
      exl2_matmul(cublas, layer, dx, dy, ws, dw, mm_ws, stream(), true, &upv);
      check(rh, download(dy), 2 * std::ldexp(1.0, -11) + 1e-6, what + " prefill with SwiGLU");
      // gemma's GeGLU: gelu_tanh(x) * up (cpu::gelu_tanh).
      for (int64_t i = 0; i < h.numel(); ++i) h.data<float>()[i] = cpu::gelu_tanh(xp.data<float>()[i]) * up.data<float>()[i];
      const Reference rg = reference(l, h, prefill_rows);
      CUDA_CHECK(cudaMemsetAsync(dy.raw(), 0xff, dy.nbytes(), stream()));
      exl2_matmul(cublas, layer, dx, dy, ws, dw, mm_ws, stream(), true, &upv, /*gelu=*/true);
      check(rg, download(dy), 2 * std::ldexp(1.0, -11) + 1e-6, what + " prefill with GeGLU");
    }
    return worst;
  }
};

const std::map<std::string, std::pair<int64_t, int64_t>> kLinears = {
    {"self_attn.q_proj", {576, 576}}, {"self_attn.k_proj", {576, 192}},
    {"self_attn.v_proj", {576, 192}}, {"self_attn.o_proj", {576, 576}},
    {"mlp.gate_proj", {576, 1536}},   {"mlp.up_proj", {576, 1536}},
    {"mlp.down_proj", {1536, 576}}};

TEST_F(Exl2Gemv, MatchesCpuOnFixtures) {
  for (const char* bpw : {"4.0", "2.5"}) {
    const std::string file = std::string("smollm2_layer0_") + bpw + "bpw.safetensors";
    const auto f = io::SafetensorsFile::open(::exq::test::shared_dir() / "fixtures" / "exl2" / file);
    double worst = 0.0;
    for (const auto& [name, shape] : kLinears) {
      const std::string key = "model.layers.0." + name;
      const io::Exl2Tensors t = io::exl2_tensors(f, key);
      worst = std::max(worst, check_layer(t, shape.first, shape.second, 17, key + " " + bpw,
                                          1.0f, name == "mlp.down_proj" ? 37 : 0));
      // The fixture's own exllamav2 dequantization, bit for bit.
      BothLayers l(t, shape.first, shape.second);
      Exl2Layer layer(l.host, stream());
      DeviceTensor dw = empty(DType::F16, {shape.second, shape.first});
      exl2_dequantize_permuted(layer, dw, stream());
      const Tensor wp = download(dw);
      Tensor w(DType::F16, {shape.second, shape.first});  // back in channel order
      for (int64_t o = 0; o < shape.second; ++o)
        for (int64_t k = 0; k < shape.first; ++k)
          w.data<uint16_t>()[o * shape.first + l.host.q_perm[k]] = wp.data<uint16_t>()[o * shape.first + k];
      const TensorView ref = f.get(key + ".dequant");
      ASSERT_EQ(ref.nbytes(), w.nbytes()) << key;
      EXPECT_EQ(std::memcmp(ref.raw(), w.raw(), w.nbytes()), 0) << key << " vs .dequant";
    }
    std::printf("[%s bpw] largest GEMV error / bound (f32 x, 2^-10 * sum|wx|): %.3g\n", bpw,
                worst);
  }
}

TEST_F(Exl2Gemv, EveryBitWidthOddShapes) {
  uint32_t seed = 100;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (const auto& [in, out, gs] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {256, 40, 32}, {608, 333, 64}, {1024, 96, 128}}) {
      const io::Exl2Packed p = io::pack_exl2(
          random_linear(uniform_groups(bits, gs, in), out, (bits & 1) != 0, seed));
      // 608 rows = 19 units = 5 steps (the last one short), 333 outputs = 11 tiles (the last
      // block column partly empty); 1024 rows = 8 steps. Fields: ksplit, ksub, tiles per
      // block, steps per warp, cluster (else partial sums).
      std::vector<Exl2Split> splits;
      if (in == 608)
        splits = {{1, 1, 1, 5, true}, {5, 1, 2, 1, true}, {2, 2, 4, 2, true},
                  {3, 1, 8, 2, false}, {1, 5, 3, 1, true}, {4, 2, 1, 1, false}};
      if (in == 1024)
        splits = {{1, 8, 2, 1, true}, {8, 1, 1, 1, true}, {4, 2, 1, 1, false}, {2, 3, 3, 2, true}};
      check_layer(p.view(), in, out, seed++,
                  "bits " + std::to_string(bits) + " " + std::to_string(in) + "x" +
                      std::to_string(out) + " g" + std::to_string(gs),
                  1.0f, 0, splits);
    }
}

TEST_F(Exl2Gemv, MixedWidthsShortGroupsAndBias) {
  // Widths change inside warp steps; 16-row and 4-row groups make partial units.
  const std::vector<std::pair<int, int64_t>> mixed = {
      {8, 32}, {6, 16}, {5, 32}, {4, 32}, {3, 32}, {2, 16}, {6, 64}, {4, 128}, {3, 96}, {2, 4}};
  const io::Exl2Packed p = io::pack_exl2(random_linear(mixed, 77, true, 5));
  const int64_t in = p.q_invperm.dim(0);
  check_layer(p.view(), in, 77, 6, "mixed", 1.0f, 19);
}

TEST_F(Exl2Gemv, LongInputSplitsAcrossBlocks) {
  // 8192 inputs over 64 outputs: several K blocks per tile (counters, partial sums), several
  // steps per warp, and activations far beyond f16's range (row scaling).
  std::vector<std::pair<int, int64_t>> groups = {{8, 256}, {5, 512}};
  for (const auto& g : uniform_groups(4, 128, 8192 - 768)) groups.push_back(g);
  const io::Exl2Packed p = io::pack_exl2(random_linear(groups, 64, true, 9));
  // 64 steps: 2 of 8 bits, 4 of 5 bits, 58 of 4 bits.
  check_layer(p.view(), 8192, 64, 10, "long", 3e5f, 12,
              {{1, 1, 2, 64, true}, {8, 2, 1, 4, true}, {8, 1, 2, 8, false}, {3, 5, 1, 5, true},
               {1, 16, 1, 4, true}, {4, 16, 1, 1, true}});
}

// Kernel 2 across the scale range: groups whose q_scale_max makes every scale subnormal, large
// scales, negative scales and a zero one, in 128-row groups (the offset decode) and 64-row
// groups (kernel 1's decode).
TEST_F(Exl2Gemv, Kernel2ExtremeScales) {
  // fp16 bits: 2^-24, 2^-15, 2^-14, 2^-11, 0.1, 1, 128 (512 up to 6 bits: |w| <= 16384),
  // -2^-6, -2^-24, 0.
  const uint16_t smax[] = {0x0001, 0x0200, 0x0400, 0x1000, 0x2e66, 0x3c00, 0x5800, 0x6000,
                           0xa400, 0x8001, 0x0000};
  for (int64_t gs : {int64_t{128}, int64_t{64}})
    for (int bits : {2, 3, 4, 5, 6, 8}) {
      io::Exl2Linear lin = random_linear(uniform_groups(bits, gs, 1536), 96, false, 40 + bits);
      for (size_t g = 0; g < lin.scale_max.size(); ++g) {
        lin.scale_max[g] = smax[g % std::size(smax)];
        if (bits == 8 && lin.scale_max[g] == 0x6000) lin.scale_max[g] = 0x5800;
      }
      const io::Exl2Packed p = io::pack_exl2(lin);
      check_layer(p.view(), 1536, 96, 50 + bits,
                  "extreme scales, bits " + std::to_string(bits) + " g" + std::to_string(gs));
    }
}

// Llama-3-8B k_proj shape with the launch shape chosen at upload (clusters of 8 blocks along K
// on an H100), uniform 4 bits and a three-width exllamav2 option.
TEST_F(Exl2Gemv, RealShapeDefaultSplit) {
  std::vector<std::pair<int, int64_t>> mixed = uniform_groups(8, 32, 224);
  for (const auto& g : uniform_groups(4, 128, 512)) mixed.push_back(g);
  for (const auto& g : uniform_groups(3, 128, 4096 - 736)) mixed.push_back(g);
  for (const auto& groups : {uniform_groups(4, 128, 4096), mixed}) {
    const io::Exl2Packed p = io::pack_exl2(random_linear(groups, 1024, false, 21));
    check_layer(p.view(), 4096, 1024, 22, groups.size() == 32 ? "4096x1024 4b" : "4096x1024 mixed");
  }
}

TEST(Exl2GemvArgs, RejectsBadLayersWithoutTouchingTheDevice) {
  const io::Exl2Packed p = io::pack_exl2(random_linear(uniform_groups(4, 32, 64), 8, false, 1));
  BothLayers l(p.view(), 64, 8);
  auto expect = [&](Exl2HostLayer h, const std::string& needle) {
    test::expect_error([&] { Exl2Layer layer(h, nullptr, "L"); }, needle);
  };
  Exl2HostLayer h = l.host;
  h.q_weight_rows += 1;
  expect(h, "q_weight has");
  std::vector<Exl2HostGroup> bad = l.groups;
  bad[1].bits = 7;
  h = l.host;
  h.groups = bad.data();
  expect(h, "bit width 7");
  std::vector<int32_t> perm = l.perm;
  perm[3] = perm[4];
  h = l.host;
  h.q_perm = perm.data();
  expect(h, "q_perm[");
  h = l.host;
  h.in = 96;
  expect(h, "groups cover 64");
}

}  // namespace
}  // namespace exq::cuda
