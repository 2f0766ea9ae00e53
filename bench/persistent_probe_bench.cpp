// How close could a persistent decode kernel get to the bandwidth floor? (issue 6; the design
// the decode-chain measurements of docs/perf.md point to.) persistent_probe.cu streams the bytes
// of a Llama-3-8B-shaped 4-bit token (per layer: q/k/v 12.6 MB, the KV cache at --ctx, o 8.4 MB,
// gate + up 58.7 MB, down 29.4 MB; scales and the head left out) through one launch with a grid
// barrier between phases (persistent_probe.h lists the ways it streams), against the same kernel
// launched once per phase in a CUDA graph ("chain": the chain's structure, no programmatic
// dependent launch), and against one launch without barriers. No GEMV arithmetic beyond a stand-in
// per 16 bytes (--work 1: a 4-bit decode and 16 HFMA2, about the EXL2 kernel's instruction
// count); the result bounds the design from above. Median of --reps launches between events.
// Usage: persistent_probe_bench [--layers 32] [--ctx 128] [--reps 20] [--json FILE]
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/memory.h"
#include "backend/cuda/stream.h"
#include "persistent_probe.h"

namespace exq {
namespace {

namespace gpu = exq::cuda;
using gpu::bench::ProbeConfig;
using gpu::bench::ProbePhase;

struct Args {
  int layers = 32;
  std::vector<int> ctx = {128, 2048};
  int reps = 20;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(k + " needs a value");
      return argv[++i];
    };
    if (k == "--layers") a.layers = std::stoi(next());
    else if (k == "--ctx") a.ctx = {std::stoi(next())};
    else if (k == "--reps") a.reps = std::stoi(next());
    else if (k == "--json") a.json = next();
    else throw std::runtime_error("unknown argument " + k);
  }
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(const Args& a) {
  int dev = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  if (prop.major < 9) throw std::runtime_error(fmt::format("the probe's bulk copies need compute capability 9.0, {} has {}.{}",
                                                           prop.name, prop.major, prop.minor));
  gpu::Stream stream;
  nlohmann::json out = {{"device", prop.name}, {"sms", sms}, {"layers", a.layers}, {"rows", nlohmann::json::array()}};

  const uint64_t kQkv = 4096ull * 6144 / 2, kO = 4096ull * 4096 / 2, kGateUp = 2ull * 4096 * 14336 / 2,
                 kDown = 14336ull * 4096 / 2;
  const int max_ctx = *std::max_element(a.ctx.begin(), a.ctx.end());
  const uint64_t kv_max = static_cast<uint64_t>(max_ctx) * 8 * 128 * 2 * 2;  // K and V, f16
  const uint64_t per_layer = kQkv + kv_max + kO + kGateUp + kDown;
  gpu::DeviceBuffer weights(per_layer * static_cast<uint64_t>(a.layers));
  CUDA_CHECK(cudaMemsetAsync(weights.data(), 0x35, per_layer * static_cast<uint64_t>(a.layers), stream));
  const int act_floats = 28672;
  gpu::DeviceBuffer act(2 * act_floats * sizeof(float)), counter(sizeof(unsigned)), sink(sizeof(float) * 1024 * 1024);
  CUDA_CHECK(cudaMemsetAsync(act.data(), 0, 2 * act_floats * sizeof(float), stream));

  {  // the machine's copy bandwidth, to compare calls made on different machines
    const size_t n = size_t{1} << 30;
    gpu::DeviceBuffer dst(n);
    std::vector<double> us;
    for (int r = 0; r < 7; ++r) {
      gpu::Event e0, e1;
      e0.record(stream);
      CUDA_CHECK(cudaMemcpyAsync(dst.data(), weights.data(), n, cudaMemcpyDeviceToDevice, stream));
      e1.record(stream);
      e1.synchronize();
      if (r >= 2) us.push_back(1e3 * gpu::Event::elapsed_ms(e0, e1));
    }
    const double gbs = 2.0 * static_cast<double>(n) / (median(us) * 1e-6) / 1e9;
    std::printf("device-to-device copy of 1 GiB: %.1f us, %.0f GB/s read + write\n", median(us), gbs);
    out["d2d_copy_gb_per_s"] = gbs;
  }

  for (int ctx : a.ctx) {
    const uint64_t kv = static_cast<uint64_t>(ctx) * 8 * 128 * 2 * 2;
    std::vector<ProbePhase> phases;
    uint64_t bytes = 0;
    for (int l = 0; l < a.layers; ++l) {
      const auto* base = static_cast<const uint8_t*>(weights.data()) + per_layer * static_cast<uint64_t>(l);
      const uint64_t sizes[5] = {kQkv, kv, kO, kGateUp, kDown};
      const int ins[5] = {4096, 6144, 4096, 4096, 14336}, outs[5] = {6144, 4096, 4096, 28672, 4096};
      uint64_t off = 0;
      for (int p = 0; p < 5; ++p) {
        phases.push_back({base + off, sizes[p], ins[p], outs[p]});
        off += p == 1 ? kv_max : sizes[p];
        bytes += sizes[p];
      }
    }
    gpu::DeviceBuffer phases_dev(phases.size() * sizeof(ProbePhase));
    CUDA_CHECK(cudaMemcpyAsync(phases_dev.data(), phases.data(), phases.size() * sizeof(ProbePhase),
                               cudaMemcpyHostToDevice, stream));
    const auto* ph = static_cast<const ProbePhase*>(phases_dev.data());
    const int n = static_cast<int>(phases.size());
    const double floor_us = static_cast<double>(bytes) / 3.0e12 * 1e6;
    std::printf("\nctx %d: %d layers, %.1f MB a token, floor %.1f us (%.2f us a layer)\n", ctx, a.layers,
                static_cast<double>(bytes) / 1e6, floor_us, floor_us / a.layers);
    std::printf("%-10s %7s %8s %7s %5s %7s %6s %5s %5s %11s %9s %8s\n", "mode", "stages", "stage KB", "threads",
                "work", "barrier", "align", "intl", "bulk", "us/token", "us/layer", "x floor");

    auto report = [&](const char* mode, const ProbeConfig& c, double us) {
      std::printf("%-10s %7d %8d %7d %5d %7d %6d %5d %5d %11.1f %9.2f %8.3f\n", c.direct ? "direct" : c.tma ? (std::string(mode) + "+tma").c_str() : mode, c.stages, c.stage_bytes / 1024,
                  c.threads, c.work, c.barrier ? 1 : 0, c.align, c.interleave ? 1 : 0, c.bulk ? 1 : 0, us,
                  us / a.layers, us / floor_us);
      out["rows"].push_back({{"ctx", ctx}, {"mode", mode}, {"stages", c.stages}, {"stage_bytes", c.stage_bytes},
                             {"threads", c.threads}, {"work", c.work}, {"barrier", c.barrier}, {"align", c.align},
                             {"interleave", c.interleave}, {"bulk", c.bulk}, {"direct", c.direct}, {"tma", c.tma}, {"us_per_token", us},
                             {"us_per_layer", us / a.layers}, {"floor_us", floor_us}, {"x_floor", us / floor_us}});
      std::fflush(stdout);
    };

    const size_t limit = gpu::bench::persistent_probe_smem_limit();
    std::vector<ProbeConfig> configs;
    auto add = [&](int stages, int kb, int threads, int work, bool barrier, int align, bool interleave, bool bulk) {
      ProbeConfig c;
      c.blocks = sms;
      c.stages = stages;
      c.stage_bytes = kb * 1024;
      c.threads = threads;
      c.work = work;
      c.barrier = barrier;
      c.align = align;
      c.interleave = interleave;
      c.bulk = bulk;
      if (gpu::bench::persistent_probe_smem(c) <= limit) configs.push_back(c);
    };
    // stages, KB, threads, work, barrier, align, interleave, bulk
    add(7, 32, 1024, 1, true, 16, true, false);     // cp.async ring, interleaved stages
    add(7, 32, 1024, 1, true, 16, false, false);    // contiguous shares
    add(7, 32, 1024, 1, true, 4096, false, false);  // contiguous, 4 KB aligned
    add(7, 32, 1024, 1, false, 16, true, false);    // no barrier
    add(7, 32, 1024, 1, false, 16, false, false);
    add(7, 32, 1024, 0, true, 16, true, false);     // no arithmetic
    add(7, 32, 1024, 0, true, 16, false, false);
    add(6, 32, 512, 1, true, 16, false, false);
    add(3, 64, 512, 1, true, 16, true, true);       // bulk copies per warp
    for (bool inter : {true, false})
      for (bool bar : {true, false}) {
        ProbeConfig c = configs[0];
        c.tma = true;
        c.stages = 6;
        c.interleave = inter;
        c.barrier = bar;
        configs.push_back(c);
      }
    {
      ProbeConfig c = configs[0];
      c.tma = true;
      c.stages = 4;
      c.stage_bytes = 48 * 1024;
      configs.push_back(c);
      c.work = 0;
      c.stages = 6;
      c.stage_bytes = 32 * 1024;
      configs.push_back(c);
    }
    for (bool inter : {true, false})
      for (bool bar : {true, false}) {
        ProbeConfig d = configs[0];
        d.direct = true;
        d.stage_bytes = 64 * 1024;  // 4 loads a thread
        d.interleave = inter;
        d.barrier = bar;
        configs.push_back(d);
      }

    for (const ProbeConfig& c : configs) {
      std::vector<double> us;
      for (int r = 0; r < a.reps + 2; ++r) {
        CUDA_CHECK(cudaMemsetAsync(counter.data(), 0, sizeof(unsigned), stream));
        gpu::Event e0, e1;
        e0.record(stream);
        gpu::bench::persistent_probe(ph, 0, n, c, static_cast<float*>(act.data()), act_floats,
                                     static_cast<unsigned*>(counter.data()), static_cast<float*>(sink.data()), stream);
        e1.record(stream);
        e1.synchronize();
        if (r >= 2) us.push_back(1e3 * gpu::Event::elapsed_ms(e0, e1));
      }
      report("persistent", c, median(us));
    }

    // The chain: one launch per phase (no barrier, nothing prefetched across phases) in a graph.
    // The chain: the interleaved cp.async ring, and direct loads (interleaved).
    for (const ProbeConfig& base : {configs[0], configs[configs.size() - 3]}) {
      ProbeConfig c = base;
      c.barrier = false;
      cudaGraph_t g = nullptr;
      cudaGraphExec_t exec = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      for (int p = 0; p < n; ++p)
        gpu::bench::persistent_probe(ph, p, p + 1, c, static_cast<float*>(act.data()), act_floats,
                                     static_cast<unsigned*>(counter.data()), static_cast<float*>(sink.data()), stream);
      CUDA_CHECK(cudaStreamEndCapture(stream, &g));
      CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
      CUDA_CHECK(cudaGraphDestroy(g));
      std::vector<double> us;
      for (int r = 0; r < a.reps + 2; ++r) {
        gpu::Event e0, e1;
        e0.record(stream);
        CUDA_CHECK(cudaGraphLaunch(exec, stream));
        e1.record(stream);
        e1.synchronize();
        if (r >= 2) us.push_back(1e3 * gpu::Event::elapsed_ms(e0, e1));
      }
      CUDA_CHECK(cudaGraphExecDestroy(exec));
      report("chain", c, median(us));
    }
  }
  if (!a.json.empty()) std::ofstream(a.json) << out.dump(1) << "\n";
  return 0;
}

}  // namespace
}  // namespace exq

int main(int argc, char** argv) {
  try {
    return exq::run(exq::parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
