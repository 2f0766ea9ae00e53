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
#include "cli/session.h"
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
  SamplingFlags sampling;
  GrammarFlags grammar;
  DraftFlags draft;
  std::string prediction_file;
  int threads = 0;
  std::string device = "auto";
  CacheTypeFlags cache_type;
  RopeFlags rope;
  CpuMoeFlags cpu_moe;
  LoraFlags lora;
  bool json = false;
  int logprobs = -1;
  // Set after parsing: which prompt flags were given.
  CLI::Option* prompt_opt = nullptr;
  CLI::Option* chat_opt = nullptr;
  CLI::Option* system_opt = nullptr;
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

void run_generate(const GenerateArgs& a) {
  const bool has_prompt = a.prompt_opt->count() > 0, has_chat = a.chat_opt->count() > 0;
  if (a.model.empty()) throw Error("generate needs a model folder: -m MODEL");
  if (!has_prompt && !has_chat) throw Error("generate needs a prompt: -p TEXT or --chat TEXT");
  if (has_prompt && has_chat) throw Error("give either -p TEXT or --chat TEXT, not both");
  if (a.system_opt->count() > 0 && !has_chat) throw Error("--system only applies to --chat");
  if (a.max_tokens < 0) throw Error(fmt::format("--max-tokens must be >= 0, got {}", a.max_tokens));
  if (a.logprobs >= 0 && !a.json) throw Error("--logprobs is reported in the --json output: give --json too");
  if (a.logprobs > runtime::kMaxTopLogprobs)
    throw Error(fmt::format("--logprobs must be between 0 and {}, got {}", runtime::kMaxTopLogprobs, a.logprobs));
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);

  const fs::path dir = a.model;
  GenerationModel m = load_generation_model(dir);
  apply_cache_type(m.model, a.cache_type);
  apply_rope_flags(m.model, a.rope);
  apply_cpu_moe_flags(m.model, a.cpu_moe);
  apply_lora_flags(m.model, a.lora);
  model::LlamaModel& model = m.model;
  const tokenizer::Tokenizer& tok = m.tok;
  const tokenizer::TokenizerConfig& tc = m.tc;
  runtime::GenerateOptions options;
  options.sampler = a.sampling.settings(m.gen, m.tok);
  options.max_new_tokens = a.max_tokens;
  options.eos_token_ids = m.eos_ids;
  options.draft = a.draft.settings();
  options.logprobs = a.logprobs;
  a.grammar.apply(options, tok, model.config().vocab_size);
  if (!a.prediction_file.empty()) {
    if (!options.draft.enabled()) throw Error("--prediction-file needs drafts: give --draft-max N");
    options.prediction = tok.encode(read_text_file(a.prediction_file), /*add_special_tokens=*/false);
  }

  // Chat: the rendered template already spells out its special tokens. Plain: the
  // tokenizer's post-processor adds what the model expects (e.g. Llama's BOS).
  const std::vector<int32_t> prompt =
      has_chat ? tok.encode(render_chat_prompt(tc, dir, a), /*add_special_tokens=*/false)
               : tok.encode(a.prompt, /*add_special_tokens=*/true);

  const runtime::TextCallback stream = stdout_stream(!a.json);
  runtime::GenerateResult r;
  std::string device_name = "cpu";
  // The model's context for this prompt, and the draft model's.
  const int64_t ctx = runtime::generation_context(model.config(), prompt.size(), options.max_new_tokens);
  const int64_t vocab = model.config().vocab_size;
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = ctx;
    runtime::cuda::CudaLlama gpu(model, co);
    device_name = fmt::format("cuda:{} ({})", co.device, gpu.device().name);
    const auto draft = load_draft_model(a.draft, options.draft, tok, vocab, device, ctx);
    r = runtime::cuda::generate_text_cuda(gpu, tok, prompt, options, stream);
  }
#endif
  if (device == Device::Cpu) {
    const auto draft = load_draft_model(a.draft, options.draft, tok, vocab, device, ctx);
    r = runtime::generate_text(model, tok, prompt, options, stream);
  }

  if (a.json) {
    json out = {
        {"text", r.text},
        {"prompt_tokens", r.prompt_tokens},
        {"generated_tokens", r.generated_tokens},
        {"prefill_tokens_per_s", r.prefill_tokens_per_s()},
        {"decode_tokens_per_s", r.decode_tokens_per_s()},
        {"decode_steps", r.decode_steps},
        {"draft_tokens", r.draft_tokens},
        {"accepted_draft_tokens", r.accepted_draft_tokens},
        {"ids", r.ids},
        {"stop_reason", runtime::stop_reason_name(r.stop)},
        {"seed", r.seed},
        {"device", device_name},
    };
    if (a.logprobs >= 0) {
      const auto piece = [&](int32_t id) { return tok.decode(std::span<const int32_t>(&id, 1)); };
      json lps = json::array();
      for (const runtime::TokenLogprob& lp : r.logprobs) {
        json top = json::array();
        for (const auto& [id, v] : lp.top) top.push_back({{"id", id}, {"token", piece(id)}, {"logprob", v}});
        lps.push_back({{"id", lp.id}, {"token", piece(lp.id)}, {"logprob", lp.logprob}, {"top", std::move(top)}});
      }
      out["logprobs"] = std::move(lps);
    }
    // Replace invalid UTF-8 instead of throwing: the text is the model's, not the user's.
    fmt::print("{}\n", out.dump(-1, ' ', false, json::error_handler_t::replace));
    return;
  }
  if (r.text.empty() || r.text.back() != '\n') std::fputc('\n', stdout);
  std::fflush(stdout);
  fmt::print(stderr,
             "prompt tokens: {}, generated tokens: {} (stop: {}), prefill: {:.1f} tok/s, decode: {:.1f} tok/s{}, "
             "device: {}\n",
             r.prompt_tokens, r.generated_tokens, runtime::stop_reason_name(r.stop), r.prefill_tokens_per_s(),
             r.decode_tokens_per_s(), draft_summary(r), device_name);
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
  a->sampling.add(*cmd);
  a->grammar.add(*cmd);
  a->draft.add(*cmd);
  cmd->add_option("--prediction-file", a->prediction_file,
                  "text the answer is expected to repeat (e.g. a file being edited): guesses are looked up "
                  "in it first (needs --draft-max)");
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  add_cache_type_flags(*cmd, a->cache_type);
  add_rope_flags(*cmd, a->rope);
  add_cpu_moe_flags(*cmd, a->cpu_moe);
  add_lora_flags(*cmd, a->lora);
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object instead of streaming");
  cmd->add_option("--logprobs", a->logprobs,
                  "with --json: each generated token's log-probability under the model (before sampling "
                  "settings) and its N likeliest alternatives (0-20)");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace exq::cli
