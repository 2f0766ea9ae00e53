// Host-side planning of GPU GPTQ: runs without a GPU.
#include "quant/cuda/gptq_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace exq::quant::cuda {
namespace {

// Every invariant the kernels rely on: groups in order and contiguous, blocks of consecutive
// groups sharing block_begin, each at most block_rows rows unless it is a single group, the
// last group of each block (and only it) flagged, the error buffer big enough.
void expect_valid_plan(const GptqPlan& plan, const std::vector<GroupSpan>& layout, int64_t in,
                       int64_t block_rows, const std::string& what) {
  ASSERT_EQ(plan.steps.size(), layout.size()) << what;
  int64_t row = 0, block = 0, largest = 0;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const GptqStep& s = plan.steps[i];
    EXPECT_EQ(s.bits, layout[i].bits) << what;
    EXPECT_EQ(s.row_begin, layout[i].row_begin) << what;
    EXPECT_EQ(s.rows, layout[i].rows) << what;
    EXPECT_EQ(s.row_begin, row) << what << " group " << i;
    const bool starts_block = i == 0 || plan.steps[i - 1].block_end;
    if (starts_block) block = s.row_begin;
    EXPECT_EQ(s.block_begin, block) << what << " group " << i;
    row += s.rows;
    const int64_t block_size = row - block;
    largest = std::max(largest, block_size);
    const bool single = s.block_begin == s.row_begin;
    EXPECT_TRUE(block_size <= block_rows || single) << what << " group " << i;
    if (i + 1 < plan.steps.size()) {
      // A block ends exactly when the next group would not fit in it.
      const int64_t with_next = plan.steps[i + 1].row_begin + plan.steps[i + 1].rows - block;
      EXPECT_EQ(s.block_end, with_next > block_rows) << what << " group " << i;
    }
  }
  EXPECT_EQ(row, in) << what;
  EXPECT_TRUE(plan.steps.back().block_end) << what;
  EXPECT_EQ(plan.max_block_rows, largest) << what;
}

TEST(GptqPlan, UniformGroupsFormBlocksOfFour) {
  const QuantOption o = parse_option("1:4b_32g");
  const int64_t in = 1000;  // 31 full groups and one of 8 rows
  const auto layout = group_layout(o, in);
  const GptqPlan plan = plan_gptq(layout, in);
  expect_valid_plan(plan, layout, in, kGptqBlockRows, o.desc());
  ASSERT_EQ(plan.steps.size(), 32u);
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    EXPECT_EQ(plan.steps[i].block_begin, static_cast<int64_t>(i / 4) * 128) << i;
    EXPECT_EQ(plan.steps[i].block_end, i % 4 == 3 || i == 31) << i;
  }
  EXPECT_EQ(plan.steps.back().rows, 8);
  EXPECT_EQ(plan.max_block_rows, 128);
}

TEST(GptqPlan, MixedGroupSizes) {
  const QuantOption o = parse_option("0.05:8b_32g/0.1:4b_128g/0.85:3b_128g");
  const int64_t in = 576;
  const auto layout = group_layout(o, in);
  const GptqPlan plan = plan_gptq(layout, in);
  expect_valid_plan(plan, layout, in, kGptqBlockRows, o.desc());
  // 8-bit: ceil(28.8/32) = 1 group of 32; then 128-row groups from row 32 on: 32 + 128 > 128, so
  // the first group is a block alone and every 128-row group is one too.
  ASSERT_GE(plan.steps.size(), 2u);
  EXPECT_TRUE(plan.steps[0].block_end);
  for (const GptqStep& s : plan.steps) EXPECT_EQ(s.block_begin, s.row_begin);
}

TEST(GptqPlan, EveryTableOptionOnRealShapes) {
  std::vector<QuantOption> all;
  for (int c = 0; c < 4; ++c)
    for (const QuantOption& o : distinct_attn_options(c)) all.push_back(o);
  for (int c = 0; c < 3; ++c)
    for (const QuantOption& o : distinct_mlp_options(c)) all.push_back(o);
  for (int64_t in : {160, 576, 1536, 4096, 14336, 28672})
    for (const QuantOption& o : all) {
      std::vector<GroupSpan> layout;
      try {
        layout = group_layout(o, in);
      } catch (const Error&) {
        continue;  // too coarse for this width (the CPU refuses it too)
      }
      for (int64_t block_rows : {int64_t{1}, int64_t{64}, kGptqBlockRows, int64_t{1000}})
        expect_valid_plan(plan_gptq(layout, in, block_rows), layout, in, block_rows,
                          o.desc() + " in=" + std::to_string(in));
    }
}

TEST(GptqPlan, GroupsLargerThanTheBlockStandAlone) {
  const auto layout = group_layout(parse_option("1:4b_256g"), 600);
  const GptqPlan plan = plan_gptq(layout, 600);
  expect_valid_plan(plan, layout, 600, kGptqBlockRows, "256g");
  for (const GptqStep& s : plan.steps) {
    EXPECT_EQ(s.block_begin, s.row_begin);
    EXPECT_TRUE(s.block_end);
  }
  EXPECT_EQ(plan.max_block_rows, 256);
}

TEST(GptqPlan, RejectsBrokenLayouts) {
  EXPECT_THROW(plan_gptq({}, 10), Error);
  EXPECT_THROW(plan_gptq({{4, 0, 32}, {4, 40, 32}}, 72), Error);  // gap
  EXPECT_THROW(plan_gptq({{4, 0, 32}}, 64), Error);               // short
  EXPECT_THROW(plan_gptq({{4, 0, 32}, {4, 32, 40}}, 64), Error);  // past the end
  EXPECT_THROW(plan_gptq({{7, 0, 32}}, 32), Error);               // bit width
  EXPECT_THROW(plan_gptq({{4, 0, 32}}, 32, 0), Error);
}

TEST(GptqPlan, GridMatchesTheCpuFormula) {
  const GptqGrid g = gptq_grid();
  EXPECT_EQ(g.p[0], 0.70f);
  EXPECT_FLOAT_EQ(g.p[kGptqGrid - 1], 1.20f);
  EXPECT_FLOAT_EQ(g.p[48], 0.95f);
  for (int i = 1; i < kGptqGrid; ++i) EXPECT_GT(g.p[i], g.p[i - 1]);
}

TEST(GptqPlan, InversePermutation) {
  const std::vector<int32_t> perm = {3, 0, 4, 1, 2};
  const std::vector<int32_t> inv = inverse_permutation(perm);
  ASSERT_EQ(inv.size(), perm.size());
  for (size_t i = 0; i < perm.size(); ++i) EXPECT_EQ(inv[static_cast<size_t>(perm[i])], static_cast<int32_t>(i));
  EXPECT_THROW(inverse_permutation({0, 0, 1}), Error);
  EXPECT_THROW(inverse_permutation({0, 3, 1}), Error);
  EXPECT_THROW(inverse_permutation({-1, 0}), Error);
}

TEST(GptqPlan, DistinctOptionsPerLinear) {
  for (int c = 0; c < 4; ++c) {
    const auto d = distinct_attn_options(c);
    for (const auto& row : attn_option_table())
      EXPECT_EQ(std::count(d.begin(), d.end(), row[static_cast<size_t>(c)]), 1);
    EXPECT_LE(d.size(), attn_option_table().size());
  }
  for (int c = 0; c < 3; ++c) {
    const auto d = distinct_mlp_options(c);
    for (const auto& row : mlp_option_table())
      EXPECT_EQ(std::count(d.begin(), d.end(), row[static_cast<size_t>(c)]), 1);
  }
  EXPECT_THROW(distinct_attn_options(4), Error);
  EXPECT_THROW(distinct_mlp_options(-1), Error);
}

}  // namespace
}  // namespace exq::quant::cuda
