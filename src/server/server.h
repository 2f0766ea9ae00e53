// `exq serve`: an HTTP server with OpenAI's API over one loaded model (cpp-httplib).
// Routes: GET /health, GET /v1/models, POST /v1/completions and /v1/chat/completions (both
// with "stream": true as server-sent events), and llama.cpp's POST /tokenize and /detokenize,
// GET /props (context, slots, default sampling, chat template) and GET /metrics (Prometheus
// text; with ServerModel::metrics, as llama.cpp's --metrics); with ServerModel::embed (exq serve
// --embeddings) POST /v1/embeddings instead of the completion routes.
// Requests are checked and tokenized on the server's worker threads; generations run one at a
// time on the model (later ones wait), or up to ServerModel::parallel at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace exq::server {

// Runs one generation from prompt ids on the model, text through on_text as runtime::generate
// does. With `reuse` (the request's cache_prompt) the model may keep the part of its context
// that the prompt begins with and run only the rest (runtime::PromptCache); the result's
// cached_tokens says how many it kept.
using GenerateFn = std::function<runtime::GenerateResult(
    std::span<const int32_t> prompt, const runtime::GenerateOptions& options, bool reuse,
    const runtime::TextCallback& on_text)>;

// The embedding of one token sequence (exq serve --embeddings): the model's pooled vector, cut to
// its first `dimensions` values (0: all) and normalized as the server was started. Called one
// at a time.
using EmbedFn = std::function<std::vector<float>(std::span<const int32_t> tokens, int64_t dimensions)>;

struct ServerModel {
  std::string id;  // the model name /v1/models lists and responses carry
  const tokenizer::Tokenizer* tokenizer = nullptr;
  std::string chat_template;  // empty: /v1/chat/completions answers 400
  std::string bos_token, eos_token;
  runtime::SamplerConfig sampler;  // defaults (generation_config.json), requests override
  std::vector<int32_t> eos_ids;
  int64_t max_context = 2048;        // prompt + generated tokens
  int64_t default_max_tokens = 512;  // when a request gives no max_tokens (capped by the context)
  std::string device;                // reported by /health
  int64_t vocab_size = 0;            // the model's logits per token; 0: the tokenizer's vocab_size()
  // Speculative drafts for every request (off by default); a request with a prediction gets
  // kDefaultDraftTokens when these are off.
  runtime::DraftOptions draft;
  // Generations at once: with more than 1, `generate` must be thread-safe (it may wait for a
  // free context itself); with 1 the server runs one at a time.
  int parallel = 1;
  bool metrics = false;  // serve GET /metrics (else it answers 501, as llama.cpp without --metrics)
  GenerateFn generate;   // the completion routes (without it they answer 501)
  // POST /v1/embeddings (without it, it answers 501); embedding_width: the vectors' full length.
  EmbedFn embed;
  int64_t embedding_width = 0;
};

class Server {
 public:
  // Throws exq::Error for a bad chat template (named), a missing tokenizer, or neither generate
  // nor embed.
  explicit Server(ServerModel model);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (port 0: any free port) and returns the port; throws exq::Error when the
  // address cannot be bound.
  int bind(const std::string& host, int port);
  // Serves until stop(), which another thread calls (also before run(): run() then returns at
  // once). Not for a signal handler: stop() may wait for run() to start listening.
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace exq::server
