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

// ---- Batched GPTQ (gptq_batch.cpp: every option of a linear in one pass) ----------------------
// All options walk the same fixed blocks [S, S + B) of B = block_rows rows (a power of two).
// Step t of a block runs, for every option at once, the t-th of the option's groups that start
// in the block (a group may run past the block's end). Blocks form super-blocks [SB, SE) of
// B2 = super_rows rows (a multiple of B). After a block, the rows up to the super-block's end
// get the block's errors E[S, S + B) (near flush); after a super-block, every later row gets
// E[SB, SE) at once (far flush: one GEMM with K = 3 B2 per option, far less traffic than one
// per block; the same call whatever the batch). Before a group runs, its rows get E[S, a) of
// its own block (pending update), and the rows of a group that runs past SE get E[SB, a)
// instead (they missed the super-block's near flushes). Errors live in a ring of 2 B2 rows
// (row r in slot r mod 2 B2). Exact arithmetic gives what plan_gptq gives; groups of more than
// B rows do not fit.
inline constexpr int64_t kGptqBatchBlockRows = 128;  // B; EXQ_GPTQ_BLOCK overrides (gptq_batch.h)
inline constexpr int64_t kGptqBatchSuperRows = 1024;  // B2; EXQ_GPTQ_SUPER overrides

struct BatchGroup {
  int32_t row_begin = -1;  // -1: the option has no group in this step
  int32_t rows = 0;
  int32_t bits = 0;
  int32_t group = -1;      // index in the option's layout
};

struct BatchBlock {
  int64_t begin = 0;
  int64_t end = 0;          // min(begin + B, in)
  int64_t super_begin = 0;  // SB of the block's super-block
  int64_t super_end = 0;    // min(SB + B2, in)
  int64_t near_end = 0;     // rows [end, near_end) get E[begin, end) after the block
  bool far = false;         // last block of its super-block with rows after it: rows >= end
                            // get E[super_begin, end)
  std::vector<std::vector<BatchGroup>> steps;  // [step][option]
};

struct GptqBatchPlan {
  int64_t in = 0;
  int64_t block_rows = 0;
  int64_t super_rows = 0;
  std::vector<BatchBlock> blocks;
};

// Whether every group of the layout has at most block_rows rows.
bool batchable(const std::vector<GroupSpan>& layout,
               int64_t block_rows = kGptqBatchBlockRows);

// Throws exq::Error when a layout does not tile [0, in) in order, has a group larger than
// block_rows, block_rows is not a power of two or super_rows not a power-of-two multiple of it.
GptqBatchPlan plan_gptq_batch(const std::vector<std::vector<GroupSpan>>& layouts, int64_t in,
                              int64_t block_rows = kGptqBatchBlockRows,
                              int64_t super_rows = kGptqBatchSuperRows);

// Options per batch: as many as fit `avail` bytes beside `fixed` ones at `per_option` each,
// clamped to [1, min(n, max_batch)] (one always runs: the caller's budget then decides).
int64_t gptq_batch_size(size_t avail, size_t fixed, size_t per_option, int64_t n,
                        int64_t max_batch = kGptqMaxBatch);

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
