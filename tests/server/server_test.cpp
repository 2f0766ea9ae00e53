#include "server/server.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "chat/template.h"
#include "core/error.h"
#include "grammar/grammar.h"
#include "http_test_util.h"
#include "test_support.h"
#include "tokenizer/tokenizer_config.h"

namespace exq::server {
namespace {

using nlohmann::json;

std::filesystem::path tokenizer_dir() { return test::shared_dir() / "models" / "smollm2-135m-instruct"; }

// What the fake model saw and does: it "generates" `pieces` one token each.
struct Fake {
  std::mutex mu;
  std::vector<int32_t> prompt;
  runtime::GenerateOptions options;
  std::vector<uint64_t> seeds;  // of every generation, in order
  std::vector<std::string> pieces = {"Hello", " wor", "ld", "###", " tail"};
  bool fail = false;
  std::optional<runtime::StopReason> stop_as;  // the stop reported when all pieces went out
  runtime::StopReason last_stop = runtime::StopReason::MaxTokens;
  int64_t last_generated = 0;

  bool reuse = false;

  // With `reuse` it claims the prompt's first 3 tokens were cached.
  runtime::GenerateResult generate(std::span<const int32_t> p, const runtime::GenerateOptions& o, bool re,
                                   const runtime::TextCallback& cb) {
    {
      std::lock_guard<std::mutex> lock(mu);
      prompt.assign(p.begin(), p.end());
      options = o;
      seeds.push_back(o.sampler.seed.value_or(0));
      reuse = re;
    }
    if (fail) throw Error("logits hold NaN at step 3");
    runtime::GenerateResult r;
    r.prompt_tokens = static_cast<int64_t>(p.size());
    r.cached_tokens = re ? 3 : 0;
    if (o.draft.enabled()) {  // as if drafts ran: 5 guesses, 3 kept
      r.draft_tokens = 5;
      r.accepted_draft_tokens = 3;
    }
    r.stop = stop_as.value_or(runtime::StopReason::Eos);
    for (const std::string& s : pieces) {
      if (r.generated_tokens == o.max_new_tokens) {
        r.stop = runtime::StopReason::MaxTokens;
        break;
      }
      ++r.generated_tokens;
      r.text += s;
      if (cb && !cb(s)) {
        r.stop = runtime::StopReason::Callback;
        break;
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    last_stop = r.stop;
    last_generated = r.generated_tokens;
    return r;
  }
};

using http_test::events;
using http_test::post;
using http_test::Reply;
using http_test::Running;

class ServerFake : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(tokenizer_dir() / "tokenizer.json"));
    tc_ = tokenizer::load_tokenizer_config(tokenizer_dir());
  }
  ServerModel model(int64_t max_context = 256) {
    ServerModel m;
    m.id = "smol";
    m.tokenizer = tok_.get();
    m.chat_template = tc_.chat_template;
    m.bos_token = tc_.bos_token;
    m.eos_token = tc_.eos_token;
    m.sampler.temperature = 0.6f;
    m.eos_ids = {2};
    m.max_context = max_context;
    m.default_max_tokens = 100;
    m.device = "fake";
    m.generate = [this](std::span<const int32_t> p, const runtime::GenerateOptions& o, bool reuse,
                        const runtime::TextCallback& cb) { return fake_.generate(p, o, reuse, cb); };
    return m;
  }
  std::vector<int32_t> chat_ids(const json& messages) const {
    const chat::Template t(tc_.chat_template);
    return tok_->encode(chat::render_chat(t, messages, true, tc_.bos_token, tc_.eos_token), false);
  }

  std::unique_ptr<tokenizer::Tokenizer> tok_;
  tokenizer::TokenizerConfig tc_;
  Fake fake_;
};

TEST_F(ServerFake, ModelsAndHealth) {
  Running s(model());
  auto res = s.client().Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  const json m = json::parse(res->body);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "smol");
  EXPECT_EQ(m["data"][0]["max_context"], 256);
  res = s.client().Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["device"], "fake");
}

// llama.cpp's /props: the context, slots, default sampling and the chat template.
TEST_F(ServerFake, PropsAsLlamaCpp) {
  ServerModel m = model(300);
  m.parallel = 1;
  Running s(std::move(m));
  auto res = s.client().Get("/props");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  const json p = json::parse(res->body);
  EXPECT_EQ(p["default_generation_settings"]["n_ctx"], 300);
  EXPECT_EQ(p["default_generation_settings"]["params"]["n_predict"], 100);
  EXPECT_FLOAT_EQ(p["default_generation_settings"]["params"]["temperature"].get<float>(), 0.6f);
  EXPECT_EQ(p["total_slots"], 1);
  EXPECT_EQ(p["model_alias"], "smol");
  EXPECT_EQ(p["chat_template"], tc_.chat_template);
  EXPECT_EQ(p["eos_token"], tc_.eos_token);
}

// /metrics: 501 unless enabled; then Prometheus text whose counters follow the generations
// (the fake reports 5 tokens each, a prompt with 3 cached tokens when asked to reuse).
TEST_F(ServerFake, MetricsCountGenerations) {
  {
    Running off(model());
    auto res = off.client().Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 501);
    EXPECT_NE(json::parse(res->body)["error"]["message"].get<std::string>().find("--metrics"), std::string::npos);
  }
  ServerModel m = model();
  m.metrics = true;
  m.generate = [this](std::span<const int32_t> p, const runtime::GenerateOptions& o, bool reuse,
                      const runtime::TextCallback& cb) {
    runtime::GenerateResult r = fake_.generate(p, o, reuse, cb);
    r.prefill_seconds = 0.5;
    r.decode_seconds = 2.0;
    r.decode_steps = r.generated_tokens - 1;
    return r;
  };
  Running s(std::move(m));
  auto value = [&](const std::string& name) {
    auto res = s.client().Get("/metrics");
    EXPECT_TRUE(res && res->status == 200);
    EXPECT_NE(res->get_header_value("Content-Type").find("text/plain"), std::string::npos);
    const std::string key = "\nexq:" + name + " ";
    const size_t at = res->body.find(key);
    EXPECT_NE(at, std::string::npos) << name << "\n" << res->body;
    EXPECT_NE(res->body.find("# TYPE exq:" + name + " "), std::string::npos) << name;
    return at == std::string::npos ? -1.0 : std::stod(res->body.substr(at + key.size()));
  };
  EXPECT_EQ(value("tokens_predicted_total"), 0.0);
  const std::string prompt = "The quick brown fox";
  const auto n = static_cast<double>(tok_->encode(prompt, false).size());
  Reply r = post(s, "/v1/completions", json{{"prompt", prompt}, {"cache_prompt", false}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  r = post(s, "/v1/completions", json{{"prompt", prompt}, {"cache_prompt", true}, {"n", 2}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(value("generations_total"), 3.0);
  EXPECT_EQ(value("tokens_predicted_total"), 15.0);
  EXPECT_EQ(value("prompt_tokens_total"), n + 2 * (n - 3));  // the reused prompts ran 3 tokens fewer
  EXPECT_EQ(value("prompt_seconds_total"), 1.5);
  EXPECT_EQ(value("tokens_predicted_seconds_total"), 6.0);
  EXPECT_EQ(value("predicted_tokens_seconds"), 2.5);
  EXPECT_EQ(value("n_decode_total"), 12.0);
  EXPECT_EQ(value("requests_processing"), 0.0);
  EXPECT_EQ(value("requests_deferred"), 0.0);
}

// The gauges while one generation holds the model and a second request waits for it.
TEST_F(ServerFake, MetricsShowRunningAndWaitingRequests) {
  ServerModel m = model();
  m.metrics = true;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  m.generate = [&](std::span<const int32_t> p, const runtime::GenerateOptions& o, bool reuse,
                   const runtime::TextCallback& cb) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    return fake_.generate(p, o, reuse, cb);
  };
  Running s(std::move(m));
  auto gauges = [&] {
    auto res = s.client().Get("/metrics");
    const std::string b = res ? res->body : "";
    auto at = [&](const std::string& name) {
      const size_t i = b.find("\nexq:" + name + " ");
      return i == std::string::npos ? -1 : std::stoi(b.substr(i + name.size() + 6));
    };
    return std::pair{at("requests_processing"), at("requests_deferred")};
  };
  const std::string body = json{{"prompt", "Hi"}, {"max_tokens", 2}}.dump();
  std::thread a([&] { EXPECT_EQ(post(s, "/v1/completions", body).status, 200); });
  std::thread b([&] { EXPECT_EQ(post(s, "/v1/completions", body).status, 200); });
  std::pair<int, int> seen{-1, -1};
  for (int i = 0; i < 500 && seen != std::pair{1, 1}; ++i) {
    seen = gauges();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(seen, (std::pair{1, 1}));  // one generating, one waiting
  {
    const std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  a.join();
  b.join();
  EXPECT_EQ(gauges(), (std::pair{0, 0}));
}

TEST_F(ServerFake, ChatCompletionUsesTheTemplateAndStopsAtAStopString) {
  Running s(model());
  const json messages = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}};
  const Reply r = post(s, "/v1/chat/completions",
                       json{{"model", "smol"}, {"messages", messages}, {"stop", "###"}, {"top_k", 3}, {"seed", 11}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["model"], "smol");
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], "Hello world");
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 4);  // "###" was generated, not returned
  const std::vector<int32_t> ids = chat_ids(messages);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], static_cast<int64_t>(ids.size()));
  EXPECT_EQ(r.body["usage"]["prompt_tokens_details"]["cached_tokens"], 3);  // cache_prompt defaults to true
  EXPECT_TRUE(fake_.reuse);
  EXPECT_EQ(fake_.prompt, ids);
  EXPECT_EQ(fake_.options.max_new_tokens, 100);  // the server's default
  EXPECT_EQ(fake_.options.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_FLOAT_EQ(fake_.options.sampler.temperature, 0.6f);  // the model's default
  EXPECT_EQ(fake_.options.sampler.top_k, 3);
  EXPECT_EQ(fake_.options.sampler.seed, 11u);
}

TEST_F(ServerFake, CompletionLengthAndPrompt) {
  Running s(model());
  const Reply r = post(s, "/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", 2}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_EQ(r.body["choices"][0]["text"], "Hello wor");
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(fake_.prompt, tok_->encode("Once upon a time", true));
  EXPECT_EQ(fake_.options.max_new_tokens, 2);

  // llama.cpp's cache_prompt: false runs the whole prompt.
  const Reply r2 = post(s, "/v1/completions",
                        json{{"prompt", "Once upon a time"}, {"max_tokens", 2}, {"cache_prompt", false}}.dump());
  ASSERT_EQ(r2.status, 200) << r2.raw;
  EXPECT_FALSE(fake_.reuse);
  EXPECT_EQ(r2.body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(post(s, "/v1/completions", json{{"prompt", "x"}, {"cache_prompt", 1}}.dump()).status, 400);
}

// n choices run one after another, choice i with seed + i, streamed choice after choice.
TEST_F(ServerFake, SeveralChoices) {
  Running s(model());
  const Reply r = post(s, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 2}, {"n", 3}, {"seed", 40}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r.body["choices"][i]["index"], i);
    EXPECT_EQ(r.body["choices"][i]["text"], "Hello wor");
  }
  EXPECT_EQ(fake_.seeds, (std::vector<uint64_t>{40, 41, 42}));
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 6);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], 1);
  EXPECT_EQ(r.body["usage"]["prompt_tokens_details"]["cached_tokens"], 3);  // the first choice's

  const json req = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 3}, {"n", 2}, {"stream", true},
                    {"stream_options", {{"include_usage", true}}}};
  auto res = s.client().Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(res);
  std::vector<std::string> text(2);
  std::vector<int> finishes(2, 0), roles(2, 0);
  int64_t usage = -1;
  for (const json& e : events(res->body)) {
    if (!e.is_object()) continue;
    if (e["choices"].empty()) {
      usage = e["usage"]["completion_tokens"];
      continue;
    }
    const json& c = e["choices"][0];
    const int i = c["index"];
    text[static_cast<size_t>(i)] += c["delta"].value("content", "");
    roles[static_cast<size_t>(i)] += c["delta"].contains("role") ? 1 : 0;
    finishes[static_cast<size_t>(i)] += c["finish_reason"].is_null() ? 0 : 1;
  }
  EXPECT_EQ(text, (std::vector<std::string>{"Hello world", "Hello world"}));
  EXPECT_EQ(roles, (std::vector<int>{1, 1}));
  EXPECT_EQ(finishes, (std::vector<int>{1, 1}));
  EXPECT_EQ(usage, 6);
}

TEST_F(ServerFake, PredictionTurnsDraftsOnAndUsageCountsThem) {
  Running s(model());
  const Reply plain = post(s, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 3}}.dump());
  ASSERT_EQ(plain.status, 200) << plain.raw;
  EXPECT_FALSE(fake_.options.draft.enabled());
  EXPECT_TRUE(fake_.options.prediction.empty());
  EXPECT_EQ(plain.body["usage"]["completion_tokens_details"]["accepted_prediction_tokens"], 0);
  const std::string pred = "int main() { return 0; }";
  const Reply r = post(s, "/v1/completions",
                       json{{"prompt", "x"}, {"max_tokens", 3}, {"prediction", {{"type", "content"}, {"content", pred}}}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(fake_.options.draft.max_tokens, runtime::kDefaultDraftTokens);
  EXPECT_EQ(fake_.options.prediction, tok_->encode(pred, false));
  EXPECT_EQ(r.body["usage"]["completion_tokens_details"]["accepted_prediction_tokens"], 3);
  EXPECT_EQ(r.body["usage"]["completion_tokens_details"]["rejected_prediction_tokens"], 2);
  // The server's own draft settings hold for every request (exq serve --draft-max).
  ServerModel m = model();
  m.draft.max_tokens = 4;
  m.draft.ngram_min = 1;
  Running s2(std::move(m));
  ASSERT_EQ(post(s2, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 3}}.dump()).status, 200);
  EXPECT_EQ(fake_.options.draft.max_tokens, 4);
  EXPECT_EQ(fake_.options.draft.ngram_min, 1);
  EXPECT_EQ(post(s2, "/v1/completions", json{{"prompt", "x"}, {"prediction", {{"type", "content"}, {"content", pred}}}}.dump()).status,
            200);
  EXPECT_EQ(fake_.options.draft.max_tokens, 4);
}

TEST_F(ServerFake, TokenizeAndDetokenizeAsLlamaCpp) {
  Running s(model());
  const std::string text = "Hello world, caf\u00e9!";
  const Reply t = post(s, "/tokenize", json{{"content", text}}.dump());
  ASSERT_EQ(t.status, 200) << t.raw;
  const std::vector<int32_t> ids = tok_->encode(text, false);
  EXPECT_EQ(t.body["tokens"].get<std::vector<int32_t>>(), ids);
  const Reply p = post(s, "/tokenize", json{{"content", text}, {"with_pieces", true}}.dump());
  ASSERT_EQ(p.status, 200) << p.raw;
  ASSERT_EQ(p.body["tokens"].size(), ids.size());
  std::string joined;
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(p.body["tokens"][i]["id"], ids[i]);
    joined += p.body["tokens"][i]["piece"].get<std::string>();
  }
  EXPECT_EQ(joined, text);
  const Reply d = post(s, "/detokenize", json{{"tokens", ids}}.dump());
  ASSERT_EQ(d.status, 200) << d.raw;
  EXPECT_EQ(d.body["content"], text);
  const Reply bad = post(s, "/detokenize", json{{"tokens", {1, 1000000}}}.dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.body["error"]["param"], "tokens");
  EXPECT_EQ(post(s, "/tokenize", "{").status, 400);
}

TEST_F(ServerFake, DefaultMaxTokensFitTheContext) {
  Running s(model(24));
  const Reply r = post(s, "/v1/completions", json{{"prompt", "one two three four"}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  const auto n = static_cast<int64_t>(tok_->encode("one two three four", true).size());
  EXPECT_EQ(fake_.options.max_new_tokens, 24 - n);
}

TEST_F(ServerFake, StreamedChunksAddUpToTheText) {
  Running s(model());
  const json req = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"stream", true},
                    {"stop", {"###"}}, {"stream_options", {{"include_usage", true}}}};
  auto res = s.client().Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<json> ev = events(res->body);
  ASSERT_GE(ev.size(), 4u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 2 < ev.size(); ++i) {
    EXPECT_EQ(ev[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(ev[i]["id"], ev[0]["id"]);
    text += ev[i]["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(ev[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(text, "Hello world");
  EXPECT_EQ(ev[ev.size() - 3]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(ev[ev.size() - 2]["choices"].empty());
  EXPECT_EQ(ev[ev.size() - 2]["usage"]["completion_tokens"], 4);
  EXPECT_EQ(ev[ev.size() - 2]["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

  // The completions stream: text chunks, then the finish.
  res = s.client().Post("/v1/completions", json{{"prompt", "x"}, {"stream", true}, {"max_tokens", 3}}.dump(),
                        "application/json");
  ASSERT_TRUE(res);
  const std::vector<json> ev2 = events(res->body);
  std::string t2;
  for (size_t i = 0; i + 1 < ev2.size(); ++i) t2 += ev2[i]["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(t2, "Hello world");
  EXPECT_EQ(ev2[ev2.size() - 2]["choices"][0]["finish_reason"], "length");
}

TEST_F(ServerFake, ADroppedStreamStopsItsGeneration) {
  fake_.pieces.assign(2000000, "x");
  Running s(model(1 << 22));
  httplib::Client c = s.client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = json{{"prompt", "x"}, {"stream", true}, {"max_tokens", 2000000}}.dump();
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  c.send(req, res, err);  // the receiver's false closes the connection
  EXPECT_EQ(chunks, 3);
  // The server notices the closed connection at a later write and stops the generation.
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(fake_.mu);
      if (fake_.last_stop == runtime::StopReason::Callback) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::lock_guard<std::mutex> lock(fake_.mu);
  EXPECT_EQ(fake_.last_stop, runtime::StopReason::Callback);
  EXPECT_LT(fake_.last_generated, 2000000);
}

TEST_F(ServerFake, BadRequestsGetJsonErrors) {
  Running s(model(32));
  Reply r = post(s, "/v1/chat/completions", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("not valid JSON"), std::string::npos);
  r = post(s, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 100}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "max_tokens");
  r = post(s, "/v1/completions", json{{"prompt", std::string(400, 'a') + " b c d e f g h i j k l m n o p"}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("context holds 32"), std::string::npos) << r.raw;
  r = post(s, "/v1/completions", json{{"prompt", "x"}, {"temperature", -1}}.dump());
  EXPECT_EQ(r.status, 400);
  r = post(s, "/v1/nothing", "{}");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("no route POST /v1/nothing"), std::string::npos);
  // curl -d sends JSON as a form, which cpp-httplib limits to 8 KB: the error says what to do.
  const std::string long_body = json{{"prompt", std::string(9000, 'a')}}.dump();
  auto form = s.client().Post("/v1/completions", long_body, "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 413);
  EXPECT_NE(json::parse(form->body)["error"]["message"].get<std::string>().find("Content-Type: application/json"),
            std::string::npos) << form->body;
  fake_.fail = true;
  r = post(s, "/v1/completions", json{{"prompt", "x"}}.dump());
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body["error"]["type"], "server_error");
  EXPECT_EQ(r.body["error"]["message"], "logits hold NaN at step 3");
}

// A grammar (any of its forms), penalties and logit_bias reach the generation's options; the
// token vocabulary is built once; a grammar's end finishes as "stop".
TEST_F(ServerFake, GrammarsPenaltiesAndLogitBiasReachTheGeneration) {
  Running s(model());
  Reply r = post(s, "/v1/completions",
                 json{{"prompt", "x"},
                      {"response_format", {{"type", "json_object"}}},
                      {"logit_bias", {{"5", -100}}},
                      {"presence_penalty", 0.5},
                      {"frequency_penalty", 0.25}}
                     .dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  const runtime::TokenVocab* vocab = nullptr;
  {
    std::lock_guard<std::mutex> lock(fake_.mu);
    ASSERT_TRUE(fake_.options.grammar);
    ASSERT_TRUE(fake_.options.grammar_vocab);
    EXPECT_EQ(fake_.options.grammar_vocab->size(), tok_->vocab_size());
    vocab = fake_.options.grammar_vocab.get();
    ASSERT_EQ(fake_.options.sampler.logit_bias.size(), 1u);
    EXPECT_EQ(fake_.options.sampler.logit_bias[0].id, 5);
    EXPECT_FLOAT_EQ(fake_.options.sampler.presence_penalty, 0.5f);
    EXPECT_FLOAT_EQ(fake_.options.sampler.frequency_penalty, 0.25f);
    grammar::GrammarMatcher m(fake_.options.grammar);
    EXPECT_TRUE(m.accept(R"({"a": [1, 2.5, "x"]})"));
    EXPECT_TRUE(m.complete());
  }
  fake_.stop_as = runtime::StopReason::Grammar;
  r = post(s, "/v1/chat/completions",
           json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"grammar", "root ::= [a-z]+"}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "stop");
  {
    std::lock_guard<std::mutex> lock(fake_.mu);
    EXPECT_EQ(fake_.options.grammar_vocab.get(), vocab);
    EXPECT_TRUE(fake_.options.sampler.logit_bias.empty());
  }
  r = post(s, "/v1/completions", json{{"prompt", "x"}, {"grammar", "root ::= missing"}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "grammar");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("missing"), std::string::npos) << r.raw;
  r = post(s, "/v1/completions", json{{"prompt", "x"}, {"logit_bias", {{"49152", 1}}}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "logit_bias");
}

TEST_F(ServerFake, NoChatTemplateIsAClearError) {
  ServerModel m = model();
  m.chat_template.clear();
  Running s(std::move(m));
  const Reply r = post(s, "/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["message"], "model 'smol' has no chat template: use /v1/completions");
}

TEST_F(ServerFake, PortInUseIsAClearError) {
  Running s(model());
  Server other(model());
  const int port = other.bind("127.0.0.1", 0);
  Server third(model());
  EXPECT_THROW(third.bind("127.0.0.1", port), Error);
}

}  // namespace
}  // namespace exq::server
