// Host-side planning for GPU GPTQ (no CUDA calls, unit-tested on the CPU): the order of groups,
// the lazy-update blocks, the scale grid and the index tables that the kernels and the
// packing share. GPTQ updates later rows after every group on the CPU; on the GPU consecutive
// groups are gathered into blocks of up to kGptqBlockRows rows: a group's rows first receive the
// errors of the block's earlier groups (a small GEMM), and only after the block's last group
// are all later rows updated (one large GEMM). Same result in exact arithmetic, about
// kGptqBlockRows / group_size times less memory traffic.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "io/exl2.h"
#include "quant/cuda/gptq_launchers.h"
#include "quant/options.h"

namespace exq::quant::cuda {

inline constexpr int64_t kGptqBlockRows = 128;

struct GptqStep {
  int bits = 0;
  int64_t row_begin = 0;    // first permuted input row of the group
  int64_t rows = 0;
  int64_t block_begin = 0;  // first row of its block; rows [block_begin, row_begin) are pending
  bool block_end = false;   // last group of its block: then rows >= row_begin + rows are updated
};

struct GptqPlan {
  int64_t in = 0;
  std::vector<GptqStep> steps;  // one per group, in row order
  int64_t max_block_rows = 0;   // rows of the error buffer
};

// Throws exq::Error when the layout does not tile [0, in) in order or block_rows < 1.
GptqPlan plan_gptq(const std::vector<GroupSpan>& layout, int64_t in,
                   int64_t block_rows = kGptqBlockRows);

// The 97 factors p_i exactly as quant/gptq.cpp computes them.
GptqGrid gptq_grid();

// (bits, rows) per group, for io::exl2_group_table.
std::vector<std::pair<int, int64_t>> group_bits_rows(const std::vector<GroupSpan>& layout);

// invperm[perm[i]] = i; throws exq::Error unless perm is a permutation of [0, n).
std::vector<int32_t> inverse_permutation(const std::vector<int32_t>& perm);

// Options of one linear (column `linear` of the attention or MLP table) without repeats, in
// the order they first appear.
std::vector<QuantOption> distinct_attn_options(int linear);
std::vector<QuantOption> distinct_mlp_options(int linear);

}  // namespace exq::quant::cuda
