// The MoE indirection of the EXL2 GEMV: layers of one layout (exl2_same_layout) and a launch of
// the first shifted by a device int64 (exl2_shift_bytes) onto another, single (with SwiGLU) and
// grouped, bit-identical to that layer's own launch with the same split; layouts that differ are
// told apart. The MoE decode's grouped launch of k routed experts (exl2_gemv_moe) is
// bit-identical to its per-slot launches.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <tuple>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_gemv.h"
#include "core/error.h"
#include "cuda_test_util.h"
#include "exl2_test_layers.h"
#include "io/exl2.h"

namespace exq::cuda {
namespace {

using test::CudaTest;
using namespace exl2_test;

class Exl2Shift : public CudaTest {
 protected:
  // A random layer of `bits_rows` groups uploaded, seeded by `seed` (same layout for one bits_rows).
  using Layer = UploadedLayer;
  std::unique_ptr<Layer> make(const std::vector<std::pair<int, int64_t>>& bits_rows, int64_t out, uint32_t seed) {
    return upload_random_layer(bits_rows, out, seed, stream(), "shift test");
  }
  Tensor random_x(int64_t rows, int64_t in, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Tensor x(DType::F32, {rows, in});
    for (float& v : x.span<float>()) v = nd(rng);
    return x;
  }
  DeviceTensor shifts(const std::vector<int64_t>& v) {
    Tensor t(DType::U8, {static_cast<int64_t>(v.size() * 8)});
    std::memcpy(t.raw(), v.data(), v.size() * 8);
    return upload(t);
  }
};

TEST_F(Exl2Shift, ShiftedLaunchesEqualTheTargetLayer) {
  EXQ_REQUIRE_CUDA();
  // Mixed widths and a short last group (the MoE experts' typical options), kernel 2.
  const std::vector<std::pair<int, int64_t>> groups = {{6, 32}, {4, 64}, {4, 64}, {3, 32}, {5, 32}, {4, 16}};
  const int64_t out = 200;
  auto a = make(groups, out, 1), b = make(groups, out, 2), c = make(groups, out, 3);
  ASSERT_TRUE(exl2_same_layout(a->gpu, b->gpu));
  ASSERT_TRUE(exl2_same_layout(a->gpu, c->gpu));
  a->gpu.set_kernel(2);
  b->gpu.set_kernel(2);
  c->gpu.set_kernel(2);
  const int64_t in = a->gpu.in();
  Exl2LayerGroup ga({&a->gpu, &a->gpu}), gbc({&b->gpu, &c->gpu});
  ga.set_kernel(2);
  gbc.set_split(ga.split());
  Exl2Workspace ws;
  for (const Exl2Layer* l : {&a->gpu, &b->gpu, &c->gpu}) ws.reserve(*l, stream());
  ws.reserve(ga, stream());
  ws.reserve(gbc, stream());
  const DeviceTensor sh = shifts({exl2_shift_bytes(a->gpu, b->gpu), exl2_shift_bytes(a->gpu, c->gpu)});
  const auto* s = static_cast<const int64_t*>(sh.raw());
  for (int64_t rows : {1, 3, 8}) {
    const DeviceTensor x = upload(random_x(rows, in, 10 + static_cast<uint32_t>(rows)));
    const DeviceTensor up = upload(random_x(rows, in, 20 + static_cast<uint32_t>(rows)));
    DeviceTensor y0 = empty(DType::F32, {rows, out}), y1 = empty(DType::F32, {rows, out});
    DeviceTensor y2 = empty(DType::F32, {rows, out}), y3 = empty(DType::F32, {rows, out});
    // Single layer with SwiGLU: a shifted onto b against b.
    exl2_gemv_swiglu(b->gpu, x, up, y0, ws, stream());
    exl2_gemv_swiglu(a->gpu, x, up, y1, ws, stream(), true, false, s);
    // Group: (a, a) shifted onto (b, c) against the (b, c) group.
    exl2_gemv_group(gbc, x, {y2.view(), y3.view()}, ws, stream());
    const Tensor want_b = download(y2), want_c = download(y3);
    exl2_gemv_group(ga, x, {y2.view(), y3.view()}, ws, stream(), true, {s, s + 1});
    const Tensor got0 = download(y0), got1 = download(y1), got_b = download(y2), got_c = download(y3);
    EXPECT_EQ(std::memcmp(got0.raw(), got1.raw(), got0.nbytes()), 0) << "swiglu, rows " << rows;
    EXPECT_EQ(std::memcmp(want_b.raw(), got_b.raw(), got_b.nbytes()), 0) << "group b, rows " << rows;
    EXPECT_EQ(std::memcmp(want_c.raw(), got_c.raw(), got_c.nbytes()), 0) << "group c, rows " << rows;
    EXPECT_NE(std::memcmp(got_b.raw(), got_c.raw(), got_c.nbytes()), 0);  // two layers, two results
  }
  // Other widths or group sizes: another layout.
  auto d = make({{6, 32}, {4, 64}, {4, 64}, {3, 32}, {4, 32}, {4, 16}}, out, 4);
  auto e = make(groups, out + 32, 5);
  EXPECT_FALSE(exl2_same_layout(a->gpu, d->gpu));
  EXPECT_FALSE(exl2_same_layout(a->gpu, e->gpu));
  // Kernel 1 refuses a shift.
  a->gpu.set_kernel(1);
  ws.reserve(a->gpu, stream());
  const DeviceTensor x = upload(random_x(1, in, 30));
  DeviceTensor y = empty(DType::F32, {1, out});
  EXPECT_THROW(exl2_gemv_swiglu(a->gpu, x, x, y, ws, stream(), true, false, s), Error);
}

TEST_F(Exl2Shift, GroupedMoeLaunchEqualsPerSlotLaunches) {
  EXQ_REQUIRE_CUDA();
  // Experts of 2-6 bit mixed layouts: gate and up (of different layouts: the group's width 0),
  // down; every expert its own copy with its own permutation.
  const std::vector<std::pair<int, int64_t>> gate_groups = {{2, 64}, {3, 64}, {4, 32}, {5, 32}, {6, 64}};
  const std::vector<std::pair<int, int64_t>> up_groups = {{6, 32}, {5, 64}, {4, 64}, {3, 64}, {2, 32}};
  const std::vector<std::pair<int, int64_t>> down_groups = {{4, 64}, {2, 32}, {6, 32}, {3, 32}, {5, 32}, {4, 16}};
  const int64_t hidden = 256, inter = 208;
  constexpr int kExperts = 10;
  std::vector<std::unique_ptr<Layer>> gate, up, down;
  for (uint32_t e = 0; e < kExperts; ++e) {
    gate.push_back(make(gate_groups, inter, 100 + e));
    up.push_back(make(up_groups, inter, 200 + e));
    down.push_back(make(down_groups, hidden, 300 + e));
  }
  for (int e = 0; e < kExperts; ++e) {
    ASSERT_TRUE(exl2_same_layout(gate[0]->gpu, gate[static_cast<size_t>(e)]->gpu));
    ASSERT_TRUE(exl2_same_layout(up[0]->gpu, up[static_cast<size_t>(e)]->gpu));
    ASSERT_TRUE(exl2_same_layout(down[0]->gpu, down[static_cast<size_t>(e)]->gpu));
  }
  Exl2Layer& down0 = down[0]->gpu;
  down0.set_kernel(2);
  Exl2LayerGroup gate_up({&gate[0]->gpu, &up[0]->gpu}), down_g({&down0});
  gate_up.set_kernel(2);
  down_g.set_split(down0.split());
  EXPECT_FALSE(exl2_moe_grouped(gate_up, kExl2MoeMaxSlots + 1));
  // The chooser's splits (K split through partial sums), the same through clusters, then a run
  // per warp (Exl2Split::runs, the split of large mixed-width experts).
  for (const int variant : {0, 1, 2}) {
    if (variant == 1) {
      if (!exl2_gemv_hopper()) continue;  // clusters
      Exl2Split a = gate_up.split(), b = down0.split();
      a.cluster = b.cluster = true;
      gate_up.set_split(a);
      down0.set_split(b);
      down_g.set_split(b);
    } else if (variant == 2) {
      down0.set_runs();
      down_g.set_split(down0.split());
      gate_up.set_runs();
    }
    for (int k : {1, 2, 8}) {
      Exl2Workspace ws;
      ws.reserve(gate_up, stream());
      ws.reserve(down0, stream());
      ASSERT_TRUE(exl2_moe_grouped(gate_up, k));
      ASSERT_TRUE(exl2_moe_grouped(down_g, k));
      // Slot s routed to expert (3 s + 1) mod 10, (gate, up, down) shifts per slot as the router's.
      std::vector<int64_t> sv;
      for (int i = 0; i < k; ++i) {
        const size_t e = static_cast<size_t>((3 * i + 1) % kExperts);
        sv.push_back(exl2_shift_bytes(gate[0]->gpu, gate[e]->gpu));
        sv.push_back(exl2_shift_bytes(up[0]->gpu, up[e]->gpu));
        sv.push_back(exl2_shift_bytes(down0, down[e]->gpu));
      }
      const DeviceTensor sh = shifts(sv);
      const auto* s = static_cast<const int64_t*>(sh.raw());
      const DeviceTensor x = upload(random_x(1, hidden, 40 + static_cast<uint32_t>(k)));
      DeviceTensor g0 = empty(DType::F32, {k, inter}), u0 = empty(DType::F32, {k, inter});
      DeviceTensor y0 = empty(DType::F32, {k, hidden});
      for (int i = 0; i < k; ++i) {
        const DeviceView gi = g0.view().slice0(i, i + 1), ui = u0.view().slice0(i, i + 1);
        exl2_gemv_group(gate_up, x, {gi, ui}, ws, stream(), true, {s + 3 * i, s + 3 * i + 1});
        exl2_gemv_swiglu(down0, gi, ui, y0.view().slice0(i, i + 1), ws, stream(), true, false, s + 3 * i + 2);
      }
      const size_t gu_bytes = exl2_moe_scratch_bytes(gate_up, k), d_bytes = exl2_moe_scratch_bytes(down_g, k);
      DeviceTensor scratch = empty(DType::U8, {static_cast<int64_t>(gu_bytes + d_bytes)});
      DeviceTensor g1 = empty(DType::F32, {k, inter}), u1 = empty(DType::F32, {k, inter});
      DeviceTensor y1 = empty(DType::F32, {k, hidden});
      auto* sp = static_cast<uint8_t*>(scratch.raw());
      exl2_gemv_moe(gate_up, k, x, nullptr, {g1.view(), u1.view()}, s, 3, sp, gu_bytes, stream());
      const DeviceView u1v = u1.view();
      exl2_gemv_moe(down_g, k, g1, &u1v, {y1.view()}, s + 2, 3, sp + gu_bytes, d_bytes, stream());
      const std::tuple<const DeviceTensor*, const DeviceTensor*, const char*> pairs[] = {
          {&g0, &g1, "gate"}, {&u0, &u1, "up"}, {&y0, &y1, "down"}};
      for (const auto& [want, got, what] : pairs) {
        const Tensor a = download(*want), b = download(*got);
        EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what << ", k " << k << ", variant " << variant;
      }
      if (k > 1) {  // slots read their own experts
        const Tensor y = download(y1);
        EXPECT_NE(std::memcmp(y.raw(), static_cast<const char*>(y.raw()) + hidden * 4, hidden * 4), 0);
      }
    }
  }
}

}  // namespace
}  // namespace exq::cuda
