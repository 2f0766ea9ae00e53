// CUDA EXL2 GEMV roofline: Llama-3-8B linear shapes for every bit width, batch 1 (1, 2, 4, 8
// at 4 bits), timed with CUDA events around each GEMV (x staging + GEMV launch) after a
// warm-up; the median over the iterations is reported. Weights rotate over enough copies
// (> 4x L2) that every launch reads HBM. Achieved bandwidth counts the stored weight bytes
// (q_weight + q_scale + q_scale_max + q_groups) and is given as a fraction of 3.0 TB/s (H100
// HBM3, device-to-device copy). Every GEMV figure is given for each kernel of --kernels
// (default 1,2: session 2's exl2_gemv.cu and exl2_gemv_v2.cu, side by side; a layer kernel 2
// cannot run is skipped for it; 3: kernel 2 with a run per warp, mixed-width layers only). Sections (--only, comma separated; default all):
//   gemv    the table above; "graph" columns: back-to-back GEMVs (staging + GEMV launch each)
//           as one CUDA graph; "kernel" columns (batch 1): the GEMV kernel alone in a graph, x
//           already staged (exl2_gemv_staged, as the decode's o projection runs)
//   group   q, k, v and gate, up as one group launch each vs one launch per layer
//   sweep   launch shapes (Exl2Split) at 4 bits, batch 1, the chosen one marked: per launch
//           and the kernel alone in a graph (sorted by the latter)
//   runsweep the same for the mixed options with a run per warp (not default)
//   groupsweep only its group launches (gate + up, q, k, v with exllamav2's options; not default)
//   ceiling a plain streaming read of a 4-bit layer's bytes, timed the same way (not default)
//   prefill dequantize to fp16 (q_perm order) + cuBLAS (x gathered to match) at 2048 tokens
//   decode  one token of Llama-3-8B: q,k,v,o,gate,up,down x 32 layers at 1:4b_128g plus the
//           fp16 head 128256x4096 through cuBLAS, launched back to back (stream) and as one
//           CUDA graph, against the bandwidth floor bytes / 3.0e12; also with q, k, v and
//           gate, up as group launches
// Usage: exl2_gemv_bench [--json FILE] [--iters N] [--only LIST] [--kernels 1,2,3]
// (plain program, CUDA events)
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <map>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cublas.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/stream.h"
#include "core/half.h"
#include "exl2_bench_util.h"
#include "exl2_gemv_sweep.h"
#include "read_probe.h"

namespace exq::cuda {
namespace {

using namespace bench;

// Switches every copy to `kernel`; false when the layer cannot run it.
// Kernel 3: kernel 2 with a run per warp (mixed-width layers only; their default from 4 MB).
bool use_kernel(std::vector<Exl2Layer>& layers, int kernel) {
  for (const Exl2Layer& l : layers) {
    if (kernel >= 2 && !l.kernel2_ok()) return false;
    if (kernel == 3 && l.desc().uniform_bits != 0) return false;
  }
  for (Exl2Layer& l : layers) {
    if (kernel == 3) l.set_runs();
    else l.set_kernel(kernel);
  }
  return true;
}

nlohmann::json gemv_table(int iters, const std::vector<int>& kernels, const DeviceBuffer& x32,
                          Stream& stream) {
  std::printf("%-38s %13s %6s %6s %9s %8s %7s %9s %9s %7s %9s %7s  %s\n", "option", "in x out", "batch",
              "kernel", "median us", "GB/s", "of 3TB/s", "mean us", "graph us", "of 3TB/s", "kernel us",
              "of 3TB/s", "launch shape");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& [in, out_f] : kShapes) {
    for (const Option& o : kOptions) {
      const RandomLayer rl(in, out_f, o, static_cast<uint64_t>(in * 7 + out_f));
      std::vector<Exl2Layer> copies = rotation(rl, o.name.c_str(), stream);
      const int n = static_cast<int>(copies.size());
      DeviceBuffer y(size_t{8} * static_cast<size_t>(out_f) * 4);
      std::vector<int64_t> batches = {1};
      if (o.name == "1:4b_128g") batches = {1, 2, 4, 8};
      if (o.name[0] == '0') batches = {1, 8};
      for (int64_t b : batches)
        for (int kernel : kernels) {
          if (!use_kernel(copies, kernel)) continue;
          Exl2Workspace ws;
          ws.reserve(copies[0], stream);
          const DeviceView xv(x32.data(), DType::F32, {b, in});
          const DeviceView yv(y.data(), DType::F32, {b, out_f});
          const Timing tm = time_launches(iters, 10, stream, [&](int i) {
            exl2_gemv(copies[static_cast<size_t>(i % n)], xv, yv, ws, stream);
          });
          const double ms = tm.median_ms;
          const double bytes = static_cast<double>(copies[0].weight_bytes());
          const double bps = bytes / (ms * 1e-3);
          const double gus = graph_us(std::max(20, n), 20, stream, [&](int i) {
            exl2_gemv(copies[static_cast<size_t>(i % n)], xv, yv, ws, stream);
          });
          const double gfrac = bytes / (gus * 1e-6) / kPeakBytesPerSecond;
          double kus = 0.0, kfrac = 0.0;
          if (b == 1) {
            kus = kernel_alone_us(copies, xv, yv, ws, stream);
            kfrac = bytes / (kus * 1e-6) / kPeakBytesPerSecond;
          }
          std::printf("%-38s %6lldx%-6lld %6lld %6d %9.2f %8.0f %6.1f%% %9.2f %9.2f %6.1f%% %9.2f %6.1f%%  %s\n",
                      o.name.c_str(), static_cast<long long>(in), static_cast<long long>(out_f),
                      static_cast<long long>(b), kernel, ms * 1e3, bps / 1e9,
                      100.0 * bps / kPeakBytesPerSecond, tm.mean_ms * 1e3, gus, 100.0 * gfrac, kus,
                      100.0 * kfrac, split_str(copies[0].split()).c_str());
          rows.push_back({{"kernel", fmt::format("exl2_gemv_k{}", kernel)}, {"option", o.name},
                          {"in", in}, {"out", out_f}, {"batch", b}, {"x", "f32"},
                          {"weight_bytes", bytes}, {"median_us", ms * 1e3},
                          {"gb_per_s", bps / 1e9}, {"fraction_of_3tb", bps / kPeakBytesPerSecond},
                          {"back_to_back_mean_us", tm.mean_ms * 1e3}, {"copies", n},
                          {"graph_us", gus}, {"graph_fraction_of_3tb", gfrac},
                          {"kernel_graph_us", b == 1 ? nlohmann::json(kus) : nlohmann::json()},
                          {"kernel_graph_fraction_of_3tb", b == 1 ? nlohmann::json(kfrac) : nlohmann::json()},
                          {"split", split_json(copies[0].split())}});
        }
    }
  }
  return rows;
}

// Launch shapes at 4 bits, batch 1: which Exl2Split the chooser should pick.
// Group launches: q, k, v (4096 -> 4096, 1024, 1024) and gate, up (4096 -> 14336 x 2) as one
// staging and one GEMV launch, against the same layers launched one by one (rotating copies).
nlohmann::json group_table(int iters, const DeviceBuffer& x32, Stream& stream) {
  std::printf("\ngroup launches, batch 1: one launch for the group vs one per layer\n");
  nlohmann::json rows = nlohmann::json::array();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> sets = {
      {"qkv", {4096, 1024, 1024}}, {"gate+up", {14336, 14336}}};
  for (const Option& o : {kOptions[2], kOptions[7]})
    for (const auto& [name, outs] : sets) {
      std::vector<std::unique_ptr<RandomLayer>> host;
      for (size_t i = 0; i < outs.size(); ++i)
        host.push_back(std::make_unique<RandomLayer>(4096, outs[i], o, 50 + i));
      // Each layer's rotation; copy k of the group is copy k of every layer.
      std::vector<std::vector<Exl2Layer>> copies;  // [layer][copy]
      size_t n = kMaxCopies;
      for (auto& h : host) {
        copies.push_back(rotation(*h, "group", stream));
        n = std::min(n, copies.back().size());
      }
      std::vector<Exl2LayerGroup> groups;
      for (size_t k = 0; k < n; ++k) {
        std::vector<const Exl2Layer*> ptrs;
        for (const auto& c : copies) ptrs.push_back(&c[k]);
        groups.emplace_back(ptrs);
      }
      Exl2Workspace ws;
      for (const auto& c : copies) ws.reserve(c[0], stream);
      ws.reserve(groups[0], stream);
      std::vector<DeviceBuffer> ys;
      std::vector<DeviceView> yv;
      for (int64_t out : outs) {
        ys.emplace_back(static_cast<size_t>(out) * 4);
        yv.emplace_back(ys.back().data(), DType::F32, std::vector<int64_t>{1, out});
      }
      const DeviceView xv(x32.data(), DType::F32, {1, 4096});
      const Timing grouped = time_launches(iters, 10, stream, [&](int i) {
        exl2_gemv_group(groups[static_cast<size_t>(i) % n], xv, yv, ws, stream);
      });
      const Timing separate = time_launches(iters, 10, stream, [&](int i) {
        for (size_t k = 0; k < copies.size(); ++k)
          exl2_gemv(copies[k][static_cast<size_t>(i) % n], xv, yv[k], ws, stream);
      });
      double bytes = 0;
      for (const auto& c : copies) bytes += static_cast<double>(c[0].weight_bytes());
      auto frac = [&](double ms) { return bytes / (ms * 1e-3) / kPeakBytesPerSecond; };
      std::printf("%-38s %-8s group %8.2f us (%5.1f%%)  one by one %8.2f us (%5.1f%%)  %s\n",
                  o.name.c_str(), name.c_str(), grouped.median_ms * 1e3,
                  100 * frac(grouped.median_ms), separate.median_ms * 1e3,
                  100 * frac(separate.median_ms), split_str(groups[0].split()).c_str());
      rows.push_back({{"option", o.name}, {"group", name}, {"outs", outs}, {"weight_bytes", bytes},
                      {"group_median_us", grouped.median_ms * 1e3},
                      {"group_fraction_of_3tb", frac(grouped.median_ms)},
                      {"separate_median_us", separate.median_ms * 1e3},
                      {"separate_fraction_of_3tb", frac(separate.median_ms)},
                      {"split", split_json(groups[0].split())}});
    }
  return rows;
}

// Prefill: 2048 tokens, 4-bit 128g: dequantize to fp16 scratch, then cuBLAS.
nlohmann::json prefill_table(Stream& stream) {
  constexpr int64_t kTokens = 2048;
  nlohmann::json prefill = nlohmann::json::array();
  CublasHandle cublas;
  std::printf("\nprefill %lld tokens, 1:4b_128g: dequantize + cuBLAS (f16 x f16, f32 accumulate)\n",
              static_cast<long long>(kTokens));
  for (const auto& [in, out_f] : kShapes) {
    const RandomLayer rl(in, out_f, kOptions[2], 99);
    const Exl2Layer layer(rl.host, stream.get());
    Exl2Workspace ws;
    ws.reserve(layer, stream);
    DeviceBuffer x = random_device(static_cast<size_t>(kTokens * in) * 4, false, stream);
    DeviceBuffer y(static_cast<size_t>(kTokens * out_f) * 4);
    DeviceBuffer w(static_cast<size_t>(in * out_f) * 2);
    DeviceBuffer mm(matmul_workspace_bytes(kTokens, in));
    const DeviceView xv(x.data(), DType::F32, {kTokens, in}), yv(y.data(), DType::F32, {kTokens, out_f});
    const DeviceView wv(w.data(), DType::F16, {out_f, in});
    const DeviceView mv(mm.data(), DType::U8, {static_cast<int64_t>(mm.size())});
    const int it = 50;
    // exl2_matmul's path: the permuted dequantization and matmul gathering x in q_perm order.
    const double dq = median_ms(it, 5, stream, [&](int) { exl2_dequantize_permuted(layer, wv, stream); });
    const double gemm = median_ms(it, 5, stream, [&](int) {
      matmul(cublas, xv, wv, yv, mv, stream, layer.q_perm());
    });
    const double total = median_ms(it, 5, stream, [&](int) {
      exl2_matmul(cublas, layer, xv, yv, ws, wv, mv, stream);
    });
    const double flops = 2.0 * kTokens * in * out_f;
    // Bytes the dequantization moves: the layer's weights read, fp16 W written.
    const double dq_bytes = static_cast<double>(layer.weight_bytes() + in * out_f * 2);
    std::printf("%6lldx%-6lld dequant %8.1f us (%5.0f GB/s moved)  gemm %8.1f us (%4.0f TFLOP/s)  "
                "total %8.1f us\n",
                static_cast<long long>(in), static_cast<long long>(out_f), dq * 1e3,
                dq_bytes / (dq * 1e-3) / 1e9, gemm * 1e3, flops / (gemm * 1e-3) / 1e12, total * 1e3);
    prefill.push_back({{"kernel", "exl2_dequantize_permuted+cublas"}, {"option", kOptions[2].name},
                       {"in", in}, {"out", out_f}, {"tokens", kTokens}, {"dequant_us", dq * 1e3},
                       {"dequant_bytes_per_s", dq_bytes / (dq * 1e-3)},
                       {"gemm_us", gemm * 1e3}, {"total_us", total * 1e3},
                       {"gemm_tflops", flops / (gemm * 1e-3) / 1e12}});
  }
  return prefill;
}

// One decode token of Llama-3-8B: 32 x (q, k, v, o, gate, up, down) EXL2 GEMVs, batch 1, then
// the fp16 head through cuBLAS; every layer is its own upload (3.5 GB, no L2 reuse).
nlohmann::json decode_set(int iters, const Option& o, int kernel, bool grouped, Stream& stream) {
  constexpr int kLayers = 32;
  constexpr int64_t kHidden = 4096, kKv = 1024, kFfn = 14336, kVocab = 128256;
  const std::vector<std::pair<int64_t, int64_t>> linears = {
      {kHidden, kHidden}, {kHidden, kKv}, {kHidden, kKv}, {kHidden, kHidden},
      {kHidden, kFfn},    {kHidden, kFfn}, {kFfn, kHidden}};  // q k v o gate up down
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<RandomLayer>> host;
  for (const auto& sh : linears)
    if (!host.count(sh)) host[sh] = std::make_unique<RandomLayer>(sh.first, sh.second, o, 11);
  std::vector<Exl2Layer> layers;
  Exl2Workspace ws;
  double bytes = 0;
  for (int l = 0; l < kLayers; ++l)
    for (const auto& sh : linears) {
      layers.emplace_back(host[sh]->host, stream.get(), "decode");
      if (kernel == 1 || layers.back().kernel2_ok()) layers.back().set_kernel(kernel);
      ws.reserve(layers.back(), stream);
      bytes += static_cast<double>(layers.back().weight_bytes());
    }
  // q, k, v and gate, up of each layer as group launches (when `grouped`).
  std::vector<Exl2LayerGroup> groups;
  if (grouped)
    for (int l = 0; l < kLayers; ++l) {
      const size_t b = static_cast<size_t>(l) * linears.size();
      for (Exl2LayerGroup g : {Exl2LayerGroup({&layers[b], &layers[b + 1], &layers[b + 2]}),
                               Exl2LayerGroup({&layers[b + 4], &layers[b + 5]})}) {
        if (kernel == 1 || g.split().kernel != kernel) g.set_kernel(kernel);
        ws.reserve(g, stream);
        groups.push_back(std::move(g));
      }
    }
  DeviceBuffer head = random_device(static_cast<size_t>(kVocab * kHidden) * 2, true, stream);
  bytes += static_cast<double>(kVocab * kHidden) * 2;
  DeviceBuffer xh = random_device(kHidden * 4, false, stream), xf = random_device(kFfn * 4, false, stream);
  DeviceBuffer y(static_cast<size_t>(kVocab) * 4);
  DeviceBuffer mm(matmul_workspace_bytes(1, kHidden));
  CublasHandle cublas;
  auto out_view = [&](int64_t out) { return DeviceView(y.data(), DType::F32, {1, out}); };
  auto token = [&] {
    for (size_t i = 0; i < layers.size(); ++i) {
      const Exl2Layer& L = layers[i];
      const size_t pos = i % linears.size(), l = i / linears.size();
      if (grouped && (pos == 0 || pos == 4)) {  // q, k, v / gate, up as one launch
        const Exl2LayerGroup& g = groups[2 * l + (pos == 4 ? 1 : 0)];
        std::vector<DeviceView> ys;
        for (const Exl2Layer* m : g.layers()) ys.push_back(out_view(m->out()));
        exl2_gemv_group(g, DeviceView(xh.data(), DType::F32, {1, kHidden}), ys, ws, stream);
      }
      if (grouped && pos != 3 && pos != 6) continue;
      const DeviceView xv(L.in() == kFfn ? xf.data() : xh.data(), DType::F32, {1, L.in()});
      exl2_gemv(L, xv, out_view(L.out()), ws, stream);
    }
    matmul(cublas, DeviceView(xh.data(), DType::F32, {1, kHidden}),
           DeviceView(head.data(), DType::F16, {kVocab, kHidden}),
           DeviceView(y.data(), DType::F32, {1, kVocab}),
           DeviceView(mm.data(), DType::U8, {static_cast<int64_t>(mm.size())}), stream);
  };
  const int reps = std::max(10, iters / 5);
  const double eager = median_ms_ungated(reps, 2, stream, [&](int) { token(); });
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  token();
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double graphed =
      median_ms_ungated(reps, 2, stream, [&](int) { CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
  // The head alone, for the split of the total.
  const double head_ms = median_ms(reps, 2, stream, [&](int) {
    matmul(cublas, DeviceView(xh.data(), DType::F32, {1, kHidden}),
           DeviceView(head.data(), DType::F16, {kVocab, kHidden}),
           DeviceView(y.data(), DType::F32, {1, kVocab}),
           DeviceView(mm.data(), DType::U8, {static_cast<int64_t>(mm.size())}), stream);
  });
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  const double floor_us = bytes / kPeakBytesPerSecond * 1e6;
  std::printf("\ndecode token, Llama-3-8B, %s, GEMV kernel %d%s, %d layers + fp16 head: %.1f MB, "
              "floor %.1f us\n"
              "  stream %.1f us (%.1f%% of floor speed), graph %.1f us (%.1f%%), head alone %.1f us\n",
              o.name.c_str(), kernel, grouped ? ", q/k/v and gate/up grouped" : "", kLayers,
              bytes / 1e6, floor_us, eager * 1e3,
              100.0 * floor_us / (eager * 1e3), graphed * 1e3, 100.0 * floor_us / (graphed * 1e3),
              head_ms * 1e3);
  return {{"option", o.name}, {"kernel", kernel}, {"grouped", grouped}, {"layers", kLayers}, {"gemvs", layers.size()}, {"bytes", bytes},
          {"floor_us", floor_us}, {"stream_us", eager * 1e3}, {"graph_us", graphed * 1e3},
          {"head_us", head_ms * 1e3}, {"graph_fraction_of_floor", floor_us / (graphed * 1e3)}};
}

// A probe launch fn(i) timed like a GEMV: between its own events (median of `iters`) and back to
// back in a graph of `count` launches; JSON row fields and a printed summary.
template <typename Fn>
nlohmann::json time_probe(double bytes, int iters, int count, Stream& stream, Fn&& fn) {
  const double us = median_ms(iters, 10, stream, fn) * 1e3;
  const double gus = graph_us(count, 20, stream, fn);
  const double frac = bytes / (us * 1e-6) / kPeakBytesPerSecond;
  const double gfrac = bytes / (gus * 1e-6) / kPeakBytesPerSecond;
  std::printf("%7.2f us %5.1f%%, in a graph %7.2f us %5.1f%%\n", us, 100 * frac, gus, 100 * gfrac);
  return {{"bytes", bytes}, {"median_us", us}, {"fraction_of_3tb", frac},
          {"graph_us", gus}, {"graph_fraction_of_3tb", gfrac}};
}

// The read ceiling of the timing method: a plain streaming read of the bytes of a 4-bit
// 4096x14336 and 4096x4096 layer (rotating over > 256 MB, like the GEMV table) per launch, and
// the GEMV's access pattern without its arithmetic.
nlohmann::json read_ceiling(int iters, Stream& stream) {
  nlohmann::json rows = nlohmann::json::array();
  int sms = 0, device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DeviceBuffer sink(4);
  auto* out = static_cast<uint32_t*>(sink.data());
  std::printf("\nread ceiling: streaming read between events, rotating copies\n");
  for (const size_t bytes : {size_t{29360128} + 14336 * 32 * 2, size_t{8388608} + 4096 * 32 * 2}) {
    const size_t n = rotation_copies(bytes);
    DeviceBuffer pool(n * bytes);
    CUDA_CHECK(cudaMemsetAsync(pool.data(), 1, pool.size(), stream));
    struct Shape { int blocks_per_sm, threads, unroll; };
    for (const Shape sh : {Shape{1, 1024, 4}, Shape{2, 1024, 4}, Shape{2, 1024, 8}, Shape{4, 512, 8},
                           Shape{8, 256, 8}}) {
      std::printf("%9zu bytes  %d x %4d threads per SM, %d loads in flight: ", bytes, sh.blocks_per_sm,
                  sh.threads, sh.unroll);
      nlohmann::json row = time_probe(static_cast<double>(bytes), iters, std::max<int>(20, static_cast<int>(n)),
                                      stream, [&](int i) {
        read_probe(static_cast<const char*>(pool.data()) + static_cast<size_t>(i) % n * bytes, bytes,
                   sh.blocks_per_sm * sms, sh.threads, sh.unroll, out, stream.get());
      });
      row.update({{"blocks_per_sm", sh.blocks_per_sm}, {"threads", sh.threads}, {"unroll", sh.unroll}});
      rows.push_back(row);
    }
  }
  // The GEMV's pattern: 4096x14336 at 4 bits is 448 tiles of 64 KB in 2 KB steps, 4 warps
  // per tile (the chosen split: ksub 4, tpb 1).
  constexpr int kTiles = 448;
  constexpr size_t kTile = 65536;
  const size_t bytes = kTiles * kTile;
  const size_t n = rotation_copies(bytes);
  DeviceBuffer pool(n * bytes);
  CUDA_CHECK(cudaMemsetAsync(pool.data(), 1, pool.size(), stream));
  struct Pat { int warps, depth; bool interleave; };
  for (const Pat pt : {Pat{4, 2, false}, Pat{4, 2, true}, Pat{4, 4, false}, Pat{4, 4, true},
                       Pat{8, 2, false}, Pat{8, 2, true}, Pat{4, 1, false}}) {
    std::printf("GEMV pattern, 448 tiles x 64 KB, %d warps per tile, %d steps in flight, %s: ", pt.warps,
                pt.depth, pt.interleave ? "interleaved" : "contiguous");
    nlohmann::json row = time_probe(static_cast<double>(bytes), iters, std::max<int>(20, static_cast<int>(n)),
                                    stream, [&](int i) {
      pattern_probe(static_cast<const char*>(pool.data()) + static_cast<size_t>(i) % n * bytes, kTiles, kTile,
                    2048, pt.warps, pt.depth, pt.interleave, out, stream.get());
    });
    row.update({{"pattern", "gemv"}, {"warps_per_tile", pt.warps}, {"depth", pt.depth},
                {"interleave", pt.interleave}});
    rows.push_back(row);
  }
  return rows;
}

// A few launches at 4 bits, batch 1, for a profiler (ncu -k regex:exl2), plus the floor of
// the timing method: a 2 MB device copy and a 4-byte memset between events.
void probe(const std::vector<int>& kernels, const DeviceBuffer& x32, Stream& stream) {
  DeviceBuffer a(size_t{2} << 20), b(size_t{2} << 20);
  const double copy = median_ms(50, 5, stream, [&](int) {
    CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), a.size(), cudaMemcpyDeviceToDevice, stream));
  });
  const double set = median_ms(50, 5, stream, [&](int) { CUDA_CHECK(cudaMemsetAsync(b.data(), 0, 4, stream)); });
  std::printf("timing floor: 2 MB d2d copy %.2f us, 4-byte memset %.2f us\n", copy * 1e3, set * 1e3);
  for (const auto& [in, out_f] : kShapes) {
    const RandomLayer rl(in, out_f, kOptions[2], 3);
    Exl2Layer layer(rl.host, stream.get());
    DeviceBuffer y(static_cast<size_t>(out_f) * 4);
    for (int kernel : kernels) {
      layer.set_kernel(kernel);
      Exl2Workspace ws;
      ws.reserve(layer, stream);
      for (int i = 0; i < 3; ++i)
        exl2_gemv(layer, DeviceView(x32.data(), DType::F32, {1, in}),
                  DeviceView(y.data(), DType::F32, {1, out_f}), ws, stream);
      stream.synchronize();
    }
  }
}

int run(int argc, char** argv) {
  std::string json_path, only = "gemv,group,sweep,prefill,decode";
  std::vector<int> kernels = {1, 2};
  int iters = 100;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::max(20, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!std::strcmp(argv[i], "--kernels") && i + 1 < argc) {
      kernels.clear();
      for (const char* p = argv[++i]; *p; ++p)
        if (*p >= '1' && *p <= '3') kernels.push_back(*p - '0');
    }
  }
  auto want = [&](const char* s) { return ("," + only + ",").find(std::string(",") + s + ",") != std::string::npos; };
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  Stream stream;
  nlohmann::json out;
  out["device"] = prop.name;
  out["sms"] = prop.multiProcessorCount;
  out["l2_bytes"] = prop.l2CacheSize;
  out["peak_bytes_per_s"] = kPeakBytesPerSecond;
  out["iters"] = iters;
  out["pdl"] = std::getenv("EXQ_EXL2_NO_PDL") == nullptr;

  {  // the card's copy ceiling: 1 GiB device to device, bytes read + written
    const size_t bytes = size_t{1} << 30;
    DeviceBuffer a(bytes), b(bytes);
    CUDA_CHECK(cudaMemsetAsync(a.data(), 1, bytes, stream));
    const double ms = median_ms(20, 3, stream, [&](int) {
      CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream));
    });
    out["copy_gb_per_s"] = 2.0 * bytes / (ms * 1e-3) / 1e9;
    std::printf("device %s, d2d copy %.0f GB/s (read+write)\n", prop.name,
                out["copy_gb_per_s"].get<double>());
  }
  DeviceBuffer x32 = random_device(size_t{8} * 14336 * 4, false, stream);
  if (want("probe")) probe(kernels, x32, stream);
  if (want("ceiling")) out["read_ceiling"] = read_ceiling(iters, stream);
  if (want("gemv")) out["gemv"] = gemv_table(iters, kernels, x32, stream);
  if (want("group")) out["group"] = group_table(iters, x32, stream);
  if (want("sweep")) out["split_sweep"] = split_sweep(iters, x32, stream);
  if (want("runsweep")) out["runs_sweep"] = runs_sweep(iters, x32, stream);
  if (want("groupsweep")) out["group_sweep"] = group_sweep(x32, stream);
  if (want("prefill")) out["prefill"] = prefill_table(stream);
  if (want("decode")) {
    out["decode"] = nlohmann::json::array();
    for (int kernel : kernels)
      for (bool grouped : {false, true})
        out["decode"].push_back(decode_set(iters, kOptions[2], kernel, grouped, stream));
  }
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  else std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace exq::cuda

int main(int argc, char** argv) {
  try {
    return exq::cuda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exl2_gemv_bench: %s\n", e.what());
    return 1;
  }
}
