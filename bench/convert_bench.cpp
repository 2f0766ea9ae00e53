// convert_bench: runs one `exq quantize ... --status-json` and condenses its event stream into
// one JSON document: per module (pass, key, seconds, the engine's module_stats: GPU time,
// bytes moved, hidden copy fraction, peak VRAM; snapshot bytes/time; host-memory tiers) and
// per pass totals (time by module kind, bytes moved per engine field, copy-hidden fraction
// weighted by copy time, peak VRAM, snapshots, replays), plus the wall time of the run.
// Plain main (not Google Benchmark): a conversion is one long measurement, not a loop.
//
//   convert_bench [--exq PATH] [--out FILE] -- -i MODEL -o WORK -b 4.0 [quantize options]
#include <fmt/format.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

double num(const ordered_json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

struct PassTotals {
  int64_t modules = 0;
  double seconds = 0, attention_s = 0, mlp_s = 0, other_s = 0, max_module_s = 0;
  double gpu_s = 0, copy_s = 0, copy_hidden_weighted = 0, copy_hidden_sum = 0;
  int64_t copy_hidden_n = 0;
  double peak_vram_bytes = 0, peak_rss_mb = 0, peak_host_file_bytes = 0;
  double snapshot_bytes = 0, snapshot_s = 0;
  int64_t snapshots = 0;
  std::map<std::string, double> bytes;  // engine *_bytes fields (not peaks), summed
  std::map<std::string, double> other;  // other numeric engine fields, summed

  void add(const ordered_json& ev) {
    ++modules;
    const double s = num(ev, "duration_s");
    seconds += s;
    max_module_s = std::max(max_module_s, s);
    const std::string key = ev.value("module", "");
    (key.ends_with(".self_attn") ? attention_s : key.ends_with(".mlp") ? mlp_s : other_s) += s;
    peak_rss_mb = std::max(peak_rss_mb, num(ev, "peak_rss_mb"));
    if (ev.contains("snapshot_bytes")) {
      ++snapshots;
      snapshot_bytes += num(ev, "snapshot_bytes");
      snapshot_s += num(ev, "snapshot_s");
    }
    if (ev.contains("host")) peak_host_file_bytes = std::max(peak_host_file_bytes, num(ev.at("host"), "file_bytes"));
    if (!ev.contains("engine") || !ev.at("engine").is_object()) return;
    const ordered_json& e = ev.at("engine");
    const double cs = num(e, "copy_s");
    gpu_s += num(e, "gpu_s");
    copy_s += cs;
    if (e.contains("copy_hidden")) {
      double h = num(e, "copy_hidden");
      if (h > 1) h /= 100;  // percent
      copy_hidden_weighted += h * cs;
      copy_hidden_sum += h;
      ++copy_hidden_n;
    }
    peak_vram_bytes = std::max(peak_vram_bytes, num(e, "peak_vram_bytes"));
    for (const auto& [k, v] : e.items()) {
      if (!v.is_number() || k == "gpu_s" || k == "copy_s" || k == "copy_hidden") continue;
      if (k.starts_with("peak_")) continue;
      (k.ends_with("_bytes") ? bytes[k] : other[k]) += v.get<double>();
    }
  }

  ordered_json json() const {
    ordered_json j{{"modules", modules},         {"seconds", seconds},
                   {"attention_s", attention_s}, {"mlp_s", mlp_s},
                   {"other_s", other_s},         {"max_module_s", max_module_s},
                   {"peak_rss_mb", peak_rss_mb}, {"snapshots", snapshots},
                   {"snapshot_bytes", snapshot_bytes}, {"snapshot_s", snapshot_s},
                   {"peak_host_file_bytes", peak_host_file_bytes}};
    if (gpu_s > 0 || copy_s > 0 || peak_vram_bytes > 0 || !bytes.empty()) {
      ordered_json e{{"gpu_s", gpu_s}, {"copy_s", copy_s}, {"peak_vram_bytes", peak_vram_bytes}};
      if (copy_hidden_n > 0)
        e["copy_hidden"] = copy_s > 0 ? copy_hidden_weighted / copy_s
                                      : copy_hidden_sum / static_cast<double>(copy_hidden_n);
      double moved = 0;
      for (const auto& [k, v] : bytes) {
        e[k] = v;
        moved += v;
      }
      e["bytes_moved"] = moved;
      for (const auto& [k, v] : other) e[k] = v;
      j["engine"] = e;
    }
    return j;
  }
};

int run(int argc, char** argv) {
  fs::path exq = fs::path(argv[0]).parent_path() / ".." / "exq";
  fs::path out;
  std::vector<std::string> qargs;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "--exq" && i + 1 < argc) exq = argv[++i];
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else {
      fmt::print(stderr, "usage: convert_bench [--exq PATH] [--out FILE] -- <exq quantize args>\n");
      return 2;
    }
  }
  for (; i < argc; ++i) qargs.emplace_back(argv[i]);
  if (qargs.empty()) {
    fmt::print(stderr, "convert_bench: no quantize arguments after --\n");
    return 2;
  }
  if (!fs::exists(exq)) exq = fs::path(argv[0]).parent_path() / "exq";
  // Built with fmt and append(): GCC 12 warns (-Wrestrict, falsely) on `" " + std::string`.
  std::string cmd = fmt::format("{} quantize", quote(exq.string()));
  for (const std::string& a : qargs) cmd.append(" ").append(quote(a));
  cmd.append(" --status-json 2>&1");

  const auto t0 = std::chrono::steady_clock::now();
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    fmt::print(stderr, "convert_bench: cannot run {}\n", cmd);
    return 2;
  }
  std::map<std::string, PassTotals> passes;
  ordered_json modules = ordered_json::array(), events = ordered_json::array();
  std::vector<std::string> other_lines;
  std::string line;
  char buf[65536];
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;
    line.pop_back();
    ordered_json ev;
    try {
      ev = ordered_json::parse(line);
    } catch (const nlohmann::json::exception&) {
      other_lines.push_back(line);
      line.clear();
      continue;
    }
    line.clear();
    const std::string kind = ev.value("event", "");
    if (kind == "module") {
      passes[ev.value("pass", "?")].add(ev);
      ordered_json m{{"pass", ev.value("pass", "")}, {"module", ev.value("module", "")},
                     {"seconds", num(ev, "duration_s")}};
      for (const char* k : {"engine", "snapshot_bytes", "snapshot_s", "host", "rfn",
                            "accuracy_min", "accuracy_max"})
        if (ev.contains(k)) m[k] = ev.at(k);
      modules.push_back(m);
    } else {
      events.push_back(ev);  // job, engine, calibration, replay, optimize, host_memory, compile
    }
  }
  const int status = ::pclose(p);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

  ordered_json summary{{"command", cmd}, {"exit_code", rc}, {"wall_s", wall}};
  ordered_json pj = ordered_json::object();
  for (const auto& [name, t] : passes) pj[name] = t.json();
  summary["passes"] = pj;
  summary["events"] = events;
  summary["modules"] = modules;
  if (!other_lines.empty()) summary["output"] = other_lines;  // errors, warnings
  const std::string text = summary.dump(2) + "\n";
  if (out.empty()) {
    std::fputs(text.c_str(), stdout);
  } else {
    std::ofstream(out) << text;
    fmt::print("convert_bench: exit {} in {:.1f} s, summary in {}\n", rc, wall, out.string());
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
