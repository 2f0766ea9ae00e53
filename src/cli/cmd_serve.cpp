// `exq serve -m MODEL [--host H] [--port P] ...`: the model behind an OpenAI-compatible HTTP API
// (server/server.h) on the CPU or a CUDA GPU (--device). Runs until SIGINT / SIGTERM.
#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "cli/embedder.h"
#include "cli/run_util.h"
#include "cli/session.h"
#include "core/error.h"
#include "model/llama.h"
#include "runtime/generation_config.h"
#include "runtime/model_step.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"

namespace exq::cli {
namespace {

namespace fs = std::filesystem;

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string alias;
  int64_t ctx_size = 4096;
  int64_t max_tokens = 512;
  int threads = 0;
  std::string device = "auto";
  CacheTypeFlags cache_type;
  RopeFlags rope;
  CpuMoeFlags cpu_moe;
  LoraFlags lora;
  bool no_prompt_cache = false;
  int parallel = 1;
  bool metrics = false;
  DraftFlags draft;
  bool embeddings = false, no_normalize = false;
  std::string pooling;
};

int g_stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int) {
  const int saved = errno;
  const char c = 1;
  [[maybe_unused]] const ssize_t n = write(g_stop_pipe[1], &c, 1);
  errno = saved;
}

void run_serve(const ServeArgs& a) {
  if (a.model.empty()) throw Error("serve needs a model folder: -m MODEL");
  if (a.port < 0 || a.port > 65535) throw Error(fmt::format("--port must be 0..65535, got {}", a.port));
  if (a.ctx_size < 2) throw Error(fmt::format("--ctx-size must be >= 2, got {}", a.ctx_size));
  if (a.max_tokens < 0) throw Error(fmt::format("--max-tokens must be >= 0, got {}", a.max_tokens));
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);
  const fs::path dir = a.model;
  GenerationModel gm = load_generation_model(dir);
  apply_cache_type(gm.model, a.cache_type);
  apply_rope_flags(gm.model, a.rope);
  apply_cpu_moe_flags(gm.model, a.cpu_moe);
  apply_lora_flags(gm.model, a.lora);
  const tokenizer::Tokenizer& tok = gm.tok;
  const tokenizer::TokenizerConfig& tc = gm.tc;

  server::ServerModel sm;
  sm.id = a.alias.empty() ? fs::absolute(dir).lexically_normal().filename().string() : a.alias;
  if (sm.id.empty()) sm.id = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  sm.tokenizer = &tok;
  sm.chat_template = tc.chat_template;
  sm.bos_token = tc.bos_token;
  sm.eos_token = tc.eos_token;
  sm.sampler = runtime::sampler_defaults(gm.gen);
  sm.sampler.validate();
  sm.eos_ids = gm.eos_ids;
  sm.default_max_tokens = a.max_tokens;
  sm.draft = a.draft.settings();
  sm.vocab_size = gm.model.config().vocab_size;
  sm.metrics = a.metrics;
  std::unique_ptr<ModelSession> session;
  std::unique_ptr<Embedder> embedder;
  runtime::EmbeddingOptions embedding;
  if (a.embeddings) {  // llama.cpp's --embeddings: an embedding server, no generation
    if (a.parallel != 1) throw Error("--embeddings runs one request at a time: leave --parallel at 1");
    if (sm.draft.enabled() || !a.draft.model_dir().empty()) throw Error("--embeddings takes no draft flags");
    embedding = default_embedding_options(dir);
    if (!a.pooling.empty()) embedding.pooling = runtime::parse_pooling(a.pooling);
    if (a.no_normalize) embedding.normalize = false;
    embedder = std::make_unique<Embedder>(std::move(gm.model), device, a.ctx_size);
    sm.max_context = embedder->max_context();
    sm.device = embedder->device_name();
    sm.embedding_width = embedder->width();
    sm.embed = [&embedder, embedding](std::span<const int32_t> tokens, int64_t dimensions) {
      runtime::EmbeddingOptions o = embedding;
      o.dimensions = dimensions;
      return embedder->embed(tokens, o);
    };
  } else {
    if (!a.pooling.empty() || a.no_normalize) throw Error("--pooling and --no-normalize need --embeddings");
    session = std::make_unique<ModelSession>(std::move(gm.model), tok, device, a.ctx_size, &a.draft, &sm.draft,
                                             a.parallel);
    sm.max_context = session->max_context();
    sm.parallel = session->parallel();
    sm.device = session->device_name();
    const bool cache = !a.no_prompt_cache;
    sm.generate = [&session, cache](std::span<const int32_t> prompt, const runtime::GenerateOptions& o, bool reuse,
                                    const runtime::TextCallback& cb) {
      return session->generate(prompt, o, cache && reuse, cb);
    };
  }

  const std::string id = sm.id, dev = sm.device;
  const int64_t ctx = sm.max_context;
  server::Server srv(std::move(sm));
  const int port = srv.bind(a.host, a.port);
  // SIGINT / SIGTERM write a byte to a pipe (all a handler may safely do); a thread reading it
  // stops the server.
  if (pipe(g_stop_pipe) != 0) throw Error("serve: cannot create the signal pipe");
  std::thread waiter([&srv] {
    char c = 0;
    while (read(g_stop_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    srv.stop();
  });
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  fmt::print(stderr, "exq serve: {} on {}, context {} tokens{}; listening on http://{}:{} ({})\n", id, dev, ctx,
             a.parallel > 1 ? fmt::format(" x {} parallel sequences", a.parallel) : std::string(), a.host, port,
             a.embeddings ? fmt::format("/v1/embeddings: {} pooling{}", runtime::pooling_name(embedding.pooling),
                                        embedding.normalize ? ", normalized" : "")
                          : std::string("/v1/chat/completions, /v1/completions, /v1/models, /health"));
  std::fflush(stderr);
  srv.run();
  on_stop_signal(0);  // releases the waiter when run() ended without a signal
  waiter.join();
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  close(g_stop_pipe[0]);
  close(g_stop_pipe[1]);
  fmt::print(stderr, "exq serve: stopped\n");
}

}  // namespace

void add_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  cmd->add_option("--host", a->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "port to listen on (0: any free port)")->capture_default_str();
  cmd->add_option("--alias", a->alias, "model name in the API (default: the folder's name)");
  cmd->add_option("--ctx-size", a->ctx_size, "tokens of context per request (prompt + generated), "
                                             "capped at the model's context (max_position_embeddings; "
                                             "yarn: original x factor)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", a->max_tokens, "tokens to generate when a request gives no max_tokens")
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "worker threads for the CPU (default: all cores)");
  add_cache_type_flags(*cmd, a->cache_type);
  add_rope_flags(*cmd, a->rope);
  add_cpu_moe_flags(*cmd, a->cpu_moe);
  add_lora_flags(*cmd, a->lora);
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_option("--parallel", a->parallel,
                  "requests generated at once (also -np, as llama.cpp), each with its own KV cache of "
                  "--ctx-size positions; their tokens run through the model together (up to 8 a pass on a GPU)")
      ->capture_default_str();
  a->draft.add(*cmd);
  cmd->add_flag("--embeddings", a->embeddings,
                "serve POST /v1/embeddings (an embedding model: its final hidden states pooled) instead of "
                "the completion routes, as llama.cpp's --embeddings");
  cmd->add_option("--pooling", a->pooling,
                  "with --embeddings: last, mean or cls (default: the model's sentence-transformers config, else "
                  "last)");
  cmd->add_flag("--no-normalize", a->no_normalize, "with --embeddings: keep the pooled vectors' length");
  cmd->add_flag("--metrics", a->metrics, "serve GET /metrics (Prometheus text: token counts and rates, requests "
                                         "running and waiting; llama.cpp's names under exq:)");
  cmd->add_flag("--no-prompt-cache", a->no_prompt_cache,
                "run every prompt whole (by default a prompt that begins with the last request's "
                "prompt and answer, as a chat's next turn does, runs only its new tokens)");
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace exq::cli
