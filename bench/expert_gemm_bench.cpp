// The grouped expert GEMM (backend/cuda/expert_gemm.h) alone: a MoE layer's gate + up launch and
// its down launch over every expert with the same number of rows each, EXL2 4-bit (exllamav2's
// 4.0 bpw option, 4b_128g) and dense f16 weights, at Qwen3-30B-A3B's shape (128 experts of [768,
// 2048]) and Mixtral-8x7B's (8 of [14336, 4096]). Median of CUDA-event-timed launches queued
// behind a gate after warm-up; achieved TFLOP/s and bytes of weights read per second against the
// H200's HBM (4.8 TB/s).
//
// Usage: expert_gemm_bench [--json FILE] [--iters N] [--rows LIST]
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/expert_gemm.h"
#include "backend/cuda/stream.h"
#include "exl2_bench_util.h"

namespace exq::cuda::bench {
namespace {

constexpr double kHbmBytesPerSecond = 4.8e12;  // H200

struct Shape {
  const char* name;
  int experts;
  int hidden;
  int inter;
};

DeviceBuffer to_device_bytes(const void* p, size_t n, cudaStream_t s) {
  DeviceBuffer d(n);
  CUDA_CHECK(cudaMemcpyAsync(d.data(), p, n, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return d;
}

nlohmann::json run_shape(const Shape& sh, const std::vector<int>& rows_list, int iters, Stream& stream) {
  const cudaStream_t s = stream.get();
  const Option opt{"4b_128g", {{1.0, 4, 128}}};
  // EXL2 experts: part 0 gate, 1 up, 2 down; experts of one part share a layout.
  std::vector<std::unique_ptr<RandomLayer>> host;
  std::vector<Exl2Layer> layers;
  for (int e = 0; e < sh.experts; ++e)
    for (int part = 0; part < 3; ++part) {
      const int64_t in = part == 2 ? sh.inter : sh.hidden, out = part == 2 ? sh.hidden : sh.inter;
      host.push_back(std::make_unique<RandomLayer>(in, out, opt, static_cast<uint64_t>(e * 3 + part + 1)));
      layers.emplace_back(host.back()->host, s, "expert");
      host.back().reset();
    }
  std::vector<int64_t> shifts;
  size_t exl2_bytes[3] = {};
  for (int e = 0; e < sh.experts; ++e)
    for (int part = 0; part < 3; ++part) {
      const Exl2Layer& l = layers[static_cast<size_t>(e * 3 + part)];
      shifts.push_back(exl2_shift_bytes(layers[static_cast<size_t>(part)], l));
      exl2_bytes[part] += l.weight_bytes();
    }
  const DeviceBuffer d_shifts = to_device_bytes(shifts.data(), shifts.size() * 8, s);
  // Dense f16 experts, [out, in] each, as one table of pointers [part][expert].
  const size_t w_elems = static_cast<size_t>(sh.hidden) * sh.inter;
  const DeviceBuffer dense = random_device(w_elems * 2 * 3 * sh.experts, true, s);
  std::vector<const void*> table;
  for (int part = 0; part < 3; ++part)
    for (int e = 0; e < sh.experts; ++e)
      table.push_back(static_cast<const char*>(dense.data()) + (static_cast<size_t>(part) * sh.experts + e) * w_elems * 2);
  const DeviceBuffer d_table = to_device_bytes(table.data(), table.size() * 8, s);

  nlohmann::json out = nlohmann::json::array();
  std::printf("\n%s: %d experts of [%d, %d]\n%6s %7s | %-7s %10s %9s %9s\n", sh.name, sh.experts, sh.inter, sh.hidden,
              "rows", "launch", "weights", "median us", "TFLOP/s", "of HBM");
  for (const int rows : rows_list) {
    const int64_t r = static_cast<int64_t>(rows) * sh.experts;
    std::vector<ExpertChunk> chunks;
    for (int e = 0; e < sh.experts; ++e) add_expert_chunks(chunks, e, static_cast<int64_t>(e) * rows, rows);
    const DeviceBuffer d_chunks = to_device_bytes(chunks.data(), chunks.size() * sizeof(ExpertChunk), s);
    const int width = std::max(sh.hidden, sh.inter);
    const DeviceBuffer a0 = random_device(static_cast<size_t>(r) * width * 2, true, s);
    const DeviceBuffer a1 = random_device(static_cast<size_t>(r) * sh.hidden * 2, true, s);
    DeviceBuffer y0(static_cast<size_t>(r) * width * 4), y1(static_cast<size_t>(r) * sh.inter * 4);
    for (const bool exl2 : {true, false})
      for (const bool down : {false, true}) {
        ExpertGemm g;
        g.layers = down ? 1 : 2;
        g.in = down ? sh.inter : sh.hidden;
        g.chunks = static_cast<const ExpertChunk*>(d_chunks.data());
        g.num_chunks = static_cast<int>(chunks.size());
        for (int l = 0; l < g.layers; ++l) {
          const int part = down ? 2 : l;
          ExpertGemmLayer& L = g.l[l];
          L.a = l == 0 ? a0.data() : a1.data();
          L.y = static_cast<float*>(l == 0 ? y0.data() : y1.data());
          L.out = down ? sh.hidden : sh.inter;
          if (exl2) {
            L.d = layers[static_cast<size_t>(part)].desc();
            L.shifts = static_cast<const int64_t*>(d_shifts.data()) + part;
            L.stride = 3;
          } else {
            L.weights = static_cast<const void* const*>(d_table.data()) + static_cast<size_t>(part) * sh.experts;
          }
        }
        const double ms = median_ms(iters, 3, s, [&](int) {
          if (exl2) expert_gemm_exl2_cuda(g, s);
          else expert_gemm_dense_cuda<__half>(g, s);
        });
        const double flops = 2.0 * static_cast<double>(r) * g.layers * static_cast<double>(sh.hidden) * sh.inter;
        const double bytes = exl2 ? static_cast<double>(down ? exl2_bytes[2] : exl2_bytes[0] + exl2_bytes[1])
                                  : static_cast<double>(g.layers) * static_cast<double>(sh.experts) * w_elems * 2;
        const double tflops = flops / (ms * 1e-3) / 1e12, frac = bytes / (ms * 1e-3) / kHbmBytesPerSecond;
        std::printf("%6d %7s | %-7s %10.1f %9.1f %8.1f%%\n", rows, down ? "down" : "gate+up", exl2 ? "exl2 4b" : "f16",
                    ms * 1e3, tflops, 100 * frac);
        out.push_back({{"shape", sh.name}, {"experts", sh.experts}, {"hidden", sh.hidden}, {"inter", sh.inter},
                       {"rows_per_expert", rows}, {"launch", down ? "down" : "gate+up"},
                       {"weights", exl2 ? "exl2_4b_128g" : "f16"}, {"median_us", ms * 1e3}, {"tflops", tflops},
                       {"weight_bytes", bytes}, {"fraction_of_4_8_tb", frac}});
      }
  }
  return out;
}

}  // namespace
}  // namespace exq::cuda::bench

int main(int argc, char** argv) {
  using namespace exq::cuda::bench;
  std::string json_path;
  int iters = 20;
  std::vector<int> rows = {1, 4, 16, 32, 64, 128, 256};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::stoi(argv[++i]);
    } else if (a == "--rows" && i + 1 < argc) {
      rows.clear();
      std::string list = argv[++i];
      for (size_t p = 0; p < list.size();) {
        const size_t q = list.find(',', p);
        rows.push_back(std::stoi(list.substr(p, q == std::string::npos ? q : q - p)));
        p = q == std::string::npos ? list.size() : q + 1;
      }
    } else {
      std::fprintf(stderr, "usage: expert_gemm_bench [--json FILE] [--iters N] [--rows LIST]\n");
      return 2;
    }
  }
  try {
    exq::cuda::Stream stream;
    nlohmann::json all = nlohmann::json::array();
    for (const Shape& sh : {Shape{"qwen3-30b-a3b", 128, 2048, 768}, Shape{"mixtral-8x7b", 8, 4096, 14336}})
      for (auto& row : run_shape(sh, rows, iters, stream)) all.push_back(row);
    if (!json_path.empty()) std::ofstream(json_path) << all.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "expert_gemm_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
