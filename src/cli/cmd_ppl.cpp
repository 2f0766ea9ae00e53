// `exq ppl -m MODEL -f TEXTFILE`: perplexity on non-overlapping token windows of a text file,
// the method of the fixtures (whole file tokenized without special tokens, windows of
// --window tokens each scored on tokens 1..W-1, ppl = exp(mean NLL)); the math lives in
// runtime/perplexity. --device picks the CPU or a CUDA GPU.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <memory>

#include "cli/commands.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "model/llama.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"
#if EXQ_HAVE_CUDA
#include "runtime/cuda/cuda_generate.h"
#endif

namespace exq::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct PplArgs {
  std::string model;
  std::string file;
  int64_t window = 512;
  int64_t windows = 0;
  int64_t skip_windows = 0;
  int threads = 0;
  std::string device = "auto";
  bool json = false;
};

void run_ppl(const PplArgs& a) {
  if (a.model.empty()) throw Error("ppl needs a model folder: -m MODEL");
  if (a.file.empty()) throw Error("ppl needs a text file: -f TEXTFILE");
  if (a.window < 2) throw Error(fmt::format("--window must be at least 2 tokens, got {}", a.window));
  if (a.windows < 0) throw Error(fmt::format("--windows must be >= 0 (0 = all), got {}", a.windows));
  if (a.skip_windows < 0) throw Error(fmt::format("--skip-windows must be >= 0, got {}", a.skip_windows));
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);

  const fs::path dir = a.model;
  require_model_dir(dir);
  const std::string text = read_text_file(a.file);
  const auto t0 = std::chrono::steady_clock::now();
  model::LlamaModel model = model::LlamaModel::load(dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, /*add_special_tokens=*/false);
  } catch (const Error& e) {
    throw e.with_file(a.file);
  }

  const int64_t wanted = a.windows > 0 ? a.skip_windows + a.windows : 0;
  auto windows = runtime::split_windows(ids, a.window, wanted);
  const int64_t available = static_cast<int64_t>(windows.size());
  if (available <= a.skip_windows)
    throw Error(fmt::format("{} tokens make {} window(s) of {}, none left after skipping {}", ids.size(),
                            available, a.window, a.skip_windows),
                ErrorContext{.file = a.file});
  windows.erase(windows.begin(), windows.begin() + a.skip_windows);

  std::string device_name = "cpu";
#if EXQ_HAVE_CUDA
  std::unique_ptr<runtime::cuda::CudaLlama> gpu;
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = a.window - 1;
    gpu = std::make_unique<runtime::cuda::CudaLlama>(model, co);
    device_name = fmt::format("cuda:{} ({})", co.device, gpu->device().name);
  }
#endif
  const auto t1 = std::chrono::steady_clock::now();
  auto progress = [&](int64_t w, double p) {
    if (!a.json) fmt::print(stderr, "window {}/{}: ppl {:.4f}\n", w + 1, windows.size(), p);
  };
  runtime::PerplexityResult r;
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) r = runtime::cuda::perplexity_cuda(*gpu, windows, progress);
#endif
  if (device == Device::Cpu) r = runtime::perplexity(model, windows, progress);
  const auto t2 = std::chrono::steady_clock::now();
  const double eval_s = std::chrono::duration<double>(t2 - t1).count();
  const double total_s = std::chrono::duration<double>(t2 - t0).count();
  const double tok_per_s = eval_s > 0 ? static_cast<double>(windows.size()) * static_cast<double>(a.window) / eval_s : 0.0;

  if (a.json) {
    const json out = {
        {"ppl", r.ppl},
        {"nll", r.nll},
        {"tokens_scored", r.tokens},
        {"windows", windows.size()},
        {"window", a.window},
        {"skip_windows", a.skip_windows},
        {"tokens_in_file", ids.size()},
        {"window_ppl", r.window_ppl},
        {"seconds", eval_s},
        {"total_seconds", total_s},
        {"tokens_per_s", tok_per_s},
        {"device", device_name},
    };
    fmt::print("{}\n", out.dump());
    return;
  }
  fmt::print("device: {}\n", device_name);
  fmt::print("perplexity: {:.4f}\n", r.ppl);
  fmt::print("mean nll: {:.6f}\n", r.nll);
  fmt::print("tokens scored: {} ({} windows of {} tokens, {} skipped; {} tokens in file)\n", r.tokens,
             windows.size(), a.window, a.skip_windows, ids.size());
  fmt::print("time: {:.2f} s ({:.1f} tok/s; {:.2f} s with loading)\n", eval_s, tok_per_s, total_s);
}

}  // namespace

void add_ppl(CLI::App& app) {
  auto a = std::make_shared<PplArgs>();
  auto* cmd = app.add_subcommand("ppl", "Perplexity of a model on non-overlapping token windows of a text file");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  cmd->add_option("-f,--file", a->file, "UTF-8 text file (required)");
  cmd->add_option("--window", a->window, "tokens per window")->capture_default_str();
  cmd->add_option("--windows", a->windows, "windows to score, 0 = all")->capture_default_str();
  cmd->add_option("--skip-windows", a->skip_windows, "windows to skip at the start")->capture_default_str();
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->callback([a] { run_ppl(*a); });
}

}  // namespace exq::cli
