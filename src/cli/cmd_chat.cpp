// `exq chat -m MODEL [--system TEXT] ...`: a conversation in the terminal. Each line read from
// standard input is a user message (a line ending in a backslash goes on with the next line);
// the model's answer streams to standard output. The KV cache stays between turns, so each turn
// runs only its new tokens (the prompt cache); when the conversation outgrows the context, its
// oldest turns are dropped. /reset starts over, /exit or the end of input quits.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "chat/template.h"
#include "cli/commands.h"
#include "cli/run_util.h"
#include "cli/session.h"
#include "core/error.h"

namespace exq::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct ChatArgs {
  std::string model;
  std::string system;
  int64_t max_tokens = 512;
  int64_t ctx_size = 4096;
  SamplingFlags sampling;
  DraftFlags draft;
  int threads = 0;
  std::string device = "auto";
  CacheTypeFlags cache_type;
  RopeFlags rope;
  CpuMoeFlags cpu_moe;
  LoraFlags lora;
  bool no_prompt_cache = false;
  bool json = false;
  CLI::Option* system_opt = nullptr;
};

// The next message from `in`: a line, joined with the following ones while it ends in '\'.
// Empty at the end of input.
std::optional<std::string> read_message(std::istream& in, bool interactive) {
  std::string msg, line;
  for (;;) {
    if (interactive) {
      std::fputs(msg.empty() ? "> " : ". ", stderr);
      std::fflush(stderr);
    }
    if (!std::getline(in, line)) return msg.empty() ? std::nullopt : std::optional<std::string>(msg);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      msg += line + "\n";
      continue;
    }
    return msg + line;
  }
}

std::string trimmed(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

void run_chat(const ChatArgs& a) {
  if (a.model.empty()) throw Error("chat needs a model folder: -m MODEL");
  if (a.max_tokens < 1) throw Error(fmt::format("--max-tokens must be >= 1, got {}", a.max_tokens));
  if (a.ctx_size < 2) throw Error(fmt::format("--ctx-size must be >= 2, got {}", a.ctx_size));
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);
  const fs::path dir = a.model;
  GenerationModel gm = load_generation_model(dir);
  apply_cache_type(gm.model, a.cache_type);
  apply_rope_flags(gm.model, a.rope);
  apply_cpu_moe_flags(gm.model, a.cpu_moe);
  apply_lora_flags(gm.model, a.lora);
  if (gm.tc.chat_template.empty())
    throw Error("the model has no chat template (tokenizer_config.json): chat needs one; use generate -p TEXT",
                ErrorContext{.file = dir.string()});
  const chat::Template tmpl(gm.tc.chat_template);
  runtime::GenerateOptions options;
  options.sampler = a.sampling.settings(gm.gen, gm.tok);
  options.eos_token_ids = gm.eos_ids;
  options.draft = a.draft.settings();
  const tokenizer::Tokenizer& tok = gm.tok;
  ModelSession session(std::move(gm.model), tok, device, a.ctx_size, &a.draft, &options.draft);
  const int64_t ctx = session.max_context();
  const bool interactive = isatty(STDIN_FILENO) != 0;
  fmt::print(stderr, "exq chat: {} on {}, context {} tokens. /reset starts over, /exit or end of input quits.\n",
             fs::absolute(dir).lexically_normal().filename().string(), session.device_name(), ctx);

  const json system = a.system_opt->count() > 0 ? json{{"role", "system"}, {"content", a.system}} : json();
  json messages = json::array();
  auto restart = [&] {
    messages = json::array();
    if (!system.is_null()) messages.push_back(system);
  };
  restart();
  const size_t first_turn = system.is_null() ? 0 : 1;
  while (const std::optional<std::string> line = read_message(std::cin, interactive)) {
    const std::string msg = trimmed(*line);
    if (msg.empty()) continue;
    if (msg == "/exit" || msg == "/quit") break;
    if (msg == "/reset") {
      restart();
      fmt::print(stderr, "(new conversation)\n");
      continue;
    }
    messages.push_back({{"role", "user"}, {"content", msg}});
    auto render = [&] {
      return tok.encode(chat::render_chat(tmpl, messages, /*add_generation_prompt=*/true, gm.tc.bos_token,
                                          gm.tc.eos_token),
                        /*add_special_tokens=*/false);
    };
    std::vector<int32_t> prompt = render();
    // Oldest turns (a user message and its answer) go until the prompt and the answer fit.
    int dropped = 0;
    while (static_cast<int64_t>(prompt.size()) + a.max_tokens > ctx && messages.size() > first_turn + 1) {
      messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(first_turn),
                     messages.begin() + static_cast<std::ptrdiff_t>(std::min(first_turn + 2, messages.size() - 1)));
      ++dropped;
      prompt = render();
    }
    if (static_cast<int64_t>(prompt.size()) >= ctx) {
      fmt::print(stderr, "exq chat: this message makes a prompt of {} tokens; the context holds {}: not sent\n",
                 prompt.size(), ctx);
      messages.erase(messages.end() - 1);
      continue;
    }
    if (dropped > 0) fmt::print(stderr, "(dropped the oldest {} turn(s) to fit the context)\n", dropped);
    options.max_new_tokens = std::min(a.max_tokens, ctx - static_cast<int64_t>(prompt.size()));
    runtime::GenerateResult r;
    try {
      r = session.generate(prompt, options, !a.no_prompt_cache, stdout_stream(!a.json));
    } catch (const Error& e) {
      fmt::print(stderr, "\nexq chat: {}\n", e.message());
      messages.erase(messages.end() - 1);
      continue;
    }
    messages.push_back({{"role", "assistant"}, {"content", r.text}});
    if (a.json) {
      const json out = {{"text", r.text},
                        {"prompt_tokens", r.prompt_tokens},
                        {"cached_tokens", r.cached_tokens},
                        {"generated_tokens", r.generated_tokens},
                        {"dropped_turns", dropped},
                        {"stop_reason", runtime::stop_reason_name(r.stop)},
                        {"prefill_tokens_per_s", r.prefill_tokens_per_s()},
                        {"decode_tokens_per_s", r.decode_tokens_per_s()},
                        {"draft_tokens", r.draft_tokens},
                        {"accepted_draft_tokens", r.accepted_draft_tokens}};
      fmt::print("{}\n", out.dump(-1, ' ', false, json::error_handler_t::replace));
    } else {
      if (r.text.empty() || r.text.back() != '\n') std::fputc('\n', stdout);
      fmt::print(stderr, "[{} prompt tokens, {} cached; {} generated (stop: {}); prefill {:.1f} tok/s, decode {:.1f} tok/s{}]\n",
                 r.prompt_tokens, r.cached_tokens, r.generated_tokens, runtime::stop_reason_name(r.stop),
                 r.prefill_tokens_per_s(), r.decode_tokens_per_s(), draft_summary(r));
    }
    std::fflush(stdout);
  }
}

}  // namespace

void add_chat(CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  auto* cmd = app.add_subcommand("chat", "Chat with a model in the terminal (one user message per input line)");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  a->system_opt = cmd->add_option("--system", a->system, "system message");
  cmd->add_option("--max-tokens", a->max_tokens, "most tokens per answer")->capture_default_str();
  cmd->add_option("--ctx-size", a->ctx_size,
                  "tokens of context (the conversation and the answer), capped at the model's "
                  "context (max_position_embeddings; yarn: original x factor); older turns are "
                  "dropped to stay within it")
      ->capture_default_str();
  a->sampling.add(*cmd);
  a->draft.add(*cmd);
  cmd->add_option("--threads", a->threads, "worker threads for the CPU (default: all cores)");
  add_cache_type_flags(*cmd, a->cache_type);
  add_rope_flags(*cmd, a->rope);
  add_cpu_moe_flags(*cmd, a->cpu_moe);
  add_lora_flags(*cmd, a->lora);
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_flag("--no-prompt-cache", a->no_prompt_cache, "run each turn's whole conversation again");
  cmd->add_flag("--json", a->json, "print one JSON object per answer instead of streaming");
  cmd->callback([a] { run_chat(*a); });
}

}  // namespace exq::cli
