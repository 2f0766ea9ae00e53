// `exq serve` over the real SmolLM2 model: answers over HTTP against runtime::generate_text,
// the prompt cache, predicted outputs, logprobs against the perplexity, and n choices.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <thread>
#include <vector>

#include "chat/template.h"
#include "http_test_util.h"
#include "model/llama.h"
#include "runtime/batch.h"
#include "runtime/generation_config.h"
#include "runtime/model_step.h"
#include "runtime/perplexity.h"
#include "server/server.h"
#include "test_support.h"
#include "tokenizer/tokenizer_config.h"

namespace exq::server {
namespace {

using http_test::events;
using http_test::post;
using http_test::Reply;
using http_test::Running;
using nlohmann::json;

// SmolLM2 served as exq serve runs it: a session over one KV cache of 512 positions.
struct SmolLM2Server {
  std::filesystem::path dir = test::test_model();
  model::LlamaModel llama = model::LlamaModel::load(dir);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
  tokenizer::TokenizerConfig tc = tokenizer::load_tokenizer_config(dir);
  runtime::GenerationConfig gen = runtime::load_generation_config(dir);
  runtime::LlamaSession session{llama, tok, 512};

  ServerModel model() {
    ServerModel m;
    m.id = "smollm2";
    m.tokenizer = &tok;
    m.chat_template = tc.chat_template;
    m.bos_token = tc.bos_token;
    m.eos_token = tc.eos_token;
    m.sampler = runtime::sampler_defaults(gen);
    m.eos_ids = runtime::stop_token_ids(gen, llama.config(), tok, tc.eos_token);
    m.max_context = 512;
    m.generate = [this](std::span<const int32_t> p, const runtime::GenerateOptions& o, bool reuse,
                        const runtime::TextCallback& cb) { return session.generate(p, o, reuse, cb); };
    return m;
  }
};

// The real model: greedy answers over HTTP equal runtime::generate_text's, streamed or not.
TEST(ServerSmolLM2, GreedyChatMatchesGenerateText) {
  EXQ_REQUIRE_MODEL();
  SmolLM2Server real;
  model::LlamaModel& llama = real.llama;
  const tokenizer::Tokenizer& tok = real.tok;
  const tokenizer::TokenizerConfig& tc = real.tc;
  runtime::LlamaSession& session = real.session;
  const std::vector<int32_t> eos = real.model().eos_ids;
  Running s(real.model());

  const json messages = {{{"role", "user"}, {"content", "What is the capital of France?"}}};
  const chat::Template t(tc.chat_template);
  const std::vector<int32_t> prompt =
      tok.encode(chat::render_chat(t, messages, true, tc.bos_token, tc.eos_token), false);
  runtime::GenerateOptions o;
  o.max_new_tokens = 24;
  o.eos_token_ids = eos;
  o.sampler.temperature = 0.0f;
  const runtime::GenerateResult want = runtime::generate_text(llama, tok, prompt, o);
  ASSERT_FALSE(want.text.empty());

  const json req = {{"messages", messages}, {"max_tokens", 24}, {"temperature", 0}};
  const Reply r = post(s, "/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], want.stop == runtime::StopReason::Eos ? "stop" : "length");
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want.generated_tokens);

  json sreq = req;
  sreq["stream"] = true;
  auto res = s.client().Post("/v1/chat/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(res);
  std::string text;
  for (const json& e : events(res->body))
    if (e.is_object() && !e["choices"].empty()) text += e["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(text, want.text);

  // The next turn re-sends the conversation: only what follows the context's common prefix
  // with it runs, and the answer is the one a fresh context gives.
  const std::vector<int32_t> held(session.context_tokens().begin(), session.context_tokens().end());
  json turn2 = messages;
  turn2.push_back({{"role", "assistant"}, {"content", want.text}});
  turn2.push_back({{"role", "user"}, {"content", "And of Germany?"}});
  const std::vector<int32_t> prompt2 =
      tok.encode(chat::render_chat(t, turn2, true, tc.bos_token, tc.eos_token), false);
  const int64_t common = runtime::common_prefix(held, prompt2);
  ASSERT_GT(common, static_cast<int64_t>(prompt.size()));  // the first prompt and some of its answer
  const runtime::GenerateResult want2 = runtime::generate_text(llama, tok, prompt2, o);
  const Reply r2 = post(s, "/v1/chat/completions", json{{"messages", turn2}, {"max_tokens", 24}, {"temperature", 0}}.dump());
  ASSERT_EQ(r2.status, 200) << r2.raw;
  EXPECT_EQ(r2.body["usage"]["prompt_tokens"], static_cast<int64_t>(prompt2.size()));
  EXPECT_EQ(r2.body["usage"]["prompt_tokens_details"]["cached_tokens"], common);
  EXPECT_EQ(r2.body["choices"][0]["message"]["content"], want2.text);

  // A prediction of the answer (OpenAI's predicted outputs): the same text, most of it from
  // drafts the model confirmed.
  const json turn3 = {{{"role", "user"}, {"content", "Repeat after me: the quick brown fox jumps over the lazy dog."}}};
  const std::vector<int32_t> prompt3 = tok.encode(chat::render_chat(t, turn3, true, tc.bos_token, tc.eos_token), false);
  const runtime::GenerateResult want3 = runtime::generate_text(llama, tok, prompt3, o);
  const Reply r3 = post(s, "/v1/chat/completions",
                        json{{"messages", turn3}, {"max_tokens", 24}, {"temperature", 0},
                             {"prediction", {{"type", "content"}, {"content", want3.text}}}}
                            .dump());
  ASSERT_EQ(r3.status, 200) << r3.raw;
  EXPECT_EQ(r3.body["choices"][0]["message"]["content"], want3.text);
  const int64_t accepted = r3.body["usage"]["completion_tokens_details"]["accepted_prediction_tokens"];
  EXPECT_GE(accepted, want3.generated_tokens / 2) << r3.raw;
}

// What lm-evaluation-harness asks of /v1/completions (token ids, echo, logprobs, max_tokens 0)
// and chat logprobs, streamed and not, on the real model.
TEST(ServerSmolLM2, LogprobsAsEvaluationHarnessesUseThem) {
  EXQ_REQUIRE_MODEL();
  SmolLM2Server real;
  model::LlamaModel& llama = real.llama;
  const tokenizer::Tokenizer& tok = real.tok;
  Running s(real.model());

  // Loglikelihood of a text: the echoed prompt's logprobs sum to minus its perplexity NLL.
  const std::vector<int32_t> ids = tok.encode("The quick brown fox jumps over the lazy dog. It was not amused.", false);
  const Reply r = post(s, "/v1/completions",
                       json{{"prompt", json::array({ids})}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 1}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& lp = r.body["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size());
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_EQ(r.body["choices"][0]["text"], tok.decode(ids));
  double sum = 0.0;
  for (size_t i = 1; i < ids.size(); ++i) {
    sum += lp["token_logprobs"][i].get<double>();
    EXPECT_EQ(lp["top_logprobs"][i].size(), 1u);
  }
  const runtime::PerplexityResult p = runtime::perplexity(llama, {ids});
  EXPECT_NEAR(-sum / static_cast<double>(p.tokens), p.nll, 1e-5 * p.nll);

  // A greedy answer's logprobs: each token the likeliest, the tokens spelling the text.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "What is the capital of France?"}}}},
                     {"max_tokens", 12}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 3},
                     {"cache_prompt", false}};
  const Reply c = post(s, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(c.status, 200) << c.raw;
  const json& content = c.body["choices"][0]["logprobs"]["content"];
  ASSERT_FALSE(content.empty());
  std::string spelled;
  for (const json& e : content) {
    spelled += e["token"].get<std::string>();
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    EXPECT_EQ(e["top_logprobs"][0]["token"], e["token"]);
    EXPECT_EQ(e["top_logprobs"][0]["logprob"], e["logprob"]);
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
  }
  EXPECT_EQ(spelled, c.body["choices"][0]["message"]["content"]);

  // Streamed: every chunk carries its own tokens' logprobs; together the same as above.
  json sreq = chat;
  sreq["stream"] = true;
  auto res = s.client().Post("/v1/chat/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(res);
  json streamed = json::array();
  for (const json& e : events(res->body))
    if (e.is_object() && !e["choices"].empty() && !e["choices"][0]["logprobs"].is_null())
      for (const json& t : e["choices"][0]["logprobs"]["content"]) streamed.push_back(t);
  ASSERT_EQ(streamed.size(), content.size());
  for (size_t i = 0; i < content.size(); ++i) {
    EXPECT_EQ(streamed[i]["token"], content[i]["token"]);
    EXPECT_NEAR(streamed[i]["logprob"].get<double>(), content[i]["logprob"].get<double>(), 1e-5);
  }

  // A stop string cuts the logprobs where it cuts the text.
  const Reply st = post(s, "/v1/completions",
                        json{{"prompt", "The capital of France is"}, {"max_tokens", 8}, {"temperature", 0},
                             {"logprobs", 0}, {"stop", "."}}
                            .dump());
  ASSERT_EQ(st.status, 200) << st.raw;
  std::string joined;
  for (const json& t : st.body["choices"][0]["logprobs"]["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, st.body["choices"][0]["text"]);
  EXPECT_EQ(st.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(post(s, "/v1/completions", json{{"prompt", {1, 999999}}}.dump()).body["error"]["message"],
            "token id 999999 is outside the vocabulary (49152 tokens)");

  // n sampled choices: choice i is the answer of seed + i.
  runtime::GenerateOptions o;
  o.max_new_tokens = 10;
  o.sampler = real.model().sampler;
  o.sampler.temperature = 0.9f;
  o.eos_token_ids = real.model().eos_ids;
  const std::vector<int32_t> story = tok.encode("Once upon a time", true);
  const Reply n = post(s, "/v1/completions",
                       json{{"prompt", "Once upon a time"}, {"max_tokens", 10}, {"temperature", 0.9}, {"seed", 5},
                            {"n", 2}, {"cache_prompt", false}}
                           .dump());
  ASSERT_EQ(n.status, 200) << n.raw;
  for (int i = 0; i < 2; ++i) {
    o.sampler.seed = 5 + i;
    EXPECT_EQ(n.body["choices"][i]["text"], runtime::generate_text(llama, tok, story, o).text) << i;
  }
  EXPECT_NE(n.body["choices"][0]["text"], n.body["choices"][1]["text"]);
}

// Tool calling on the real model. SmolLM2's template renders no tools, so the server lists them
// in a system turn (the generic format) and, with tool_choice "required", a grammar makes the
// answer a call: its arguments are JSON of the tool's schema; the same call streams as a
// tool_calls delta. A named tool is the one called. The call and its result go back as the next
// turn, and with tool_choice "none" the answer is text.
TEST(ServerSmolLM2, ToolCallsInTheGenericFormat) {
  EXQ_REQUIRE_MODEL();
  SmolLM2Server real;
  Running s(real.model());
  const json tools = json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                    "required": ["city"], "additionalProperties": false}}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone",
     "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}},
                    "required": ["zone"], "additionalProperties": false}}}])");
  const json messages = {{{"role", "user"}, {"content", "What is the weather in Paris?"}}};
  json req = {{"messages", messages}, {"tools", tools}, {"tool_choice", "required"}, {"max_tokens", 80},
              {"temperature", 0}};
  const Reply r = post(s, "/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& choice = r.body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls") << r.raw;
  EXPECT_TRUE(choice["message"]["content"].is_null()) << r.raw;
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u) << r.raw;
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
  const std::string name = call["function"]["name"];
  const json args = json::parse(call["function"]["arguments"].get<std::string>());
  ASSERT_TRUE(name == "get_weather" || name == "get_time") << name;
  EXPECT_TRUE(args.is_object());
  EXPECT_TRUE(args.contains(name == "get_weather" ? "city" : "zone")) << args;
  EXPECT_EQ(args.size(), 1u);

  // Streamed: no content, one tool_calls delta with the same call, then finish_reason.
  json sreq = req;
  sreq["stream"] = true;
  auto res = s.client().Post("/v1/chat/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(res);
  std::string content;
  json streamed = json::array();
  std::string finish;
  for (const json& e : events(res->body)) {
    if (!e.is_object() || e["choices"].empty()) continue;
    const json& d = e["choices"][0]["delta"];
    content += d.value("content", "");
    if (d.contains("tool_calls"))
      for (const json& c : d["tool_calls"]) streamed.push_back(c);
    if (e["choices"][0]["finish_reason"].is_string()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, "");
  EXPECT_EQ(finish, "tool_calls");
  ASSERT_EQ(streamed.size(), 1u) << res->body;
  EXPECT_EQ(streamed[0]["index"], 0);
  EXPECT_EQ(streamed[0]["function"], call["function"]);

  // A named tool.
  json named = req;
  named["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_time"}}}};
  const Reply rn = post(s, "/v1/chat/completions", named.dump());
  ASSERT_EQ(rn.status, 200) << rn.raw;
  EXPECT_EQ(rn.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_time") << rn.raw;

  // The call and its result as the next turn; tool_choice none: a text answer, no calls.
  json turn2 = messages;
  turn2.push_back({{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array({call})}});
  turn2.push_back({{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", "Sunny, 24 C"}});
  const Reply r2 = post(s, "/v1/chat/completions",
                        json{{"messages", turn2}, {"tools", tools}, {"tool_choice", "none"}, {"max_tokens", 24},
                             {"temperature", 0}}
                            .dump());
  ASSERT_EQ(r2.status, 200) << r2.raw;
  EXPECT_FALSE(r2.body["choices"][0]["message"].contains("tool_calls")) << r2.raw;
  EXPECT_TRUE(r2.body["choices"][0]["message"]["content"].is_string());
  EXPECT_NE(r2.body["choices"][0]["finish_reason"], "tool_calls");

  // A grammar and a required call at once: refused.
  json both = req;
  both["response_format"] = {{"type", "json_object"}};
  const Reply rb = post(s, "/v1/chat/completions", both.dump());
  EXPECT_EQ(rb.status, 400) << rb.raw;
  EXPECT_EQ(rb.body["error"]["param"], "tool_choice");
}

// --parallel 3: three requests at once (two streamed) on three caches of one model give the
// answers each gets alone, their tokens stepping through the model together; a fourth request
// meanwhile waits for a free cache. A chat's next turn finds the cache holding its start.
TEST(ServerSmolLM2, ParallelRequestsMatchOneAtATime) {
  EXQ_REQUIRE_MODEL();
  SmolLM2Server real;
  runtime::LlamaSequences seqs(real.llama, 3, 512);
  runtime::SequencePool pool(seqs, real.tok);
  ServerModel m = real.model();
  m.parallel = 3;
  m.generate = [&pool](std::span<const int32_t> p, const runtime::GenerateOptions& o, bool reuse,
                       const runtime::TextCallback& cb) { return pool.generate(p, o, reuse, cb); };
  const std::vector<std::string> questions = {"What is the capital of France?", "Name a large ocean.",
                                              "What color is the sky?", "Count to three."};
  auto request = [](const std::string& q, bool stream) {
    return json{{"messages", {{{"role", "user"}, {"content", q}}}},
                {"max_tokens", 20},
                {"temperature", 0},
                {"stream", stream}}
        .dump();
  };
  // Alone, one after another, on the one-cache session.
  std::vector<std::string> want;
  std::vector<int64_t> prompt_tokens;
  {
    Running alone(real.model());
    for (const std::string& q : questions) {
      const Reply r = post(alone, "/v1/chat/completions", request(q, false));
      ASSERT_EQ(r.status, 200) << r.raw;
      want.push_back(r.body["choices"][0]["message"]["content"]);
      prompt_tokens.push_back(r.body["usage"]["prompt_tokens"]);
    }
  }
  Running s(std::move(m));
  std::vector<std::string> got(questions.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < questions.size(); ++i)
    clients.emplace_back([&, i] {
      const bool stream = i % 2 == 1;
      const Reply r = post(s, "/v1/chat/completions", request(questions[i], stream));
      ASSERT_EQ(r.status, 200) << r.raw;
      if (!stream) {
        got[i] = r.body["choices"][0]["message"]["content"];
        return;
      }
      for (const json& e : events(r.raw))
        if (e.is_object() && !e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
          got[i] += e["choices"][0]["delta"]["content"].get<std::string>();
    });
  for (std::thread& t : clients) t.join();
  for (size_t i = 0; i < questions.size(); ++i) EXPECT_EQ(got[i], want[i]) << questions[i];
  const runtime::Batcher::Stats st = pool.stats();
  std::printf("  %lld tokens in %lld passes\n", static_cast<long long>(st.rows), static_cast<long long>(st.passes));
  EXPECT_LT(st.passes, st.rows) << "no step ran two requests' tokens together";

  // Next turns, one after another: three caches hold three of the four chats, so at least two
  // next turns find their whole first prompt cached (the chat that lost its cache may take the
  // cache of one whose turn comes later).
  int hits = 0;
  for (size_t i = 0; i < questions.size(); ++i) {
    const json turn2 = {{"messages",
                         {{{"role", "user"}, {"content", questions[i]}},
                          {{"role", "assistant"}, {"content", want[i]}},
                          {{"role", "user"}, {"content", "Why?"}}}},
                        {"max_tokens", 4},
                        {"temperature", 0}};
    const Reply r2 = post(s, "/v1/chat/completions", turn2.dump());
    ASSERT_EQ(r2.status, 200) << r2.raw;
    hits += r2.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>() > prompt_tokens[i] ? 1 : 0;
  }
  EXPECT_GE(hits, 2);
}

}  // namespace
}  // namespace exq::server
