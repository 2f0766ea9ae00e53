// One decode_batch step of several sequences on the GPU against forward_batch on the CPU, as the
// CudaLlama tests of serve -np run it. Header-only: the test glob compiles only *_test.cpp.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "backend/cuda/device_tensor.h"
#include "model/llama.h"
#include "runtime/cuda/cuda_llama.h"
#include "test_support.h"
#include "tiny_models.h"

namespace exq::test {

// Runs next[s] of each sequence in `seqs` through both models (caches[s] on the CPU), checks each
// row within tol, sets next[s] to the CPU row's argmax and returns the worst relative max-abs
// difference.
inline double batch_step(model::LlamaModel& cpu, runtime::cuda::CudaLlama& gpu, std::vector<model::KvCache>& caches,
                         std::vector<int32_t>& next, const std::vector<int>& seqs, double tol) {
  std::vector<int32_t> tokens;
  std::vector<model::KvCache*> ptrs;
  for (int s : seqs) {
    tokens.push_back(next[static_cast<size_t>(s)]);
    ptrs.push_back(&caches[static_cast<size_t>(s)]);
  }
  const Tensor w = cpu.forward_batch(tokens, ptrs);
  const Tensor g = exq::cuda::to_host(gpu.decode_batch(seqs, tokens), gpu.stream());
  EXPECT_EQ(g.shape(), w.shape());
  if (g.shape() != w.shape()) return 1e9;
  double worst = 0;
  for (size_t r = 0; r < seqs.size(); ++r) {
    const auto row = static_cast<int64_t>(r);
    const Tensor wr = Tensor::copy_of(w.view().slice0(row, row + 1));
    const double rel = rel_max_abs(Tensor::copy_of(g.view().slice0(row, row + 1)), wr);
    worst = std::max(worst, rel);
    EXPECT_LE(rel, tol) << "sequence " << seqs[r];
    next[static_cast<size_t>(seqs[r])] = argmax_row(wr);
  }
  return worst;
}

}  // namespace exq::test
