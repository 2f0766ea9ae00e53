// Host-side planning of GPU GPTQ: runs without a GPU.
#include "quant/cuda/gptq_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <numeric>
#include <string>

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

// ---- batched plan ------------------------------------------------------------------------------

std::vector<QuantOption> table_options() {
  std::vector<QuantOption> all;
  const auto add = [&all](const std::vector<QuantOption>& v) {
    for (const QuantOption& o : v)
      if (std::find(all.begin(), all.end(), o) == all.end()) all.push_back(o);
  };
  for (int c = 0; c < 4; ++c) add(distinct_attn_options(c));
  for (int c = 0; c < 3; ++c) add(distinct_mlp_options(c));
  return all;
}

std::vector<std::vector<GroupSpan>> usable_layouts(const std::vector<QuantOption>& options,
                                                   int64_t in, int64_t block_rows) {
  std::vector<std::vector<GroupSpan>> layouts;
  for (const QuantOption& o : options) {
    try {
      auto layout = group_layout(o, in);
      if (batchable(layout, block_rows)) layouts.push_back(std::move(layout));
    } catch (const Error&) {
    }
  }
  return layouts;
}

// Replays the plan symbolically, as the kernels would run it: every group must see exactly the
// errors of all earlier rows when it starts (each once), every error read (pending updates,
// flushes) must come from a processed row still in its ring slot, and every group runs once,
// in order, in the block where it starts.
void expect_exact_schedule(const GptqBatchPlan& plan,
                           const std::vector<std::vector<GroupSpan>>& layouts,
                           const std::string& what, int64_t* past_super = nullptr) {
  const int64_t in = plan.in, B = plan.block_rows, B2 = plan.super_rows, mask = 2 * B2 - 1;
  ASSERT_EQ(static_cast<int64_t>(plan.blocks.size()), (in + B - 1) / B) << what;
  for (size_t o = 0; o < layouts.size(); ++o) {
    const auto& layout = layouts[o];
    std::vector<uint8_t> applied(static_cast<size_t>(in * in), 0);  // [row j][source r]
    std::vector<uint8_t> processed(static_cast<size_t>(in), 0);
    std::vector<int64_t> owner(static_cast<size_t>(2 * B2), -1);
    const auto apply = [&](int64_t src0, int64_t src1, int64_t dst0, int64_t dst1) {
      for (int64_t r = src0; r < src1; ++r) {
        ASSERT_TRUE(processed[r]) << what << " source " << r;
        ASSERT_EQ(owner[static_cast<size_t>(r & mask)], r) << what << " source " << r;
        for (int64_t j = dst0; j < dst1; ++j) ++applied[static_cast<size_t>(j * in + r)];
      }
    };
    size_t next = 0;
    for (size_t bi = 0; bi < plan.blocks.size(); ++bi) {
      const BatchBlock& block = plan.blocks[bi];
      ASSERT_EQ(block.begin, static_cast<int64_t>(bi) * B) << what;
      ASSERT_EQ(block.end, std::min(block.begin + B, in)) << what;
      ASSERT_EQ(block.super_begin, block.begin / B2 * B2) << what;
      ASSERT_EQ(block.super_end, std::min(block.super_begin + B2, in)) << what;
      for (const auto& step : block.steps) {
        ASSERT_EQ(step.size(), layouts.size()) << what;
        const BatchGroup& g = step[o];
        if (g.row_begin < 0) continue;
        ASSERT_LT(next, layout.size()) << what;
        ASSERT_EQ(g.group, static_cast<int32_t>(next)) << what;
        ASSERT_EQ(g.row_begin, layout[next].row_begin) << what;
        ASSERT_EQ(g.rows, layout[next].rows) << what;
        ASSERT_EQ(g.bits, layout[next].bits) << what;
        ++next;
        const int64_t a = g.row_begin, b = a + g.rows;
        ASSERT_GE(a, block.begin) << what;
        ASSERT_LT(a, block.end) << what;
        ASSERT_LE(g.rows, B) << what;
        // Pending updates, as gptq_batch.cpp launches them.
        apply(block.begin, a, a, std::min(b, block.super_end));
        if (b > block.super_end) {
          apply(block.super_begin, a, block.super_end, b);
          if (past_super != nullptr) ++*past_super;
        }
        for (int64_t j = a; j < b; ++j)
          for (int64_t r = 0; r < in; ++r)
            ASSERT_EQ(applied[static_cast<size_t>(j * in + r)], r < a ? 1 : 0)
                << what << " option " << o << " row " << j << " source " << r;
        for (int64_t r = a; r < b; ++r) {  // the row pass
          ASSERT_FALSE(processed[r]) << what;
          processed[r] = 1;
          owner[static_cast<size_t>(r & mask)] = r;
        }
      }
      apply(block.begin, block.end, block.end, block.near_end);
      if (block.far) apply(block.super_begin, block.end, block.end, in);
    }
    EXPECT_EQ(next, layout.size()) << what;
  }
}

TEST(GptqBatchPlan, EveryTableOptionTogetherIsExact) {
  int64_t past_super = 0;  // groups running into the next super-block (the rarest case)
  for (int64_t in : {96, 160, 576, 1000, 1536})
    for (int64_t block_rows : {int64_t{64}, int64_t{128}, int64_t{256}})
      for (int64_t super_rows : {block_rows, 2 * block_rows, int64_t{1024}}) {
        if (super_rows < block_rows) continue;
        const auto layouts = usable_layouts(table_options(), in, block_rows);
        ASSERT_FALSE(layouts.empty());
        const GptqBatchPlan plan = plan_gptq_batch(layouts, in, block_rows, super_rows);
        expect_exact_schedule(plan, layouts,
                              "in=" + std::to_string(in) + " B=" + std::to_string(block_rows) +
                                  " B2=" + std::to_string(super_rows),
                              &past_super);
      }
  EXPECT_GT(past_super, 0);
}

TEST(GptqBatchPlan, RealShapesStepCounts) {
  // Llama widths: at most 4 steps a block (32-row groups), 1 for 128-row groups, and the
  // mixed 8-bit/128g options run 128-row groups across block boundaries.
  for (int64_t in : {4096, 14336, 28672}) {
    const auto layouts = usable_layouts(table_options(), in, kGptqBatchBlockRows);
    const GptqBatchPlan plan = plan_gptq_batch(layouts, in);
    EXPECT_EQ(static_cast<int64_t>(plan.blocks.size()), in / kGptqBatchBlockRows);
    size_t steps = 0, straddling = 0;
    for (const BatchBlock& b : plan.blocks) {
      EXPECT_GE(b.steps.size(), 1u);
      EXPECT_LE(b.steps.size(), 4u);
      steps += b.steps.size();
      for (const auto& step : b.steps)
        for (const BatchGroup& g : step)
          straddling += g.row_begin >= 0 && g.row_begin + g.rows > b.end ? 1 : 0;
    }
    std::cout << "in=" << in << ": " << layouts.size() << " options, " << plan.blocks.size()
              << " blocks, " << steps << " steps, " << straddling << " straddling groups\n";
    if (in == 14336) {
      EXPECT_GT(straddling, 0u);
    }
  }
}

// Kernel launches of one linear's GPTQ, both implementations (printed for docs/perf.md):
// v1 per option and group: pending GEMM (not the block's first group), colmax, grid errors,
// sums, rows; per block with later rows: two splits and the GEMM. v2 per step: pending (when
// any option has one), colmax, grid errors, sums, rows; per block with rows left in its
// super-block: two splits and one GEMM per option; per super-block with later rows: U's split,
// then per option a split and a GEMM.
TEST(GptqBatchPlan, FewerLaunchesOnLlamaShapes) {
  struct Linear {
    const char* name;
    int64_t in;
    std::vector<QuantOption> options;
  };
  const std::vector<Linear> linears = {{"q_proj", 4096, distinct_attn_options(0)},
                                       {"k_proj", 4096, distinct_attn_options(1)},
                                       {"o_proj", 4096, distinct_attn_options(3)},
                                       {"gate_proj", 4096, distinct_mlp_options(0)},
                                       {"down_proj", 14336, distinct_mlp_options(2)},
                                       {"70b.gate_proj", 8192, distinct_mlp_options(0)},
                                       {"70b.down_proj", 28672, distinct_mlp_options(2)}};
  for (const Linear& l : linears) {
    int64_t v1 = 0, v2 = 0;
    std::vector<std::vector<GroupSpan>> layouts;
    for (const QuantOption& o : l.options) {
      layouts.push_back(group_layout(o, l.in));
      const GptqPlan plan = plan_gptq(layouts.back(), l.in);
      for (const GptqStep& s : plan.steps)
        v1 += 4 + (s.block_begin < s.row_begin ? 1 : 0) +
              (s.block_end && s.row_begin + s.rows < l.in ? 3 : 0);
    }
    const GptqBatchPlan plan = plan_gptq_batch(layouts, l.in);
    const auto n = static_cast<int64_t>(layouts.size());
    int64_t steps = 0;
    for (const BatchBlock& b : plan.blocks) {
      for (const auto& step : b.steps) {
        bool pending = false;
        for (const BatchGroup& g : step) pending = pending || g.row_begin > b.begin;
        v2 += 4 + (pending ? 1 : 0);
        ++steps;
      }
      if (b.near_end > b.end) v2 += 2 + n;
      if (b.far) v2 += 1 + 2 * n;
    }
    std::cout << l.name << " (in " << l.in << ", " << n << " options): launches v1 " << v1
              << ", v2 " << v2 << " (" << steps << " steps over " << plan.blocks.size()
              << " blocks)\n";
    EXPECT_LT(v2 * 3, v1) << l.name;
  }
}

TEST(GptqBatchPlan, SingleOptionStepsFollowItsGroups) {
  const auto layout = group_layout(parse_option("0.05:8b_32g/0.1:4b_128g/0.85:3b_128g"), 1536);
  const GptqBatchPlan plan = plan_gptq_batch({layout}, 1536);
  size_t groups = 0;
  for (const BatchBlock& b : plan.blocks) groups += b.steps.size();
  EXPECT_EQ(groups, layout.size());
  // 0.05 * 1536 = 76.8 -> three 8-bit groups (96 rows), then 128-row groups from row 96 on.
  ASSERT_EQ(plan.blocks[0].steps.size(), 4u);
  EXPECT_EQ(plan.blocks[0].steps[3][0].row_begin, 96);
  EXPECT_EQ(plan.blocks[0].steps[3][0].rows, 128);
}

TEST(GptqBatchPlan, RejectsWhatItCannotRun) {
  const auto big = group_layout(parse_option("1:4b_256g"), 600);
  EXPECT_FALSE(batchable(big, 128));
  EXPECT_TRUE(batchable(big, 256));
  EXPECT_THROW(plan_gptq_batch({big}, 600, 128), Error);
  EXPECT_NO_THROW(plan_gptq_batch({big}, 600, 256));
  const auto ok = group_layout(parse_option("1:4b_32g"), 600);
  EXPECT_THROW(plan_gptq_batch({ok}, 600, 96), Error);   // not a power of two
  EXPECT_THROW(plan_gptq_batch({ok}, 600, 128, 64), Error);   // super-block below the block
  EXPECT_THROW(plan_gptq_batch({ok}, 600, 128, 384), Error);  // not a power of two
  EXPECT_THROW(plan_gptq_batch({ok}, 601, 128), Error);  // layout for another width
  EXPECT_THROW(plan_gptq_batch({{{4, 0, 32}, {4, 40, 32}}}, 72), Error);
}

TEST(GptqBatchPlan, BatchSizeFromMemory) {
  EXPECT_EQ(gptq_batch_size(1000, 100, 100, 14), 9);
  EXPECT_EQ(gptq_batch_size(1000, 100, 100, 5), 5);
  EXPECT_EQ(gptq_batch_size(1000, 100, 10, 100), kGptqMaxBatch);
  EXPECT_EQ(gptq_batch_size(50, 100, 100, 14), 1);  // one always runs
  EXPECT_EQ(gptq_batch_size(150, 100, 100, 14), 1);
  EXPECT_EQ(gptq_batch_size(1000, 0, 100, 0), 1);
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
