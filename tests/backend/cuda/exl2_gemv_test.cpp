// CUDA EXL2 GEMV, dequantize and prefill matmul against the CPU exl2_matmul (backend/cpu) and
// io::dequantize_exl2, on exllamav2's layer-0 fixtures and on random packed layers of every
// bit width. Tolerances follow the precision design (exl2_gemv.cu): weights are exllamav2's fp16
// values bit for bit (kernel 1, the prefill path, kernel 2's runs of groups under 128 rows) or
// the exact (q - z) * scale (kernel 2's offset decode, checked against a double reference with
// those weights), f16 activations enter the products exactly, f32 activations are rounded to
// f16 after an exact power-of-two scaling, so |error| <= u * sum_k |w_k x_k| with u = 2^-11
// (f32 x) plus f32 accumulation (both sides); the test allows 2u for f32 x and 2e-5 for f16 x,
// 1e-4 for kernel 2 (its offset decode's mma sums carry 2^(10-o) x_k per row, up to 512 times
// the weight's own term at 2 bits, and the tensor cores' f32 sums truncate relative to the
// largest term: 3.7e-5 measured at 2 bits on an H200).
#include "backend/cuda/exl2_gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>

#include "backend/cpu/exl2_matmul.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise.h"
#include "backend/cuda/exl2_plan.h"
#include "backend/cuda/matmul.h"
#include "core/half.h"
#include "cuda_test_util.h"
#include "io/exl2.h"
#include "test_support.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

// One layer described for both backends (pointers into `t`, which must outlive it).
struct BothLayers {
  std::vector<Exl2HostGroup> groups;
  std::vector<cpu::Exl2MatmulGroup> cpu_groups;
  std::vector<int32_t> perm;
  Exl2HostLayer host;
  cpu::Exl2MatmulWeight cpu;
  Tensor wd;  // f32 [out, in], io's dequantization
  Tensor w2;  // f32 [out, in], kernel 2's weights: exact (q - z) * scale in runs of groups of
              // >= 4 units (its offset decode), io's fp16 values in the others

  BothLayers(const io::Exl2Tensors& t, int64_t in, int64_t out) {
    for (const io::Exl2Group& g : io::validate_exl2(t, in, out, "layer")) {
      groups.push_back({g.bits, g.row_begin, g.rows, g.word_begin});
      cpu_groups.push_back({g.bits, g.row_begin, g.rows, g.word_begin});
    }
    perm.resize(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) perm[t.q_invperm.data<int32_t>()[i]] = static_cast<int32_t>(i);
    host.in = cpu.in = in;
    host.out = cpu.out = out;
    cpu.out_pad = io::exl2_out_pad(out);
    host.q_weight = cpu.q_weight = reinterpret_cast<const uint32_t*>(t.q_weight.raw());
    host.q_weight_rows = t.q_weight.dim(0);
    host.q_scale = cpu.q_scale = reinterpret_cast<const uint32_t*>(t.q_scale.raw());
    host.q_scale_max = cpu.q_scale_max = t.q_scale_max.data<uint16_t>();
    host.q_perm = cpu.q_perm = perm.data();
    host.groups = groups.data();
    host.num_groups = static_cast<int64_t>(groups.size());
    cpu.groups = cpu_groups.data();
    cpu.num_groups = host.num_groups;
    host.bias = cpu.bias = t.bias.empty() ? nullptr : t.bias.data<uint16_t>();
    wd = io::dequantize_exl2(t, in, out, "layer", DType::F32);
    w2 = Tensor::copy_of(wd.view());
    const io::Exl2Linear lin = io::unpack_exl2(t, in, out, "layer");
    std::vector<bool> offset_decode(lin.groups.size(), false);
    for (const Exl2Segment& seg : exl2_plan(host, "layer").segments)
      if (seg.group_shift >= 2)
        for (int g = seg.first_group; g < seg.first_group + seg.groups; ++g)
          offset_decode[static_cast<size_t>(g)] = true;
    for (size_t g = 0; g < lin.groups.size(); ++g) {
      if (!offset_decode[g]) continue;
      const io::Exl2Group& grp = lin.groups[g];
      const float m = half_to_float(float_to_half(half_to_float(lin.scale_max[g]) / 256.0f));
      const int zero = 1 << (grp.bits - 1);
      for (int64_t r = grp.row_begin; r < grp.row_begin + grp.rows; ++r)
        for (int64_t c = 0; c < out; ++c) {
          const float qs = lin.qs[g * static_cast<size_t>(out) + static_cast<size_t>(c)];
          const float scale = half_to_float(float_to_half(qs * qs * m));
          w2.data<float>()[c * in + lin.perm[static_cast<size_t>(r)]] =
              static_cast<float>(lin.q[static_cast<size_t>(r * out + c)] - zero) * scale;
        }
    }
  }
};

// A random layer from (bits, rows) groups, with random codes, scales and permutation.
io::Exl2Linear random_linear(const std::vector<std::pair<int, int64_t>>& bits_rows, int64_t out,
                             bool bias, uint32_t seed) {
  std::mt19937 rng(seed);
  io::Exl2Linear l;
  l.groups = io::exl2_group_table(bits_rows);
  l.in = l.groups.back().row_begin + l.groups.back().rows;
  l.out = out;
  l.q.resize(static_cast<size_t>(l.in * l.out));
  for (const auto& g : l.groups)
    for (int64_t i = g.row_begin * l.out; i < (g.row_begin + g.rows) * l.out; ++i)
      l.q[static_cast<size_t>(i)] = static_cast<uint8_t>(rng() % (1u << g.bits));
  for (size_t i = 0; i < l.groups.size() * static_cast<size_t>(l.out); ++i)
    l.qs.push_back(static_cast<uint8_t>(1 + rng() % 16));
  std::uniform_real_distribution<float> smax(0.002f, 0.08f);
  for (size_t g = 0; g < l.groups.size(); ++g) l.scale_max.push_back(float_to_half(smax(rng)));
  for (int64_t i = 0; i < l.in; ++i) l.perm.push_back(static_cast<int32_t>(i));
  std::shuffle(l.perm.begin(), l.perm.end(), rng);
  l.invperm.resize(static_cast<size_t>(l.in));
  for (int64_t i = 0; i < l.in; ++i) l.invperm[static_cast<size_t>(l.perm[i])] = static_cast<int32_t>(i);
  if (bias)
    for (int64_t c = 0; c < l.out; ++c) l.bias.push_back(float_to_half(0.5f * std::sin(float(c))));
  return l;
}

// Uniform groups of `gs` rows (the last one short when in % gs != 0).
std::vector<std::pair<int, int64_t>> uniform_groups(int bits, int64_t gs, int64_t in) {
  std::vector<std::pair<int, int64_t>> v;
  for (int64_t r = 0; r < in; r += gs) v.push_back({bits, std::min(gs, in - r)});
  return v;
}

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
    Exl2Workspace ws;
    ws.reserve(layer, stream());
    double worst = 0.0;

    // Dequantization is bit-exact with io.
    DeviceTensor dw = empty(DType::F16, {out, in});
    exl2_dequantize(layer, dw, stream());
    const Tensor w16 = download(dw);
    const Tensor ref16 = io::dequantize_exl2(t, in, out, "layer", DType::F16);
    int64_t diff = 0;
    for (int64_t i = 0; i < ref16.numel(); ++i)
      diff += w16.data<uint16_t>()[i] != ref16.data<uint16_t>()[i];
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
      exl2_dequantize(layer, dw, stream());
      const Tensor w = download(dw);
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

// A producer that writes the batch-1 staged x itself (f16 x[c] at x_pos[c], 0 at the padding
// rows x_pad, step scales 1, as the decode attention does for the o projection) gets the bits of
// exl2_gemv with that f16 x: uniform and mixed widths, 32-row groups, and 1000 / 576 inputs
// (last steps with padding rows).
TEST_F(Exl2Gemv, StagedInputMatchesF16Gemv) {
  std::vector<std::pair<int, int64_t>> mixed = uniform_groups(8, 32, 128);
  for (const auto& g : uniform_groups(4, 128, 512)) mixed.push_back(g);
  for (const auto& g : uniform_groups(3, 128, 384)) mixed.push_back(g);
  std::vector<std::pair<int, int64_t>> tail = uniform_groups(4, 128, 512);  // 576: 4.5 steps
  for (const auto& g : uniform_groups(3, 32, 64)) tail.push_back(g);
  struct StagedCase {
    std::string name;
    std::vector<std::pair<int, int64_t>> groups;
    int64_t in;
    bool padded;
  };
  for (const StagedCase& sh : std::vector<StagedCase>{{"4b", uniform_groups(4, 128, 1024), 1024, false},
                                            {"mixed", mixed, 1024, false},
                                            {"6b_32g", uniform_groups(6, 32, 1024), 1024, false},
                                            {"4b in 1000", uniform_groups(4, 128, 1000), 1000, true},
                                            {"4b + 3b_32g in 576", tail, 576, true}}) {
    const int64_t in = sh.in, out = 288;
    const io::Exl2Packed p = io::pack_exl2(random_linear(sh.groups, out, true, 71));
    BothLayers l(p.view(), in, out);
    Exl2Layer layer(l.host, stream());
    EXPECT_EQ(layer.x_pad_count() > 0, sh.padded) << sh.name;
    Exl2Workspace ws;
    ws.reserve(layer, stream());
    std::mt19937 rng(72);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    Tensor x16(DType::F16, {1, in});
    for (int64_t c = 0; c < in; ++c) x16.data<uint16_t>()[c] = float_to_half(nd(rng));
    DeviceTensor dx = upload(x16), want = empty(DType::F32, {1, out}), got = empty(DType::F32, {1, out});
    exl2_gemv(layer, dx, want, ws, stream());
    // Stage by hand: scratch 0's xq as f16 elements, every step's 8 scales 1.
    std::vector<int32_t> pos(static_cast<size_t>(in)), pad(static_cast<size_t>(layer.x_pad_count()));
    CUDA_CHECK(cudaMemcpyAsync(pos.data(), layer.x_pos(), pos.size() * 4, cudaMemcpyDeviceToHost, stream()));
    if (!pad.empty())
      CUDA_CHECK(cudaMemcpyAsync(pad.data(), layer.x_pad(), pad.size() * 4, cudaMemcpyDeviceToHost, stream()));
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    const int steps = layer.desc().num_steps;
    std::vector<uint16_t> xq(static_cast<size_t>(steps) * 128, 0xffff);  // NaN where nothing lands
    for (int64_t c = 0; c < in; ++c) xq[static_cast<size_t>(pos[static_cast<size_t>(c)])] = x16.data<uint16_t>()[c];
    for (int32_t i : pad) xq[static_cast<size_t>(i)] = 0;
    for (uint16_t v : xq) ASSERT_NE(v, 0xffff) << sh.name << ": x_pos and x_pad leave a staged row unwritten";
    const std::vector<float> ones(static_cast<size_t>(steps) * kExl2MaxBatch, 1.0f);
    const Exl2Scratch sc = ws.scratch(0);
    CUDA_CHECK(cudaMemcpyAsync(sc.xq, xq.data(), xq.size() * 2, cudaMemcpyHostToDevice, stream()));
    CUDA_CHECK(cudaMemcpyAsync(sc.xscale, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice, stream()));
    exl2_gemv_staged(layer, got, ws, stream());
    const Tensor w = download(want), g = download(got);
    EXPECT_EQ(std::memcmp(w.raw(), g.raw(), w.nbytes()), 0) << sh.name;
  }
}

// The two launches of a GEMV (x staging, then the programmatic dependent GEMV) replayed from
// a CUDA graph, three layers back to back and a group launch of two, give the same bits as
// direct launches.
TEST_F(Exl2Gemv, GraphReplayMatchesDirectLaunches) {
  std::vector<io::Exl2Packed> packed;
  packed.push_back(io::pack_exl2(random_linear(uniform_groups(4, 128, 1024), 512, true, 31)));
  packed.push_back(io::pack_exl2(random_linear(uniform_groups(3, 64, 512), 1024, false, 32)));
  packed.push_back(io::pack_exl2(random_linear({{8, 32}, {4, 128}, {3, 864}}, 512, false, 33)));
  const int64_t ins[] = {1024, 512, 1024}, outs[] = {512, 1024, 512};
  std::vector<std::unique_ptr<BothLayers>> both;
  std::vector<Exl2Layer> layers;
  Exl2Workspace ws;
  for (int i = 0; i < 3; ++i) {
    both.push_back(std::make_unique<BothLayers>(packed[static_cast<size_t>(i)].view(), ins[i], outs[i]));
    layers.emplace_back(both.back()->host, stream());
    ws.reserve(layers.back(), stream());
  }
  Tensor x(DType::F32, {3, 1024});
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (float& v : x.span<float>()) v = nd(rng);
  DeviceTensor dx = upload(x);
  // Layers 0 and 2 (both 1024 inputs) also as one group launch, outputs ys[3], ys[4].
  const Exl2LayerGroup group({&layers[0], &layers[2]});
  ws.reserve(group, stream());
  std::vector<DeviceTensor> ys;
  for (int i = 0; i < 3; ++i) ys.push_back(empty(DType::F32, {3, outs[i]}));
  ys.push_back(empty(DType::F32, {3, outs[0]}));
  ys.push_back(empty(DType::F32, {3, outs[2]}));
  auto run_all = [&] {
    for (int i = 0; i < 3; ++i) {
      const DeviceView xv(dx.raw(), DType::F32, {3, ins[i]});
      exl2_gemv(layers[static_cast<size_t>(i)], xv, ys[static_cast<size_t>(i)], ws, stream());
    }
    exl2_gemv_group(group, dx, {ys[3], ys[4]}, ws, stream());
  };
  run_all();
  std::vector<Tensor> direct;
  for (auto& y : ys) direct.push_back(download(y));
  for (auto& y : ys) CUDA_CHECK(cudaMemsetAsync(y.raw(), 0xff, y.nbytes(), stream()));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
  run_all();
  CUDA_CHECK(cudaStreamEndCapture(stream(), &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, stream()));
  CUDA_CHECK(cudaGraphLaunch(exec, stream()));
  for (size_t i = 0; i < ys.size(); ++i) {
    const Tensor y = download(ys[i]);
    EXPECT_EQ(std::memcmp(y.raw(), direct[i].raw(), y.nbytes()), 0) << "output " << i;
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
}

// The down projection's fused SwiGLU input gives the bits of the swiglu op followed by the
// GEMV, for uniform and mixed widths, batch 1..8, K split with clusters and partial sums.
TEST_F(Exl2Gemv, SwigluInputMatchesSwigluThenGemv) {
  std::vector<std::pair<int, int64_t>> mixed = uniform_groups(8, 32, 256);
  for (const auto& g : uniform_groups(4, 128, 1024)) mixed.push_back(g);
  for (const auto& g : uniform_groups(3, 128, 1536)) mixed.push_back(g);
  for (const auto& [name, groups] :
       std::vector<std::pair<std::string, std::vector<std::pair<int, int64_t>>>>{
           {"4b", uniform_groups(4, 128, 2816)}, {"mixed", mixed}}) {
    const int64_t in = 2816, out = 320;  // 22 steps
    const io::Exl2Packed p = io::pack_exl2(random_linear(groups, out, true, 61));
    BothLayers l(p.view(), in, out);
    Exl2Layer layer(l.host, stream());
    std::mt19937 rng(62);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    Tensor gate(DType::F32, {kExl2MaxBatch, in}), up(DType::F32, {kExl2MaxBatch, in});
    for (float& v : gate.span<float>()) v = nd(rng);
    for (float& v : up.span<float>()) v = nd(rng);
    const int kernel = layer.split().kernel;
    for (Exl2Split sp : {layer.split(), Exl2Split{4, 2, 2, 3, false}, Exl2Split{2, 4, 1, 3, true}}) {
      sp.kernel = kernel;
      layer.set_split(sp);
      Exl2Workspace ws;
      ws.reserve(layer, stream());
      for (int64_t b = 1; b <= kExl2MaxBatch; ++b) {
        const std::string what = name + " split " + std::to_string(sp.ksplit) + "/" +
                                 std::to_string(sp.ksub) + " batch " + std::to_string(b);
        DeviceTensor dg = upload(Tensor::copy_of(gate.view().slice0(0, b)));
        DeviceTensor du = upload(Tensor::copy_of(up.view().slice0(0, b)));
        DeviceTensor act = empty(DType::F32, {b, in});
        swiglu(dg, du, act, stream());
        DeviceTensor want = empty(DType::F32, {b, out}), got = empty(DType::F32, {b, out});
        CUDA_CHECK(cudaMemsetAsync(got.raw(), 0xff, got.nbytes(), stream()));
        exl2_gemv(layer, act, want, ws, stream());
        exl2_gemv_swiglu(layer, dg, du, got, ws, stream());
        const Tensor w = download(want), g = download(got);
        EXPECT_EQ(std::memcmp(w.raw(), g.raw(), w.nbytes()), 0) << what;
      }
    }
  }
}

// A group launch (one staging and one GEMV launch for layers sharing x) gives, per layer, the
// bits of that layer's own GEMV with the group's split; one width (kernel 2's width instance)
// and mixed widths (the mixed instance), batch 1..8, f32 and f16 x, the chosen split and forced
// ones (partial sums and a reduce per layer, clusters).
TEST_F(Exl2Gemv, GroupLaunchMatchesEachLayer) {
  std::vector<std::pair<int, int64_t>> mixed = uniform_groups(6, 32, 128);
  for (const auto& g : uniform_groups(3, 128, 1024 - 128)) mixed.push_back(g);
  const std::vector<std::vector<std::vector<std::pair<int, int64_t>>>> sets = {
      {uniform_groups(4, 128, 1024), uniform_groups(4, 128, 1024), uniform_groups(4, 128, 1024)},
      {uniform_groups(4, 128, 1024), uniform_groups(5, 128, 1024), mixed},
      {uniform_groups(3, 64, 1024), uniform_groups(3, 64, 1024)}};
  const int64_t outs[] = {512, 160, 96};
  uint32_t seed = 70;
  for (size_t set = 0; set < sets.size(); ++set) {
    std::vector<io::Exl2Packed> packed;
    std::vector<std::unique_ptr<BothLayers>> both;
    std::vector<Exl2Layer> layers;
    const size_t n = sets[set].size();
    for (size_t i = 0; i < n; ++i)
      packed.push_back(io::pack_exl2(random_linear(sets[set][i], outs[i], i == 1, seed++)));
    for (size_t i = 0; i < n; ++i) {
      both.push_back(std::make_unique<BothLayers>(packed[i].view(), 1024, outs[i]));
      layers.emplace_back(both.back()->host, stream());
    }
    std::vector<const Exl2Layer*> ptrs;
    for (const Exl2Layer& l : layers) ptrs.push_back(&l);
    Exl2LayerGroup group(ptrs);
    EXPECT_EQ(group.width(), set == 0 ? 4 : set == 1 ? 0 : 3) << "set " << set;
    Tensor x32(DType::F32, {kExl2MaxBatch, 1024});
    std::mt19937 rng(seed++);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    for (float& v : x32.span<float>()) v = nd(rng);
    Tensor x16(DType::F16, {kExl2MaxBatch, 1024});
    for (int64_t i = 0; i < x32.numel(); ++i) x16.data<uint16_t>()[i] = float_to_half(x32.data<float>()[i]);
    for (int kernel : {2, 1}) {
      group.set_kernel(kernel);
      for (Exl2Split sp : {group.split(), Exl2Split{4, 2, 1, 1, false}, Exl2Split{2, 2, 2, 2, true}}) {
        sp.kernel = kernel;
        group.set_split(sp);
        for (Exl2Layer& l : layers) l.set_split(sp);
        Exl2Workspace ws;
        ws.reserve(group, stream());
        for (const Exl2Layer& l : layers) ws.reserve(l, stream());
        for (const Tensor* xs : {&x32, &x16})
          for (int64_t b = 1; b <= kExl2MaxBatch; ++b) {
            const std::string what = "set " + std::to_string(set) + " kernel " +
                                     std::to_string(kernel) + " ksplit " +
                                     std::to_string(sp.ksplit) + (xs == &x32 ? " f32" : " f16") +
                                     " batch " + std::to_string(b);
            DeviceTensor dx = upload(Tensor::copy_of(xs->view().slice0(0, b)));
            std::vector<DeviceTensor> gy;
            std::vector<DeviceView> views;
            for (size_t i = 0; i < n; ++i) {
              gy.push_back(empty(DType::F32, {b, outs[i]}));
              CUDA_CHECK(cudaMemsetAsync(gy.back().raw(), 0xff, gy.back().nbytes(), stream()));
              views.push_back(gy.back());
            }
            exl2_gemv_group(group, dx, views, ws, stream());
            for (size_t i = 0; i < n; ++i) {
              DeviceTensor ly = empty(DType::F32, {b, outs[i]});
              exl2_gemv(layers[i], dx, ly, ws, stream());
              const Tensor got = download(gy[i]), want = download(ly);
              EXPECT_EQ(std::memcmp(got.raw(), want.raw(), got.nbytes()), 0) << what << " layer " << i;
            }
          }
      }
    }
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
