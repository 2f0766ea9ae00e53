// EXL2 layer -> fp16 W[out, in] in original channel order (the prefill path feeds it to
// cuBLAS). A block owns a few output columns and keeps their whole rows in shared memory, so
// the act-order scatter (row i of the quantized matrix is input channel q_perm[i]) lands in
// shared memory and W is written with coalesced 16-byte stores.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace {

using namespace exl2;

constexpr int kThreads = 256;
constexpr size_t kSharedBudget = 96 * 1024;  // two blocks per SM on Hopper and Ampere

template <int B>
__device__ __forceinline__ void dequant_column(const uint32_t (&w)[8], __half2 scale,
                                               const int32_t* perm, int rows, __half* row) {
  const __half2 zero = zero_pair<B>();
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    const __half2 v = as_half2(dequant_pair(extract_pair<B>(w, p), zero, scale));
    if (p < rows) row[perm[p]] = __low2half(v);
    if (p + kPairs < rows) row[perm[p + kPairs]] = __high2half(v);
  }
}

__global__ void __launch_bounds__(kThreads)
    exl2_dequant_kernel(Exl2Desc d, __half* __restrict__ w, int cols) {
  extern __shared__ __align__(16) unsigned char smem[];
  __half* buf = reinterpret_cast<__half*>(smem);  // [cols][in]
  const int col0 = blockIdx.x * cols;
  for (int idx = threadIdx.x; idx < d.num_units * cols; idx += kThreads) {
    const int u = idx / cols, c = idx % cols, col = col0 + c;
    const Exl2Unit unit = d.units[u];
    const int bits = unit.info & 0xff, rows = (unit.info >> 8) & 0xff;
    const int words = (rows * bits + 31) >> 5;
    const uint32_t* base = d.q_weight + static_cast<size_t>(unit.word_row) * d.out_pad + col;
    uint32_t wv[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) wv[i] = i < words ? base[static_cast<size_t>(i) * d.out_pad] : 0u;
    const uint32_t code =
        (d.q_scale[static_cast<size_t>(unit.group) * (d.out_pad / 8) + col / 8] >>
         (4 * (col % 8))) & 15u;
    const __half2 scale =
        scale_pair(code, __ushort_as_half(static_cast<unsigned short>(unit.info >> 16)));
    __half* row = buf + static_cast<size_t>(c) * d.in;
    const int32_t* perm = d.q_perm + unit.row_base;
    switch (bits) {
      case 2: dequant_column<2>(wv, scale, perm, rows, row); break;
      case 3: dequant_column<3>(wv, scale, perm, rows, row); break;
      case 4: dequant_column<4>(wv, scale, perm, rows, row); break;
      case 5: dequant_column<5>(wv, scale, perm, rows, row); break;
      case 6: dequant_column<6>(wv, scale, perm, rows, row); break;
      default: dequant_column<8>(wv, scale, perm, rows, row); break;
    }
  }
  __syncthreads();
  const int ncols = min(cols, d.out - col0);
  if (ncols <= 0) return;
  __half* dst = w + static_cast<size_t>(col0) * d.in;
  if (d.in % 8 == 0) {
    // Rows are contiguous in both buffers: one flat 16-byte copy.
    const int64_t vecs = static_cast<int64_t>(ncols) * d.in / 8;
    const uint4* src4 = reinterpret_cast<const uint4*>(buf);
    uint4* dst4 = reinterpret_cast<uint4*>(dst);
    for (int64_t i = threadIdx.x; i < vecs; i += kThreads) dst4[i] = src4[i];
  } else {
    const int64_t total = static_cast<int64_t>(ncols) * d.in;
    for (int64_t i = threadIdx.x; i < total; i += kThreads) dst[i] = buf[i];
  }
}

// Columns per block: the most (a power of two up to 32, so it divides out_pad) whose rows fit.
int dequant_columns(int in) {
  int cols = 32;
  while (cols > 1 && static_cast<size_t>(cols) * in * sizeof(__half) > kSharedBudget) cols /= 2;
  return cols;
}

}  // namespace

size_t exl2_dequantize_max_in() { return kSharedBudget / sizeof(__half); }

void exl2_dequantize_cuda(const Exl2Desc& d, __half* w, cudaStream_t stream) {
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(exl2_dequant_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(kSharedBudget)));
    return true;
  }();
  (void)configured;
  if (d.out == 0 || d.in == 0) return;
  const int cols = dequant_columns(d.in);
  const size_t shared = static_cast<size_t>(cols) * d.in * sizeof(__half);
  exl2_dequant_kernel<<<d.out_pad / cols, kThreads, shared, stream>>>(d, w, cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
