// CUDA EXL2 GEMV launch variants against plain exl2_gemv, bit for bit: x staged by its producer
// (the decode attention's path for the o projection), graph replay, the SwiGLU staged into the
// down projection and group launches. (Exl2Gemv.* in exl2_gemv_test.cpp checks the GEMV itself
// against the CPU; these four were Exl2Gemv.* there until session 9.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise.h"
#include "backend/cuda/exl2_gemv.h"
#include "cuda_test_util.h"
#include "exl2_test_layers.h"

namespace exq::cuda {
namespace {

using namespace exl2_test;

class Exl2GemvLaunch : public test::CudaTest {};

// A producer that writes the batch-1 staged x itself (f16 x[c] at x_pos[c], 0 at the padding
// rows x_pad, step scales 1, as the decode attention does for the o projection) gets the bits of
// exl2_gemv with that f16 x: uniform and mixed widths, 32-row groups, and 1000 / 576 inputs
// (last steps with padding rows).
TEST_F(Exl2GemvLaunch, StagedInputMatchesF16Gemv) {
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
TEST_F(Exl2GemvLaunch, GraphReplayMatchesDirectLaunches) {
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
// GEMV, for uniform and mixed widths, batch 1..8, K split with clusters and partial sums; and
// gemma's GeGLU the same way.
TEST_F(Exl2GemvLaunch, SwigluInputMatchesSwigluThenGemv) {
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
      for (const bool gelu : {false, true})
      for (int64_t b = 1; b <= kExl2MaxBatch; ++b) {
        const std::string what = name + " split " + std::to_string(sp.ksplit) + "/" +
                                 std::to_string(sp.ksub) + " batch " + std::to_string(b) + (gelu ? " gelu" : "");
        DeviceTensor dg = upload(Tensor::copy_of(gate.view().slice0(0, b)));
        DeviceTensor du = upload(Tensor::copy_of(up.view().slice0(0, b)));
        DeviceTensor act = empty(DType::F32, {b, in});
        swiglu(dg, du, act, stream(), gelu);
        DeviceTensor want = empty(DType::F32, {b, out}), got = empty(DType::F32, {b, out});
        CUDA_CHECK(cudaMemsetAsync(got.raw(), 0xff, got.nbytes(), stream()));
        exl2_gemv(layer, act, want, ws, stream());
        exl2_gemv_swiglu(layer, dg, du, got, ws, stream(), true, gelu);
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
TEST_F(Exl2GemvLaunch, GroupLaunchMatchesEachLayer) {
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
    // The group launch and each layer's own GEMV on the first b rows of xs: {group, layer}.
    auto run_both = [&](const Tensor& xs, int64_t b, Exl2Workspace& ws) {
      DeviceTensor dx = upload(Tensor::copy_of(xs.view().slice0(0, b)));
      std::vector<DeviceTensor> gy;
      std::vector<DeviceView> views;
      for (size_t i = 0; i < n; ++i) {
        gy.push_back(empty(DType::F32, {b, outs[i]}));
        CUDA_CHECK(cudaMemsetAsync(gy.back().raw(), 0xff, gy.back().nbytes(), stream()));
        views.push_back(gy.back());
      }
      exl2_gemv_group(group, dx, views, ws, stream());
      std::vector<std::pair<Tensor, Tensor>> got_want;
      for (size_t i = 0; i < n; ++i) {
        DeviceTensor ly = empty(DType::F32, {b, outs[i]});
        exl2_gemv(layers[i], dx, ly, ws, stream());
        got_want.emplace_back(download(gy[i]), download(ly));
      }
      return got_want;
    };
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
            const auto got_want = run_both(*xs, b, ws);
            for (size_t i = 0; i < n; ++i) {
              const auto& [got, want] = got_want[i];
              EXPECT_EQ(std::memcmp(got.raw(), want.raw(), got.nbytes()), 0) << what << " layer " << i;
            }
          }
      }
    }
    // Layers of several widths with a run per warp, against each layer through kernel 2 alone
    // (another launch shape: the same sums in another order).
    if (group.width() == 0) {
      ASSERT_TRUE(group.set_runs()) << "set " << set;
      for (Exl2Layer& l : layers) l.set_kernel(2);
      Exl2Workspace ws;
      ws.reserve(group, stream());
      for (const Exl2Layer& l : layers) ws.reserve(l, stream());
      for (int64_t b : {int64_t{1}, int64_t{5}}) {
        const auto got_want = run_both(x32, b, ws);
        for (size_t i = 0; i < n; ++i) {
          const auto& [got, want] = got_want[i];
          float scale = 0.0f;
          for (int64_t k = 0; k < want.numel(); ++k)
            scale = std::max(scale, std::fabs(want.data<float>()[k]));
          int bad = 0;
          for (int64_t k = 0; k < want.numel(); ++k) {
            const float g = got.data<float>()[k], w = want.data<float>()[k];
            if (!(std::fabs(g - w) <= 2e-5f * scale + 1e-6f) && bad++ < 3)
              ADD_FAILURE() << "set " << set << " a run per warp, batch " << b << " layer " << i
                            << " y[" << k << "] " << g << " vs " << w;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace exq::cuda
