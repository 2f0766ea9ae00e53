// EXL2 layout conversion at upload (exllamav2's q_weight -> the device layout of
// exl2_launchers.h) and the dequantization W[out, in] f16 in original channel order that the
// prefill path feeds to cuBLAS. A dequantize block owns a few output columns and keeps their
// whole rows in shared memory, so the act-order scatter (x_map) lands in shared memory and W
// is written with coalesced 16-byte stores.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace {

using namespace exl2;

constexpr int kThreads = 256;
constexpr size_t kSharedBudget = 96 * 1024;  // two blocks per SM on Hopper and Ampere

// Thread per (unit, column): reads the unit's words from exllamav2's bit stream, pads a short
// unit with the zero code and writes the re-arranged words.
__global__ void exl2_repack_kernel(const Exl2Desc d, const uint32_t* __restrict__ src, int src_row0,
                                   int u0, int u1, uint32_t* __restrict__ dst) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(u1 - u0) * d.out_pad) return;
  const int u = u0 + static_cast<int>(idx / d.out_pad), c = static_cast<int>(idx % d.out_pad);
  const Exl2Unit un = d.units[u];
  const int bits = un.info & 0xff, rows = (un.info >> 8) & 0xff, stride = (un.info >> 16) & 0xff;
  const int words = (rows * bits + 31) / 32;
  uint32_t s[9];
  for (int i = 0; i < 9; ++i)
    s[i] = i < words ? src[static_cast<size_t>(un.src_word - src_row0 + i) * d.out_pad + c] : 0u;
  uint32_t v[32], w[8];
  for (int k = 0; k < 32; ++k) v[k] = k < rows ? stream_value(s, bits, k) : 1u << (bits - 1);
  encode_unit(bits, v, w);
  const size_t base = (static_cast<size_t>(c >> 5) * d.tile_rows + un.row) * 32 + (c & 31);
  for (int i = 0; i < bits; ++i) dst[base + static_cast<size_t>(i) * stride * 32] = w[i];
}

template <int B>
__device__ __forceinline__ void dequant_unit(const uint32_t* wv, __half2 scale,
                                             const int32_t* __restrict__ map, __half* row) {
  uint32_t w[B];
#pragma unroll
  for (int i = 0; i < B; ++i) w[i] = wv[i];
  static_for<kPairs>([&](auto j_) {
    constexpr int J = decltype(j_)::value;
    const __half2 v = as_half2(pair_weights<B, J>(w, scale));
    const int2 ch = *reinterpret_cast<const int2*>(map + 2 * J);
    if (ch.x >= 0) row[ch.x] = __low2half(v);
    if (ch.y >= 0) row[ch.y] = __high2half(v);
  });
}

__global__ void __launch_bounds__(kThreads)
    exl2_dequant_kernel(const __grid_constant__ Exl2Desc d, __half* __restrict__ w, int cols) {
  extern __shared__ __align__(16) unsigned char smem[];
  __half* buf = reinterpret_cast<__half*>(smem);  // [cols][in]
  const int col0 = blockIdx.x * cols;
  const uint32_t* q = reinterpret_cast<const uint32_t*>(d.q_weight);
  for (int idx = threadIdx.x; idx < d.num_units * cols; idx += kThreads) {
    const int u = idx / cols, c = idx % cols, col = col0 + c;
    const Exl2Unit un = d.units[u];
    const int bits = un.info & 0xff, stride = (un.info >> 16) & 0xff;
    const uint32_t* base =
        q + (static_cast<size_t>(col >> 5) * d.tile_rows + un.row) * 32 + (col & 31);
    uint32_t wv[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) wv[i] = i < bits ? base[static_cast<size_t>(i) * stride * 32] : 0u;
    const uint32_t code =
        (d.q_scale[static_cast<size_t>(un.group) * (d.out_pad / 8) + col / 8] >> (4 * (col % 8))) & 15u;
    const __half2 scale = scale_pair(code, d.group_m[un.group]);
    __half* row = buf + static_cast<size_t>(c) * d.in;
    const int32_t* map = d.x_map + static_cast<size_t>(un.slot) * kPairs * 2;
    switch (bits) {
      case 2: dequant_unit<2>(wv, scale, map, row); break;
      case 3: dequant_unit<3>(wv, scale, map, row); break;
      case 4: dequant_unit<4>(wv, scale, map, row); break;
      case 5: dequant_unit<5>(wv, scale, map, row); break;
      case 6: dequant_unit<6>(wv, scale, map, row); break;
      default: dequant_unit<8>(wv, scale, map, row); break;
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

void exl2_repack_cuda(const Exl2Desc& d, const uint32_t* src, int src_row0, int u0, int u1,
                      uint4* dst, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(u1 - u0) * d.out_pad;
  if (total <= 0) return;
  exl2_repack_kernel<<<ceil_div(total, kThreads), kThreads, 0, stream>>>(
      d, src, src_row0, u0, u1, reinterpret_cast<uint32_t*>(dst));
  CUDA_CHECK_LAUNCH();
}

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
