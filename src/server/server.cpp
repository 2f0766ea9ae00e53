#include "server/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>

#include "chat/template.h"
#include "core/error.h"
#include "grammar/grammar.h"
#include "runtime/model_step.h"
#include "server/openai.h"

namespace exq::server {
namespace {

using nlohmann::json;

constexpr const char* kJson = "application/json";

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status(), error_body(e.what(), e.type(), e.param()));
}

const char* finish_reason(const runtime::GenerateResult& r, bool stopped) {
  if (stopped || r.stop == runtime::StopReason::Eos || r.stop == runtime::StopReason::Grammar) return "stop";
  return "length";
}

bool is_eos(const ServerModel& m, int32_t id) {
  return std::find(m.eos_ids.begin(), m.eos_ids.end(), id) != m.eos_ids.end();
}

// Adds choice i's counts (the prompt counts once: its cached tokens are the first choice's).
void add_usage(Usage& u, const runtime::GenerateResult& r, int i) {
  if (i == 0) u.cached_tokens = r.cached_tokens;
  u.completion_tokens += r.generated_tokens;
  u.accepted_draft_tokens += r.accepted_draft_tokens;
  u.rejected_draft_tokens += r.draft_tokens - r.accepted_draft_tokens;
}

}  // namespace

struct Server::Impl {
  ServerModel model;
  std::optional<chat::Template> chat_template;
  ToolFormat tool_format = ToolFormat::Generic;  // how the template shows tools and calls
  httplib::Server http;
  std::mutex generate_mutex;  // one generation at a time on the model, unless model.parallel > 1
  // Holds generate_mutex when the model runs one generation at a time.
  std::unique_lock<std::mutex> model_lock() {
    if (model.parallel > 1) return {};
    ++deferred;  // waiting for the model (/metrics' requests_deferred)
    std::unique_lock<std::mutex> lock(generate_mutex);
    --deferred;
    return lock;
  }

  // /metrics: totals over finished generations, and requests now running or waiting.
  struct Counters {
    int64_t prompt_tokens = 0, predicted_tokens = 0, decode_steps = 0, generations = 0;
    double prompt_seconds = 0.0, predicted_seconds = 0.0;
  };
  std::mutex counters_mu;
  Counters counters;
  std::atomic<int> processing{0}, deferred{0};
  void count(const runtime::GenerateResult& r) {
    const std::lock_guard<std::mutex> lock(counters_mu);
    counters.prompt_tokens += r.prompt_tokens - r.cached_tokens;
    counters.prompt_seconds += r.prefill_seconds;
    counters.predicted_tokens += r.generated_tokens;
    counters.predicted_seconds += r.decode_seconds;
    counters.decode_steps += r.decode_steps;
    ++counters.generations;
  }
  // Counts a request as processing while it lives.
  struct Processing {
    std::atomic<int>& n;
    explicit Processing(std::atomic<int>& c) : n(c) { ++n; }
    ~Processing() { --n; }
    Processing(const Processing&) = delete;
    Processing& operator=(const Processing&) = delete;
  };
  std::string metrics_text();
  std::atomic<uint64_t> next_id{1};
  std::once_flag vocab_once;  // the grammar vocabulary is built by the first request with a grammar
  std::shared_ptr<const runtime::TokenVocab> vocab;
  // stop() may come before run() has started listening (httplib's stop() is then a no-op):
  // run() checks for it, and stop() waits for a run() it sees entered to be listening.
  std::atomic<bool> stop_requested{false}, run_entered{false}, run_returned{false};

  // A request ready to run: its prompt ids and generation options.
  struct Job {
    CompletionRequest request;
    std::vector<int32_t> prompt;
    runtime::GenerateOptions options;
    ResponseMeta meta;
  };

  static json parse_body(const httplib::Request& req) {
    try {
      return json::parse(req.body);
    } catch (const json::exception& e) {
      throw ApiError(400, fmt::format("the request body is not valid JSON: {}", e.what()));
    }
  }

  // llama.cpp's /tokenize and /detokenize: the model's tokenizer, no generation.
  void tokenize(const httplib::Request& req, httplib::Response& res) const {
    try {
      const TokenizeRequest r = parse_tokenize(parse_body(req));
      const tokenizer::Tokenizer& tok = *model.tokenizer;
      const std::vector<int32_t> ids = tok.encode(r.content, r.add_special);
      json tokens = json::array();
      for (int32_t id : ids) {
        if (r.with_pieces)
          tokens.push_back({{"id", id}, {"piece", tok.decode(std::span<const int32_t>(&id, 1))}});
        else
          tokens.push_back(id);
      }
      send_json(res, 200, {{"tokens", tokens}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  }
  void detokenize(const httplib::Request& req, httplib::Response& res) const {
    try {
      const std::vector<int32_t> ids = parse_detokenize(parse_body(req), model.tokenizer->vocab_size());
      send_json(res, 200, {{"content", model.tokenizer->decode(ids)}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  }

  // OpenAI's /v1/embeddings (openai.h's parse_embeddings), one request at a time on the model.
  void embeddings(const httplib::Request& req, httplib::Response& res) {
    try {
      if (!model.embed)
        throw ApiError(501, "embeddings are off: start exq serve with --embeddings (with an embedding model)",
                       "", "not_supported_error");
      EmbeddingRequest r = parse_embeddings(parse_body(req), model.tokenizer->vocab_size(), model.embedding_width);
      int64_t tokens = 0;
      for (size_t i = 0; i < r.inputs.size(); ++i) {
        EmbeddingRequest::Input& in = r.inputs[i];
        if (in.text) in.ids = model.tokenizer->encode(*in.text, /*add_special_tokens=*/true);
        const auto n = static_cast<int64_t>(in.ids.size());
        if (n == 0) throw ApiError(400, fmt::format("input {} is empty", i), "input");
        if (n > model.max_context)
          throw ApiError(400, fmt::format("input {} has {} tokens; this server's context holds {}", i, n,
                                          model.max_context),
                         "input");
        tokens += n;
      }
      std::vector<std::vector<float>> vectors;
      {
        const std::unique_lock<std::mutex> lock = model_lock();
        for (const EmbeddingRequest::Input& in : r.inputs) vectors.push_back(model.embed(in.ids, r.dimensions));
      }
      send_json(res, 200, embeddings_body(vectors, r.base64, model.id, tokens));
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const Error& e) {  // the tokenizer or the model
      send_error(res, ApiError(400, e.message(), "input"));
    }
  }

  Job prepare(const httplib::Request& req, Endpoint endpoint) {
    const json body = parse_body(req);
    Job job;
    job.request = parse_request(body, endpoint, req.body);
    const CompletionRequest& r = job.request;
    if (endpoint == Endpoint::ChatCompletions) {
      if (!chat_template)
        throw ApiError(400, fmt::format("model '{}' has no chat template: use /v1/completions", model.id),
                       "messages");
      std::string text;
      try {
        const json messages = tool_messages(r.messages, r.tools, tool_format);
        if (r.tools.active() && tool_format != ToolFormat::Generic) {
          // The tools as sent, key order kept, for the template's |tojson.
          const nlohmann::ordered_json extra = {{"tools", r.tools.tools_json}};
          text = chat::render_chat(*chat_template, nlohmann::ordered_json::parse(messages.dump()),
                                   /*add_generation_prompt=*/true, model.bos_token, model.eos_token, extra);
        } else {
          text = chat::render_chat(*chat_template, messages, /*add_generation_prompt=*/true, model.bos_token,
                                   model.eos_token);
        }
      } catch (const Error& e) {
        throw ApiError(400, fmt::format("the chat template refused the messages: {}", e.message()),
                       "messages");
      }
      job.prompt = model.tokenizer->encode(text, /*add_special_tokens=*/false);
    } else if (!r.prompt_ids.empty()) {
      for (const int32_t id : r.prompt_ids) check_token_id(id, model.tokenizer->vocab_size(), "prompt");
      job.prompt = r.prompt_ids;
    } else {
      job.prompt = model.tokenizer->encode(r.prompt, /*add_special_tokens=*/true);
    }
    const auto prompt_tokens = static_cast<int64_t>(job.prompt.size());
    if (prompt_tokens == 0) throw ApiError(400, "the prompt is empty", "prompt");
    if (prompt_tokens >= model.max_context)
      throw ApiError(400,
                     fmt::format("the prompt has {} tokens; this server's context holds {} (prompt + "
                                 "generated tokens)",
                                 prompt_tokens, model.max_context));
    const int64_t room = model.max_context - prompt_tokens;
    if (r.max_tokens && *r.max_tokens > room)
      throw ApiError(400,
                     fmt::format("max_tokens {} + the prompt's {} tokens exceed this server's context "
                                 "of {} tokens",
                                 *r.max_tokens, prompt_tokens, model.max_context),
                     "max_tokens");
    job.options.max_new_tokens = r.max_tokens ? *r.max_tokens : std::min(model.default_max_tokens, room);
    job.options.eos_token_ids = model.eos_ids;
    job.options.sampler = request_sampler(model.sampler, r);
    runtime::set_dry_breakers(job.options.sampler, *model.tokenizer,
                              r.dry_sequence_breakers ? &*r.dry_sequence_breakers : nullptr);
    const int64_t vocab_size = model.vocab_size > 0 ? model.vocab_size : model.tokenizer->vocab_size();
    for (const runtime::LogitBias& b : job.options.sampler.logit_bias)
      check_token_id(b.id, vocab_size, "logit_bias");
    std::string gbnf = r.grammar, gbnf_root = "root", gbnf_param = r.grammar_param;
    if (r.tools.active() && r.tools.choice != ToolRequest::Choice::Auto) {
      if (!gbnf.empty())
        throw ApiError(400,
                       fmt::format("'{}' and a required tool call both constrain the answer: send one",
                                   r.grammar_param),
                       "tool_choice");
      gbnf = tool_call_grammar(r.tools, tool_format);
      if (tool_format == ToolFormat::Hermes) gbnf_root = "exq-tools";
      gbnf_param = "tools";
    }
    if (!gbnf.empty()) {
      try {
        job.options.grammar = grammar::Grammar::parse(gbnf, gbnf_root);
      } catch (const Error& e) {
        throw ApiError(400, e.message(), gbnf_param);
      }
      std::call_once(vocab_once, [&] { vocab = runtime::TokenVocab::from_tokenizer(*model.tokenizer, vocab_size); });
      job.options.grammar_vocab = vocab;
    }
    job.options.draft = model.draft;
    job.options.logprobs = r.logprobs;
    job.options.prompt_logprobs = r.echo && r.logprobs >= 0;
    if (r.prediction) {
      job.options.prediction = model.tokenizer->encode(*r.prediction, /*add_special_tokens=*/false);
      if (!job.options.draft.enabled()) job.options.draft.max_tokens = runtime::kDefaultDraftTokens;
    }
    const bool chat = endpoint == Endpoint::ChatCompletions;
    const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
    job.meta.id = fmt::format("{}-{:x}{:06x}", chat ? "chatcmpl" : "cmpl",
                              static_cast<uint64_t>(since_epoch / std::chrono::milliseconds(1)),
                              next_id.fetch_add(1) & 0xffffff);
    job.meta.created = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
    job.meta.model = model.id;
    return job;
  }

  // One token's text through the model's tokenizer.
  TokenText token_text() const {
    return [this](int32_t id, bool skip_special) {
      return model.tokenizer->decode(std::span<const int32_t>(&id, 1), skip_special);
    };
  }
  json logprobs_of(const Job& j, std::span<const LogprobEntry> entries) const {
    if (j.request.logprobs < 0) return nullptr;
    return logprobs_json(j.request.endpoint, entries, token_text());
  }

  void complete(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
    Job job;
    try {
      if (!model.generate)
        throw ApiError(501, "this server computes embeddings (exq serve --embeddings): use /v1/embeddings", "",
                       "not_supported_error");
      job = prepare(req, endpoint);
    } catch (const ApiError& e) {
      send_error(res, e);
      return;
    }
    if (job.request.stream) {
      stream(std::move(job), res);
      return;
    }
    std::vector<Choice> choices;
    Usage usage{static_cast<int64_t>(job.prompt.size())};
    try {
      const std::unique_lock<std::mutex> lock = model_lock();
      const Processing busy(processing);
      for (int i = 0; i < job.request.n; ++i) choices.push_back(run_choice(job, i, usage));
    } catch (const Error& e) {
      send_json(res, 500, error_body(e.message(), "server_error"));
      return;
    }
    send_json(res, 200, completion_body(endpoint, job.meta, choices, usage));
  }

  // Choice i's options: the request's, with seed + i when it gave a seed (so choices differ).
  static runtime::GenerateOptions choice_options(const Job& j, int i) {
    runtime::GenerateOptions o = j.options;
    if (i > 0 && o.sampler.seed) o.sampler.seed = *o.sampler.seed + static_cast<uint64_t>(i);
    return o;
  }

  // One whole choice (the caller holds model_lock()).
  Choice run_choice(const Job& job, int i, Usage& usage) {
    StopMatcher stops(job.request.stop);
    std::string text;
    const runtime::GenerateResult result =
        model.generate(job.prompt, choice_options(job, i), job.request.cache_prompt, [&](std::string_view piece) {
          text += stops.push(piece);
          return !stops.stopped();
        });
    text += stops.finish();
    add_usage(usage, result, i);
    count(result);
    Choice c;
    c.finish_reason = finish_reason(result, stops.stopped());
    if (job.request.logprobs >= 0) {
      LogprobTrack track(token_text());
      if (job.request.echo) track.add_prompt(job.prompt, result.prompt_logprobs);
      for (const runtime::TokenLogprob& lp : result.logprobs)
        if (!is_eos(model, lp.id)) track.add(lp);
      c.logprobs = logprobs_of(job, track.take(stops.stopped() ? text.size() : SIZE_MAX));
    }
    if (job.request.echo)
      text = (job.request.prompt_ids.empty() ? job.request.prompt : model.tokenizer->decode(job.prompt, true)) + text;
    if (job.request.tools.active()) {
      ParsedAnswer parsed = parse_tool_calls(text, tool_format, job.request.tools);
      if (!parsed.calls.empty()) {
        c.tool_calls = tool_calls_json(parsed.calls, call_id(job, i), false);
        c.finish_reason = "tool_calls";
        text = std::move(parsed.content);
      }
    }
    c.text = std::move(text);
    return c;
  }

  // The base of choice i's tool call ids: "call_" and the response id's unique part.
  static std::string call_id(const Job& j, int i) {
    const size_t dash = j.meta.id.find('-');
    return fmt::format("call_{}{}", dash == std::string::npos ? j.meta.id : j.meta.id.substr(dash + 1),
                       i > 0 ? fmt::format("_{}", i) : "");
  }

  void stream(Job job, httplib::Response& res) {
    auto shared = std::make_shared<Job>(std::move(job));
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [this, shared](size_t, httplib::DataSink& sink) {
      const Job& j = *shared;
      const Endpoint e = j.request.endpoint;
      bool open = true;
      auto send = [&](const json& body) {
        const std::string ev = sse_event(body);
        open = open && sink.write(ev.data(), ev.size());
        return open;
      };
      Usage usage{static_cast<int64_t>(j.prompt.size())};
      try {
        const std::unique_lock<std::mutex> lock = model_lock();
        const Processing busy(processing);
        for (int i = 0; i < j.request.n && open; ++i) {  // choice after choice
          StopMatcher stops(j.request.stop);
          // With tools, text that may be a call is held back until the answer ends.
          std::optional<ToolTextGate> gate;
          if (j.request.tools.active()) gate.emplace(tool_format);
          bool first = true;
          size_t sent = 0;  // bytes of answer text sent
          LogprobTrack track(token_text());
          // Each chunk carries the logprobs of the tokens its text completes.
          auto send_text = [&](const std::string& text) {
            if (text.empty() && !first) return open;
            sent += text.size();
            const bool ok = send(chunk_body(e, j.meta, text, nullptr, first, logprobs_of(j, track.take(sent)), i));
            first = false;
            return ok;
          };
          runtime::GenerateOptions options = choice_options(j, i);
          if (options.logprobs >= 0)
            options.on_logprob = [&](const runtime::TokenLogprob& lp) {
              if (!is_eos(model, lp.id)) track.add(lp);
            };
          auto pass = [&](std::string text) { return gate ? gate->push(text) : text; };
          const auto on_piece = [&](std::string_view piece) {
            return send_text(pass(stops.push(piece))) && !stops.stopped();
          };
          const runtime::GenerateResult r = model.generate(j.prompt, options, j.request.cache_prompt, on_piece);
          add_usage(usage, r, i);
          count(r);
          if (open) send_text(pass(stops.finish()));
          const char* reason = finish_reason(r, stops.stopped());
          if (open && gate && gate->holding()) {
            // The held text: calls, or content after all.
            const ParsedAnswer parsed = parse_tool_calls(gate->answer(), tool_format, j.request.tools);
            send_text(gate->unsent_content(parsed));
            if (!parsed.calls.empty()) {
              send(tool_calls_chunk(j.meta, tool_calls_json(parsed.calls, call_id(j, i), true), first, i));
              first = false;
              reason = "tool_calls";
            }
          }
          if (open)
            send(chunk_body(e, j.meta, "", reason, false,
                            logprobs_of(j, track.take(stops.stopped() ? sent : SIZE_MAX)), i));
        }
        if (open && j.request.include_usage) send(usage_chunk(e, j.meta, usage));
      } catch (const Error& err) {
        send(error_body(err.message(), "server_error"));
      }
      if (open) {
        static constexpr std::string_view kDone = "data: [DONE]\n\n";
        sink.write(kDone.data(), kDone.size());
      }
      sink.done();
      return true;
    });
  }
};

// Prometheus' text format with llama.cpp's metric names under exq's prefix (llamacpp:x is exq:x).
std::string Server::Impl::metrics_text() {
  Counters c;
  {
    const std::lock_guard<std::mutex> lock(counters_mu);
    c = counters;
  }
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, double value) {
    out += fmt::format("# HELP exq:{} {}\n# TYPE exq:{} {}\nexq:{} {}\n", name, help, name, type, name, value);
  };
  const auto per_s = [](double n, double s) { return s > 0.0 ? n / s : 0.0; };
  metric("prompt_tokens_total", "counter", "Prompt tokens run (those reused from the prompt cache excluded).",
         static_cast<double>(c.prompt_tokens));
  metric("prompt_seconds_total", "counter", "Prompt processing time.", c.prompt_seconds);
  metric("tokens_predicted_total", "counter", "Generated tokens.", static_cast<double>(c.predicted_tokens));
  metric("tokens_predicted_seconds_total", "counter", "Generation time after the prompt.", c.predicted_seconds);
  metric("n_decode_total", "counter", "Model passes after the prompts (single tokens or draft checks).",
         static_cast<double>(c.decode_steps));
  metric("generations_total", "counter", "Finished generations (a request's choices count apart).",
         static_cast<double>(c.generations));
  metric("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
         per_s(static_cast<double>(c.prompt_tokens), c.prompt_seconds));
  metric("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
         per_s(static_cast<double>(c.predicted_tokens), c.predicted_seconds));
  metric("requests_processing", "gauge", "Completion requests being served.", processing.load());
  metric("requests_deferred", "gauge", "Completion requests waiting for the model.", deferred.load());
  return out;
}

Server::Server(ServerModel model) : impl_(std::make_unique<Impl>()) {
  EXQ_CHECK(model.tokenizer != nullptr && (model.generate || model.embed), "serve: a tokenizer and a model are required");
  EXQ_CHECK(!model.embed || model.embedding_width > 0, "serve: embeddings need their width");
  EXQ_CHECK(model.max_context >= 2, "serve: the context must hold at least 2 tokens, got {}", model.max_context);
  EXQ_CHECK(model.default_max_tokens >= 0, "serve: the default max tokens must be >= 0, got {}",
            model.default_max_tokens);
  EXQ_CHECK(model.parallel >= 1, "serve: parallel must be >= 1, got {}", model.parallel);
  Impl& m = *impl_;
  m.model = std::move(model);
  if (!m.model.chat_template.empty()) {
    m.chat_template.emplace(m.model.chat_template);
    m.tool_format = tool_format(m.model.chat_template);
  }

  // Enough workers for every parallel generation plus the quick routes (httplib's default is 8).
  const auto workers = static_cast<size_t>(std::max(8, m.model.parallel + 4));
  m.http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };

  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets a second server
  // bind a port already in use and split its connections instead of failing.
  m.http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const char*>(&yes), sizeof(yes));
  });
  m.http.Get("/health", [&m](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"status", "ok"}, {"model", m.model.id}, {"device", m.model.device}, {"parallel", m.model.parallel}});
  });
  m.http.Get("/v1/models", [&m](const httplib::Request&, httplib::Response& res) {
    const json entry = {{"id", m.model.id},
                        {"object", "model"},
                        {"created", 0},
                        {"owned_by", "exq"},
                        {"max_context", m.model.max_context}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({entry})}});
  });
  m.http.Post("/v1/completions", [&m](const httplib::Request& req, httplib::Response& res) {
    m.complete(req, res, Endpoint::Completions);
  });
  m.http.Post("/v1/chat/completions", [&m](const httplib::Request& req, httplib::Response& res) {
    m.complete(req, res, Endpoint::ChatCompletions);
  });
  // llama.cpp's /props: what its web UI and clients read for the context and the template.
  m.http.Get("/props", [&m](const httplib::Request&, httplib::Response& res) {
    const runtime::SamplerConfig& sc = m.model.sampler;
    const json params = {{"n_predict", m.model.default_max_tokens}, {"temperature", sc.temperature},
                         {"top_k", sc.top_k}, {"top_p", sc.top_p}, {"min_p", sc.min_p},
                         {"repeat_penalty", sc.repetition_penalty}};
    send_json(res, 200,
              {{"default_generation_settings", {{"n_ctx", m.model.max_context}, {"params", params}}},
               {"total_slots", m.model.parallel},
               {"model_alias", m.model.id},
               {"chat_template", m.model.chat_template},
               {"bos_token", m.model.bos_token},
               {"eos_token", m.model.eos_token},
               {"build_info", "exq"}});
  });
  m.http.Get("/metrics", [&m](const httplib::Request&, httplib::Response& res) {
    if (!m.model.metrics) {
      send_json(res, 501, error_body("metrics are off: start exq serve with --metrics", "not_supported_error"));
      return;
    }
    res.set_content(m.metrics_text(), "text/plain; version=0.0.4");
  });
  m.http.Post("/v1/embeddings", [&m](const httplib::Request& req, httplib::Response& res) { m.embeddings(req, res); });
  m.http.Post("/tokenize", [&m](const httplib::Request& req, httplib::Response& res) { m.tokenize(req, res); });
  m.http.Post("/detokenize", [&m](const httplib::Request& req, httplib::Response& res) { m.detokenize(req, res); });
  // Unknown routes and methods: an OpenAI-style JSON error instead of an empty page.
  m.http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 404
                          ? fmt::format("no route {} {} (see /v1/models, /v1/completions, "
                                        "/v1/chat/completions, /v1/embeddings, /tokenize, /detokenize, /props, /metrics)",
                                        req.method, req.path)
                          : fmt::format("HTTP {}", res.status);
    // cpp-httplib refuses form-encoded bodies over 8 KB before routing; curl -d sends JSON so.
    if (res.status == 413 && req.get_header_value("Content-Type").starts_with("application/x-www-form-urlencoded"))
      msg = "the request body was sent as application/x-www-form-urlencoded, which is limited to 8 KB: send "
            "JSON as Content-Type: application/json (curl: -H 'Content-Type: application/json')";
    res.set_content(error_body(msg, "invalid_request_error").dump(), kJson);
  });
  m.http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body(msg, "server_error"));
  });
}

Server::~Server() { stop(); }

int Server::bind(const std::string& host, int port) {
  const int bound = port == 0 ? impl_->http.bind_to_any_port(host) : impl_->http.bind_to_port(host, port) ? port : -1;
  if (bound <= 0) throw Error(fmt::format("serve: cannot listen on {}:{} (in use, or not an address of this machine)", host, port));
  return bound;
}

void Server::run() {
  Impl& m = *impl_;
  m.run_entered = true;
  if (!m.stop_requested) m.http.listen_after_bind();
  m.run_returned = true;
}

void Server::stop() {
  Impl& m = *impl_;
  m.stop_requested = true;
  if (m.run_entered)
    while (!m.http.is_running() && !m.run_returned) std::this_thread::yield();
  m.http.stop();
}

}  // namespace exq::server
