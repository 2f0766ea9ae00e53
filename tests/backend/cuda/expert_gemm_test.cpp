// The grouped expert GEMM (expert_gemm.h) against double-precision sums of io's dequantized
// weights (EXL2) or the dense weights: chunks of 1 to 64 rows of several experts, an expert
// without rows, two layers of different layouts and widths in one launch, a K that ends inside a
// step, output widths that end inside a tile, row scales; layouts it cannot read are told apart.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cuda/expert_gemm.h"
#include "core/half.h"
#include "cuda_test_util.h"
#include "exl2_test_layers.h"

namespace exq::cuda {
namespace {

using test::CudaTest;
using namespace exl2_test;

// Chunks of <= kExpertGemmRows rows of each expert's run of `counts` rows; row_expert filled.
std::vector<ExpertChunk> chunks_of(const std::vector<int>& counts, std::vector<int>& row_expert) {
  std::vector<ExpertChunk> c;
  int row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    add_expert_chunks(c, static_cast<int>(e), row, counts[e]);
    for (int i = 0; i < counts[e]; ++i) row_expert.push_back(static_cast<int>(e));
    row += counts[e];
  }
  return c;
}

class ExpertGemmTest : public CudaTest {
 public:
  using CudaTest::download;
  using CudaTest::empty;
  using CudaTest::stream;
  using CudaTest::upload;
  DeviceTensor bytes_of(const void* p, size_t n) {
    Tensor t(DType::U8, {static_cast<int64_t>(n)});
    std::memcpy(t.raw(), p, n);
    return upload(t);
  }

 protected:
  using Expert = UploadedLayer;
  std::unique_ptr<Expert> exl2_expert(const std::vector<std::pair<int, int64_t>>& groups, int64_t out, uint32_t seed) {
    return upload_random_layer(groups, out, seed, stream(), "expert gemm test");
  }
};

// Random f16 values (exact in both f16 and f32).
std::vector<float> f16_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = half_to_float(float_to_half(nd(rng)));
  return v;
}

std::vector<float> bf16_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_float(float_to_bf16(nd(rng)));
  return v;
}

// max |got - want| / max |want| over [rows, out].
double rel_err(const Tensor& got, const std::vector<double>& want) {
  double err = 0, ref = 0;
  const float* g = got.data<float>();
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(g[i] - want[i]));
    ref = std::max(ref, std::abs(want[i]));
  }
  return err / ref;
}

TEST_F(ExpertGemmTest, Exl2TwoLayersMatchReference) {
  EXQ_REQUIRE_CUDA();
  // Layer 0: mixed widths (the MoE options' kind), 96 outputs; layer 1: another layout, 160.
  const std::vector<std::pair<int, int64_t>> g0 = {{4, 128}, {6, 64}, {3, 64}, {5, 32}, {8, 32}, {2, 64}};
  const std::vector<std::pair<int, int64_t>> g1 = {{4, 64}, {4, 64}, {3, 128}, {6, 128}};
  const int64_t outs[2] = {96, 160};
  const std::vector<int> counts = {0, 1, 70, 64, 130};
  const int experts = static_cast<int>(counts.size());
  std::vector<std::unique_ptr<Expert>> ex[2];
  for (int l = 0; l < 2; ++l)
    for (int e = 0; e < experts; ++e)
      ex[l].push_back(exl2_expert(l == 0 ? g0 : g1, outs[l], static_cast<uint32_t>(100 * l + e)));
  const int64_t in = ex[0][0]->gpu.in();
  ASSERT_EQ(in, 384);
  ASSERT_EQ(ex[1][0]->gpu.in(), in);
  std::vector<int64_t> shifts;
  for (int e = 0; e < experts; ++e)
    for (int l = 0; l < 2; ++l) {
      ASSERT_TRUE(exl2_same_layout(ex[l][0]->gpu, ex[l][e]->gpu));
      ASSERT_TRUE(ex[l][e]->gpu.expert_gemm_ok());
      shifts.push_back(exl2_shift_bytes(ex[l][0]->gpu, ex[l][e]->gpu));
    }
  std::vector<int> row_expert;
  const std::vector<ExpertChunk> chunks = chunks_of(counts, row_expert);
  const auto rows = static_cast<int64_t>(row_expert.size());
  const std::vector<float> x = f16_values(static_cast<size_t>(rows * in), 7);
  std::vector<float> scale(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) scale[static_cast<size_t>(r)] = r % 3 == 0 ? 4.0f : r % 3 == 1 ? 1.0f : 0.5f;

  const DeviceTensor d_shifts = bytes_of(shifts.data(), shifts.size() * 8);
  const DeviceTensor d_chunks = bytes_of(chunks.data(), chunks.size() * sizeof(ExpertChunk));
  const DeviceTensor d_scale = bytes_of(scale.data(), scale.size() * 4);
  DeviceTensor a[2], y[2];
  ExpertGemm g;
  g.layers = 2;
  g.in = static_cast<int>(in);
  g.chunks = static_cast<const ExpertChunk*>(d_chunks.raw());
  g.num_chunks = static_cast<int>(chunks.size());
  g.row_scale = static_cast<const float*>(d_scale.raw());
  for (int l = 0; l < 2; ++l) {
    // Each row in its expert's q_perm order, as the staging writes it.
    Tensor at(DType::F16, {rows, in});
    for (int64_t r = 0; r < rows; ++r) {
      const BothLayers& b = *ex[l][static_cast<size_t>(row_expert[static_cast<size_t>(r)])]->both;
      for (int64_t c = 0; c < in; ++c)
        at.data<uint16_t>()[r * in + c] = float_to_half(x[static_cast<size_t>(r * in + b.perm[static_cast<size_t>(c)])]);
    }
    a[l] = upload(at);
    y[l] = empty(DType::F32, {rows, outs[l]});
    g.l[l].a = a[l].raw();
    g.l[l].y = y[l].view().data<float>();
    g.l[l].out = static_cast<int>(outs[l]);
    g.l[l].d = ex[l][0]->gpu.desc();
    g.l[l].shifts = static_cast<const int64_t*>(d_shifts.raw()) + l;
    g.l[l].stride = 2;
  }
  expert_gemm_exl2_cuda(g, stream());
  for (int l = 0; l < 2; ++l) {
    std::vector<double> want(static_cast<size_t>(rows * outs[l]));
    for (int64_t r = 0; r < rows; ++r) {
      const Tensor& w = ex[l][static_cast<size_t>(row_expert[static_cast<size_t>(r)])]->both->wd;
      for (int64_t o = 0; o < outs[l]; ++o) {
        double acc = 0;
        for (int64_t c = 0; c < in; ++c)
          acc += static_cast<double>(x[static_cast<size_t>(r * in + c)]) * w.data<float>()[o * in + c];
        want[static_cast<size_t>(r * outs[l] + o)] = acc * scale[static_cast<size_t>(r)];
      }
    }
    const double err = rel_err(download(y[l].view()), want);
    std::printf("layer %d [%lld, %lld]: rel max-abs err %.3g\n", l, static_cast<long long>(rows),
                static_cast<long long>(outs[l]), err);
    EXPECT_LT(err, 2e-6) << "layer " << l;
  }
}

TEST_F(ExpertGemmTest, Exl2KEndingInsideAStep) {
  EXQ_REQUIRE_CUDA();
  const std::vector<std::pair<int, int64_t>> groups = uniform_groups(4, 32, 416);  // 13 units
  const int64_t out = 64;
  std::vector<std::unique_ptr<Expert>> ex;
  for (uint32_t e = 0; e < 2; ++e) ex.push_back(exl2_expert(groups, out, 40 + e));
  ASSERT_TRUE(ex[0]->gpu.expert_gemm_ok());
  const std::vector<int64_t> shifts = {0, exl2_shift_bytes(ex[0]->gpu, ex[1]->gpu)};
  std::vector<int> row_expert;
  const std::vector<ExpertChunk> chunks = chunks_of({3, 17}, row_expert);
  const int64_t rows = 20, in = 416;
  const std::vector<float> x = f16_values(static_cast<size_t>(rows * in), 9);
  Tensor at(DType::F16, {rows, in});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < in; ++c)
      at.data<uint16_t>()[r * in + c] = float_to_half(
          x[static_cast<size_t>(r * in + ex[static_cast<size_t>(row_expert[static_cast<size_t>(r)])]->both->perm[static_cast<size_t>(c)])]);
  const DeviceTensor d_a = upload(at), d_shifts = bytes_of(shifts.data(), 16);
  const DeviceTensor d_chunks = bytes_of(chunks.data(), chunks.size() * sizeof(ExpertChunk));
  DeviceTensor y = empty(DType::F32, {rows, out});
  ExpertGemm g;
  g.in = static_cast<int>(in);
  g.chunks = static_cast<const ExpertChunk*>(d_chunks.raw());
  g.num_chunks = static_cast<int>(chunks.size());
  g.l[0].a = d_a.raw();
  g.l[0].y = y.view().data<float>();
  g.l[0].out = static_cast<int>(out);
  g.l[0].d = ex[0]->gpu.desc();
  g.l[0].shifts = static_cast<const int64_t*>(d_shifts.raw());
  expert_gemm_exl2_cuda(g, stream());
  std::vector<double> want(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      const Tensor& w = ex[static_cast<size_t>(row_expert[static_cast<size_t>(r)])]->both->wd;
      double acc = 0;
      for (int64_t c = 0; c < in; ++c) acc += static_cast<double>(x[static_cast<size_t>(r * in + c)]) * w.data<float>()[o * in + c];
      want[static_cast<size_t>(r * out + o)] = acc;
    }
  EXPECT_LT(rel_err(download(y.view()), want), 2e-6);
}

TEST_F(ExpertGemmTest, Exl2LayoutsItCannotReadAreRefused) {
  EXQ_REQUIRE_CUDA();
  // A 16-row group makes a short unit: the GEMM's 32-row units would cross it.
  auto e = exl2_expert({{4, 64}, {4, 16}, {4, 48}}, 64, 3);
  EXPECT_FALSE(e->gpu.expert_gemm_ok());
}

template <typename T>
void dense_case(ExpertGemmTest& t, DType dtype) {
  const int experts = 3, in = 200, out = 70;  // K ends inside a step, out inside a tile
  std::vector<int> row_expert;
  const std::vector<ExpertChunk> chunks = chunks_of({65, 0, 9}, row_expert);
  const auto rows = static_cast<int>(row_expert.size());
  const bool bf = dtype == DType::BF16;
  auto values = [&](size_t n, uint32_t seed) { return bf ? bf16_values(n, seed) : f16_values(n, seed); };
  auto to_tensor = [&](const std::vector<float>& v, Shape s) {
    Tensor r(dtype, std::move(s));
    for (size_t i = 0; i < v.size(); ++i) r.data<uint16_t>()[i] = bf ? float_to_bf16(v[i]) : float_to_half(v[i]);
    return r;
  };
  const std::vector<float> x = values(static_cast<size_t>(rows * in), 5);
  std::vector<std::vector<float>> w;
  std::vector<DeviceTensor> dw;
  std::vector<const void*> table;
  for (int e = 0; e < experts; ++e) {
    w.push_back(values(static_cast<size_t>(out * in), 20 + static_cast<uint32_t>(e)));
    dw.push_back(t.upload(to_tensor(w.back(), {out, in})));
    table.push_back(dw.back().raw());
  }
  const DeviceTensor d_table = t.bytes_of(table.data(), table.size() * 8);
  const DeviceTensor d_chunks = t.bytes_of(chunks.data(), chunks.size() * sizeof(ExpertChunk));
  const DeviceTensor d_a = t.upload(to_tensor(x, {rows, in}));
  DeviceTensor y = t.empty(DType::F32, {rows, out});
  ExpertGemm g;
  g.in = in;
  g.chunks = static_cast<const ExpertChunk*>(d_chunks.raw());
  g.num_chunks = static_cast<int>(chunks.size());
  g.l[0].a = d_a.raw();
  g.l[0].y = y.view().data<float>();
  g.l[0].out = out;
  g.l[0].weights = static_cast<const void* const*>(d_table.raw());
  expert_gemm_dense_cuda<T>(g, t.stream());
  std::vector<double> want(static_cast<size_t>(rows * out));
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double acc = 0;
      for (int c = 0; c < in; ++c)
        acc += static_cast<double>(x[static_cast<size_t>(r * in + c)]) *
               w[static_cast<size_t>(row_expert[static_cast<size_t>(r)])][static_cast<size_t>(o * in + c)];
      want[static_cast<size_t>(r * out + o)] = acc;
    }
  const double err = rel_err(t.download(y.view()), want);
  std::printf("dense %s: rel max-abs err %.3g\n", bf ? "bf16" : "f16", err);
  EXPECT_LT(err, 2e-6);
}

TEST_F(ExpertGemmTest, DenseF16MatchesReference) {
  EXQ_REQUIRE_CUDA();
  dense_case<__half>(*this, DType::F16);
}

TEST_F(ExpertGemmTest, DenseBf16MatchesReference) {
  EXQ_REQUIRE_CUDA();
  dense_case<__nv_bfloat16>(*this, DType::BF16);
}

}  // namespace
}  // namespace exq::cuda
