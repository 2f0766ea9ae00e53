// Sampling kernels: argmax, and the full sampler (repetition penalty, temperature, top-k,
// top-p, min-p, draw) in one block of 1024 threads, reproducing runtime/sampler.cpp.
//
// Exactness: the sampler's float values are computed with the CPU's operations in the CPU's
// rounding (__fdiv_rn, exp in double, one rounding to float). Its double sums run in index
// order, the CPU's order, whenever the kept tokens fit one per thread (up to 1024, e.g. any
// top-k <= 1024): then probabilities and draws are bit-identical. With more tokens, partial
// sums per thread are added in order (and top-p sums ascending probabilities in another
// order than the CPU's sort), which can differ in the last bits of a double; the picked token
// differs only when the draw or the top-p limit falls within that rounding of a boundary.
#include <algorithm>
#include <climits>
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kArgmaxThreads = 1024;
constexpr int kSampleThreads = 1024;
constexpr unsigned kFull = 0xffffffffu;
constexpr size_t kSectionAlign = 256;

// (value, index) is better when larger, or equal with a smaller index: the first maximum wins,
// as std::max_element does on the CPU.
__device__ __forceinline__ void take_better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

// Block-wide argmax of (v, i); every thread gets the winner's index. s_v, s_i: 32 each.
__device__ int block_argmax(float best, int best_i, float* s_v, int* s_i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    take_better(best, best_i, __shfl_xor_sync(kFull, best, o), __shfl_xor_sync(kFull, best_i, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    s_v[warp] = best;
    s_i[warp] = best_i;
  }
  __syncthreads();
  const int warps = blockDim.x >> 5;
  best = lane < warps ? s_v[lane] : -INFINITY;
  best_i = lane < warps ? s_i[lane] : INT_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    take_better(best, best_i, __shfl_xor_sync(kFull, best, o), __shfl_xor_sync(kFull, best_i, o));
  return best_i;
}

// One block per row.
__global__ void argmax_kernel(const float* __restrict__ logits, int32_t* __restrict__ out,
                              int vocab) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const float* row = logits + static_cast<size_t>(blockIdx.x) * vocab;
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v == v) take_better(best, best_i, v, i);  // v != v: NaN, skipped
  }
  best_i = block_argmax(best, best_i, sv, si);
  if (threadIdx.x == 0) out[blockIdx.x] = best_i == INT_MAX ? 0 : best_i;
}

// ---- sampler ----------------------------------------------------------------------------

struct MaxF {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumD {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct SumI {
  __device__ int operator()(int a, int b) const { return a + b; }
};
struct MinI {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};
struct MaxI {
  __device__ int operator()(int a, int b) const { return a > b ? a : b; }
};

struct SampleShared {
  double part[kSampleThreads];  // per-thread partial sums, combined in thread order
  int hist[256];
  float f32[32];
  double f64[32];
  int i32[32];
  int scan[32];
  double dval;
  int ival[2];
  uint32_t uval;
};

// Fixed-order tree reduction; every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, T identity, T* scratch, Op op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : identity;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Exclusive prefix sum of v over threads; *total gets the sum.
__device__ int block_exclusive_scan(int v, int* s_warp, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(kFull, x, o);
    if (lane >= o) x += n;
  }
  __syncthreads();
  if (lane == 31) s_warp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < warps ? s_warp[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int n = __shfl_up_sync(kFull, w, o);
      if (lane >= o) w += n;
    }
    if (lane < warps) s_warp[lane] = w;
    if (lane == 31) *total = w;
  }
  __syncthreads();
  return (warp == 0 ? 0 : s_warp[warp - 1]) + x - v;
}

// Sum of the per-thread partials in thread order (threads >= used hold nothing).
__device__ double ordered_sum(double part, int used, SampleShared& sh) {
  sh.part[threadIdx.x] = part;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int t = 0; t < used; ++t) s += sh.part[t];
    sh.dval = s;
  }
  __syncthreads();
  return sh.dval;
}

// Contiguous slice [j0, j1) of n items for this thread, and how many threads hold items.
struct Slice {
  int j0, j1, used;
};
__device__ Slice slice_of(int n) {
  const int chunk = (n + kSampleThreads - 1) / kSampleThreads;
  const int j0 = min(n, static_cast<int>(threadIdx.x) * chunk);
  return {j0, min(n, j0 + chunk), chunk > 0 ? (n + chunk - 1) / chunk : 0};
}

// Float order as unsigned order (-0 counted as +0, as float comparisons do).
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// The k-th largest of m[0, vocab) (radix select, 8 bits per pass, exact).
__device__ float kth_largest(const float* m, int vocab, int k, SampleShared& sh) {
  const int lane = threadIdx.x & 31;
  uint32_t prefix = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kSampleThreads) sh.hist[b] = 0;
    __syncthreads();
    const uint32_t mask = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
    for (int base = 0; base < vocab; base += kSampleThreads) {  // warp-uniform trip count
      const int i = base + static_cast<int>(threadIdx.x);
      int bin = -1;
      if (i < vocab) {
        const uint32_t key = order_key(m[i]);
        if ((key & mask) == prefix) bin = static_cast<int>((key >> shift) & 0xffu);
      }
      // Lanes of one bin add together: logits share few high digits, which would serialize.
      const unsigned peers = __match_any_sync(kFull, bin);
      if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], __popc(peers));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int cum = 0, b = 255;
      for (; b > 0; --b) {
        if (cum + sh.hist[b] >= k) break;
        cum += sh.hist[b];
      }
      sh.ival[0] = k - cum;
      sh.uval = prefix | (static_cast<uint32_t>(b) << shift);
    }
    __syncthreads();
    k = sh.ival[0];
    prefix = sh.uval;
  }
  return key_value(prefix);
}

// cp[j] = the CPU's softmax_in_place of the candidates' logits (-inf = removed).
__device__ void softmax_candidates(int c, const float* clogit, float* cp, SampleShared& sh) {
  const Slice s = slice_of(c);
  float mx = -INFINITY;
  for (int j = s.j0; j < s.j1; ++j) mx = fmaxf(mx, clogit[j]);
  mx = block_reduce(mx, -INFINITY, sh.f32, MaxF());
  double part = 0.0;
  for (int j = s.j0; j < s.j1; ++j) {
    const float x = clogit[j];
    const float e = x == -INFINITY ? 0.0f
                                   : __double2float_rn(exp(static_cast<double>(__fsub_rn(x, mx))));
    cp[j] = e;
    part += e;
  }
  const double inv = 1.0 / ordered_sum(part, s.used, sh);
  for (int j = s.j0; j < s.j1; ++j) cp[j] = __double2float_rn(__dmul_rn(cp[j], inv));
  __syncthreads();
}

// HF top-p: in ascending (probability, index) order, drop tokens while the cumulative sum stays
// <= 1 - top_p; the last token always stays. Found as the smallest probability P (by its bits,
// monotone for positives) whose cumulative sum passes the limit; ties at P go in index order.
__device__ void top_p_filter(int c, float top_p, float* clogit, const float* cp, SampleShared& sh) {
  const Slice s = slice_of(c);
  const double limit = 1.0 - static_cast<double>(top_p);
  int npos = 0;
  float pmax = 0.0f;
  for (int j = s.j0; j < s.j1; ++j) {
    npos += cp[j] > 0.0f;
    pmax = fmaxf(pmax, cp[j]);
  }
  npos = block_reduce(npos, 0, sh.i32, SumI());
  pmax = block_reduce(pmax, 0.0f, sh.f32, MaxF());
  auto sum_le = [&](uint32_t key) {
    double part = 0.0;
    for (int j = s.j0; j < s.j1; ++j) {
      const float q = cp[j];
      if (q > 0.0f && __float_as_uint(q) <= key) part += q;
    }
    return block_reduce(part, 0.0, sh.f64, SumD());
  };
  const uint32_t kmax = __float_as_uint(pmax);
  uint32_t key = kmax;
  if (sum_le(kmax) > limit) {
    uint32_t lo = 1, hi = kmax;
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      if (sum_le(mid) > limit) hi = mid;
      else lo = mid + 1;
    }
    key = lo;
  }
  const double below = sum_le(key - 1);
  int n_lt = 0, ties = 0;
  for (int j = s.j0; j < s.j1; ++j) {
    const float q = cp[j];
    if (q > 0.0f) {
      n_lt += __float_as_uint(q) < key;
      ties += __float_as_uint(q) == key;
    }
  }
  n_lt = block_reduce(n_lt, 0, sh.i32, SumI());
  int tie_rank = block_exclusive_scan(ties, sh.scan, &sh.ival[1]);
  const int tie_total = sh.ival[1];
  __syncthreads();
  if (threadIdx.x == 0) {
    const double pk = __uint_as_float(key);
    double cum = below;
    int removed = 0;
    while (removed < tie_total && n_lt + removed <= npos - 2) {
      cum += pk;
      if (cum > limit) break;
      ++removed;
    }
    sh.ival[0] = removed;
  }
  __syncthreads();
  const int removed = sh.ival[0];
  for (int j = s.j0; j < s.j1; ++j) {
    const float q = cp[j];
    if (!(q > 0.0f)) continue;
    const uint32_t b = __float_as_uint(q);
    if (b < key) {
      clogit[j] = -INFINITY;
    } else if (b == key) {
      if (tie_rank < removed) clogit[j] = -INFINITY;
      ++tie_rank;
    }
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const float* __restrict__ logits, const uint8_t* __restrict__ seen, int vocab,
                  SampleParams p, float* __restrict__ m, int32_t* __restrict__ cidx,
                  float* __restrict__ clogit, float* __restrict__ cp, int32_t* __restrict__ out) {
  __shared__ SampleShared sh;
  const bool penalize = seen != nullptr && p.penalty != 1.0f;

  // Penalty (HF: a positive logit divided, a negative one multiplied), checks, then argmax or
  // temperature.
  int bad = 0, any = 0;
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += kSampleThreads) {
    float v = logits[i];
    if (penalize && seen[i]) v = v < 0.0f ? __fmul_rn(v, p.penalty) : __fdiv_rn(v, p.penalty);
    bad |= v != v || v == INFINITY;
    any |= v != -INFINITY;
    if (p.greedy) take_better(best, best_i, v, i);
    else m[i] = __fdiv_rn(v, p.temperature);
  }
  if (__syncthreads_or(bad)) {
    if (threadIdx.x == 0) *out = kSampleNonFinite;
    return;
  }
  if (!__syncthreads_or(any)) {
    if (threadIdx.x == 0) *out = kSampleNothing;
    return;
  }
  if (p.greedy) {
    best_i = block_argmax(best, best_i, sh.f32, sh.i32);
    if (threadIdx.x == 0) *out = best_i;
    return;
  }

  // Top-k keeps every logit >= the k-th largest (ties included).
  float threshold = -INFINITY;
  if (p.top_k > 0 && p.top_k < vocab) threshold = kth_largest(m, vocab, p.top_k, sh);
  __syncthreads();

  // Candidates: the logits still finite, in index order (each thread a contiguous slice).
  int c = 0;
  {
    const Slice s = slice_of(vocab);
    int count = 0;
    for (int i = s.j0; i < s.j1; ++i) count += m[i] != -INFINITY && m[i] >= threshold;
    int at = block_exclusive_scan(count, sh.scan, &sh.ival[1]);
    c = sh.ival[1];
    for (int i = s.j0; i < s.j1; ++i) {
      const float x = m[i];
      if (x != -INFINITY && x >= threshold) {
        cidx[at] = i;
        clogit[at] = x;
        ++at;
      }
    }
    __syncthreads();
  }
  if (c == 0) {
    if (threadIdx.x == 0) *out = kSampleNothing;
    return;
  }

  softmax_candidates(c, clogit, cp, sh);
  if (p.top_p < 1.0f) {
    top_p_filter(c, p.top_p, clogit, cp, sh);
    softmax_candidates(c, clogit, cp, sh);
  }
  if (p.min_p > 0.0f) {
    const Slice s = slice_of(c);
    float top = 0.0f;
    for (int j = s.j0; j < s.j1; ++j) top = fmaxf(top, cp[j]);
    top = block_reduce(top, 0.0f, sh.f32, MaxF());
    const float cut = __fmul_rn(p.min_p, top);
    for (int j = s.j0; j < s.j1; ++j)
      if (cp[j] < cut) clogit[j] = -INFINITY;
    __syncthreads();
    softmax_candidates(c, clogit, cp, sh);
  }

  // Draw: the first token whose cumulative probability (index order) exceeds u, else the last
  // token with a nonzero probability.
  const Slice s = slice_of(c);
  double part = 0.0;
  for (int j = s.j0; j < s.j1; ++j)
    if (cp[j] > 0.0f) part += cp[j];
  sh.part[threadIdx.x] = part;
  __syncthreads();
  if (threadIdx.x == 0) {
    double run = 0.0;
    for (int t = 0; t < s.used; ++t) {
      const double x = sh.part[t];
      sh.part[t] = run;
      run += x;
    }
  }
  __syncthreads();
  int found = INT_MAX, last = -1;
  if (static_cast<int>(threadIdx.x) < s.used) {
    double cum = sh.part[threadIdx.x];
    for (int j = s.j0; j < s.j1; ++j) {
      const float q = cp[j];
      if (!(q > 0.0f)) continue;
      cum += q;
      last = j;
      if (p.uniform < cum) {
        found = j;
        break;
      }
    }
  }
  found = block_reduce(found, INT_MAX, sh.i32, MinI());
  last = block_reduce(last, -1, sh.i32, MaxI());
  if (threadIdx.x == 0) {
    const int pick = found != INT_MAX ? found : last;
    *out = pick >= 0 ? cidx[pick] : kSampleNothing;
  }
}

__global__ void mark_seen_kernel(const int32_t* __restrict__ ids, int n, uint8_t* __restrict__ seen,
                                 int vocab) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int32_t id = ids[i];
    if (id >= 0 && id < vocab) seen[id] = 1;
  }
}

// Explicit roundings: the CPU computes each step in float without contraction.
__global__ void adjust_logits_kernel(const float* __restrict__ in, int vocab, const float* __restrict__ bias,
                                     const int32_t* __restrict__ counts, float presence, float frequency,
                                     const uint8_t* __restrict__ allowed, float* __restrict__ out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < vocab; i += gridDim.x * blockDim.x) {
    float v = in[i];
    if (bias) v = __fadd_rn(v, bias[i]);
    if (counts) {
      const int32_t c = counts[i];
      if (c > 0) v = __fsub_rn(v, __fadd_rn(presence, __fmul_rn(frequency, static_cast<float>(c))));
    }
    if (allowed && !allowed[i]) v = -INFINITY;
    out[i] = v;
  }
}

__global__ void count_token_kernel(const int32_t* __restrict__ token, int32_t* __restrict__ counts, int vocab) {
  const int32_t id = *token;
  if (id >= 0 && id < vocab) ++counts[id];
}

// runtime::token_logprob on the device: max, then the sum of exp in double (per thread, then
// a fixed-order tree: the last bits may differ from the CPU's index-order sum), then top_n
// block argmaxes, each over the tokens ranked after the previous pick.
__global__ void __launch_bounds__(kSampleThreads)
    logprob_kernel(const float* __restrict__ logits, int vocab, const int32_t* __restrict__ token, int top_n,
                   LogprobOut* __restrict__ out) {
  logits += static_cast<size_t>(blockIdx.x) * vocab;  // a block per row
  token += blockIdx.x;
  out += blockIdx.x;
  __shared__ float sf[32];
  __shared__ double sd[32];
  __shared__ float sv[32];
  __shared__ int si[32];
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += kSampleThreads) {
    const float v = logits[i];
    if (v == v) mx = fmaxf(mx, v);
  }
  mx = block_reduce(mx, -INFINITY, sf, MaxF{});
  double sum = 0.0;
  for (int i = threadIdx.x; i < vocab; i += kSampleThreads) {
    const float v = logits[i];
    if (v == v) sum += exp(static_cast<double>(v) - static_cast<double>(mx));
  }
  sum = block_reduce(sum, 0.0, sd, SumD{});
  const double lse = static_cast<double>(mx) + log(sum);
  const int32_t id = *token;
  if (threadIdx.x == 0) out->logprob = id >= 0 && id < vocab ? static_cast<float>(logits[id] - lse) : NAN;
  float prev_v = INFINITY;
  int prev_i = -1;
  for (int j = 0; j < top_n; ++j) {
    float best = -INFINITY;
    int best_i = INT_MAX;
    for (int i = threadIdx.x; i < vocab; i += kSampleThreads) {
      const float v = logits[i];
      if (v == v && (v < prev_v || (v == prev_v && i > prev_i))) take_better(best, best_i, v, i);
    }
    best_i = block_argmax(best, best_i, sv, si);
    if (best_i == INT_MAX) {  // fewer tokens than top_n
      if (threadIdx.x == 0) out->top_ids[j] = -1;
      continue;
    }
    prev_v = logits[best_i];
    prev_i = best_i;
    if (threadIdx.x == 0) {
      out->top_ids[j] = best_i;
      out->top_logprobs[j] = static_cast<float>(prev_v - lse);
    }
  }
}

size_t section_bytes(int vocab) {
  return (static_cast<size_t>(vocab) * 4 + kSectionAlign - 1) / kSectionAlign * kSectionAlign;
}

}  // namespace

void argmax_cuda(const float* logits, int32_t* out, int rows, int vocab, cudaStream_t stream) {
  if (rows == 0) return;
  argmax_kernel<<<rows, kArgmaxThreads, 0, stream>>>(logits, out, vocab);
  CUDA_CHECK_LAUNCH();
}

size_t sample_workspace_bytes_for(int vocab) { return 4 * section_bytes(vocab); }

void sample_cuda(const float* logits, const uint8_t* seen, int vocab, const SampleParams& params,
                 void* workspace, int32_t* out, cudaStream_t stream) {
  auto* base = static_cast<char*>(workspace);
  const size_t sec = section_bytes(vocab);
  sample_kernel<<<1, kSampleThreads, 0, stream>>>(
      logits, seen, vocab, params, reinterpret_cast<float*>(base),
      reinterpret_cast<int32_t*>(base + sec), reinterpret_cast<float*>(base + 2 * sec),
      reinterpret_cast<float*>(base + 3 * sec), out);
  CUDA_CHECK_LAUNCH();
}

void token_logprob_cuda(const float* logits, int rows, int vocab, const int32_t* token, int top_n,
                        LogprobOut* out, cudaStream_t stream) {
  if (rows == 0) return;
  logprob_kernel<<<rows, kSampleThreads, 0, stream>>>(logits, vocab, token, top_n, out);
  CUDA_CHECK_LAUNCH();
}

void adjust_logits_cuda(const float* in, int vocab, const float* bias, const int32_t* counts, float presence,
                        float frequency, const uint8_t* allowed, float* out, cudaStream_t stream) {
  const int threads = 256, blocks = std::min(256, (vocab + threads - 1) / threads);
  adjust_logits_kernel<<<blocks, threads, 0, stream>>>(in, vocab, bias, counts, presence, frequency, allowed, out);
  CUDA_CHECK_LAUNCH();
}

void count_token_cuda(const int32_t* token, int32_t* counts, int vocab, cudaStream_t stream) {
  count_token_kernel<<<1, 1, 0, stream>>>(token, counts, vocab);
  CUDA_CHECK_LAUNCH();
}

void mark_seen_cuda(const int32_t* ids, int n, uint8_t* seen, int vocab, cudaStream_t stream) {
  if (n <= 0) return;
  const int threads = 256, blocks = std::min(64, (n + threads - 1) / threads);
  mark_seen_kernel<<<blocks, threads, 0, stream>>>(ids, n, seen, vocab);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
