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

}  // namespace

GptqPlan plan_gptq(const std::vector<GroupSpan>& layout, int64_t in, int64_t block_rows) {
  EXQ_CHECK(block_rows >= 1, "GPTQ block of {} rows", block_rows);
  EXQ_CHECK(!layout.empty() && in > 0, "GPTQ plan: {} groups for {} rows", layout.size(), in);
  GptqPlan plan;
  plan.in = in;
  int64_t row = 0;
  for (const GroupSpan& g : layout) {
    EXQ_CHECK(g.row_begin == row && g.rows > 0 && g.rows <= in - row && is_exl2_bits(g.bits),
              "GPTQ plan: group ({}-bit, rows {}+{}) does not continue at row {} of {}", g.bits,
              g.row_begin, g.rows, row, in);
    row += g.rows;
  }
  EXQ_CHECK(row == in, "GPTQ plan: groups cover {} of {} rows", row, in);

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
