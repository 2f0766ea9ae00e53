// `exq ppl -m MODEL -f TEXTFILE`: perplexity on non-overlapping token windows of a text file,
// the method of the fixtures (whole file tokenized without special tokens, windows of
// --window tokens each scored on tokens 1..W-1, ppl = exp(mean NLL)); the math lives in
// runtime/perplexity. --device picks the CPU or a CUDA GPU. --kl-base BASE also runs a
// reference model (usually the FP16 original of a quantized -m) on the same windows and reports
// the KL divergence of -m's next-token distributions from BASE's (runtime/kl_divergence).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "model/llama.h"
#include "runtime/kl_divergence.h"
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
  std::string kl_base;
  int64_t window = 512;
  int64_t windows = 0;
  int64_t skip_windows = 0;
  int threads = 0;
  std::string device = "auto";
  CacheTypeFlags cache_type;
  RopeFlags rope;
  CpuMoeFlags cpu_moe;
  LoraFlags lora;
  bool json = false;
};

// The whole text file through the model folder's tokenizer, without special tokens.
std::vector<int32_t> encode_file(const fs::path& model_dir, const std::string& text, const std::string& file) {
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(model_dir / "tokenizer.json");
  try {
    return tok.encode(text, /*add_special_tokens=*/false);
  } catch (const Error& e) {
    throw e.with_file(file);
  }
}

json kl_json(const runtime::KlResult& k, const std::string& base_dir) {
  return {{"base_model", base_dir},
          {"base_ppl", k.base.ppl},
          {"base_nll", k.base.nll},
          {"base_window_ppl", k.base.window_ppl},
          {"ln_ppl_ratio", k.ln_ppl_ratio},
          {"ln_ppl_ratio_stderr", k.ln_ppl_ratio_stderr},
          {"mean", k.kl_mean},
          {"stderr", k.kl_stderr},
          {"median", k.kl_median},
          {"p90", k.kl_p90},
          {"p99", k.kl_p99},
          {"p99_9", k.kl_p999},
          {"max", k.kl_max},
          {"window_kl", k.window_kl},
          {"same_top", k.same_top},
          {"same_top_stderr", k.same_top_stderr},
          {"delta_p_mean", k.dp_mean},
          {"delta_p_rms", k.dp_rms}};
}

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
  const bool kl = !a.kl_base.empty();
  if (kl) require_model_dir(a.kl_base);
  const std::string text = read_text_file(a.file);
  const auto t0 = std::chrono::steady_clock::now();
  model::LlamaModel model = model::LlamaModel::load(dir);
  apply_cache_type(model, a.cache_type);
  apply_rope_flags(model, a.rope);
  apply_cpu_moe_flags(model, a.cpu_moe);
  apply_lora_flags(model, a.lora);
  const std::vector<int32_t> ids = encode_file(dir, text, a.file);
  std::optional<model::LlamaModel> base;
  if (kl) {
    base.emplace(model::LlamaModel::load(a.kl_base));
    apply_rope_flags(*base, a.rope);  // both models run the same positions the same way
    apply_cpu_moe_flags(*base, a.cpu_moe);
    if (base->config().vocab_size != model.config().vocab_size)
      throw Error(fmt::format("--kl-base {} has a vocabulary of {} tokens, {} has {}", a.kl_base,
                              base->config().vocab_size, a.model, model.config().vocab_size));
    // Both models must see the same tokens: their tokenizers must agree on this text.
    if (encode_file(a.kl_base, text, a.file) != ids)
      throw Error(fmt::format("the tokenizers of {} and --kl-base {} encode {} differently", a.model, a.kl_base, a.file));
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
  std::unique_ptr<runtime::cuda::CudaLlama> gpu, gpu_base;
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = a.window;  // as the CPU's cache: the window is the context (longrope's factor set)
    gpu = std::make_unique<runtime::cuda::CudaLlama>(model, co);
    if (kl) gpu_base = std::make_unique<runtime::cuda::CudaLlama>(*base, co);
    device_name = fmt::format("cuda:{} ({})", co.device, gpu->device().name);
  }
#endif
  const auto t1 = std::chrono::steady_clock::now();
  auto progress = [&](int64_t w, double p) {
    if (!a.json) fmt::print(stderr, "window {}/{}: ppl {:.4f}\n", w + 1, windows.size(), p);
  };
  runtime::PerplexityResult r;
  runtime::KlResult k;
  auto kl_progress = [&](int64_t w, const runtime::KlResult& so_far) {
    if (!a.json)
      fmt::print(stderr, "window {}/{}: ppl {:.4f}, base {:.4f}, KL {:.6f}\n", w + 1, windows.size(),
                 so_far.test.window_ppl.back(), so_far.base.window_ppl.back(), so_far.window_kl.back());
  };
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    if (kl) k = runtime::cuda::kl_divergence_cuda(*gpu_base, *gpu, windows, kl_progress);
    else r = runtime::cuda::perplexity_cuda(*gpu, windows, progress);
  }
#endif
  if (device == Device::Cpu) {
    if (kl) k = runtime::kl_divergence(*base, model, windows, kl_progress);
    else r = runtime::perplexity(model, windows, progress);
  }
  if (kl) r = k.test;
  const auto t2 = std::chrono::steady_clock::now();
  const double eval_s = std::chrono::duration<double>(t2 - t1).count();
  const double total_s = std::chrono::duration<double>(t2 - t0).count();
  const double tok_per_s = eval_s > 0 ? static_cast<double>(windows.size()) * static_cast<double>(a.window) / eval_s : 0.0;

  if (a.json) {
    json out = {
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
    if (kl) out["kl"] = kl_json(k, a.kl_base);
    fmt::print("{}\n", out.dump());
    return;
  }
  fmt::print("device: {}\n", device_name);
  fmt::print("perplexity: {:.4f}\n", r.ppl);
  fmt::print("mean nll: {:.6f}\n", r.nll);
  fmt::print("tokens scored: {} ({} windows of {} tokens, {} skipped; {} tokens in file)\n", r.tokens,
             windows.size(), a.window, a.skip_windows, ids.size());
  if (kl) {
    fmt::print("base model: {}\n", a.kl_base);
    fmt::print("base perplexity: {:.4f}\n", k.base.ppl);
    fmt::print("ln(ppl / base ppl): {:.6f} +/- {:.6f}\n", k.ln_ppl_ratio, k.ln_ppl_ratio_stderr);
    fmt::print("KL divergence from base: mean {:.6f} +/- {:.6f}, median {:.6f}, p90 {:.6f}, p99 {:.6f}, "
               "p99.9 {:.6f}, max {:.6f}\n",
               k.kl_mean, k.kl_stderr, k.kl_median, k.kl_p90, k.kl_p99, k.kl_p999, k.kl_max);
    fmt::print("same top token as base: {:.3f} % +/- {:.3f} %\n", 100 * k.same_top, 100 * k.same_top_stderr);
    fmt::print("next-token probability minus base: mean {:.4f} %, rms {:.4f} %\n", 100 * k.dp_mean, 100 * k.dp_rms);
  }
  fmt::print("time: {:.2f} s ({:.1f} tok/s{}; {:.2f} s with loading)\n", eval_s, tok_per_s,
             kl ? " through both models" : "", total_s);
}

}  // namespace

void add_ppl(CLI::App& app) {
  auto a = std::make_shared<PplArgs>();
  auto* cmd = app.add_subcommand("ppl", "Perplexity of a model on non-overlapping token windows of a text file");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  cmd->add_option("-f,--file", a->file, "UTF-8 text file (required)");
  cmd->add_option("--kl-base", a->kl_base,
                  "reference model folder (e.g. the FP16 original of -m): also report the KL divergence of -m's "
                  "next-token distributions from it, its perplexity and top-token agreement");
  cmd->add_option("--window", a->window, "tokens per window")->capture_default_str();
  cmd->add_option("--windows", a->windows, "windows to score, 0 = all")->capture_default_str();
  cmd->add_option("--skip-windows", a->skip_windows, "windows to skip at the start")->capture_default_str();
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  add_cache_type_flags(*cmd, a->cache_type);
  add_rope_flags(*cmd, a->rope);
  add_cpu_moe_flags(*cmd, a->cpu_moe);
  add_lora_flags(*cmd, a->lora);
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->callback([a] { run_ppl(*a); });
}

}  // namespace exq::cli
