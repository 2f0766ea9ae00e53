#include "exl2_gemv_sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/exl2_gemv.h"
#include "exl2_bench_util.h"

namespace exq::cuda::bench {
namespace {

// Prints the first line (the upload's choice) and the `count` fastest, by their time.
void print_fastest(std::vector<std::pair<double, std::string>> lines, size_t count) {
  if (lines.empty()) return;
  std::printf("%s\n", lines[0].second.c_str());
  std::sort(lines.begin(), lines.end());
  for (size_t i = 0; i < std::min(count, lines.size()); ++i) std::printf("%s\n", lines[i].second.c_str());
}

// Times each launch shape of `cands` (the first: the upload's choice, marked *) on `copies`,
// per launch and the kernel alone, appends them to `sweep` and prints the first and the
// fastest 6 by the kernel alone.
void time_splits(std::vector<Exl2Layer>& copies, const std::vector<Exl2Split>& cands,
                 const std::string& label, int iters, const DeviceBuffer& x32, Stream& stream,
                 nlohmann::json& sweep) {
  const int64_t in = copies[0].in(), out_f = copies[0].out();
  const int n = static_cast<int>(copies.size());
  const DeviceView xv(x32.data(), DType::F32, {1, in});
  DeviceBuffer y(static_cast<size_t>(out_f) * 4);
  const DeviceView yv(y.data(), DType::F32, {1, out_f});
  std::vector<std::pair<double, std::string>> lines;
  for (size_t ci = 0; ci < cands.size(); ++ci) {
    const Exl2Split& c = cands[ci];
    try {
      for (auto& l : copies) l.set_split(c);
    } catch (const std::exception&) {
      continue;
    }
    Exl2Workspace ws;
    ws.reserve(copies[0], stream);
    const double ms = median_ms(iters, 10, stream, [&](int i) {
      exl2_gemv(copies[static_cast<size_t>(i % n)], xv, yv, ws, stream);
    });
    const double bytes = static_cast<double>(copies[0].weight_bytes());
    const double frac = bytes / (ms * 1e-3) / kPeakBytesPerSecond;
    const double kus = kernel_alone_us(copies, xv, yv, ws, stream);
    const double kfrac = bytes / (kus * 1e-6) / kPeakBytesPerSecond;
    lines.push_back({kus, fmt::format("{} {:6}x{:<6} {} {} {:8.2f} us {:5.1f}%  kernel {:7.2f} us {:5.1f}%",
                                      label, in, out_f, split_str(c), ci == 0 ? '*' : ' ',
                                      ms * 1e3, 100.0 * frac, kus, 100.0 * kfrac)});
    sweep.push_back({{"option", label}, {"in", in}, {"out", out_f}, {"split", split_json(c)},
                     {"chosen", ci == 0}, {"median_us", ms * 1e3}, {"fraction_of_3tb", frac},
                     {"kernel_graph_us", kus}, {"kernel_graph_fraction_of_3tb", kfrac}});
  }
  print_fastest(std::move(lines), 6);
}

}  // namespace

nlohmann::json split_sweep(int iters, const DeviceBuffer& x32, Stream& stream) {
  nlohmann::json sweep = nlohmann::json::array();
  std::printf("\nsplit sweep, 1:4b_128g, batch 1 (chosen split marked *): per launch (staging + GEMV)"
              " and the kernel alone in a graph; fastest 6 by the kernel alone\n");
  for (const auto& [in, out_f] : kShapes) {
    const RandomLayer rl(in, out_f, kOptions[2], 7);
    std::vector<Exl2Layer> copies = rotation(rl, "sweep", stream);
    const Exl2Split chosen = copies[0].split();
    const int steps = copies[0].desc().num_steps;
    std::vector<Exl2Split> cands = {chosen};
    if (chosen.ksplit > 1) {  // the other cross-block reduction
      Exl2Split alt = chosen;
      alt.cluster = !chosen.cluster;
      cands.push_back(alt);
    }
    for (int ksplit : {1, 2, 3, 4, 8})
      for (int ksub : {1, 2, 4, 8, 16})
        for (int tpb : {1, 2, 4}) {
          if (tpb * ksub > kExl2MaxWarps) continue;
          const int spw = (steps + ksplit * ksub - 1) / (ksplit * ksub);
          cands.push_back({ksplit, ksub, tpb, spw, true, chosen.kernel});
          if (ksplit > 1) cands.push_back({ksplit, ksub, tpb, spw, false, chosen.kernel});
        }
    time_splits(copies, cands, "1:4b_128g", iters, x32, stream, sweep);
  }
  return sweep;
}

// Mixed-width options with a run per warp: warp slices of spw steps (each run padded to them),
// ksplit 1, 2 or 4 blocks along K, 1 or 2 tiles a block.
nlohmann::json runs_sweep(int iters, const DeviceBuffer& x32, Stream& stream) {
  nlohmann::json sweep = nlohmann::json::array();
  std::printf("\nrun-per-warp sweep, mixed options, batch 1 (chosen split marked *); fastest 6 by the"
              " kernel alone\n");
  for (const Option& o : kOptions) {
    if (o.parts.size() < 2) continue;
    for (const auto& [in, out_f] : kShapes) {
      if (out_f == 1024) continue;
      const RandomLayer rl(in, out_f, o, 11);
      std::vector<Exl2Layer> copies = rotation(rl, "runs", stream);
      if (!copies[0].set_runs()) continue;
      std::vector<Exl2Split> cands = {copies[0].split()};
      for (int spw : {2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32})
        for (int ksplit : {1, 2, 4})
          for (int tpb : {1, 2}) {
            const int slices = (exl2_run_steps(copies[0].desc(), spw) + spw - 1) / spw;
            const int ksub = (slices + ksplit - 1) / ksplit;
            if (ksub * tpb > kExl2MaxWarps || (ksplit > 1 && ksub * ksplit - slices >= ksub)) continue;
            cands.push_back({ksplit, ksub, tpb, spw, false, 2, true});
          }
      time_splits(copies, cands, o.name, iters, x32, stream, sweep);
    }
  }
  // Llama-3-8B's gate and up of exllamav2's MLP row 9 (0.1:5b_128g/0.9:4b_128g and
  // 0.25:5b_128g/0.75:4b_128g) as one group launch (staging + GEMV, in a graph).
  const Option gate{"0.1:5b_128g/0.9:4b_128g", {{0.1, 5, 128}, {0.9, 4, 128}}};
  const Option up{"0.25:5b_128g/0.75:4b_128g", {{0.25, 5, 128}, {0.75, 4, 128}}};
  const RandomLayer rg(4096, 14336, gate, 12), ru(4096, 14336, up, 13);
  std::vector<Exl2Layer> gs = rotation(rg, "gate", stream), us = rotation(ru, "up", stream);
  std::vector<Exl2LayerGroup> groups;
  for (size_t i = 0; i < gs.size(); ++i) groups.emplace_back(std::vector<const Exl2Layer*>{&gs[i], &us[i]});
  const int n = static_cast<int>(groups.size());
  std::vector<Exl2Split> cands = {groups[0].split()};
  for (int spw : {4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32})
    for (int ksplit : {1, 2})
      for (int tpb : {1, 2, 4}) {
        const int v = std::max(exl2_run_steps(gs[0].desc(), spw), exl2_run_steps(us[0].desc(), spw));
        const int ksub = ((v + spw - 1) / spw + ksplit - 1) / ksplit;
        if (ksub * tpb <= kExl2MaxWarps) cands.push_back({ksplit, ksub, tpb, spw, false, 2, true});
      }
  const DeviceView xv(x32.data(), DType::F32, {1, 4096});
  DeviceBuffer y0(14336 * 4), y1(14336 * 4);
  const std::vector<DeviceView> ys = {DeviceView(y0.data(), DType::F32, {1, 14336}),
                                      DeviceView(y1.data(), DType::F32, {1, 14336})};
  const double bytes = static_cast<double>(gs[0].weight_bytes() + us[0].weight_bytes());
  std::vector<std::pair<double, std::string>> lines;
  for (size_t ci = 0; ci < cands.size(); ++ci) {
    try {
      for (auto& g : groups) g.set_split(cands[ci]);
    } catch (const std::exception&) {
      continue;
    }
    Exl2Workspace ws;
    ws.reserve(groups[0], stream);
    const double gus = graph_us(std::max(20, n), 20, stream, [&](int i) {
      exl2_gemv_group(groups[static_cast<size_t>(i % n)], xv, ys, ws, stream);
    });
    const double frac = bytes / (gus * 1e-6) / kPeakBytesPerSecond;
    lines.push_back({gus, fmt::format("gate+up row 9 {} {} graph {:7.2f} us {:5.1f}%", split_str(cands[ci]),
                                      ci == 0 ? '*' : ' ', gus, 100.0 * frac)});
    sweep.push_back({{"option", "gate+up row 9"}, {"split", split_json(cands[ci])}, {"chosen", ci == 0},
                     {"graph_us", gus}, {"graph_fraction_of_3tb", frac}});
  }
  print_fastest(std::move(lines), 8);
  return sweep;
}

}  // namespace exq::cuda::bench
