// `exq quantize`: converts a Hugging Face model to EXL2, with exllamav2 convert.py's options
// (-i -o -cf -b -hb -c -r -l -mr -ml -om -m -ss -res -nr) plus exq's device, memory and
// snapshot flags, which never change the output (so they are not part of the resume check).
// CLI11 takes only one-letter short names, so the arguments after the subcommand are parsed
// here; the work is quant/pipeline.
#include <fmt/format.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "quant/measure.h"
#include "quant/pipeline.h"

// The CUDA branch builds once the GPU engine exists (quant/cuda/cuda_engine.h, CUDA builds).
#if defined(EXQ_HAVE_CUDA) && __has_include("quant/cuda/cuda_engine.h")
#include "backend/cuda/device.h"
#include "quant/cuda/cuda_engine.h"
#define EXQ_QUANTIZE_CUDA 1
#else
#define EXQ_QUANTIZE_CUDA 0
#endif

namespace exq::cli {
namespace {

constexpr const char* kUsage = R"(Usage: exq quantize -i MODEL -o WORKDIR -b BPW [options]
  -i,  --in_dir DIR              Hugging Face model folder (required)
  -o,  --out_dir DIR             work folder: job.json, calibration rows, state snapshots (required)
  -cf, --compile_full DIR        output model folder (default WORKDIR/out)
  -b,  --bits BPW                target bits per weight of the decoder layers (required unless -om)
  -hb, --head_bits N             head bits: 2, 3, 4, 5, 6 or 8 (default 6; a tied head stays FP16)
  -c,  --cal_dataset FILE...     calibration text: plain text or .jsonl ("text" field); several
                                 files are mixed row by row, round-robin. Default: rows sampled
                                 from the model itself plus 2 rows of random tokens
  -r,  --dataset_rows N          quantization rows (default 100)
  -l,  --length N                quantization row length in tokens (default 2048)
  -mr, --measurement_rows N      measurement rows (default 16)
  -ml, --measurement_length N    measurement row length (default 2048)
  -om, --output_measurement FILE write measurement.json there and stop
  -m,  --measurement FILE        reuse a measurement.json (exq's or exllamav2's), skip measuring
  -ss, --shard_size MB           output shard cap (default 8192)
       --error-metric M          how the measurement scores an option's output error: token
                                 (default: mean over tokens of |dy_t| / |y_t|), row (exllamav2's
                                 |dY| / |Y| per row, which one outlier token can dominate) or
                                 skip0 (row without token 0)
  -res,--resume                  continue the job in WORKDIR (arguments must match)
  -nr, --no_resume               start over, discarding the job in WORKDIR
       --device D                cpu, cuda, cuda:N or auto (default: cuda when this build has
                                 the CUDA quantizer and a usable GPU, else cpu)
       --vram-budget GB          GPU memory the CUDA engine may use (default: most of the card)
       --host-budget GB          RAM for the calibration states; beyond it they spill to files
                                 in WORKDIR/spill (default: half of the machine's memory)
       --snapshot-interval S     write a state snapshot when S seconds passed since the last
                                 one (default 60; 0: after every module); a resume replays the
                                 modules after the last snapshot
       --threads N               worker threads (default: all cores)
       --status-json             one JSON object per line per event instead of text
An existing job in WORKDIR is resumed unless -nr is given. --device, the budgets and the
snapshot interval may differ on resume (GB = 10^9 bytes).)";

struct Parser {
  std::vector<std::string> args;
  size_t i = 0;

  std::string value(const std::string& opt) {
    if (i + 1 >= args.size()) throw Error(fmt::format("quantize: {} needs a value", opt));
    return args[++i];
  }
  int64_t integer(const std::string& opt) {
    const std::string v = value(opt);
    try {
      size_t used = 0;
      const long long n = std::stoll(v, &used);
      if (used == v.size()) return n;
    } catch (const std::exception&) {
    }
    throw Error(fmt::format("quantize: {} expects an integer, got '{}'", opt, v));
  }
  double number(const std::string& opt) {
    const std::string v = value(opt);
    if (const std::optional<double> d = parse_number(v)) return *d;
    throw Error(fmt::format("quantize: {} expects a number, got '{}'", opt, v));
  }
};

int64_t gigabytes(double gb, const char* opt) {
  EXQ_CHECK(gb >= 0 && gb < 1e6, "quantize: {} expects a size in GB >= 0, got {}", opt, gb);
  return static_cast<int64_t>(std::llround(gb * 1e9));
}

// --device: "cpu", "cuda", "cuda:N" or "auto" -> the engine factory of the conversion.
quant::EngineFactory pick_engine(const std::string& device, [[maybe_unused]] int64_t vram_budget) {
  [[maybe_unused]] int index = 0;
  const bool cuda = device == "cuda" || device.starts_with("cuda:");
  if (device.starts_with("cuda:")) {
    const std::string n = device.substr(5);
    EXQ_CHECK(!n.empty() && n.size() < 4 && n.find_first_not_of("0123456789") == std::string::npos,
              "quantize: --device {}: expected cuda:N with a device number", device);
    index = std::stoi(n);
  }
  if (device == "cpu") return quant::make_cpu_engine;
  EXQ_CHECK(cuda || device == "auto", "quantize: --device must be cpu, cuda, cuda:N or auto, got '{}'",
            device);
#if EXQ_QUANTIZE_CUDA
  if (device == "auto") {
    try {
      if (exq::cuda::device_count() == 0) return quant::make_cpu_engine;
      exq::cuda::require_device(0);
    } catch (const Error&) {
      return quant::make_cpu_engine;  // no usable GPU: auto means the CPU
    }
  } else {
    exq::cuda::require_device(index);  // a clear error naming the device
  }
  return [index, vram_budget](const io::ModelConfig& config, int64_t max_tokens) {
    quant::cuda::CudaEngineOptions eo;
    using Budget = decltype(eo.vram_budget_bytes);
    eo.vram_budget_bytes = vram_budget >= 0 ? static_cast<Budget>(vram_budget)
                                            : static_cast<Budget>(quant::cuda::default_vram_budget(index));
    eo.device = index;
    std::unique_ptr<quant::Engine> engine = quant::cuda::make_cuda_engine(config, max_tokens, eo);
    return engine;
  };
#else
  if (!cuda) return quant::make_cpu_engine;
  throw Error(fmt::format("quantize: --device {}: this exq is built without the CUDA quantizer "
                          "(configure with -DEXQ_CUDA=ON), use --device cpu",
                          device));
#endif
}

void run_quantize(std::vector<std::string> raw) {
  quant::ConvertOptions o;
  quant::JobArgs& a = o.args;
  std::string compile_dir, device = "auto";
  int threads = 0;
  int64_t vram_budget = -1;
  bool bits_given = false, resume = false, restart = false;
  Parser p{std::move(raw)};
  for (p.i = 0; p.i < p.args.size(); ++p.i) {
    const std::string& opt = p.args[p.i];
    auto is = [&](const char* s, const char* l) { return opt == s || opt == l; };
    if (is("-h", "--help")) {
      fmt::print("{}\n", kUsage);
      return;
    } else if (is("-i", "--in_dir")) a.model_dir = p.value(opt);
    else if (is("-o", "--out_dir")) o.work_dir = p.value(opt);
    else if (is("-cf", "--compile_full")) compile_dir = p.value(opt);
    else if (is("-b", "--bits")) a.bits = p.number(opt), bits_given = true;
    else if (is("-hb", "--head_bits")) a.head_bits = static_cast<int>(p.integer(opt));
    else if (is("-c", "--cal_dataset")) {
      a.cal_files.push_back(p.value(opt));
      while (p.i + 1 < p.args.size() && !p.args[p.i + 1].starts_with("-")) a.cal_files.push_back(p.args[++p.i]);
    } else if (is("-r", "--dataset_rows")) a.rows = p.integer(opt);
    else if (is("-l", "--length")) a.length = p.integer(opt);
    else if (is("-mr", "--measurement_rows")) a.measure_rows = p.integer(opt);
    else if (is("-ml", "--measurement_length")) a.measure_length = p.integer(opt);
    else if (is("-om", "--output_measurement")) a.measurement_out = p.value(opt);
    else if (is("-m", "--measurement")) a.measurement_in = p.value(opt);
    else if (is("-ss", "--shard_size")) a.shard_mb = p.integer(opt);
    else if (opt == "--error-metric") {
      a.error_metric = p.value(opt);
      quant::parse_error_metric(a.error_metric, "quantize: --error-metric");
    }
    else if (is("-res", "--resume")) resume = true;
    else if (is("-nr", "--no_resume")) restart = true;
    else if (opt == "--device") device = p.value(opt);
    else if (opt == "--vram-budget") vram_budget = gigabytes(p.number(opt), "--vram-budget");
    else if (opt == "--host-budget") o.host_budget_bytes = gigabytes(p.number(opt), "--host-budget");
    else if (opt == "--snapshot-interval") {
      o.snapshot_interval_s = p.number(opt);
      EXQ_CHECK(o.snapshot_interval_s >= 0, "quantize: --snapshot-interval expects seconds >= 0, got {}",
                o.snapshot_interval_s);
    } else if (opt == "--threads") threads = static_cast<int>(p.integer(opt));
    else if (opt == "--status-json") o.status_json = true;
    else throw Error(fmt::format("quantize: unknown argument '{}' (see exq quantize -h)", opt));
  }
  if (a.model_dir.empty()) throw Error("quantize needs a model folder: -i MODEL");
  if (o.work_dir.empty()) throw Error("quantize needs a work folder: -o WORKDIR");
  if (!bits_given && a.measurement_out.empty()) throw Error("quantize needs a target bitrate: -b BPW");
  if (resume && restart) throw Error("quantize: -res and -nr exclude each other");
  o.engine = pick_engine(device, vram_budget);
  apply_threads(threads);
  a.out_dir = compile_dir.empty() ? (std::filesystem::path(o.work_dir) / "out").string() : compile_dir;
  o.resume = restart  ? quant::ConvertOptions::Resume::kRestart
             : resume ? quant::ConvertOptions::Resume::kResume
                      : quant::ConvertOptions::Resume::kAuto;
  quant::run_conversion(o);
}

}  // namespace

void add_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Convert a Hugging Face model to EXL2 (exllamav2 convert.py options; -h for all)");
  cmd->prefix_command();
  cmd->set_help_flag();
  cmd->callback([cmd] { run_quantize(cmd->remaining()); });
}

}  // namespace exq::cli
