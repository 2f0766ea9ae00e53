// `exq generate -m MODEL (-p TEXT | --chat TEXT) ...`: text generation on the CPU or a CUDA GPU
// (--device; on the GPU the sampler runs there too). Streams
// text to stdout as tokens come and prints prompt/generated counts and speeds on stderr, or
// with --json prints one object at the end. Sampling defaults come from the model's
// generation_config.json; flags override them.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>
#include <optional>

#include "chat/template.h"
#include "cli/commands.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "model/llama.h"
#include "runtime/generation_config.h"
#include "runtime/model_step.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"
#if EXQ_HAVE_CUDA
#include "runtime/cuda/cuda_generate.h"
#endif

namespace exq::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct GenerateArgs {
  std::string model;
  std::string prompt;
  std::string chat;
  std::string system;
  int64_t max_tokens = 256;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  int threads = 0;
  std::string device = "auto";
  bool json = false;
  // Set after parsing: which sampling flags were given (they override generation_config).
  CLI::Option* prompt_opt = nullptr;
  CLI::Option* chat_opt = nullptr;
  CLI::Option* system_opt = nullptr;
  CLI::Option* temperature_opt = nullptr;
  CLI::Option* top_k_opt = nullptr;
  CLI::Option* top_p_opt = nullptr;
  CLI::Option* min_p_opt = nullptr;
  CLI::Option* penalty_opt = nullptr;
  CLI::Option* seed_opt = nullptr;
};

// Renders the model's chat template around one user turn (plus an optional system turn).
std::string render_chat_prompt(const tokenizer::TokenizerConfig& tc, const fs::path& dir, const GenerateArgs& a) {
  if (tc.chat_template.empty())
    throw Error("the model has no chat template (tokenizer_config.json): use -p TEXT for a plain prompt",
                ErrorContext{.file = dir.string()});
  const chat::Template tmpl(tc.chat_template);
  json messages = json::array();
  if (a.system_opt->count() > 0) messages.push_back({{"role", "system"}, {"content", a.system}});
  messages.push_back({{"role", "user"}, {"content", a.chat}});
  return chat::render_chat(tmpl, messages, /*add_generation_prompt=*/true, tc.bos_token, tc.eos_token);
}

runtime::SamplerConfig sampler_settings(const runtime::GenerationConfig& gen, const GenerateArgs& a) {
  runtime::SamplerConfig s = runtime::sampler_defaults(gen);
  if (a.temperature_opt->count() > 0) s.temperature = a.temperature;
  if (a.top_k_opt->count() > 0) s.top_k = a.top_k;
  if (a.top_p_opt->count() > 0) s.top_p = a.top_p;
  if (a.min_p_opt->count() > 0) s.min_p = a.min_p;
  if (a.penalty_opt->count() > 0) s.repetition_penalty = a.repetition_penalty;
  if (a.seed_opt->count() > 0) s.seed = a.seed;
  s.validate();
  return s;
}

void run_generate(const GenerateArgs& a) {
  const bool has_prompt = a.prompt_opt->count() > 0, has_chat = a.chat_opt->count() > 0;
  if (a.model.empty()) throw Error("generate needs a model folder: -m MODEL");
  if (!has_prompt && !has_chat) throw Error("generate needs a prompt: -p TEXT or --chat TEXT");
  if (has_prompt && has_chat) throw Error("give either -p TEXT or --chat TEXT, not both");
  if (a.system_opt->count() > 0 && !has_chat) throw Error("--system only applies to --chat");
  if (a.max_tokens < 0) throw Error(fmt::format("--max-tokens must be >= 0, got {}", a.max_tokens));
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);

  const fs::path dir = a.model;
  GenerationModel m = load_generation_model(dir);
  model::LlamaModel& model = m.model;
  const tokenizer::Tokenizer& tok = m.tok;
  const tokenizer::TokenizerConfig& tc = m.tc;
  runtime::GenerateOptions options;
  options.sampler = sampler_settings(m.gen, a);
  options.max_new_tokens = a.max_tokens;
  options.eos_token_ids = m.eos_ids;

  // Chat: the rendered template already spells out its special tokens. Plain: the
  // tokenizer's post-processor adds what the model expects (e.g. Llama's BOS).
  const std::vector<int32_t> prompt =
      has_chat ? tok.encode(render_chat_prompt(tc, dir, a), /*add_special_tokens=*/false)
               : tok.encode(a.prompt, /*add_special_tokens=*/true);

  runtime::TextCallback stream;
  if (!a.json) {
    stream = [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    };
  }
  runtime::GenerateResult r;
  std::string device_name = "cpu";
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = runtime::cuda::generation_context(model.config(), prompt.size(), options.max_new_tokens);
    runtime::cuda::CudaLlama gpu(model, co);
    device_name = fmt::format("cuda:{} ({})", co.device, gpu.device().name);
    r = runtime::cuda::generate_text_cuda(gpu, tok, prompt, options, stream);
  }
#endif
  if (device == Device::Cpu) r = runtime::generate_text(model, tok, prompt, options, stream);

  if (a.json) {
    const json out = {
        {"text", r.text},
        {"prompt_tokens", r.prompt_tokens},
        {"generated_tokens", r.generated_tokens},
        {"prefill_tokens_per_s", r.prefill_tokens_per_s()},
        {"decode_tokens_per_s", r.decode_tokens_per_s()},
        {"ids", r.ids},
        {"stop_reason", runtime::stop_reason_name(r.stop)},
        {"seed", r.seed},
        {"device", device_name},
    };
    // Replace invalid UTF-8 instead of throwing: the text is the model's, not the user's.
    fmt::print("{}\n", out.dump(-1, ' ', false, json::error_handler_t::replace));
    return;
  }
  if (r.text.empty() || r.text.back() != '\n') std::fputc('\n', stdout);
  std::fflush(stdout);
  fmt::print(stderr,
             "prompt tokens: {}, generated tokens: {} (stop: {}), prefill: {:.1f} tok/s, decode: {:.1f} tok/s, "
             "device: {}\n",
             r.prompt_tokens, r.generated_tokens, runtime::stop_reason_name(r.stop), r.prefill_tokens_per_s(),
             r.decode_tokens_per_s(), device_name);
}

}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt or a chat message");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  a->prompt_opt = cmd->add_option("-p,--prompt", a->prompt, "plain text prompt");
  a->chat_opt = cmd->add_option("--chat", a->chat, "user message, wrapped in the model's chat template");
  a->system_opt = cmd->add_option("--system", a->system, "system message for --chat");
  cmd->add_option("--max-tokens", a->max_tokens, "most tokens to generate")->capture_default_str();
  a->temperature_opt = cmd->add_option("--temperature", a->temperature, "0 = greedy (default 0.8)");
  a->top_k_opt = cmd->add_option("--top-k", a->top_k, "keep the k most likely tokens, 0 = off (default 40)");
  a->top_p_opt = cmd->add_option("--top-p", a->top_p, "nucleus sampling, 1 = off (default 0.95)");
  a->min_p_opt = cmd->add_option("--min-p", a->min_p, "drop tokens below min-p x the top probability (default 0.05)");
  a->penalty_opt = cmd->add_option("--repetition-penalty", a->repetition_penalty, "HF repetition penalty, 1 = off");
  a->seed_opt = cmd->add_option("--seed", a->seed, "random seed (default: random)");
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object instead of streaming");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace exq::cli
