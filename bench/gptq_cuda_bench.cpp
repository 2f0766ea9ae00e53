// GPU GPTQ timings on Llama shapes: for each linear, the Hessian of 16 batches of 2048 tokens
// (DeviceHessian), prepare_hessian (act-order, damping, Cholesky of H^-1) and GPTQ of the
// weight under every distinct option of that linear's column of the option table (what one
// measurement step does), without packing. Host wall clock around stream-synchronized calls,
// after a small warm-up call; inputs are random (timings do not depend on the values).
// Usage: gptq_cuda_bench [--json FILE] [--only SUBSTRING] [--batches N]   (plain program)
#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/stream.h"
#include "core/half.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/gptq_plan.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::CublasHandle;
using exq::cuda::Stream;

constexpr int64_t kTokens = 2048;  // per batch

struct Shape2 {
  std::string name;
  int64_t out, in;  // HF [out, in]
  bool attn;
  int column;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Cheap deterministic pseudo-random floats in [-1, 1).
struct Lcg {
  uint64_t s;
  float next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<int64_t>(s >> 40) - (int64_t{1} << 23)) /
           static_cast<float>(int64_t{1} << 23);
  }
};

DeviceTensor random_inputs(int64_t in, CachingAllocator& alloc, cudaStream_t stream) {
  Lcg rng{static_cast<uint64_t>(in)};
  std::vector<float> gain(static_cast<size_t>(in));
  for (auto& g : gain) g = std::exp(2.0f * rng.next());
  std::vector<float> x(static_cast<size_t>(kTokens * in));
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t i = 0; i < in; ++i) x[static_cast<size_t>(t * in + i)] = gain[i] * rng.next();
  DeviceTensor d(DType::F32, {kTokens, in}, alloc, stream);
  CUDA_CHECK(cudaMemcpyAsync(d.raw(), x.data(), d.nbytes(), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

DeviceTensor random_weight(int64_t out, int64_t in, CachingAllocator& alloc,
                           cudaStream_t stream) {
  Lcg rng{static_cast<uint64_t>(out * 31 + in)};
  std::vector<uint16_t> w(static_cast<size_t>(out * in));
  for (auto& v : w) v = float_to_half(0.02f * rng.next());
  DeviceTensor d(DType::F16, {out, in}, alloc, stream);
  CUDA_CHECK(cudaMemcpyAsync(d.raw(), w.data(), d.nbytes(), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

struct Times {
  double hessian_ms = 0, prepare_ms = 0, gptq_ms = 0;
  int dampings = 0;
  size_t options = 0;
};

Times run_shape(const Shape2& s, int batches, GptqContext& ctx) {
  Times t;
  const std::vector<QuantOption> options =
      s.attn ? distinct_attn_options(s.column) : distinct_mlp_options(s.column);
  t.options = options.size();
  cudaStream_t stream = ctx.stream;
  const DeviceTensor x = random_inputs(s.in, *ctx.allocator, stream);
  const DeviceTensor w = random_weight(s.out, s.in, *ctx.allocator, stream);

  double t0 = now_ms();
  DeviceHessian h(s.in, ctx);
  for (int b = 0; b < batches; ++b) h.add_batch(x);
  const DeviceView hv = h.hessian();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  t.hessian_ms = now_ms() - t0;

  t0 = now_ms();
  const DevicePreparedHessian p = prepare_hessian(hv, 0.12f, ctx);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  t.prepare_ms = now_ms() - t0;
  t.dampings = p.dampings;

  t0 = now_ms();
  const std::vector<DeviceGptqResult> res = gptq_quantize_batch(w, p, options, false, ctx);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  t.gptq_ms = now_ms() - t0;
  return t;
}

int run(int argc, char** argv) {
  std::string json_path, only;
  int batches = 16;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--batches") && i + 1 < argc)
      batches = std::max(1, std::atoi(argv[++i]));
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  Stream stream;
  CachingAllocator alloc;
  CublasHandle cublas;
  cusolverDnHandle_t solver = nullptr;
  if (cusolverDnCreate(&solver) != CUSOLVER_STATUS_SUCCESS) {
    std::fprintf(stderr, "gptq_cuda_bench: cusolverDnCreate failed\n");
    return 1;
  }
  GptqContext ctx{&alloc, stream.get(), &cublas, solver};

  const std::vector<Shape2> shapes = {
      {"llama3-8b.q_proj", 4096, 4096, true, 0},
      {"llama3-8b.k_proj", 1024, 4096, true, 1},
      {"llama3-8b.v_proj", 1024, 4096, true, 2},
      {"llama3-8b.o_proj", 4096, 4096, true, 3},
      {"llama3-8b.gate_proj", 14336, 4096, false, 0},
      {"llama3-8b.up_proj", 14336, 4096, false, 1},
      {"llama3-8b.down_proj", 4096, 14336, false, 2},
      {"llama3-70b.gate_proj", 28672, 8192, false, 0},
      {"llama3-70b.down_proj", 8192, 28672, false, 2},
  };
  run_shape({"warmup", 256, 512, true, 0}, 2, ctx);  // cuBLAS/cuSOLVER init, allocator growth

  nlohmann::json out;
  out["device"] = prop.name;
  out["sms"] = prop.multiProcessorCount;
  out["tokens_per_batch"] = kTokens;
  out["batches"] = batches;
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-22s %13s %7s %11s %11s %8s %11s %10s\n", "linear", "out x in", "options",
              "hessian ms", "prepare ms", "dampings", "gptq ms", "ms/option");
  for (const Shape2& s : shapes) {
    if (!only.empty() && s.name.find(only) == std::string::npos) continue;
    const Times t = run_shape(s, batches, ctx);
    const double per = t.gptq_ms / static_cast<double>(t.options);
    std::printf("%-22s %6lldx%-6lld %7zu %11.1f %11.1f %8d %11.1f %10.1f\n", s.name.c_str(),
                static_cast<long long>(s.out), static_cast<long long>(s.in), t.options,
                t.hessian_ms, t.prepare_ms, t.dampings, t.gptq_ms, per);
    std::fflush(stdout);
    rows.push_back({{"linear", s.name}, {"out", s.out}, {"in", s.in}, {"options", t.options},
                    {"hessian_ms", t.hessian_ms}, {"prepare_ms", t.prepare_ms},
                    {"dampings", t.dampings}, {"gptq_ms", t.gptq_ms},
                    {"gptq_ms_per_option", per}, {"peak_vram_bytes", alloc.peak_in_use()}});
    alloc.reset_peaks();
  }
  out["linears"] = rows;
  cusolverDnDestroy(solver);
  if (!json_path.empty())
    std::ofstream(json_path) << out.dump(2) << "\n";
  else
    std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace exq::quant::cuda

int main(int argc, char** argv) {
  try {
    return exq::quant::cuda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptq_cuda_bench: %s\n", e.what());
    return 1;
  }
}
