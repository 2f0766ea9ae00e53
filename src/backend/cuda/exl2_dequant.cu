// EXL2 layout conversion at upload (exllamav2's q_weight -> the device layout of
// exl2_launchers.h) and the dequantization W[out, in] f16 that the prefill path feeds to
// cuBLAS, its input channels in q_perm order (matmul gathers x to match), so that no act-order
// scatter is needed and W is written in 512-byte row segments.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_decode.cuh"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {
namespace {

using namespace exl2;

constexpr int kThreads = 256;

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

// A block: one 32-column tile x kPermUnits consecutive units (a warp per unit, a thread per
// unit-column: each load is a 128-byte row). The block's values go through shared memory, so
// that W is written a row segment per warp store: kPermUnits * 64 contiguous bytes when the
// units are whole (32 rows, 16-byte aligned) and adjacent in q_perm order.
constexpr int kPermUnits = kThreads / 32;
constexpr int kPermStride = kPermUnits * 32 + 8;  // halves per tile row (+16 bytes: banks)

__global__ void __launch_bounds__(kThreads)
    exl2_dequant_perm_kernel(const __grid_constant__ Exl2Desc d, const int32_t* __restrict__ krow,
                             __half* __restrict__ w) {
  __shared__ __align__(16) __half tile[32 * kPermStride];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int col0 = blockIdx.x * 32, u0 = blockIdx.y * kPermUnits;
  const int nu = min(kPermUnits, d.num_units - u0);
  if (warp < nu) {
    const int col = col0 + lane;
    const Exl2Unit un = d.units[u0 + warp];
    const int bits = un.info & 0xff, stride = (un.info >> 16) & 0xff;
    const uint32_t* base = reinterpret_cast<const uint32_t*>(d.q_weight) +
                           (static_cast<size_t>(blockIdx.x) * d.tile_rows + un.row) * 32 + lane;
    uint32_t wv[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) wv[i] = i < bits ? __ldcs(base + static_cast<size_t>(i) * stride * 32) : 0u;
    const uint32_t code =
        (d.q_scale[static_cast<size_t>(un.group) * (d.out_pad / 8) + col / 8] >> (4 * (col % 8))) & 15u;
    const __half2 scale = scale_pair(code, d.group_m[un.group]);
    uint4* dst = reinterpret_cast<uint4*>(tile + lane * kPermStride + warp * 32);
    dequant_unit_rows(bits, wv, scale, dst);
  }
  __syncthreads();
  // Lane l of a warp: unit l / 4, rows 8 (l % 4) .. + 8 of one column; warps take columns.
  const int ul = lane >> 2, part = lane & 3;
  if (ul >= nu) return;
  const int rows = (d.units[u0 + ul].info >> 8) & 0xff, k0 = krow[u0 + ul];
  const bool vec = rows == kExl2UnitRows && d.in % 8 == 0 && k0 % 8 == 0;
  for (int c = warp; c < 32 && col0 + c < d.out; c += kPermUnits) {
    const __half* src = tile + c * kPermStride + ul * 32 + part * 8;
    __half* out = w + static_cast<size_t>(col0 + c) * d.in + k0 + part * 8;
    if (vec) {
      *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int r = 0; r < 8 && part * 8 + r < rows; ++r) out[r] = src[r];
    }
  }
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

void exl2_dequantize_permuted_cuda(const Exl2Desc& d, const int32_t* krow, __half* w,
                                   cudaStream_t stream) {
  if (d.out == 0 || d.in == 0) return;
  exl2_dequant_perm_kernel<<<dim3(ceil_div(d.out, 32), ceil_div(d.num_units, kPermUnits)), kThreads, 0,
                             stream>>>(d, krow, w);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
