// gptq_quantize_batch against quant::gptq_quantize, for every distinct option of the attention
// and MLP tables, plus determinism, input dtypes and argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iostream>

#include "backend/cuda/memory.h"
#include "core/error.h"
#include "core/half.h"
#include "gptq_cuda_test_util.h"
#include "io/exl2.h"
#include "quant/cuda/gptq_batch.h"
#include "quant/cuda/gptq_plan.h"
#include "quant/gptq.h"

namespace exq::quant::cuda::test {
namespace {

std::vector<QuantOption> all_table_options() {
  std::vector<QuantOption> all;
  auto add = [&all](const std::vector<QuantOption>& v) {
    for (const QuantOption& o : v)
      if (std::find(all.begin(), all.end(), o) == all.end()) all.push_back(o);
  };
  for (int c = 0; c < 4; ++c) add(distinct_attn_options(c));
  for (int c = 0; c < 3; ++c) add(distinct_mlp_options(c));
  return all;
}

// Options whose layout covers `in` (the CPU refuses the others too).
std::vector<QuantOption> usable_options(int64_t in) {
  std::vector<QuantOption> out;
  for (const QuantOption& o : all_table_options()) {
    try {
      group_layout(o, in);
      out.push_back(o);
    } catch (const Error&) {
    }
  }
  return out;
}

// exllamav2's total_bits, recounted from a layer's own tables (no bias).
int64_t layer_bits(const io::Exl2Linear& l) {
  int64_t bits = 0;
  for (const io::Exl2Group& g : l.groups) bits += g.rows * l.out * g.bits;
  const auto groups = static_cast<int64_t>(l.groups.size());
  return bits + groups * (16 + 32) + groups * l.out * 4 + 32 * l.in;
}

std::vector<float> half_to_floats(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = half_to_float(h[i]);
  return f;
}

struct Layer {
  int64_t out, in;
  std::vector<float> w, h;
  PreparedHessian prepared;
};

Layer make_layer(int64_t out, int64_t in, uint32_t seed) {
  Layer l{out, in, make_weights(out, in, seed), {}, {}};
  const int64_t batches = 4, rows = 512;
  l.h = cpu_hessian(make_inputs(batches * rows, in, seed + 1), batches, rows, in);
  l.prepared = quant::prepare_hessian(l.h, in, 0.12f);
  return l;
}

class GptqBatchTest : public GptqCudaTest, public ::testing::WithParamInterface<GptqImpl> {
 protected:
  // A 576 x 1536 layer on the device with two mixed options and a uniform one.
  struct ThreeOptions {
    Layer layer;
    std::vector<QuantOption> options;
    DevicePreparedHessian dh;
    DeviceTensor wd;
  };
  ThreeOptions three_options(uint32_t seed) {
    ThreeOptions t{make_layer(576, 1536, seed),
                   {parse_option("0.1:4b_32g/0.9:3b_32g"),
                    parse_option("0.05:8b_32g/0.95:4b_128g"), parse_option("1:6b_128g")},
                   {},
                   {}};
    t.dh = upload_prepared(t.layer.prepared);
    t.wd = upload_vec(t.layer.w, DType::F32, {576, 1536});
    return t;
  }

  std::vector<DeviceGptqResult> run(const DeviceView& w, const DevicePreparedHessian& h,
                                    std::span<const QuantOption> options, bool packed,
                                    GptqContext& ctx, const GptqResultHook& hook = {}) {
    return gptq_quantize_batch(w, h, options, packed, ctx, hook, GetParam());
  }

  // GPU vs CPU for every option (default: every usable table option), both from the
  // CPU-prepared Hessian.
  void check_against_cpu(int64_t out, int64_t in, uint32_t seed,
                         std::vector<QuantOption> options = {}) {
    const Layer layer = make_layer(out, in, seed);
    if (options.empty()) options = usable_options(in);
    ASSERT_FALSE(options.empty());
    const DevicePreparedHessian dh = upload_prepared(layer.prepared);
    const DeviceTensor wd = upload_vec(layer.w, DType::F32, {out, in});
    const std::vector<DeviceGptqResult> res = run(wd, dh, options, true, ctx_);
    ASSERT_EQ(res.size(), options.size());
    double worst_codes = 1.0, worst_proxy = 0.0;
    for (size_t k = 0; k < options.size(); ++k) {
      const QuantOption& o = options[k];
      const std::string what = o.desc() + " on [" + std::to_string(out) + ", " +
                               std::to_string(in) + "]";
      const GptqResult cpu = quant::gptq_quantize(layer.w.data(), out, in, layer.prepared, o);
      const io::Exl2Linear& l = res[k].layer;
      EXPECT_EQ(res[k].option, o) << what;
      ASSERT_NO_THROW(io::check_exl2_linear(l, what)) << what;
      // The returned weight is exactly what the packed layer decodes to.
      res[k].weight.view().expect(DType::F16, {out, in}, what);
      const std::vector<uint16_t> wgpu = download_u16(res[k].weight);
      const Tensor deq = io::dequantize_exl2(l, DType::F16);
      ASSERT_EQ(deq.nbytes(), wgpu.size() * 2) << what;
      EXPECT_EQ(0, std::memcmp(deq.raw(), wgpu.data(), deq.nbytes())) << what;
      // Same layout and bits as the CPU.
      ASSERT_EQ(l.groups.size(), cpu.layer.groups.size()) << what;
      for (size_t g = 0; g < l.groups.size(); ++g) {
        EXPECT_EQ(l.groups[g].bits, cpu.layer.groups[g].bits) << what;
        EXPECT_EQ(l.groups[g].row_begin, cpu.layer.groups[g].row_begin) << what;
        EXPECT_EQ(l.groups[g].rows, cpu.layer.groups[g].rows) << what;
      }
      EXPECT_EQ(layer_bits(l), total_bits(o, in, out, false)) << what;
      EXPECT_EQ(layer_bits(l), layer_bits(cpu.layer)) << what;
      EXPECT_EQ(l.perm, cpu.layer.perm) << what;
      EXPECT_EQ(l.invperm, cpu.layer.invperm) << what;
      ASSERT_EQ(l.q.size(), cpu.layer.q.size()) << what;
      ASSERT_EQ(l.qs.size(), cpu.layer.qs.size()) << what;
      ASSERT_EQ(l.scale_max.size(), cpu.layer.scale_max.size()) << what;
      // The first group sees identical inputs: scale search and codes are bit-identical.
      const int64_t g0 = l.groups[0].rows;
      EXPECT_EQ(l.scale_max[0], cpu.layer.scale_max[0]) << what;
      EXPECT_TRUE(std::equal(l.qs.begin(), l.qs.begin() + out, cpu.layer.qs.begin())) << what;
      EXPECT_TRUE(std::equal(l.q.begin(), l.q.begin() + g0 * out, cpu.layer.q.begin())) << what;
      // Later groups differ by f32 summation order only.
      int64_t same = 0;
      for (size_t i = 0; i < l.q.size(); ++i) same += l.q[i] == cpu.layer.q[i];
      const double codes = static_cast<double>(same) / static_cast<double>(l.q.size());
      const double e_gpu = proxy_error(layer.w, half_to_floats(wgpu), layer.h, out, in);
      const double e_cpu = proxy_error(layer.w, cpu.weight, layer.h, out, in);
      const double rel = std::fabs(e_gpu / e_cpu - 1.0);
      std::cout << gptq_impl_name(GetParam()) << " " << what << ": codes equal " << codes
                << ", proxy error gpu " << e_gpu << " cpu " << e_cpu << " (" << rel * 100.0
                << " %)\n";
      EXPECT_GE(codes, 0.95) << what;
      EXPECT_LE(rel, 0.02) << what;
      worst_codes = std::min(worst_codes, codes);
      worst_proxy = std::max(worst_proxy, rel);
    }
    std::cout << gptq_impl_name(GetParam()) << " [" << out << ", " << in << "] " << options.size()
              << " options: worst code agreement " << worst_codes << ", worst proxy deviation "
              << worst_proxy * 100.0 << " %\n";
  }
};

TEST_P(GptqBatchTest, MatchesCpuOddShape) { check_against_cpu(96, 160, 21); }
TEST_P(GptqBatchTest, MatchesCpu576x1536) { check_against_cpu(576, 1536, 22); }
TEST_P(GptqBatchTest, MatchesCpu1536x576) { check_against_cpu(1536, 576, 23); }

// Groups beyond the shared-memory sizes of the row pass (U block > 128 rows, weights > 1024).
TEST_P(GptqBatchTest, LargeGroupsMatchCpu) {
  check_against_cpu(80, 1400, 24,
                    {parse_option("1:4b_256g"), parse_option("0.1:8b_160g/0.9:5b_1280g")});
}

// Hessian, factor and GPTQ all on the GPU: same quality as the CPU pipeline.
TEST_P(GptqBatchTest, EndToEndOnTheGpu) {
  const int64_t out = 576, in = 1536, batches = 4, rows = 512;
  const auto x = make_inputs(batches * rows, in, 31);
  const auto w = make_weights(out, in, 32);
  const auto h = cpu_hessian(x, batches, rows, in);
  const PreparedHessian ph = quant::prepare_hessian(h, in, 0.12f);
  DeviceHessian dh(in, ctx_);
  for (int64_t b = 0; b < batches; ++b)
    dh.add_batch(upload_vec(std::vector<float>(x.begin() + b * rows * in,
                                               x.begin() + (b + 1) * rows * in),
                            DType::F32, {rows, in}));
  const DevicePreparedHessian dp = prepare_hessian(dh.hessian(), 0.12f, ctx_, GetParam());
  const std::vector<QuantOption> options = {parse_option("0.05:3b_64g/0.95:2b_64g"),
                                            parse_option("1:4b_128g"),
                                            parse_option("0.1:5b_32g/0.9:4b_32g"),
                                            parse_option("1:8b_128g")};
  const DeviceTensor wd = upload_vec(w, DType::F32, {out, in});
  const auto res = run(wd, dp, options, false, ctx_);
  for (size_t k = 0; k < options.size(); ++k) {
    EXPECT_TRUE(res[k].layer.q.empty());  // not packed
    const GptqResult cpu = quant::gptq_quantize(w.data(), out, in, ph, options[k]);
    const double e_gpu = proxy_error(w, half_to_floats(download_u16(res[k].weight)), h, out, in);
    const double e_cpu = proxy_error(w, cpu.weight, h, out, in);
    std::cout << "end to end " << options[k].desc() << ": proxy error gpu " << e_gpu << " cpu "
              << e_cpu << "\n";
    EXPECT_LE(std::fabs(e_gpu / e_cpu - 1.0), 0.02) << options[k].desc();
  }
}

TEST_P(GptqBatchTest, RunsTwiceToTheSameBytes) {
  const ThreeOptions t = three_options(41);
  const auto& [layer, options, dh, wd] = t;
  const auto a = run(wd, dh, options, true, ctx_);
  const auto b = run(wd, dh, options, true, ctx_);
  for (size_t k = 0; k < options.size(); ++k) {
    EXPECT_EQ(download_u16(a[k].weight), download_u16(b[k].weight)) << options[k].desc();
    EXPECT_EQ(a[k].layer.q, b[k].layer.q) << options[k].desc();
    EXPECT_EQ(a[k].layer.qs, b[k].layer.qs) << options[k].desc();
    EXPECT_EQ(a[k].layer.scale_max, b[k].layer.scale_max) << options[k].desc();
  }
}

// GptqContext::packed_to (the quantization pass): v2 copies the packed tensors and the
// act-order to pinned memory without a wait, also without a host perm (prepare_hessian_async's
// result), and take_packed() completes the same layers; v1 downloads into the layer as before.
TEST_P(GptqBatchTest, PackedToPinnedMemoryGivesTheSameLayers) {
  const ThreeOptions t = three_options(43);
  const auto& [layer, options, dh, wd] = t;
  const auto want = run(wd, dh, options, true, ctx_);
  DevicePreparedHessian device_perm = upload_prepared(layer.prepared);
  device_perm.perm.clear();
  device_perm.invperm_d =
      upload_vec(inverse_permutation(layer.prepared.perm), DType::I32, {1536});
  const bool v2 = GetParam() == GptqImpl::kV2;
  std::vector<exq::cuda::PinnedBuffer> pinned(options.size());
  int waits = 0;
  GptqContext deferred = ctx_;
  deferred.wait = [&waits](cudaStream_t s, const char*) {
    ++waits;
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  };
  deferred.packed_to = [&pinned](size_t k, size_t bytes) {
    pinned.at(k) = exq::cuda::PinnedBuffer(bytes);
    return pinned[k].data();
  };
  const DevicePreparedHessian* const prepared[] = {&dh, &device_perm};
  for (const DevicePreparedHessian* h : prepared) {
    if (!v2 && h == &device_perm) continue;  // v1 packs with the host perm only
    SCOPED_TRACE(h == &dh ? "host perm" : "device perm only");
    waits = 0;
    std::vector<DeviceGptqResult> got = run(wd, *h, options, true, deferred);
    EXPECT_EQ(waits, v2 ? 0 : 1);
    ASSERT_EQ(cudaStreamSynchronize(stream()), cudaSuccess);
    for (size_t k = 0; k < options.size(); ++k) {
      EXPECT_EQ(got[k].packed.data != nullptr, v2) << options[k].desc();
      take_packed(got[k].layer, got[k].packed);
      const io::Exl2Linear &a = got[k].layer, &b = want[k].layer;
      EXPECT_EQ(download_u16(got[k].weight), download_u16(want[k].weight)) << options[k].desc();
      EXPECT_EQ(a.in, b.in);
      EXPECT_EQ(a.out, b.out);
      EXPECT_EQ(a.groups.size(), b.groups.size()) << options[k].desc();
      EXPECT_EQ(a.q, b.q) << options[k].desc();
      EXPECT_EQ(a.qs, b.qs) << options[k].desc();
      EXPECT_EQ(a.scale_max, b.scale_max) << options[k].desc();
      EXPECT_EQ(a.perm, b.perm) << options[k].desc();
      EXPECT_EQ(a.invperm, b.invperm) << options[k].desc();
    }
  }
}

// f16 / bf16 weights give exactly what their values widened to f32 give.
TEST_P(GptqBatchTest, HalfInputsMatchTheirF32Values) {
  const Layer layer = make_layer(96, 160, 51);
  const DevicePreparedHessian dh = upload_prepared(layer.prepared);
  const std::vector<QuantOption> options = {parse_option("0.1:5b_32g/0.9:4b_32g")};
  for (DType dtype : {DType::F16, DType::BF16}) {
    std::vector<uint16_t> w16(layer.w.size());
    std::vector<float> widened(layer.w.size());
    for (size_t i = 0; i < w16.size(); ++i) {
      w16[i] = dtype == DType::F16 ? float_to_half(layer.w[i]) : float_to_bf16(layer.w[i]);
      widened[i] = dtype == DType::F16 ? half_to_float(w16[i]) : bf16_to_float(w16[i]);
    }
    const auto r16 = run(upload_vec(w16, dtype, {96, 160}), dh, options, false, ctx_);
    const auto r32 = run(upload_vec(widened, DType::F32, {96, 160}), dh, options, false, ctx_);
    EXPECT_EQ(download_u16(r16[0].weight), download_u16(r32[0].weight));
  }
}

TEST_P(GptqBatchTest, ChecksItsArguments) {
  const Layer layer = make_layer(64, 96, 61);
  const DevicePreparedHessian dh = upload_prepared(layer.prepared);
  const std::vector<QuantOption> ok = {parse_option("1:4b_32g")};
  EXPECT_TRUE(run(upload_vec(layer.w, DType::F32, {64, 96}), dh, {}, true, ctx_)
                  .empty());
  EXPECT_THROW(run(empty(DType::F32, {64, 95}), dh, ok, false, ctx_), Error);
  EXPECT_THROW(run(empty(DType::I32, {64, 96}), dh, ok, false, ctx_), Error);
  EXPECT_THROW(run(empty(DType::F32, {64, 96, 1}), dh, ok, false, ctx_), Error);
  const std::vector<QuantOption> coarse = {parse_option("0.05:8b_32g/0.95:4b_128g")};
  EXPECT_THROW(run(empty(DType::F32, {64, 16}), dh, coarse, false, ctx_), Error);
  DevicePreparedHessian no_u;
  no_u.in = 96;
  no_u.perm = layer.prepared.perm;
  EXPECT_THROW(run(empty(DType::F32, {64, 96}), no_u, ok, false, ctx_), Error);
  GptqContext no_cublas{&alloc(), stream(), nullptr, nullptr};
  EXPECT_THROW(run(empty(DType::F32, {64, 96}), dh, ok, false, no_cublas), Error);
}

// v2 only: an option's results do not depend on the options batched with it (so neither on the
// VRAM budget), and options with groups larger than the block (run by v1) mix with the others.
TEST_P(GptqBatchTest, ResultsDoNotDependOnTheBatch) {
  const Layer layer = make_layer(576, 1536, 71);
  const std::vector<QuantOption> options = {parse_option("0.05:8b_32g/0.1:4b_128g/0.85:3b_128g"),
                                            parse_option("1:4b_256g"),
                                            parse_option("0.1:4b_32g/0.9:3b_32g"),
                                            parse_option("1:8b_128g")};
  const DevicePreparedHessian dh = upload_prepared(layer.prepared);
  const DeviceTensor wd = upload_vec(layer.w, DType::F32, {576, 1536});
  std::vector<size_t> hooked;
  const auto all = run(wd, dh, options, true, ctx_,
                       [&](size_t k, DeviceGptqResult& r) {
                         EXPECT_EQ(r.option, options[k]);
                         hooked.push_back(k);
                       });
  std::sort(hooked.begin(), hooked.end());
  EXPECT_EQ(hooked, (std::vector<size_t>{0, 1, 2, 3}));
  for (size_t k = 0; k < options.size(); ++k) {
    const auto one = run(wd, dh, std::span<const QuantOption>(&options[k], 1), true, ctx_);
    EXPECT_EQ(download_u16(all[k].weight), download_u16(one[0].weight)) << options[k].desc();
    EXPECT_EQ(all[k].layer.q, one[0].layer.q) << options[k].desc();
    EXPECT_EQ(all[k].layer.qs, one[0].layer.qs) << options[k].desc();
    EXPECT_EQ(all[k].layer.scale_max, one[0].layer.scale_max) << options[k].desc();
  }
}

INSTANTIATE_TEST_SUITE_P(Impl, GptqBatchTest, ::testing::Values(GptqImpl::kV1, GptqImpl::kV2),
                         [](const ::testing::TestParamInfo<GptqImpl>& info) {
                           return std::string(gptq_impl_name(info.param));
                         });

// v2 with other block and super-block sizes (EXQ_GPTQ_BLOCK, EXQ_GPTQ_SUPER): still the CPU's
// results (B = 64: the 128-row groups go through v1).
class GptqBlockTest : public GptqBatchTest {};

TEST_P(GptqBlockTest, OtherBlockSizesMatchCpu) {
  for (const auto& [block, super] : {std::pair{"256", "1024"}, std::pair{"128", "128"},
                                     std::pair{"64", "256"}, std::pair{"128", "256"}}) {
    struct Env {
      Env(const char* b, const char* s) {
        setenv("EXQ_GPTQ_BLOCK", b, 1);
        setenv("EXQ_GPTQ_SUPER", s, 1);
      }
      ~Env() {
        unsetenv("EXQ_GPTQ_BLOCK");
        unsetenv("EXQ_GPTQ_SUPER");
      }
    } env(block, super);
    std::cout << "EXQ_GPTQ_BLOCK=" << block << " EXQ_GPTQ_SUPER=" << super << "\n";
    check_against_cpu(576, 1536, 22);
    check_against_cpu(80, 1400, 24,
                      {parse_option("1:4b_256g"), parse_option("0.1:8b_160g/0.9:5b_1280g")});
  }
}

INSTANTIATE_TEST_SUITE_P(Impl, GptqBlockTest, ::testing::Values(GptqImpl::kV2),
                         [](const ::testing::TestParamInfo<GptqImpl>& info) {
                           return std::string(gptq_impl_name(info.param));
                         });

}  // namespace
}  // namespace exq::quant::cuda::test
