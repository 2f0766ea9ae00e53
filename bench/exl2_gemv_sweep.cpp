#include "exl2_gemv_sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
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

// Group launches of Llama-3-8B's shapes with exllamav2's options and a run per warp: gate + up
// of MLP row 9 (0.1:5b_128g/0.9:4b_128g, 0.25:5b_128g/0.75:4b_128g) and q, k, v of attention row
// 10 (each 0.1:5b_128g/0.9:4b_128g), staging + GEMV in a graph; warp slices of spw steps (runs
// padded to them), 1 to 4 blocks along K (clusters or partial sums), 1, 2 or 4 tiles a block.
// Also uniform 1:4b_128g q, k, v, gate + up and down with any tiles per block.
void group_sweeps(const DeviceBuffer& x32, Stream& stream, nlohmann::json& sweep) {
  const Option o54{"0.1:5b_128g/0.9:4b_128g", {{0.1, 5, 128}, {0.9, 4, 128}}};
  const Option o54b{"0.25:5b_128g/0.75:4b_128g", {{0.25, 5, 128}, {0.75, 4, 128}}};
  struct Set {
    std::string name;
    std::vector<std::pair<int64_t, const Option*>> layers;  // out, option
    int64_t in = 4096;
  };
  const Option& o4 = kOptions[2];
  const std::vector<Set> sets = {{"gate+up row 9", {{14336, &o54}, {14336, &o54b}}},
                                 {"q,k,v row 10", {{4096, &o54}, {1024, &o54}, {1024, &o54}}},
                                 {"gate+up 4b", {{14336, &o4}, {14336, &o4}}},
                                 {"q,k,v 4b", {{4096, &o4}, {1024, &o4}, {1024, &o4}}},
                                 {"down 4b", {{4096, &o4}}, 14336}};
  for (const Set& set : sets) {
    std::vector<std::unique_ptr<RandomLayer>> host;
    std::vector<std::vector<Exl2Layer>> rot;
    for (size_t i = 0; i < set.layers.size(); ++i) {
      host.push_back(std::make_unique<RandomLayer>(set.in, set.layers[i].first, *set.layers[i].second,
                                                   12 + i));
      rot.push_back(rotation(*host.back(), "group", stream));
    }
    size_t n = rot[0].size();
    for (auto& r : rot) n = std::min(n, r.size());
    std::vector<Exl2LayerGroup> groups;
    for (size_t c = 0; c < n; ++c) {
      std::vector<const Exl2Layer*> ls;
      for (auto& r : rot) ls.push_back(&r[c]);
      groups.emplace_back(ls);
    }
    std::vector<Exl2Split> cands = {groups[0].split()};
    if (groups[0].width() != 0) {  // one width: any tiles per block (not only powers of two)
      const int steps = rot[0][0].desc().num_steps;
      for (int ksplit : {1, 2, 4})
        for (int ksub : {1, 2, 4, 8})
          for (int tpb = 1; tpb * ksub <= kExl2MaxWarps; ++tpb)
            for (bool cluster : {false, true}) {
              if (cluster && ksplit == 1) continue;
              const int spw = (steps + ksplit * ksub - 1) / (ksplit * ksub);
              cands.push_back({ksplit, ksub, tpb, spw, cluster, 2, false});
            }
    }
    for (int spw : {2, 3, 4, 5, 6, 8, 10, 12, 16}) {
      if (groups[0].width() != 0) break;
      for (int ksplit : {1, 2, 3, 4})
        for (int tpb : {1, 2, 4})
          for (bool cluster : {false, true}) {
            if (cluster && ksplit == 1) continue;
            int v = 0;
            for (auto& r : rot) v = std::max(v, exl2_run_steps(r[0].desc(), spw));
            const int ksub = ((v + spw - 1) / spw + ksplit - 1) / ksplit;
            if (ksub * tpb <= kExl2MaxWarps) cands.push_back({ksplit, ksub, tpb, spw, cluster, 2, true});
          }
    }
    const DeviceView xv(x32.data(), DType::F32, {1, set.in});
    std::vector<DeviceBuffer> ybuf;
    std::vector<DeviceView> ys;
    double bytes = 0.0;
    for (auto& r : rot) {
      ybuf.emplace_back(static_cast<size_t>(r[0].out()) * 4);
      bytes += static_cast<double>(r[0].weight_bytes());
    }
    for (size_t i = 0; i < rot.size(); ++i)
      ys.emplace_back(ybuf[i].data(), DType::F32, std::vector<int64_t>{1, rot[i][0].out()});
    std::vector<std::pair<double, std::string>> lines;
    for (size_t ci = 0; ci < cands.size(); ++ci) {
      try {
        for (auto& g : groups) g.set_split(cands[ci]);
      } catch (const std::exception&) {
        continue;
      }
      Exl2Workspace ws;
      ws.reserve(groups[0], stream);
      const double gus = graph_us(std::max<int>(20, static_cast<int>(n)), 20, stream, [&](int i) {
        exl2_gemv_group(groups[static_cast<size_t>(i) % n], xv, ys, ws, stream);
      });
      const double frac = bytes / (gus * 1e-6) / kPeakBytesPerSecond;
      lines.push_back({gus, fmt::format("{} {} {} graph {:7.2f} us {:5.1f}%", set.name, split_str(cands[ci]),
                                        ci == 0 ? '*' : ' ', gus, 100.0 * frac)});
      sweep.push_back({{"option", set.name}, {"split", split_json(cands[ci])}, {"chosen", ci == 0},
                       {"graph_us", gus}, {"graph_fraction_of_3tb", frac}});
    }
    print_fastest(std::move(lines), 10);
  }
}

}  // namespace

nlohmann::json group_sweep(const DeviceBuffer& x32, Stream& stream) {
  nlohmann::json sweep = nlohmann::json::array();
  std::printf("\ngroup run-per-warp sweep, batch 1 (chosen split marked *); fastest 8 in a graph\n");
  group_sweeps(x32, stream, sweep);
  return sweep;
}

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
  group_sweeps(x32, stream, sweep);
  return sweep;
}

}  // namespace exq::cuda::bench
