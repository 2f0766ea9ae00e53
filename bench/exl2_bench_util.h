// What the EXL2 GEMV benchmark (exl2_gemv_bench.cpp) times with: exllamav2-style options on
// random packed layers, enough uploaded copies that every launch reads HBM, and CUDA-event
// timing of launches queued behind a gate; the shapes and options it times. Included by that one
// program (exl2_gemv_bench.cpp and its split sweeps, exl2_gemv_sweep.cpp).
#pragma once

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/stream.h"
#include "core/half.h"

namespace exq::cuda::bench {

constexpr double kPeakBytesPerSecond = 3.0e12;
constexpr size_t kRotationBytes = size_t{256} << 20;  // > 4x the H100's 50 MB L2
constexpr int kMaxCopies = 256;

struct Part {
  double share;
  int bits;
  int64_t group_size;
};

struct Option {
  std::string name;
  std::vector<Part> parts;
};

// Group table of an option on `in` rows, exllamav2's counting (docs exl2.md section 4).
inline std::vector<Exl2HostGroup> option_groups(const Option& o, int64_t in) {
  std::vector<Exl2HostGroup> groups;
  int64_t remaining = in, row = 0, word = 0;
  for (const Part& p : o.parts) {
    const double want = std::min(static_cast<double>(in) * p.share, static_cast<double>(remaining));
    const int64_t n = static_cast<int64_t>(std::ceil(want / static_cast<double>(p.group_size)));
    for (int64_t k = 0; k < n && row < in; ++k) {
      const int64_t rows = std::min(p.group_size, in - row);
      groups.push_back({p.bits, row, rows, word});
      row += rows;
      word += (rows * p.bits + 31) / 32;
    }
    remaining -= n * p.group_size;
  }
  return groups;
}

// Random stored tensors: any bit pattern is a valid code, so q_weight and q_scale are random
// words.
struct RandomLayer {
  std::vector<Exl2HostGroup> groups;
  std::vector<uint32_t> q_weight, q_scale;
  std::vector<uint16_t> q_scale_max;
  std::vector<int32_t> perm;
  Exl2HostLayer host;

  RandomLayer(int64_t in, int64_t out, const Option& o, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    auto next = [&s] {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      return s;
    };
    groups = option_groups(o, in);
    const int64_t out_pad = (out + 31) / 32 * 32;
    const int64_t words = groups.back().word_begin + (groups.back().rows * groups.back().bits + 31) / 32;
    q_weight.resize(static_cast<size_t>(words * out_pad));
    for (auto& w : q_weight) w = static_cast<uint32_t>(next());
    q_scale.resize(groups.size() * static_cast<size_t>(out_pad / 8));
    for (auto& w : q_scale) w = static_cast<uint32_t>(next());
    for (size_t g = 0; g < groups.size(); ++g)
      q_scale_max.push_back(float_to_half(0.002f + 0.05f * static_cast<float>(next() % 1000) / 1000.0f));
    perm.resize(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) perm[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    for (int64_t i = in - 1; i > 0; --i) std::swap(perm[static_cast<size_t>(i)], perm[next() % (i + 1)]);
    host = {in, out, q_weight.data(), words, q_scale.data(), q_scale_max.data(), perm.data(),
            groups.data(), static_cast<int64_t>(groups.size()), nullptr};
  }
};

inline DeviceBuffer random_device(size_t bytes, bool half, cudaStream_t stream) {
  std::vector<uint16_t> h(bytes / 2);
  uint32_t s = 12345;
  for (auto& v : h) {
    s = s * 1664525u + 1013904223u;
    const float f = static_cast<float>((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    v = float_to_half(f);
  }
  DeviceBuffer d(bytes);
  if (half) {
    CUDA_CHECK(cudaMemcpyAsync(d.data(), h.data(), bytes, cudaMemcpyHostToDevice, stream));
  } else {
    std::vector<float> f(bytes / 4);
    for (size_t i = 0; i < f.size(); ++i) f[i] = half_to_float(h[i]);
    CUDA_CHECK(cudaMemcpyAsync(d.data(), f.data(), bytes, cudaMemcpyHostToDevice, stream));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

// Holds the stream until the host has queued every timed launch, so host-side launch cost
// never shows as device time.
struct Gate {
  std::atomic<bool> open{false};
};

inline void CUDART_CB hold_stream(void* gate) {
  while (!static_cast<Gate*>(gate)->open.load()) std::this_thread::yield();
}

struct Timing {
  double median_ms = 0;  // per launch, between its own events
  double mean_ms = 0;    // first start to last stop, over the launch count
};

// `iters` launches of fn(i), each between its own pair of events, after `warmup` launches.
template <typename Fn>
inline Timing time_launches(int iters, int warmup, cudaStream_t stream, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn(i);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<Event> start, stop;
  for (int i = 0; i < iters; ++i) {
    start.emplace_back();
    stop.emplace_back();
  }
  Gate gate;
  CUDA_CHECK(cudaLaunchHostFunc(stream, hold_stream, &gate));
  for (int i = 0; i < iters; ++i) {
    start[static_cast<size_t>(i)].record(stream);
    fn(warmup + i);
    stop[static_cast<size_t>(i)].record(stream);
  }
  gate.open.store(true);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i)
    ms.push_back(Event::elapsed_ms(start[static_cast<size_t>(i)], stop[static_cast<size_t>(i)]));
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.median_ms = ms[ms.size() / 2];
  t.mean_ms = Event::elapsed_ms(start.front(), stop.back()) / iters;
  return t;
}

// Median ms of `reps` calls of fn, each between its own events, without holding the stream
// (for long sequences: the host keeps queueing while the device runs).
template <typename Fn>
inline double median_ms_ungated(int reps, int warmup, cudaStream_t stream, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn(i);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<Event> start(static_cast<size_t>(reps)), stop(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    start[static_cast<size_t>(i)].record(stream);
    fn(warmup + i);
    stop[static_cast<size_t>(i)].record(stream);
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i)
    ms.push_back(Event::elapsed_ms(start[static_cast<size_t>(i)], stop[static_cast<size_t>(i)]));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

template <typename Fn>
inline double median_ms(int iters, int warmup, cudaStream_t stream, Fn&& fn) {
  return time_launches(iters, warmup, stream, std::forward<Fn>(fn)).median_ms;
}

// Microseconds per launch of `count` back-to-back calls fn(0..count) captured in one CUDA
// graph (median of `reps` replays after one warm-up), so consecutive launches overlap their
// ramp and tail as in the decode graph. With fn rotating over n copies, count >= n keeps
// every replay reading HBM.
template <typename Fn>
inline double graph_us(int count, int reps, cudaStream_t stream, Fn&& fn) {
  cudaGraph_t g = nullptr;
  cudaGraphExec_t exec = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < count; ++i) fn(i);
  CUDA_CHECK(cudaStreamEndCapture(stream, &g));
  CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaGraphLaunch(exec, stream));
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    Event e0, e1;
    e0.record(stream);
    CUDA_CHECK(cudaGraphLaunch(exec, stream));
    e1.record(stream);
    e1.synchronize();
    us.push_back(1e3 * Event::elapsed_ms(e0, e1) / count);
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// Copies of `bytes` each that rotating over reads HBM every launch.
inline size_t rotation_copies(size_t bytes) { return std::min<size_t>(kMaxCopies, kRotationBytes / bytes + 1); }

// Enough uploaded copies of one layer that rotating over them reads HBM every launch.
inline std::vector<Exl2Layer> rotation(const RandomLayer& rl, const char* name, cudaStream_t stream) {
  std::vector<Exl2Layer> copies;
  copies.emplace_back(rl.host, stream, name);
  const int n = static_cast<int>(rotation_copies(copies[0].device_bytes()));
  for (int i = 1; i < n; ++i) copies.emplace_back(rl.host, stream, name);
  return copies;
}

// Llama-3-8B linear shapes and the options the benchmark times.
inline const std::vector<std::pair<int64_t, int64_t>> kShapes = {
    {4096, 4096}, {4096, 1024}, {4096, 14336}, {14336, 4096}};  // in x out
inline const std::vector<Option> kOptions = {
    {"1:2b_128g", {{1.0, 2, 128}}},   {"1:3b_128g", {{1.0, 3, 128}}},
    {"1:4b_128g", {{1.0, 4, 128}}},   {"1:4b_32g", {{1.0, 4, 32}}},
    {"1:5b_128g", {{1.0, 5, 128}}},   {"1:6b_128g", {{1.0, 6, 128}}},
    {"1:8b_128g", {{1.0, 8, 128}}},
    {"0.05:8b_32g/0.1:4b_128g/0.85:3b_128g", {{0.05, 8, 32}, {0.1, 4, 128}, {0.85, 3, 128}}},
    {"0.1:5b_128g/0.9:4b_128g", {{0.1, 5, 128}, {0.9, 4, 128}}},
    {"0.05:8b_32g/0.1:5b_128g/0.85:4b_128g", {{0.05, 8, 32}, {0.1, 5, 128}, {0.85, 4, 128}}}};

// A launch shape, as JSON and as one line.
inline nlohmann::json split_json(const Exl2Split& s) {
  return {{"ksplit", s.ksplit}, {"ksub", s.ksub}, {"tiles_per_block", s.tiles_per_block},
          {"steps_per_warp", s.steps_per_warp}, {"cluster", s.cluster}, {"kernel", s.kernel},
          {"runs", s.runs}};
}

inline std::string split_str(const Exl2Split& s) {
  return fmt::format("k{} ksplit {} ksub {:2} tpb {:2} spw {:2} {}{}", s.kernel, s.ksplit, s.ksub,
                     s.tiles_per_block, s.steps_per_warp, s.cluster ? "cl" : "gm",
                     s.runs ? " runs" : "");
}

// The GEMV kernel alone (batch 1), us per launch: x staged once by exl2_gemv (every copy has
// the same permutation), then one exl2_gemv_staged launch per layer as a CUDA graph.
inline double kernel_alone_us(const std::vector<Exl2Layer>& copies, const DeviceView& xv,
                              const DeviceView& yv, Exl2Workspace& ws, Stream& stream) {
  const int n = static_cast<int>(copies.size());
  exl2_gemv(copies[0], xv, yv, ws, stream);
  return graph_us(std::max(20, n), 20, stream, [&](int i) {
    exl2_gemv_staged(copies[static_cast<size_t>(i % n)], yv, ws, stream);
  });
}

}  // namespace exq::cuda::bench
