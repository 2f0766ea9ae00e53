// Device side of the q4 KV cache (model/kv_quant.h has the format and the CPU reference). The
// cache holds, per 32 values of a key or value row, the 4-bit codes of the rotated group and its
// (step, minimum); the attention kernels attend to u = fp16(q d + m), the rotated values, with q
// rotated the same way and the attention output rotated back (the rotation is orthogonal and its
// own inverse), so no kernel un-rotates a cache row.
//
// Codes: [kv_heads, capacity, head_dim / 2] bytes, a 32-bit word per 8 values with value v of
// the word in bits q4_shift(v): the even values in the low half-word and the odd ones in the high,
// so one mask yields a pair. Steps: [kv_heads, capacity, head_dim / 32] __half2 (d, m).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {

inline constexpr int kQ4Group = 32;
inline constexpr float kQ4Rotation = 0.17677669529663687f;  // 1 / sqrt(32) in f32, as the CPU

// (H v / sqrt(32))[lane] over a warp's 32 values (lane = index in the group): the CPU's butterfly
// stages in the CPU's order (kv_q4_rotate), so both give the same bits.
__device__ __forceinline__ float q4_rotate_warp(float v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int s = 1; s < 32; s <<= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, s);
    v = (lane & s) ? o - v : v + o;
  }
  return v * kQ4Rotation;
}

__device__ __forceinline__ float q4_warp_min(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ int q4_shift(int v) { return (v & 1) * 16 + (v >> 1) * 4; }

struct Q4Lane {
  uint32_t word;  // the codes of lanes 8w .. 8w + 7 (w = lane / 8), in each of those lanes
  __half2 step;   // (d, m) of the group, in every lane
  __half value;   // fp16(q d + m) of this lane's code: what the attention reads (rotated)
};

// A warp holds one group, value `lane` in each lane (all 32 lanes must call).
__device__ __forceinline__ Q4Lane q4_quantize_warp(float x) {
  const int lane = threadIdx.x & 31;
  const float r = q4_rotate_warp(x);
  const float lo = q4_warp_min(r), hi = warp_max(r);
  const __half dh = __float2half_rn(fminf((hi - lo) / 15.0f, 65504.0f));
  const __half mh = __float2half_rn(fmaxf(fminf(lo, 65504.0f), -65504.0f));
  const float d = __half2float(dh), m = __half2float(mh);
  const float c = d == 0.0f ? 0.0f : fmaxf(fminf(rintf((r - m) / d), 15.0f), 0.0f);
  uint32_t w = static_cast<uint32_t>(c) << q4_shift(lane & 7);
  w |= __shfl_xor_sync(0xffffffffu, w, 1);
  w |= __shfl_xor_sync(0xffffffffu, w, 2);
  w |= __shfl_xor_sync(0xffffffffu, w, 4);
  return {w, __halves2half2(dh, mh), __hfma(__float2half_rn(c), dh, mh)};
}

// 8 codes (one word) -> 8 halves fp16(q d + m) in order (4 words of half2): the nibble pairs
// become fp16 1024 + q by a mask and an or, 1024 comes off exactly, one fp16 fma rounds once.
__device__ __forceinline__ void q4_dequant8(uint32_t w, __half2 d2, __half2 m2, uint32_t* out) {
  const __half2 bias = __half2half2(__ushort_as_half(static_cast<unsigned short>(0x6400)));  // 1024
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t t = ((w >> (4 * j)) & 0x000F000Fu) | 0x64006400u;
    const __half2 q = __hsub2(*reinterpret_cast<const __half2*>(&t), bias);
    const __half2 v = __hfma2(q, d2, m2);
    out[j] = *reinterpret_cast<const uint32_t*>(&v);
  }
}

// A tile of a q4 cache (kRows keys of one head, head dim D) in registers over kThreads threads,
// as Q8Tile (kv_q8.cuh): thread t holds the 8-byte code pieces (16 values) t, t + kThreads, ...
// and their steps; store() writes the rotated values u into f16 tile buffers of pitch P.
template <int D, int kRows, int kThreads, int P>
struct Q4Tile {
  static constexpr int kPieces = D / 16;                      // per row
  static constexpr int kItems = kRows * kPieces / kThreads;  // per thread
  uint2 k[kItems], v[kItems];
  __half2 ks[kItems], vs[kItems];
  // Keys key0 + r below key_end, except `skip` (-1: none); the other rows hold zeros. kh, vh:
  // the head's codes (bytes); ksh, vsh: its steps.
  __device__ __forceinline__ void load(const uint8_t* kh, const __half2* ksh, const uint8_t* vh, const __half2* vsh,
                                       int t, int key0, int key_end, int skip) {
#pragma unroll
    for (int n = 0; n < kItems; ++n) {
      const int i = t + n * kThreads, key = key0 + i / kPieces;
      k[n] = v[n] = make_uint2(0u, 0u);
      ks[n] = vs[n] = __halves2half2(__ushort_as_half(0), __ushort_as_half(0));
      if (key < key_end && key != skip) {
        const size_t e = static_cast<size_t>(key) * D + (i % kPieces) * 16;  // value index
        k[n] = __ldcg(reinterpret_cast<const uint2*>(kh + e / 2));
        v[n] = __ldcg(reinterpret_cast<const uint2*>(vh + e / 2));
        ks[n] = ksh[e / kQ4Group];
        vs[n] = vsh[e / kQ4Group];
      }
    }
  }
  __device__ __forceinline__ void store(__half* k_dst, __half* v_dst, int t) const {
#pragma unroll
    for (int n = 0; n < kItems; ++n) {
      const int i = t + n * kThreads, at = (i / kPieces) * P + (i % kPieces) * 16;
      uint4 o[2];
      q4_dequant8(k[n].x, __low2half2(ks[n]), __high2half2(ks[n]), &o[0].x);
      q4_dequant8(k[n].y, __low2half2(ks[n]), __high2half2(ks[n]), &o[1].x);
      reinterpret_cast<uint4*>(k_dst + at)[0] = o[0];
      reinterpret_cast<uint4*>(k_dst + at)[1] = o[1];
      q4_dequant8(v[n].x, __low2half2(vs[n]), __high2half2(vs[n]), &o[0].x);
      q4_dequant8(v[n].y, __low2half2(vs[n]), __high2half2(vs[n]), &o[1].x);
      reinterpret_cast<uint4*>(v_dst + at)[0] = o[0];
      reinterpret_cast<uint4*>(v_dst + at)[1] = o[1];
    }
  }
};

}  // namespace exq::cuda
