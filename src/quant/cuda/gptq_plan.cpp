#include "quant/cuda/gptq_plan.h"

#include <algorithm>

#include "core/error.h"

namespace exq::quant::cuda {
namespace {

template <typename Table>
std::vector<QuantOption> distinct_column(const Table& table, int linear, int columns) {
  EXQ_CHECK(linear >= 0 && linear < columns, "option table has {} linears, asked for {}", columns,
            linear);
  std::vector<QuantOption> out;
  for (const auto& row : table) {
    const QuantOption& o = row[static_cast<size_t>(linear)];
    if (std::find(out.begin(), out.end(), o) == out.end()) out.push_back(o);
  }
  return out;
}

void check_layout(const std::vector<GroupSpan>& layout, int64_t in) {
  EXQ_CHECK(!layout.empty() && in > 0, "GPTQ plan: {} groups for {} rows", layout.size(), in);
  int64_t row = 0;
  for (const GroupSpan& g : layout) {
    EXQ_CHECK(g.row_begin == row && g.rows > 0 && g.rows <= in - row && is_exl2_bits(g.bits),
              "GPTQ plan: group ({}-bit, rows {}+{}) does not continue at row {} of {}", g.bits,
              g.row_begin, g.rows, row, in);
    row += g.rows;
  }
  EXQ_CHECK(row == in, "GPTQ plan: groups cover {} of {} rows", row, in);
}

}  // namespace

GptqPlan plan_gptq(const std::vector<GroupSpan>& layout, int64_t in, int64_t block_rows) {
  EXQ_CHECK(block_rows >= 1, "GPTQ block of {} rows", block_rows);
  check_layout(layout, in);
  GptqPlan plan;
  plan.in = in;
  size_t i = 0;
  while (i < layout.size()) {
    const int64_t begin = layout[i].row_begin;
    size_t j = i + 1;  // a block holds at least one group, however large
    while (j < layout.size() && layout[j].row_begin + layout[j].rows - begin <= block_rows) ++j;
    for (size_t k = i; k < j; ++k)
      plan.steps.push_back({layout[k].bits, layout[k].row_begin, layout[k].rows, begin, k + 1 == j});
    plan.max_block_rows =
        std::max(plan.max_block_rows, layout[j - 1].row_begin + layout[j - 1].rows - begin);
    i = j;
  }
  return plan;
}

bool batchable(const std::vector<GroupSpan>& layout, int64_t block_rows) {
  for (const GroupSpan& g : layout)
    if (g.rows > block_rows) return false;
  return true;
}

GptqBatchPlan plan_gptq_batch(const std::vector<std::vector<GroupSpan>>& layouts, int64_t in,
                              int64_t block_rows, int64_t super_rows) {
  EXQ_CHECK(block_rows >= 1 && (block_rows & (block_rows - 1)) == 0 && block_rows <= (1 << 20),
            "batched GPTQ: block of {} rows (a power of two up to 2^20)", block_rows);
  EXQ_CHECK(super_rows >= block_rows && (super_rows & (super_rows - 1)) == 0 &&
                super_rows <= (1 << 20),
            "batched GPTQ: super-block of {} rows (a power of two, at least the block's {})",
            super_rows, block_rows);
  EXQ_CHECK(in > 0 && in < (int64_t{1} << 31), "batched GPTQ: {} rows", in);
  for (const auto& layout : layouts) {
    check_layout(layout, in);
    EXQ_CHECK(batchable(layout, block_rows),
              "batched GPTQ: a group is larger than the {}-row block", block_rows);
  }
  GptqBatchPlan plan;
  plan.in = in;
  plan.block_rows = block_rows;
  plan.super_rows = super_rows;
  const size_t n = layouts.size();
  std::vector<size_t> next(n, 0);  // per option: the first group not yet scheduled
  for (int64_t s = 0; s < in; s += block_rows) {
    BatchBlock block;
    block.begin = s;
    block.end = std::min(s + block_rows, in);
    block.super_begin = s / super_rows * super_rows;
    block.super_end = std::min(block.super_begin + super_rows, in);
    block.near_end = block.super_end;
    block.far = block.end == block.super_end && block.end < in;
    for (;;) {
      std::vector<BatchGroup> step(n);
      bool any = false;
      for (size_t o = 0; o < n; ++o) {
        const auto& layout = layouts[o];
        if (next[o] >= layout.size() || layout[next[o]].row_begin >= block.end) continue;
        const GroupSpan& g = layout[next[o]];
        step[o] = {static_cast<int32_t>(g.row_begin), static_cast<int32_t>(g.rows), g.bits,
                   static_cast<int32_t>(next[o])};
        ++next[o];
        any = true;
      }
      if (!any) break;
      block.steps.push_back(std::move(step));
    }
    plan.blocks.push_back(std::move(block));
  }
  return plan;
}

int64_t gptq_batch_size(size_t avail, size_t fixed, size_t per_option, int64_t n,
                        int64_t max_batch) {
  const int64_t cap = std::max<int64_t>(1, std::min(n, max_batch));
  if (avail <= fixed || per_option == 0) return per_option == 0 ? cap : 1;
  const auto fit = static_cast<int64_t>(std::min<size_t>((avail - fixed) / per_option,
                                                         static_cast<size_t>(cap)));
  return std::max<int64_t>(1, fit);
}

GptqGrid gptq_grid() {
  // Same constants and operation order as grid_p() in quant/gptq.cpp.
  constexpr float kMinP = 0.70f, kMaxP = 1.20f;
  GptqGrid g{};
  for (int i = 0; i < kGptqGrid; ++i)
    g.p[i] = kMinP + (kMaxP - kMinP) * static_cast<float>(i) / (kGptqGrid - 1);
  return g;
}

std::vector<std::pair<int, int64_t>> group_bits_rows(const std::vector<GroupSpan>& layout) {
  std::vector<std::pair<int, int64_t>> out;
  out.reserve(layout.size());
  for (const GroupSpan& g : layout) out.emplace_back(g.bits, g.rows);
  return out;
}

std::vector<int32_t> inverse_permutation(const std::vector<int32_t>& perm) {
  const int64_t n = static_cast<int64_t>(perm.size());
  std::vector<int32_t> inv(perm.size(), -1);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t p = perm[static_cast<size_t>(i)];
    EXQ_CHECK(p >= 0 && p < n && inv[static_cast<size_t>(p)] < 0,
              "act-order permutation of {} rows: entry {} is {} (out of range or repeated)", n,
              i, p);
    inv[static_cast<size_t>(p)] = static_cast<int32_t>(i);
  }
  return inv;
}

std::vector<QuantOption> distinct_attn_options(int linear) {
  return distinct_column(attn_option_table(), linear, 4);
}

std::vector<QuantOption> distinct_mlp_options(int linear) {
  return distinct_column(mlp_option_table(), linear, 3);
}

}  // namespace exq::quant::cuda
