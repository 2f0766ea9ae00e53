// Host checks of the CUDA EXL2 device layout (no GPU needed): the bit arrangement of a
// unit-column round-trips through the kernels' pair extraction for every width, the upload plan
// (runs, units, steps, x_map) covers every q_weight word and input row exactly once with the
// addresses the kernel computes, and the chosen launch shapes are valid and fit one wave.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <algorithm>
#include <utility>
#include <vector>

#include "backend/cuda/exl2_layout.h"
#include "backend/cuda/exl2_plan.h"
#include "core/half.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

template <int B, int... J>
void check_pairs(const uint32_t* v, const uint32_t* w, std::integer_sequence<int, J...>) {
  auto one = [&](auto jc) {
    constexpr int j = decltype(jc)::value;
    const uint32_t p = exl2::pair_bits<B, j>(w);
    constexpr int o = exl2::pair_offset<B, j>();
    for (int h = 0; h < 2; ++h) {
      const uint32_t half = p >> (16 * h) & 0xffffu;
      ASSERT_EQ(half & 0xfc00u, 0x6400u) << "bits " << B << " pair " << j;
      ASSERT_EQ(half & ((1u << o) - 1u), 0u) << "bits " << B << " pair " << j;
      ASSERT_EQ((half & 0x3ffu) >> o, v[j + 16 * h]) << "bits " << B << " pair " << j << " half " << h;
    }
  };
  (one(std::integral_constant<int, J>{}), ...);
}

// Kernel 2's offset decode (M = offset_magic(o)): each half reads as 2^(10 - o) + q exactly, and
// offset_const is that constant plus the zero point.
template <int B, int... J>
void check_offset_pairs(const uint32_t* v, const uint32_t* w, std::integer_sequence<int, J...>) {
  auto one = [&](auto jc) {
    constexpr int j = decltype(jc)::value;
    constexpr int o = exl2::pair_offset<B, j>();
    const uint32_t p = exl2::pair_bits<B, j, exl2::offset_magic(o)>(w);
    ASSERT_EQ(exl2::offset_const(B, j), float((1 << (10 - o)) + (1 << (B - 1))));
    for (int h = 0; h < 2; ++h)
      ASSERT_EQ(half_to_float(static_cast<uint16_t>(p >> (16 * h))),
                float((1 << (10 - o)) + int(v[j + 16 * h])))
          << "bits " << B << " pair " << j << " half " << h;
  };
  (one(std::integral_constant<int, J>{}), ...);
}

template <int B>
void round_trip(std::mt19937& rng) {
  for (int rep = 0; rep < 200; ++rep) {
    uint32_t v[32], w[8] = {};
    for (uint32_t& x : v) x = rng() % (1u << B);
    if (rep == 0)
      for (uint32_t& x : v) x = (1u << B) - 1u;  // all ones: no field may spill into another
    exl2::encode_unit(B, v, w);
    check_pairs<B>(v, w, std::make_integer_sequence<int, exl2::kPairs>{});
    check_offset_pairs<B>(v, w, std::make_integer_sequence<int, exl2::kPairs>{});
  }
}

TEST(Exl2Layout, EveryWidthRoundTripsThroughThePairExtraction) {
  std::mt19937 rng(3);
  round_trip<2>(rng);
  round_trip<3>(rng);
  round_trip<4>(rng);
  round_trip<5>(rng);
  round_trip<6>(rng);
  round_trip<8>(rng);
}

TEST(Exl2Layout, StreamValuesReadExllamaPacking) {
  // 3-bit values 0..7 repeated, packed little-endian across word boundaries.
  uint32_t s[3] = {};
  for (int k = 0; k < 32; ++k) {
    const uint32_t q = static_cast<uint32_t>(k % 8);
    const int bit = 3 * k;
    s[bit / 32] |= q << (bit % 32);
    if (bit % 32 > 29) s[bit / 32 + 1] |= q >> (32 - bit % 32);
  }
  for (int k = 0; k < 32; ++k) EXPECT_EQ(exl2::stream_value(s, 3, k), static_cast<uint32_t>(k % 8)) << k;
}

struct HostLayer {
  std::vector<Exl2HostGroup> groups;
  std::vector<int32_t> perm;
  std::vector<uint16_t> smax;
  Exl2HostLayer h;
  explicit HostLayer(const std::vector<std::pair<int, int64_t>>& bits_rows, uint32_t seed = 1) {
    int64_t row = 0, word = 0;
    for (const auto& [b, r] : bits_rows) {
      groups.push_back({b, row, r, word});
      row += r;
      word += (r * b + 31) / 32;
    }
    perm.resize(static_cast<size_t>(row));
    for (int64_t i = 0; i < row; ++i) perm[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
    smax.assign(groups.size(), 0x3c00);
    h.in = row;
    h.out = 64;
    h.q_weight_rows = word;
    h.q_scale_max = smax.data();
    h.q_perm = perm.data();
    h.groups = groups.data();
    h.num_groups = static_cast<int64_t>(groups.size());
  }
};

// The kernel's address of word i of unit t in step s (exl2_gemv.cu load_stage).
int kernel_row(const Exl2Segment& seg, int s, int t, int i) {
  const int ls = s - seg.first_step;
  const int n = std::min(4, seg.units - 4 * ls);
  return seg.row + 4 * ls * seg.bits + t + i * n;
}

void check_plan(const std::vector<std::pair<int, int64_t>>& bits_rows, size_t want_segments) {
  const HostLayer l(bits_rows);
  const Exl2Plan p = exl2_plan(l.h, "layer");
  EXPECT_EQ(p.segments.size(), want_segments);
  std::vector<int> row_hits(static_cast<size_t>(p.tile_rows), 0);
  std::vector<int> input_hits(static_cast<size_t>(l.h.in), 0);
  int next_step = 0;
  for (const Exl2Segment& s : p.segments) {
    EXPECT_EQ(s.first_step, next_step);
    next_step += s.steps;
    EXPECT_EQ(s.steps, (s.units + 3) / 4);
  }
  EXPECT_EQ(next_step, p.num_steps);
  for (const Exl2Unit& u : p.units) {
    const int bits = u.info & 0xff, rows = (u.info >> 8) & 0xff, stride = (u.info >> 16) & 0xff;
    const int step = u.slot / 4, t = u.slot % 4;
    const Exl2Segment* seg = nullptr;
    for (const Exl2Segment& s : p.segments)
      if (step >= s.first_step && step < s.first_step + s.steps) seg = &s;
    ASSERT_NE(seg, nullptr);
    EXPECT_EQ(seg->bits, bits);
    // The kernel's group arithmetic names the unit's group.
    const int k = (step - seg->first_step) * 4 + t;
    const int gi = seg->group_shift >= 0 ? k >> seg->group_shift : k / seg->units_per_group;
    EXPECT_EQ(seg->first_group + std::min(gi, seg->groups - 1), u.group);
    if (k < seg->units - seg->units % 4 && seg->group_shift >= 0) {
      // Kernel 2 (full steps): the group without a clamp, and with >= 4 units per group the
      // 4 units of a step share it (its quad lanes exchange the column scales).
      EXPECT_EQ(seg->first_group + (k >> seg->group_shift), u.group);
      if (seg->group_shift >= 2) {
        EXPECT_EQ(seg->first_group + ((k & ~3) >> seg->group_shift), u.group);
      }
    }
    const Exl2HostGroup& g = l.groups[static_cast<size_t>(u.group)];
    EXPECT_EQ(bits, g.bits);
    for (int i = 0; i < bits; ++i) {
      EXPECT_EQ(kernel_row(*seg, step, t, i), u.row + i * stride);
      ++row_hits[static_cast<size_t>(u.row + i * stride)];
    }
    EXPECT_GE(u.src_word, g.word_begin);
    EXPECT_LE(u.src_word + (rows * bits + 31) / 32, g.word_begin + (g.rows * bits + 31) / 32);
    for (int r = 0; r < 32; ++r) {
      const int32_t ch = p.x_map[static_cast<size_t>(u.slot) * 32 + (r % 16) * 2 + r / 16];
      if (r >= rows) {
        EXPECT_EQ(ch, -1);
        continue;
      }
      const int64_t permuted = g.row_begin + (u.src_word - g.word_begin) / bits * 32 + r;
      EXPECT_EQ(ch, l.perm[static_cast<size_t>(permuted)]);
      ++input_hits[static_cast<size_t>(ch)];
    }
  }
  for (int h : row_hits) ASSERT_EQ(h, 1);
  for (int h : input_hits) ASSERT_EQ(h, 1);
}

std::vector<std::pair<int, int64_t>> uniform(int bits, int64_t gs, int64_t in) {
  std::vector<std::pair<int, int64_t>> v;
  for (int64_t r = 0; r < in; r += gs) v.push_back({bits, std::min(gs, in - r)});
  return v;
}

TEST(Exl2Layout, PlanCoversEveryWordAndRowOnce) {
  check_plan(uniform(4, 128, 576), 1);   // short last group joins the run
  check_plan(uniform(3, 32, 608), 1);
  check_plan(uniform(6, 64, 4096), 1);
  check_plan({{8, 32}, {6, 16}, {5, 32}, {4, 32}, {3, 32}, {2, 16}, {6, 64}, {4, 128}, {3, 96}, {2, 4}}, 10);
  std::vector<std::pair<int, int64_t>> ex = uniform(8, 32, 224);  // 0.05:8b_32g/0.1:4b_128g/0.85:3b_128g
  for (const auto& g : uniform(4, 128, 512)) ex.push_back(g);
  for (const auto& g : uniform(3, 128, 4096 - 736)) ex.push_back(g);
  check_plan(ex, 3);
  check_plan({{4, 48}, {4, 48}, {4, 48}, {5, 100}, {5, 28}}, 2);
}

// A run per warp (Exl2Split::runs) counts each run padded to whole warp slices.
TEST(Exl2Layout, RunStepsPadEachRunToWarpSlices) {
  std::vector<std::pair<int, int64_t>> g = uniform(8, 32, 224);  // 0.05:8b_32g/0.1:4b_128g/0.85:3b_128g
  for (const auto& x : uniform(4, 128, 512)) g.push_back(x);
  for (const auto& x : uniform(3, 128, 4096 - 736)) g.push_back(x);
  const HostLayer l(g);
  const Exl2Plan p = exl2_plan(l.h, "layer");
  Exl2Desc d;
  d.num_segments = static_cast<int>(p.segments.size());
  std::copy(p.segments.begin(), p.segments.end(), d.segments);
  // Runs of 7 units (2 steps), 16 units (4 steps) and 105 units (27 steps, the last short).
  ASSERT_EQ(d.num_segments, 3);
  EXPECT_EQ(d.segments[0].steps + d.segments[1].steps + d.segments[2].steps, 33);
  EXPECT_EQ(exl2_run_steps(d, 1), 33);
  EXPECT_EQ(exl2_run_steps(d, 4), 4 + 4 + 28);
  EXPECT_EQ(exl2_run_steps(d, 9), 9 + 9 + 27);
  EXPECT_EQ(exl2_run_steps(d, 32), 96);
}

TEST(Exl2Layout, Kernel2RunsPowerOfTwoUnitGroups) {
  auto supports = [](const std::vector<std::pair<int, int64_t>>& g) {
    const HostLayer l(g);
    const Exl2Plan p = exl2_plan(l.h, "layer");
    Exl2Desc d;
    d.num_segments = static_cast<int>(p.segments.size());
    std::copy(p.segments.begin(), p.segments.end(), d.segments);
    return exl2_gemv2_supports(d);
  };
  EXPECT_TRUE(supports(uniform(4, 128, 4096)));
  EXPECT_TRUE(supports(uniform(3, 32, 608)));
  EXPECT_TRUE(supports(uniform(6, 64, 4096)));
  EXPECT_TRUE(supports(uniform(4, 256, 4096)));
  EXPECT_FALSE(supports({{4, 96}, {4, 96}}));  // 3 units per group: a division
  Exl2Split s;
  s.kernel = 3;
  EXPECT_STREQ(exl2_split_problem(s, 4, 4, true), "kernel must be 1 or 2");
}

TEST(Exl2Layout, TooManyRunsIsAnError) {
  std::vector<std::pair<int, int64_t>> g;
  for (int i = 0; i < 17; ++i) g.push_back({i % 2 ? 4 : 3, 32});
  const HostLayer l(g);
  test::expect_error([&] { exl2_plan(l.h, "L"); }, "at most");
}

TEST(Exl2Layout, ChosenSplitsAreValidAndFitOneWave) {
  for (const auto& [in, out] : std::vector<std::pair<int, int>>{
           {4096, 4096}, {4096, 1024}, {4096, 14336}, {14336, 4096}, {576, 192}, {8192, 64}, {4096, 128256},
           {4096, 6144}, {4096, 28672}, {2048, 3072}, {576, 960}})
    for (bool hopper : {true, false}) {
      const int tiles = (out + 31) / 32, steps = in / 128;
      const Exl2Split s = exl2_choose_split(tiles, steps, 132, 16, hopper);
      EXPECT_STREQ(exl2_split_problem(s, tiles, steps, hopper), "") << in << "x" << out;
      const int64_t blocks = int64_t{(tiles + s.tiles_per_block - 1) / s.tiles_per_block} * s.ksplit;
      if (out < 100000) {
        EXPECT_LE(blocks, 132 * std::max(1, 16 / (s.tiles_per_block * s.ksub))) << in << "x" << out;
      }
    }
}

}  // namespace
}  // namespace exq::cuda
