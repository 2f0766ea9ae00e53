// Device side of the q8 KV cache (model/kv_quant.h has the format and the CPU reference): the
// same operations in the same order, so both round a value to the same code and scale.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {

inline constexpr int kQ8Group = 32;

struct Q8Lane {
  int8_t q;       // this lane's code
  __half scale;   // the group's scale (every lane)
  __half value;   // what the cache reads back for this lane
};

// A warp holds one group, a value per lane (all 32 lanes must call).
__device__ __forceinline__ Q8Lane q8_quantize_warp(float x) {
  const float amax = warp_max(fabsf(x));
  const __half sh = __float2half_rn(fminf(amax / 127.0f, 65504.0f));
  const float s = __half2float(sh);
  const float r = s == 0.0f ? 0.0f : fmaxf(fminf(rintf(x / s), 127.0f), -127.0f);
  return {static_cast<int8_t>(r), sh, __float2half_rn(r * s)};
}

// 4 codes (one word, element 0 in the low byte) times s: the biased bytes (q + 128) become fp16
// 1024 + q + 128 through a byte permute, 1152 comes off exactly, and one multiply rounds q * s
// as the CPU does (fp16 of the exact product). 1.75 instructions a value.
__device__ __forceinline__ void q8_dequant4(uint32_t w, __half2 s2, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  const uint32_t a = __byte_perm(u, 0x64646464u, 0x4140), b = __byte_perm(u, 0x64646464u, 0x4342);
  const __half2 bias = __half2half2(__ushort_as_half(static_cast<unsigned short>(0x6480)));  // 1152
  const __half2 x = __hmul2(__hsub2(*reinterpret_cast<const __half2*>(&a), bias), s2);
  const __half2 y = __hmul2(__hsub2(*reinterpret_cast<const __half2*>(&b), bias), s2);
  lo = *reinterpret_cast<const uint32_t*>(&x);
  hi = *reinterpret_cast<const uint32_t*>(&y);
}

// 16 codes (one 16-byte load) times their scale: 16 halves at dst (two 16-byte stores).
__device__ __forceinline__ void q8_dequant16(const uint4& raw, __half s, uint4* dst) {
  const __half2 s2 = __half2half2(s);
  uint4 lo, hi;
  q8_dequant4(raw.x, s2, lo.x, lo.y);
  q8_dequant4(raw.y, s2, lo.z, lo.w);
  q8_dequant4(raw.z, s2, hi.x, hi.y);
  q8_dequant4(raw.w, s2, hi.z, hi.w);
  dst[0] = lo;
  dst[1] = hi;
}

// A tile of a q8 cache (kRows keys of one head, head dim D) in registers, spread over the
// kThreads threads of a warp or block: thread t holds the 16-byte code pieces t, t + kThreads,
// ... and their scales. The attention kernels load the next tile while they compute on the
// current one, then dequantize it into their f16 tile buffers (rows of pitch P halves).
template <int D, int kRows, int kThreads, int P>
struct Q8Tile {
  static constexpr int kPieces = D / 16;                      // per row
  static constexpr int kItems = kRows * kPieces / kThreads;  // per thread
  uint4 k[kItems], v[kItems];
  __half ks[kItems], vs[kItems];
  // Keys key0 + r below key_end, except `skip` (-1: none); the other rows hold zeros.
  __device__ __forceinline__ void load(const int8_t* kh, const __half* ksh, const int8_t* vh, const __half* vsh,
                                       int t, int key0, int key_end, int skip) {
#pragma unroll
    for (int n = 0; n < kItems; ++n) {
      const int i = t + n * kThreads, key = key0 + i / kPieces;
      k[n] = v[n] = make_uint4(0u, 0u, 0u, 0u);
      ks[n] = vs[n] = __ushort_as_half(0);
      if (key < key_end && key != skip) {
        const size_t e = static_cast<size_t>(key) * D + (i % kPieces) * 16;
        k[n] = __ldcg(reinterpret_cast<const uint4*>(kh + e));
        v[n] = __ldcg(reinterpret_cast<const uint4*>(vh + e));
        ks[n] = ksh[e / kQ8Group];
        vs[n] = vsh[e / kQ8Group];
      }
    }
  }
  __device__ __forceinline__ void store(__half* k_dst, __half* v_dst, int t) const {
#pragma unroll
    for (int n = 0; n < kItems; ++n) {
      const int i = t + n * kThreads, at = (i / kPieces) * P + (i % kPieces) * 16;
      q8_dequant16(k[n], ks[n], reinterpret_cast<uint4*>(k_dst + at));
      q8_dequant16(v[n], vs[n], reinterpret_cast<uint4*>(v_dst + at));
    }
  }
};

}  // namespace exq::cuda
