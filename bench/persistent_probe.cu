#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "persistent_probe.h"

// Bulk copies and transaction-counted mbarriers need sm_90; the sm_80 build of this file traps.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define EXQ_SM90_ASM(...) asm volatile(__VA_ARGS__)
#else
#define EXQ_SM90_ASM(...) __trap()
#endif

namespace exq::cuda::bench {
namespace {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

[[maybe_unused]] __device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
  EXQ_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_addr(bar)) : "memory");
}
// One bulk (TMA) copy of `bytes` into shared memory, completing on `bar`; or, for none, a plain arrival.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  if (bytes == 0) {
    EXQ_SM90_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
    return;
  }
  EXQ_SM90_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
  EXQ_SM90_ASM("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  do {
    EXQ_SM90_ASM(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// The stand-in for a GEMV thread's work and state: consume() takes 16 bytes of weights (one
// XOR per word, or a 4-bit decode and an HFMA2 per weight pair); acc also takes the phase inputs.
template <int WORK>
struct StandIn {
  __half2 xv, hacc;
  uint32_t bits = 0;
  float acc = 0.0f;
  __device__ StandIn() : xv(__float2half2_rn(0.001f)), hacc(__float2half2_rn(0.0f)) {}
  __device__ __forceinline__ void consume(const uint4 v) {
    if constexpr (WORK == 0) {
      bits ^= v.x ^ v.y ^ v.z ^ v.w;
    } else {
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q4 = 0; q4 < 4; ++q4)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t q = ((w[q4] >> (4 * i)) & 0x000f000fu) | 0x64006400u;
          hacc = __hfma2(*reinterpret_cast<const __half2*>(&q), xv, hacc);
        }
    }
  }
  // What a phase's outputs are made of, and the sink at the end (keeps all of the work live).
  __device__ __forceinline__ float value() const {
    return acc + static_cast<float>(bits & 1u) + __low2float(hacc);
  }
  __device__ __forceinline__ float final_value() const { return acc + static_cast<float>(bits) + __low2float(hacc); }
};

// A block's contiguous share of a phase's bytes, rounded up to `align`: computed once per phase
// (a 64-bit division per stage costs more issue slots than the stage's arithmetic).
__device__ __forceinline__ uint64_t chunk_of(const ProbePhase& ph, uint64_t align) {
  const uint64_t g = gridDim.x;
  return ((ph.bytes + g - 1) / g + align - 1) / align * align;
}

// The k-th stage of this block in a phase: [off, end). Contiguous: the block's share of the
// bytes (`chunk`), in stages; interleaved: stages b, b + G, b + 2G, ... of the phase.
__device__ __forceinline__ bool stage_of(const ProbePhase& ph, uint64_t k, uint64_t stage, uint64_t chunk,
                                         bool interleave, uint64_t& off, uint64_t& end) {
  const uint64_t g = gridDim.x, b = blockIdx.x;
  if (interleave) {
    off = (b + k * g) * stage;
    end = min(ph.bytes, off + stage);
    return off < ph.bytes;
  }
  const uint64_t beg = b * chunk, stop = min(ph.bytes, beg + chunk);
  off = beg + k * stage;
  end = min(stop, off + stage);
  return off < stop;
}

// The n threads (0..n-1) that run the phases meet at barrier `id` (0: the whole block).
struct PhaseSync {
  int id, n;
  __device__ __forceinline__ void operator()() const {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
  }
};

// Before phase p: wait for every block to finish phase p - 1 (grid barrier at `target`
// arrivals), then read its outputs from L2 into acc (as a GEMV would read its input vector).
__device__ __forceinline__ void phase_begin(const ProbePhase& ph, int p, int first, bool barrier,
                                            const unsigned* counter, unsigned target, const float* act,
                                            int act_floats, PhaseSync sync, float& acc) {
  const int t = static_cast<int>(threadIdx.x);
  if (p > first && barrier) {
    if (t == 0)
      while (load_acquire(counter) < target) {
      }
    sync();
  }
  if (p > 0) {
    const float* in = act + ((p - 1) & 1) * act_floats;
    float sum = 0.0f;
    for (int i = t; i < ph.in_floats; i += sync.n) sum += __ldcg(in + i);
    acc += sum * 1e-30f;
  }
}

// After phase p: a sum over the phase threads stands in for the GEMV's reduction across warps,
// the block writes its share of the outputs and arrives at the grid barrier.
__device__ __forceinline__ void phase_end(const ProbePhase& ph, int p, bool barrier, unsigned* counter,
                                          unsigned& target, float* act, int act_floats, PhaseSync sync, float v,
                                          float* red) {
  const int t = static_cast<int>(threadIdx.x);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((t & 31) == 0) red[t >> 5] = v;
  sync();
  float total = 0.0f;
  for (int w = 0; w < sync.n / 32; ++w) total += red[w];
  sync();
  const int share = (ph.out_floats + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  float* out = act + (p & 1) * act_floats;
  for (int i = t; i < share; i += sync.n) {
    const int idx = static_cast<int>(blockIdx.x) * share + i;
    if (idx < ph.out_floats) __stcg(out + idx, total + static_cast<float>(i));
  }
  if (barrier) {
    sync();
    if (t == 0) {
      __threadfence();
      atomicAdd(counter, 1u);
    }
    target += gridDim.x;
  }
}

// MODE 2: no ring, each thread loads its (at most 4) 16-byte pieces of a stage straight into
// registers (nothing crosses a phase boundary). MODE 0: every thread copies its own 16-byte
// pieces of each stage (cp.async) and consumes them; MODE 1: each warp owns a 1/warps slice of every stage, copied by one bulk (TMA) copy
// that completes on the warp's mbarrier for that ring slot.
template <int R, int WORK, int MODE>
__global__ void __launch_bounds__(1024, 1)
    probe_kernel(const ProbePhase* __restrict__ phases, int first, int last, int stage_bytes, int align,
                 bool interleave, bool barrier, float* act, int act_floats, unsigned* counter, float* sink) {
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ float red[32];
  const int T = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  const int per_thread = stage_bytes / (16 * T);

  __shared__ uint64_t bars[32 * 8];
  const int warp = t >> 5, lane = t & 31;
  const int wbytes = stage_bytes / (T >> 5);  // MODE 1: a warp's slice of a stage
  if (MODE == 1 && lane == 0) {
    for (int i = 0; i < R; ++i) mbar_init(&bars[warp * 8 + i]);
    EXQ_SM90_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncwarp();

  // Producer cursor: runs ahead of the consumer across phase boundaries.
  const auto S = static_cast<uint64_t>(stage_bytes), A = static_cast<uint64_t>(align);
  int pp = first;
  uint64_t pk = 0, pchunk = pp < last ? chunk_of(phases[pp], A) : 0;
  int pslot = 0;
  auto issue = [&]() {
    uint64_t off = 0, end = 0;
    while (pp < last && !stage_of(phases[pp], pk, S, pchunk, interleave, off, end)) {
      if (++pp < last) pchunk = chunk_of(phases[pp], A);
      pk = 0;
    }
    uint8_t* s = ring + static_cast<size_t>(pslot) * stage_bytes;
    if constexpr (MODE == 2) {
      return;
    } else if constexpr (MODE == 0) {
      if (pp < last) {
        const uint8_t* g = phases[pp].data + off;
        for (int j = 0; j < per_thread; ++j) {
          const uint64_t o = static_cast<uint64_t>(t + j * T) * 16;
          if (off + o < end) cp_async16(s + o, g + o);
        }
      }
      cp_commit();
    } else {
      if (lane == 0) {
        const uint64_t lo = off + static_cast<uint64_t>(warp) * wbytes;
        const uint64_t hi = min(end, lo + static_cast<uint64_t>(wbytes));
        const unsigned bytes = pp < last && lo < hi ? static_cast<unsigned>(hi - lo) : 0u;
        bulk_copy(s + warp * wbytes, bytes ? phases[pp].data + lo : nullptr, bytes, &bars[warp * 8 + pslot]);
      }
    }
    if (pp < last) ++pk;
    pslot = pslot + 1 == R ? 0 : pslot + 1;
  };
  if constexpr (MODE != 2)
    for (int i = 0; i < (MODE == 0 ? R - 1 : R); ++i) issue();

  StandIn<WORK> work;
  int cslot = 0;
  uint64_t consumed = 0;
  unsigned target = 0;
  const PhaseSync sync{0, T};
  for (int p = first; p < last; ++p) {
    const ProbePhase ph = phases[p];
    phase_begin(ph, p, first, barrier, counter, target, act, act_floats, sync, work.acc);
    uint64_t off = 0, end = 0;
    const uint64_t chunk = chunk_of(ph, A);
    for (uint64_t k = 0; stage_of(ph, k, S, chunk, interleave, off, end); ++k) {
      const uint8_t* s = ring + static_cast<size_t>(cslot) * stage_bytes;
      if constexpr (MODE == 2) {
        uint4 v[4];
        const uint8_t* g = ph.data + off;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint64_t o = static_cast<uint64_t>(t + j * T) * 16;
          if (j < per_thread && off + o < end) v[j] = __ldcs(reinterpret_cast<const uint4*>(g + o));
          else v[j] = make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) work.consume(v[j]);
      } else if constexpr (MODE == 0) {
        cp_wait<R - 2>();  // this thread's copies of the stage have landed
        issue();
        for (int j = 0; j < per_thread; ++j) {
          const uint64_t o = static_cast<uint64_t>(t + j * T) * 16;
          if (off + o >= end) break;
          work.consume(*reinterpret_cast<const uint4*>(s + o));
        }
      } else {
        mbar_wait(&bars[warp * 8 + cslot], static_cast<unsigned>((consumed / R) & 1));
        const uint64_t lo = off + static_cast<uint64_t>(warp) * wbytes;
        for (int o = lane * 16; o < wbytes; o += 32 * 16) {
          if (lo + static_cast<uint64_t>(o) >= end) break;
          work.consume(*reinterpret_cast<const uint4*>(s + warp * wbytes + o));
        }
        __syncwarp();  // the slot is read: its next copy may land
        issue();
      }
      ++consumed;
      cslot = cslot + 1 == R ? 0 : cslot + 1;
    }
    phase_end(ph, p, barrier, counter, target, act, act_floats, sync, work.value(), red);
  }
  if constexpr (MODE == 0) cp_wait<0>();
  sink[blockIdx.x * blockDim.x + threadIdx.x] = work.final_value();
}

__device__ __forceinline__ void mbar_init_count(uint64_t* bar, unsigned count) {
  EXQ_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

// A producer warp (the block's last) streams whole stages with one bulk (TMA) copy each into
// a ring of R slots (full / empty mbarriers, as CUTLASS pipelines do); the other warps consume.
template <int R, int WORK>
__global__ void __launch_bounds__(1024, 1)
    tma_kernel(const ProbePhase* __restrict__ phases, int first, int last, int stage_bytes, int align,
               bool interleave, bool barrier, float* act, int act_floats, unsigned* counter, float* sink) {
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ float red[32];
  __shared__ uint64_t full[8], empty[8];
  const int t = static_cast<int>(threadIdx.x), lane = t & 31;
  const int nc = static_cast<int>(blockDim.x) - 32;  // consumer threads
  const auto S = static_cast<uint64_t>(stage_bytes), A = static_cast<uint64_t>(align);
  if (t == 0) {
    for (int i = 0; i < R; ++i) {
      mbar_init_count(&full[i], 1);
      mbar_init_count(&empty[i], static_cast<unsigned>(nc / 32));
    }
    EXQ_SM90_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();

  if (t >= nc) {  // producer warp
    if (lane == 0) {
      uint64_t g = 0;
      for (int p = first; p < last; ++p) {
        uint64_t off = 0, end = 0;
        const uint64_t chunk = chunk_of(phases[p], A);
        for (uint64_t k = 0; stage_of(phases[p], k, S, chunk, interleave, off, end); ++k, ++g) {
          const int slot = static_cast<int>(g % R);
          if (g >= R) mbar_wait(&empty[slot], static_cast<unsigned>((g / R - 1) & 1));
          bulk_copy(ring + static_cast<size_t>(slot) * stage_bytes, phases[p].data + off,
                    static_cast<unsigned>(end - off), &full[slot]);
        }
      }
    }
    return;
  }

  StandIn<WORK> work;
  uint64_t g = 0;
  unsigned target = 0;
  const PhaseSync sync{1, nc};  // the consumer warps only
  for (int p = first; p < last; ++p) {
    const ProbePhase ph = phases[p];
    phase_begin(ph, p, first, barrier, counter, target, act, act_floats, sync, work.acc);
    uint64_t off = 0, end = 0;
    const uint64_t chunk = chunk_of(ph, A);
    for (uint64_t k = 0; stage_of(ph, k, S, chunk, interleave, off, end); ++k, ++g) {
      const int slot = static_cast<int>(g % R);
      mbar_wait(&full[slot], static_cast<unsigned>((g / R) & 1));
      const uint8_t* st = ring + static_cast<size_t>(slot) * stage_bytes;
      const int bytes = static_cast<int>(end - off);
      for (int o = t * 16; o < bytes; o += nc * 16)
        work.consume(*reinterpret_cast<const uint4*>(st + o));
      __syncwarp();
      if (lane == 0) EXQ_SM90_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(&empty[slot])) : "memory");
    }
    phase_end(ph, p, barrier, counter, target, act, act_floats, sync, work.value(), red);
  }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = work.final_value();
}

template <int R>
void launch_r(const ProbePhase* phases, int first, int last, const ProbeConfig& c, float* act, int act_floats,
              unsigned* counter, float* sink, cudaStream_t stream) {
  auto kernel = c.tma      ? (c.work == 0 ? tma_kernel<R, 0> : tma_kernel<R, 1>)
                : c.direct ? (c.work == 0 ? probe_kernel<R, 0, 2> : probe_kernel<R, 1, 2>)
                : c.bulk ? (c.work == 0 ? probe_kernel<R, 0, 1> : probe_kernel<R, 1, 1>)
                         : (c.work == 0 ? probe_kernel<R, 0, 0> : probe_kernel<R, 1, 0>);
  const size_t smem = c.direct ? 0 : persistent_probe_smem(c);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(c.blocks));
  cfg.blockDim = dim3(static_cast<unsigned>(c.threads));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;  // every block resident: the grid barrier needs it
  attr[0].val.cooperative = c.barrier ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, phases, first, last, c.stage_bytes, c.align, c.interleave, c.barrier,
                                act, act_floats, counter, sink));
}

}  // namespace

size_t persistent_probe_smem(const ProbeConfig& c) {
  return static_cast<size_t>(c.stages) * static_cast<size_t>(c.stage_bytes);
}

size_t persistent_probe_smem_limit() {
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return static_cast<size_t>(optin) - 32 * sizeof(float) - 32 * 8 * sizeof(uint64_t);
}

void persistent_probe(const ProbePhase* phases, int first, int last, const ProbeConfig& c, float* act,
                      int act_floats, unsigned* counter, float* sink, cudaStream_t stream) {
  switch (c.stages) {
    case 2: return launch_r<2>(phases, first, last, c, act, act_floats, counter, sink, stream);
    case 3: return launch_r<3>(phases, first, last, c, act, act_floats, counter, sink, stream);
    case 4: return launch_r<4>(phases, first, last, c, act, act_floats, counter, sink, stream);
    case 5: return launch_r<5>(phases, first, last, c, act, act_floats, counter, sink, stream);
    case 6: return launch_r<6>(phases, first, last, c, act, act_floats, counter, sink, stream);
    case 7: return launch_r<7>(phases, first, last, c, act, act_floats, counter, sink, stream);
    case 8: return launch_r<8>(phases, first, last, c, act, act_floats, counter, sink, stream);
    default: throw std::runtime_error("persistent_probe: stages must be 2..8");
  }
}

}  // namespace exq::cuda::bench
