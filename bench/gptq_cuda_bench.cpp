// GPU GPTQ timings on Llama shapes: for each linear, the Hessian of 16 batches of 2048 tokens
// (DeviceHessian), prepare_hessian (act-order, damping, Cholesky of H^-1) and GPTQ of the
// weight under every distinct option of that linear's column of the option table (what one
// measurement step does), without packing. Host wall clock around stream-synchronized calls,
// after a small warm-up call; inputs are random (timings do not depend on the values).
// Both implementations (gptq_batch.h: v1 one option at a time, v2 all options together) run
// on the same Hessian and weight unless --impl picks one; the JSON has *_v1 and *_v2 fields
// (GPTQ cold, as before, and warm: a second call reusing the allocator's cache) and how many
// fp16 weights of the first option the two give identically.
// --variants 128:128,256:1024 also times v2 (warm) with those EXQ_GPTQ_BLOCK:EXQ_GPTQ_SUPER.
// Usage: gptq_cuda_bench [--json FILE] [--only SUBSTRING] [--batches N] [--impl v1|v2|both]
//        [--variants B:B2[,B:B2...]]
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
#include "quant/cuda/gptq_batch.h"
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

struct ImplTimes {
  double prepare_ms = 0, gptq_ms = 0, gptq_warm_ms = 0;
  int dampings = 0;
  size_t peak_vram = 0;
  bool ran = false;
};

struct Times {
  double hessian_ms = 0;
  size_t options = 0;
  ImplTimes impl[2];           // v1, v2
  double same_weights = -1.0;  // fraction of equal fp16 weights, first option, v1 vs v2
  std::vector<double> variant_ms;  // --variants: v2 warm with other block / super-block sizes
};

std::vector<uint16_t> download_weight(const DeviceTensor& t, cudaStream_t stream) {
  std::vector<uint16_t> h(static_cast<size_t>(t.numel()));
  CUDA_CHECK(cudaMemcpyAsync(h.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return h;
}

struct Variant {
  std::string block, super;  // EXQ_GPTQ_BLOCK, EXQ_GPTQ_SUPER
};

Times run_shape(const Shape2& s, int batches, const std::vector<GptqImpl>& impls,
                const std::vector<Variant>& variants, GptqContext& ctx) {
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

  std::vector<uint16_t> first[2];
  for (GptqImpl impl : impls) {
    ImplTimes& it = t.impl[impl == GptqImpl::kV1 ? 0 : 1];
    ctx.allocator->reset_peaks();
    t0 = now_ms();
    const DevicePreparedHessian p = prepare_hessian(hv, 0.12f, ctx, impl);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    it.prepare_ms = now_ms() - t0;
    it.dampings = p.dampings;

    // Cold: the first call allocates its buffers (as the session-2 numbers); warm: again, from
    // the allocator's cache (the engine's steady state).
    const auto time_gptq = [&](std::vector<uint16_t>* first_weight) {
      const double start = now_ms();
      const std::vector<DeviceGptqResult> res =
          gptq_quantize_batch(w, p, options, false, ctx, {}, impl);
      CUDA_CHECK(cudaStreamSynchronize(stream));
      const double ms = now_ms() - start;
      if (first_weight != nullptr) *first_weight = download_weight(res[0].weight, stream);
      return ms;
    };
    it.gptq_ms = time_gptq(&first[impl == GptqImpl::kV1 ? 0 : 1]);
    it.gptq_warm_ms = time_gptq(nullptr);
    it.peak_vram = ctx.allocator->peak_in_use();
    it.ran = true;
    if (impl != GptqImpl::kV2) continue;
    for (const Variant& v : variants) {
      setenv("EXQ_GPTQ_BLOCK", v.block.c_str(), 1);
      setenv("EXQ_GPTQ_SUPER", v.super.c_str(), 1);
      time_gptq(nullptr);
      t.variant_ms.push_back(time_gptq(nullptr));  // warm
      unsetenv("EXQ_GPTQ_BLOCK");
      unsetenv("EXQ_GPTQ_SUPER");
    }
  }
  if (!first[0].empty() && !first[1].empty()) {
    size_t same = 0;
    for (size_t i = 0; i < first[0].size(); ++i) same += first[0][i] == first[1][i];
    t.same_weights = static_cast<double>(same) / static_cast<double>(first[0].size());
  }
  return t;
}

int run(int argc, char** argv) {
  std::string json_path, only, impl_arg = "both";
  int batches = 16;
  std::string variants_arg;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--batches") && i + 1 < argc)
      batches = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--impl") && i + 1 < argc)
      impl_arg = argv[++i];
    else if (!std::strcmp(argv[i], "--variants") && i + 1 < argc)
      variants_arg = argv[++i];
  }
  std::vector<Variant> variants;  // "128:128,256:1024"
  for (size_t pos = 0; pos < variants_arg.size();) {
    const size_t comma = std::min(variants_arg.find(',', pos), variants_arg.size());
    const std::string item = variants_arg.substr(pos, comma - pos);
    const size_t colon = item.find(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "gptq_cuda_bench: --variants BLOCK:SUPER[,...], got '%s'\n",
                   item.c_str());
      return 1;
    }
    variants.push_back({item.substr(0, colon), item.substr(colon + 1)});
    pos = comma + 1;
  }
  std::vector<GptqImpl> impls;
  if (impl_arg == "v1" || impl_arg == "both") impls.push_back(GptqImpl::kV1);
  if (impl_arg == "v2" || impl_arg == "both") impls.push_back(GptqImpl::kV2);
  if (impls.empty()) {
    std::fprintf(stderr, "gptq_cuda_bench: --impl v1, v2 or both\n");
    return 1;
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
  run_shape({"warmup", 256, 512, true, 0}, 2, impls, variants, ctx);  // library init, allocator growth

  nlohmann::json out;
  out["device"] = prop.name;
  out["sms"] = prop.multiProcessorCount;
  out["tokens_per_batch"] = kTokens;
  out["batches"] = batches;
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-22s %13s %7s %9s %4s %9s %9s %9s %9s %9s %9s %9s %7s\n", "linear",
              "out x in", "options", "hessian", "damp", "prep v1", "prep v2", "gptq v1", "gptq v2",
              "warm v1", "warm v2", "ms/opt", "same");
  for (const Shape2& s : shapes) {
    if (!only.empty() && s.name.find(only) == std::string::npos) continue;
    const Times t = run_shape(s, batches, impls, variants, ctx);
    const ImplTimes& v1 = t.impl[0];
    const ImplTimes& v2 = t.impl[1];
    const double per = (v2.ran ? v2.gptq_ms : v1.gptq_ms) / static_cast<double>(t.options);
    std::printf(
        "%-22s %6lldx%-6lld %7zu %9.1f %4d %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %7.4f\n",
        s.name.c_str(), static_cast<long long>(s.out), static_cast<long long>(s.in), t.options,
        t.hessian_ms, v2.ran ? v2.dampings : v1.dampings, v1.prepare_ms, v2.prepare_ms,
        v1.gptq_ms, v2.gptq_ms, v1.gptq_warm_ms, v2.gptq_warm_ms, per, t.same_weights);
    std::fflush(stdout);
    nlohmann::json row = {{"linear", s.name},
                          {"out", s.out},
                          {"in", s.in},
                          {"options", t.options},
                          {"hessian_ms", t.hessian_ms},
                          {"gptq_ms_per_option", per},
                          {"v1_v2_same_fp16_weights_first_option", t.same_weights}};
    for (size_t k = 0; k < t.variant_ms.size(); ++k) {
      const std::string key =
          "gptq_warm_ms_v2_b" + variants[k].block + "_s" + variants[k].super;
      row[key] = t.variant_ms[k];
      std::printf("    v2 EXQ_GPTQ_BLOCK=%s EXQ_GPTQ_SUPER=%s: %.1f ms warm\n",
                  variants[k].block.c_str(), variants[k].super.c_str(), t.variant_ms[k]);
    }
    for (int k = 0; k < 2; ++k) {
      const ImplTimes& it = t.impl[k];
      if (!it.ran) continue;
      const std::string sfx = k == 0 ? "_v1" : "_v2";
      row["prepare_ms" + sfx] = it.prepare_ms;
      row["gptq_ms" + sfx] = it.gptq_ms;
      row["gptq_warm_ms" + sfx] = it.gptq_warm_ms;
      row["dampings" + sfx] = it.dampings;
      row["peak_vram_bytes" + sfx] = it.peak_vram;
    }
    // The fields of the one-implementation runs before: the default implementation (v2).
    const ImplTimes& chosen = v2.ran ? v2 : v1;
    row["prepare_ms"] = chosen.prepare_ms;
    row["gptq_ms"] = chosen.gptq_ms;
    row["dampings"] = chosen.dampings;
    row["peak_vram_bytes"] = chosen.peak_vram;
    rows.push_back(row);
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
