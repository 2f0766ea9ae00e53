// Grouped expert GEMM (MoE prefill and batches): every expert of a layer multiplies its own rows
// in one launch, instead of a dequantize + cuBLAS launch set per expert. The rows are grouped by
// expert beforehand (staged, in the weight's input order); a block takes a chunk of at most
// kExpertGemmRows rows of one expert and kExpertGemmCols output columns, streams the weight
// along K in steps of 128 (EXL2: 4 units decoded into shared memory, the dequantize kernel's
// exact fp16 values; dense: copied), and multiplies on tensor cores with f32 sums. Raw tier:
// free of exq/fmt headers (nvcc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/cuda/exl2_launchers.h"

namespace exq::cuda {

inline constexpr int kExpertGemmRows = 64;
inline constexpr int kExpertGemmCols = 64;
inline constexpr int kExpertGemmMaxLayers = 2;

// Rows [row0, row0 + rows) of the staged input are expert `expert`'s (rows <= kExpertGemmRows).
struct ExpertChunk {
  int32_t expert = 0;
  int32_t row0 = 0;
  int32_t rows = 0;
  int32_t unused = 0;
};

// Appends the chunks of expert `expert`'s `rows` rows, which start at row `first` of the staged
// input.
inline void add_expert_chunks(std::vector<ExpertChunk>& chunks, int expert, int64_t first, int64_t rows) {
  for (int64_t o = 0; o < rows; o += kExpertGemmRows)
    chunks.push_back({expert, static_cast<int32_t>(first + o),
                      static_cast<int32_t>(rows - o < kExpertGemmRows ? rows - o : kExpertGemmRows), 0});
}

struct ExpertGemmLayer {
  const void* a = nullptr;  // [R, in] staged rows (f16, or bf16 for bf16 weights)
  float* y = nullptr;       // [R, out] f32
  int out = 0;
  // EXL2: expert 0's layout (expert_gemm_exl2_ok); expert e's copy lies shifts[e * stride]
  // bytes from it (exl2_shift_bytes).
  Exl2Desc d;
  const int64_t* shifts = nullptr;
  // Dense: expert e's weight [out, in] at weights[e * stride].
  const void* const* weights = nullptr;
  int stride = 1;
};

struct ExpertGemm {
  int layers = 1;  // 1 or 2 layers of one `in` (gate and up), blocks along the grid's z
  int in = 0;
  ExpertGemmLayer l[kExpertGemmMaxLayers];
  const ExpertChunk* chunks = nullptr;  // device, num_chunks entries
  int num_chunks = 0;
  const float* row_scale = nullptr;  // [R] (or null): y's rows multiplied by it
};

// Whether the EXL2 kernel reads a layout: every unit whole (32 rows) and unit u holding the
// permuted input rows [32 u, 32 u + 32). units / unit_krow: host copies of d's unit table and of
// each unit's first permuted row (the upload's plan).
bool expert_gemm_exl2_ok(const Exl2Desc& d, const Exl2Unit* units, const int32_t* unit_krow);
// Dense weights: `in` a multiple of 8 (16-byte rows).
inline bool expert_gemm_dense_ok(int in) { return in > 0 && in % 8 == 0; }

// y_l[row0 + r] = a_l[row0 + r] . W_{l,expert}^T * row_scale for every chunk and layer.
void expert_gemm_exl2_cuda(const ExpertGemm& g, cudaStream_t stream);
// T: __half or __nv_bfloat16 (a and the weights of one type).
template <typename T>
void expert_gemm_dense_cuda(const ExpertGemm& g, cudaStream_t stream);

}  // namespace exq::cuda
