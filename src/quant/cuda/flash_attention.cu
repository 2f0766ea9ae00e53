// Tensor-core causal attention; see flash_attention.h. Fragment layouts are those of PTX's
// mma.m16n8k16 (.row.col): per lane, gid = lane / 4 and tig = lane % 4; A regs hold rows gid and
// gid + 8 at columns 2*tig (+8); B regs hold column gid at rows 2*tig (+8); C holds rows gid and
// gid + 8 at columns 2*tig, 2*tig + 1. ldmatrix.x4 fills them from shared memory (.trans for V).
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/softmax_mma.cuh"
#include "quant/cuda/flash_attention.h"

namespace exq::quant::cuda {
namespace {

constexpr int kBlockM = 64;  // queries per block (16 per warp)
constexpr int kBlockN = 64;  // keys per tile
constexpr int kThreads = 128;

// Shared row pitch in halves: 8 extra halves move consecutive rows 4 banks apart, so the 8 rows
// an ldmatrix phase reads hit distinct banks; rows stay 16-byte aligned for cp.async.
template <int D>
constexpr int pitch() {
  return D + 8;
}

template <int D>
constexpr size_t smem_bytes() {
  return static_cast<size_t>(kBlockM + 4 * kBlockN) * pitch<D>() * sizeof(__half);
}

using exq::cuda::cp_async_16;
using exq::cuda::cp_async_commit;
using exq::cuda::cp_async_wait;
using exq::cuda::ldmatrix_x4;
using exq::cuda::ldmatrix_x4_trans;
using exq::cuda::mma_pv;
using exq::cuda::mma_qk;
using exq::cuda::pack_half2;
using exq::cuda::quad_row_max;
using exq::cuda::softmax_advance;

// A 64-row tile of a [T, D] head into shared memory; rows >= T are zeros.
template <int D>
__device__ __forceinline__ void load_tile(__half* dst, const __half* src, int row0, int T) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int i = threadIdx.x; i < kBlockN * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const int row = row0 + r;
    const __half* g = src + static_cast<size_t>(row < T ? row : T - 1) * D + c * 8;
    cp_async_16(dst + r * pitch<D>() + c * 8, g, row < T);
  }
}

// grid (ceil(T / 64), heads); heavy (late) query blocks first.
template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_attention_kernel(const __half* __restrict__ q, const __half* __restrict__ k,
                           const __half* __restrict__ v, float* __restrict__ out, int T, int H,
                           int KVH, float softcap2) {
  constexpr int P = pitch<D>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* q_s = reinterpret_cast<__half*>(smem_raw);  // [64][P]
  __half* k_s = q_s + kBlockM * P;                    // [2][64][P]
  __half* v_s = k_s + 2 * kBlockN * P;                // [2][64][P]

  const int m_block = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  const int h = blockIdx.y, kvh = h / (H / KVH);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int m0 = m_block * kBlockM;
  const int tiles = m_block + 1;  // keys up to the block's last query (kBlockM == kBlockN)
  const __half* qh = q + static_cast<size_t>(h) * T * D;
  const __half* kh = k + static_cast<size_t>(kvh) * T * D;
  const __half* vh = v + static_cast<size_t>(kvh) * T * D;

  load_tile<D>(q_s, qh, m0, T);
  load_tile<D>(k_s, kh, 0, T);
  load_tile<D>(v_s, vh, 0, T);
  cp_async_commit();

  uint32_t qf[1][D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int sel = lane >> 3, r8 = lane & 7;  // ldmatrix: which 8x8 matrix, which of its rows

  for (int j = 0; j < tiles; ++j) {
    if (j + 1 < tiles) {
      load_tile<D>(k_s + ((j + 1) & 1) * kBlockN * P, kh, (j + 1) * kBlockN, T);
      load_tile<D>(v_s + ((j + 1) & 1) * kBlockN * P, vh, (j + 1) * kBlockN, T);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[0][kk], q_s + (warp * 16 + r8 + (sel & 1) * 8) * P + kk * 16 + (sel >> 1) * 8);
    }
    const __half* ks = k_s + (j & 1) * kBlockN * P;
    const __half* vs = v_s + (j & 1) * kBlockN * P;

    float s[kBlockN / 8][4];
#pragma unroll
    for (int i = 0; i < kBlockN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    mma_qk(s, qf, ks, P);
    if (softcap2 > 0.0f) {  // gemma2, in base 2 as the scores are
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = softcap2 * tanhf(s[nt][e] / softcap2);
    }
    if (j == m_block) {  // the diagonal tile: keys after the query are masked
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = m0 + warp * 16 + gid + (e >> 1) * 8;
          const int col = j * kBlockN + nt * 8 + 2 * tig + (e & 1);
          if (col > row) s[nt][e] = -INFINITY;
        }
    }

    // Online softmax (base 2: q carries log2(e)); each row lives in one quad of lanes.
    float mx[2];
    quad_row_max(s, row_max, mx);
    const float corr[2] = {exp2f(row_max[0] - mx[0]), exp2f(row_max[1] - mx[1])};
    float sum[2] = {0.0f, 0.0f};
    uint32_t pf[1][kBlockN / 16][4];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      const float p0 = exp2f(s[nt][0] - mx[0]), p1 = exp2f(s[nt][1] - mx[0]);
      const float p2 = exp2f(s[nt][2] - mx[1]), p3 = exp2f(s[nt][3] - mx[1]);
      sum[0] += p0 + p1;
      sum[1] += p2 + p3;
      pf[0][nt / 2][(nt & 1) * 2] = pack_half2(p0, p1);
      pf[0][nt / 2][(nt & 1) * 2 + 1] = pack_half2(p2, p3);
    }
    softmax_advance(o, row_sum, row_max, sum, mx, corr);
    mma_pv(o, pf, vs, P);
    __syncthreads();  // this tile's buffers are refilled two iterations on
  }

  const float inv[2] = {1.0f / row_sum[0], 1.0f / row_sum[1]};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = m0 + warp * 16 + gid + r * 8;
    if (t >= T) continue;
    float* orow = out + (static_cast<size_t>(t) * H + h) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<float2*>(orow + dt * 8 + 2 * tig) =
          make_float2(o[dt][2 * r] * inv[r], o[dt][2 * r + 1] * inv[r]);
  }
}

__global__ void head_major_f16_kernel(const float* __restrict__ src, __half* __restrict__ dst,
                                      int T, int H, int D, float scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(T) * H * D;
  if (i >= total) return;
  const int d = static_cast<int>(i % D);
  const int64_t th = i / D;
  const int t = static_cast<int>(th % T), h = static_cast<int>(th / T);
  dst[i] = __float2half_rn(src[(static_cast<int64_t>(t) * H + h) * D + d] * scale);
}

template <int D>
void launch(const __half* q, const __half* k, const __half* v, float* out, int T, int H, int KVH,
            float softcap2, cudaStream_t stream) {
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(flash_attention_kernel<D>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem_bytes<D>())));
    return true;
  }();
  (void)configured;
  const dim3 grid((T + kBlockM - 1) / kBlockM, H);
  flash_attention_kernel<D>
      <<<grid, kThreads, smem_bytes<D>(), stream>>>(q, k, v, out, T, H, KVH, softcap2);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool flash_attention_supports(int head_dim) { return head_dim == 64 || head_dim == 128; }

void head_major_f16_cuda(const float* src, __half* dst, int tokens, int heads, int head_dim,
                         float scale, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(tokens) * heads * head_dim;
  if (total == 0) return;
  head_major_f16_kernel<<<exq::cuda::ceil_div(total, 256), 256, 0, stream>>>(
      src, dst, tokens, heads, head_dim, scale);
  CUDA_CHECK_LAUNCH();
}

void flash_attention_cuda(const __half* q, const __half* k, const __half* v, float* out, int tokens,
                          int heads, int kv_heads, int head_dim, float softcap2, cudaStream_t stream) {
  if (tokens == 0) return;
  if (head_dim == 64)
    launch<64>(q, k, v, out, tokens, heads, kv_heads, softcap2, stream);
  else
    launch<128>(q, k, v, out, tokens, heads, kv_heads, softcap2, stream);
}

}  // namespace exq::quant::cuda
