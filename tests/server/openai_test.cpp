#include "server/openai.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "grammar/json_schema.h"

namespace exq::server {
namespace {

using nlohmann::json;

// The ApiError a body gives, as "param: message" (empty when it parses).
std::string refusal(const json& body, Endpoint e) {
  try {
    parse_request(body, e);
  } catch (const ApiError& err) {
    EXPECT_EQ(err.status(), 400);
    return err.param() + ": " + err.what();
  }
  return "";
}

TEST(ParseRequest, ChatFields) {
  const json body = {
      {"model", "x"},
      {"messages",
       {{{"role", "developer"}, {"content", "be brief"}},
        {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}})}}}},
      {"max_completion_tokens", 7},
      {"temperature", 0.5},
      {"top_p", 0.9},
      {"top_k", 20},
      {"min_p", 0.1},
      {"repetition_penalty", 1.1},
      {"seed", 42},
      {"stop", "###"},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}},
      {"n", 1},
      {"presence_penalty", 0},
      {"logprobs", false},
      {"user", "ignored"}};
  const CompletionRequest r = parse_request(body, Endpoint::ChatCompletions);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0]["role"], "system");  // developer is OpenAI's newer name for it
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_FLOAT_EQ(*r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*r.top_p, 0.9f);
  EXPECT_EQ(r.top_k, 20);
  EXPECT_FLOAT_EQ(*r.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*r.repetition_penalty, 1.1f);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"###"});
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ParseRequest, CompletionPromptForms) {
  EXPECT_EQ(parse_request({{"prompt", "hi"}}, Endpoint::Completions).prompt, "hi");
  EXPECT_EQ(parse_request({{"prompt", {"hi"}}}, Endpoint::Completions).prompt, "hi");
  const CompletionRequest r = parse_request({{"prompt", "x"}, {"max_tokens", 3.0}, {"stop", {"a", "b"}}, {"temperature", nullptr}},
                                            Endpoint::Completions);
  EXPECT_EQ(r.max_tokens, 3);  // 3.0 is an integer
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(r.temperature.has_value());  // null means absent
  EXPECT_FALSE(r.stream);
}

TEST(ParseRequest, TokenIdPromptsLogprobsAndEcho) {
  const auto C = Endpoint::Completions, H = Endpoint::ChatCompletions;
  EXPECT_EQ(parse_request({{"prompt", {1, 2, 3}}}, C).prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_request({{"prompt", {{4, 5}}}}, C).prompt_ids, (std::vector<int32_t>{4, 5}));  // lm-eval's form
  EXPECT_TRUE(parse_request({{"prompt", "hi"}}, C).prompt_ids.empty());
  EXPECT_EQ(parse_request({{"prompt", "a"}}, C).logprobs, -1);
  EXPECT_EQ(parse_request({{"prompt", "a"}}, C).n, 1);
  EXPECT_EQ(parse_request({{"prompt", "a"}, {"n", 16}}, C).n, 16);
  EXPECT_EQ(parse_request({{"prompt", "a"}, {"logprobs", false}}, C).logprobs, -1);
  EXPECT_EQ(parse_request({{"prompt", "a"}, {"logprobs", 0}}, C).logprobs, 0);  // the token's own only
  const CompletionRequest e = parse_request({{"prompt", "a"}, {"logprobs", 5}, {"echo", true}, {"max_tokens", 0}}, C);
  EXPECT_EQ(e.logprobs, 5);
  EXPECT_TRUE(e.echo);
  const json msgs = {{{"role", "user"}, {"content", "x"}}};
  EXPECT_EQ(parse_request({{"messages", msgs}}, H).logprobs, -1);
  EXPECT_EQ(parse_request({{"messages", msgs}, {"logprobs", true}}, H).logprobs, 0);
  EXPECT_EQ(parse_request({{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 20}}, H).logprobs, 20);
  EXPECT_EQ(parse_request({{"messages", msgs}, {"logprobs", false}}, H).logprobs, -1);
}

TEST(ParseRequest, RefusalsNameTheField) {
  const auto C = Endpoint::Completions, H = Endpoint::ChatCompletions;
  EXPECT_EQ(refusal({{"model", "m"}}, C), "prompt: 'prompt' is required");
  EXPECT_EQ(refusal({{"prompt", {"a", "b"}}}, C), "prompt: one prompt per request: send the others as separate requests");
  EXPECT_EQ(refusal({{"prompt", {{1}, {2}}}}, C), "prompt: one prompt per request: send the others as separate requests");
  EXPECT_EQ(refusal({{"prompt", {1, "a"}}}, C),
            "prompt: 'prompt' must be a string or an array of token ids (or an array holding one of them)");
  EXPECT_EQ(refusal({{"prompt", {1, -2}}}, C), "prompt: token id -2 is negative or too large");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"max_tokens", -1}}, C), "max_tokens: 'max_tokens' must be >= 0");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"max_tokens", 1.5}}, C), "max_tokens: 'max_tokens' must be an integer");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"temperature", "hot"}}, C), "temperature: 'temperature' must be a number");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"stream", 1}}, C), "stream: 'stream' must be true or false");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"stop", {"a", 1}}}, C), "stop: 'stop' must be a string or an array of strings");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"stop", ""}}, C), "stop: stop strings must not be empty");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"n", 17}}, C), "n: 'n' must be between 1 and 16");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"n", 0}}, C), "n: 'n' must be between 1 and 16");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"best_of", 2}}, C), "best_of: only best_of = 1 is supported");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"logprobs", 21}}, C), "logprobs: 'logprobs' must be between 0 and 20");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"logprobs", true}}, C), "logprobs: 'logprobs' must be an integer (alternatives per token)");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"top_logprobs", 2}}, C),
            "top_logprobs: 'top_logprobs' is a chat field: give /v1/completions 'logprobs' N");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"echo", true}, {"stream", true}}, C), "echo: echo is not supported with stream");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"top_logprobs", 2}}, H),
            "top_logprobs: 'top_logprobs' needs 'logprobs': true");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"logprobs", true}, {"top_logprobs", -1}}, H),
            "top_logprobs: 'top_logprobs' must be between 0 and 20");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"logprobs", 3}}, H),
            "logprobs: 'logprobs' must be true or false");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"frequency_penalty", "x"}}, C),
            "frequency_penalty: 'frequency_penalty' must be a number");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"logit_bias", {{"x1", 2}}}}, C), "logit_bias: logit_bias: 'x1' is not a token id");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"logit_bias", {{"5", "up"}}}}, C),
            "logit_bias: 'logit_bias' must map token ids to numbers");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"logit_bias", {{"-3", 1}}}}, C),
            "logit_bias: logit_bias: token id -3 is outside the vocabulary");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"response_format", {{"type", "yaml"}}}}, C),
            "response_format: response_format type must be 'text', 'json_object' or 'json_schema'");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"response_format", {{"type", "json_schema"}}}}, C),
            "response_format: response_format json_schema needs a 'json_schema' object");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"response_format", {{"type", "json_object"}}}, {"grammar", "root ::= \"a\""}}, C),
            "grammar: 'response_format' and 'grammar' both constrain the answer: send one");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"grammar", 3}}, C), "grammar: 'grammar' must be a string (GBNF)");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"json_schema", {{"type", "string"}, {"pattern", "^a$"}}}}, C).substr(0, 13),
            "json_schema: ");
  EXPECT_EQ(refusal({{"messages", json::array()}}, H), "messages: 'messages' must be a non-empty array");
  EXPECT_EQ(refusal({{"prompt", "a"}}, H), "messages: 'messages' is required");
  EXPECT_EQ(refusal({{"messages", {{{"role", "function"}, {"content", "x"}}}}}, H),
            "messages[0].role: role 'function' is not supported (system, user, assistant, tool)");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}}}}}, H), "messages[0].content: every message needs a content");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}, H),
            "messages[0].content: only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tools", {{{"type", "function"}}}}}, H),
            "tools[0].function: a tool needs a 'function' object");
  EXPECT_EQ(refusal({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"functions", {{{"name", "f"}}}}}, H),
            "functions: the deprecated 'functions' are not supported: send 'tools'");
  EXPECT_EQ(refusal({{"messages", {{{"role", "assistant"}, {"tool_calls", {{{"id", "a"}}}}}}}}, H),
            "messages[0].tool_calls[0]: a tool call must be {\"id\", \"type\": \"function\", \"function\": "
            "{\"name\", \"arguments\"}}");
  EXPECT_EQ(refusal(json::array(), C), ": the request body must be a JSON object");
}

// Penalties, logit_bias in OpenAI's and llama.cpp's forms, and the ways of asking for a grammar.
TEST(ParseRequest, PenaltiesLogitBiasAndGrammars) {
  const auto C = Endpoint::Completions, H = Endpoint::ChatCompletions;
  CompletionRequest r = parse_request(
      {{"prompt", "a"}, {"presence_penalty", 0.5}, {"frequency_penalty", -1}, {"logit_bias", {{"15", -100}, {"7", 2.5}}}},
      C);
  EXPECT_FLOAT_EQ(*r.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(*r.frequency_penalty, -1.0f);
  ASSERT_EQ(r.logit_bias.size(), 2u);
  EXPECT_EQ(r.logit_bias[0].id, 15);  // nlohmann sorts object keys: "15" < "7"
  EXPECT_FLOAT_EQ(r.logit_bias[0].bias, -100.0f);
  EXPECT_EQ(r.logit_bias[1].id, 7);
  r = parse_request({{"prompt", "a"}, {"logit_bias", {{3, 1.5}, {4, -2}}}}, C);
  ASSERT_EQ(r.logit_bias.size(), 2u);
  EXPECT_EQ(r.logit_bias[1].id, 4);
  EXPECT_FLOAT_EQ(r.logit_bias[1].bias, -2.0f);
  EXPECT_TRUE(parse_request({{"prompt", "a"}, {"logit_bias", json::object()}}, C).logit_bias.empty());

  const json chat = {{"role", "user"}, {"content", "x"}};
  r = parse_request({{"messages", {chat}}, {"response_format", {{"type", "text"}}}}, H);
  EXPECT_TRUE(r.grammar.empty());
  r = parse_request({{"messages", {chat}}, {"response_format", {{"type", "json_object"}}}}, H);
  EXPECT_EQ(r.grammar, grammar::json_object_gbnf());
  EXPECT_EQ(r.grammar_param, "response_format");
  const json schema = {{"type", "object"}, {"properties", {{"n", {{"type", "integer"}}}}}, {"required", {"n"}}};
  r = parse_request(
      {{"messages", {chat}},
       {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", schema}}}}}},
      H);
  EXPECT_EQ(r.grammar, grammar::json_schema_to_gbnf(schema));
  r = parse_request({{"prompt", "a"}, {"json_schema", schema}}, C);
  EXPECT_EQ(r.grammar, grammar::json_schema_to_gbnf(schema));
  EXPECT_EQ(r.grammar_param, "json_schema");
  r = parse_request({{"prompt", "a"}, {"grammar", "root ::= [0-9]+"}}, C);
  EXPECT_EQ(r.grammar, "root ::= [0-9]+");
  EXPECT_EQ(r.grammar_param, "grammar");

  runtime::SamplerConfig d;
  r = parse_request({{"prompt", "a"}, {"presence_penalty", 2.5}}, C);
  EXPECT_THROW(request_sampler(d, r), ApiError);
  r = parse_request({{"prompt", "a"}, {"logit_bias", {{"7", 101}}}}, C);
  EXPECT_THROW(request_sampler(d, r), ApiError);
  r = parse_request({{"prompt", "a"}, {"presence_penalty", 1}, {"logit_bias", {{"7", 3}}}}, C);
  const runtime::SamplerConfig s = request_sampler(d, r);
  EXPECT_FLOAT_EQ(s.presence_penalty, 1.0f);
  ASSERT_EQ(s.logit_bias.size(), 1u);
  EXPECT_EQ(s.logit_bias[0].id, 7);
}

TEST(ParseRequest, PredictionAsOpenAiSendsIt) {
  const auto C = Endpoint::Completions;
  EXPECT_FALSE(parse_request({{"prompt", "a"}}, C).prediction.has_value());
  EXPECT_EQ(parse_request({{"prompt", "a"}, {"prediction", {{"type", "content"}, {"content", "def f():"}}}}, C).prediction,
            "def f():");
  const json parts = json::array({{{"type", "text"}, {"text", "x = 1"}}, {{"type", "text"}, {"text", "y = 2"}}});
  EXPECT_EQ(parse_request({{"prompt", "a"}, {"prediction", {{"type", "content"}, {"content", parts}}}}, C).prediction,
            "x = 1\ny = 2");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"prediction", "text"}}, C),
            "prediction: 'prediction' must be {\"type\": \"content\", \"content\": ...}");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"prediction", {{"type", "content"}}}}, C),
            "prediction.content: 'prediction.content' is required");
  EXPECT_EQ(refusal({{"prompt", "a"}, {"prediction", {{"type", "content"}, {"content", 3}}}}, C),
            "prediction.content: content must be a string or an array of text parts");
}

TEST(ParseRequest, TokenizeAndDetokenizeAsLlamaCpp) {
  const TokenizeRequest t = parse_tokenize({{"content", "Hi"}, {"with_pieces", true}});
  EXPECT_EQ(t.content, "Hi");
  EXPECT_FALSE(t.add_special);
  EXPECT_TRUE(t.with_pieces);
  EXPECT_TRUE(parse_tokenize({{"content", ""}, {"add_special", true}}).add_special);
  auto refused = [](const auto& f) -> std::string {
    try {
      f();
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      return e.param() + ": " + e.what();
    }
    return "";
  };
  EXPECT_EQ(refused([] { parse_tokenize({{"text", "Hi"}}); }), "content: 'content' must be a string");
  EXPECT_EQ(refused([] { parse_tokenize({{"content", "Hi"}, {"with_pieces", "yes"}}); }),
            "with_pieces: 'with_pieces' must be true or false");
  EXPECT_EQ(parse_detokenize({{"tokens", {0, 5, 99}}}, 100), (std::vector<int32_t>{0, 5, 99}));
  EXPECT_TRUE(parse_detokenize({{"tokens", json::array()}}, 100).empty());
  EXPECT_EQ(refused([] { parse_detokenize({{"tokens", {1, 100}}}, 100); }),
            "tokens: token id 100 is outside the vocabulary (100 tokens)");
  EXPECT_EQ(refused([] { parse_detokenize({{"tokens", {1, -1}}}, 100); }),
            "tokens: token id -1 is outside the vocabulary (100 tokens)");
  EXPECT_EQ(refused([] { parse_detokenize({{"tokens", {1.5}}}, 100); }), "tokens: 'tokens' must be an array of token ids");
  EXPECT_EQ(refused([] { parse_detokenize({{"content", "x"}}, 100); }), "tokens: 'tokens' must be an array of token ids");
}

// OpenAI's /v1/embeddings: every form of `input`, `dimensions` within the width, the two formats.
TEST(ParseRequest, EmbeddingsInputsAndOptions) {
  const EmbeddingRequest one = parse_embeddings({{"input", "Hi"}}, 100, 64);
  ASSERT_EQ(one.inputs.size(), 1u);
  EXPECT_EQ(one.inputs[0].text, "Hi");
  EXPECT_EQ(one.dimensions, 0);
  EXPECT_FALSE(one.base64);
  const EmbeddingRequest mixed =
      parse_embeddings({{"input", json::array({"a", json::array({3, 4})})}, {"dimensions", 8},
                        {"encoding_format", "base64"}},
                       100, 64);
  ASSERT_EQ(mixed.inputs.size(), 2u);
  EXPECT_EQ(mixed.inputs[0].text, "a");
  EXPECT_FALSE(mixed.inputs[1].text.has_value());
  EXPECT_EQ(mixed.inputs[1].ids, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(mixed.dimensions, 8);
  EXPECT_TRUE(mixed.base64);
  const EmbeddingRequest ids = parse_embeddings({{"input", {1, 2, 3}}, {"dimensions", nullptr}}, 100, 64);
  ASSERT_EQ(ids.inputs.size(), 1u);
  EXPECT_EQ(ids.inputs[0].ids, (std::vector<int32_t>{1, 2, 3}));
  auto refused = [](const json& body) -> std::string {
    try {
      parse_embeddings(body, 100, 64);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      return e.param() + ": " + e.what();
    }
    return "";
  };
  EXPECT_EQ(refused({{"model", "x"}}), "input: 'input' is required");
  EXPECT_EQ(refused({{"input", json::array()}}),
            "input: 'input' must be a non-empty string, list of strings or list of token lists");
  EXPECT_EQ(refused({{"input", json::array({"a", 5})}}),
            "input: 'input' must be a string, a list of strings or a list of token lists");
  EXPECT_EQ(refused({{"input", {1, 100}}}), "input: token id 100 is outside the vocabulary (100 tokens)");
  EXPECT_EQ(refused({{"input", json::array({json::array({1, "x"})})}}), "input: 'input' token lists must hold integers");
  EXPECT_EQ(refused({{"input", "a"}, {"dimensions", 65}}), "dimensions: 'dimensions' must be an integer from 1 to 64");
  EXPECT_EQ(refused({{"input", "a"}, {"dimensions", 0}}), "dimensions: 'dimensions' must be an integer from 1 to 64");
  EXPECT_EQ(refused({{"input", "a"}, {"encoding_format", "int8"}}),
            "encoding_format: 'encoding_format' must be \"float\" or \"base64\"");
  // The answer: floats, or their float32 bytes in base64 (1.0f is 00 00 80 3f).
  const json body = embeddings_body({{1.0f, 0.0f}}, false, "m", 3);
  EXPECT_EQ(body["data"][0]["embedding"], json::array({1.0, 0.0}));
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(embeddings_body({{1.0f}}, true, "m", 1)["data"][0]["embedding"], "AACAPw==");
}

// llama.cpp's typical_p, top_n_sigma, xtc_probability and xtc_threshold reach the sampler and
// are validated there.
TEST(RequestSampler, LlamaCppSamplerFields) {
  const CompletionRequest r = parse_request({{"prompt", "a"},
                                             {"typical_p", 0.9},
                                             {"top_n_sigma", 1.5},
                                             {"xtc_probability", 0.5},
                                             {"xtc_threshold", 0.2},
                                             {"dry_multiplier", 0.8},
                                             {"dry_base", 1.5},
                                             {"dry_allowed_length", 3},
                                             {"dry_penalty_last_n", -1},
                                             {"dry_sequence_breakers", {"\n", "."}}},
                                            Endpoint::Completions);
  const runtime::SamplerConfig s = request_sampler(runtime::SamplerConfig{}, r);
  EXPECT_FLOAT_EQ(s.dry_multiplier, 0.8f);
  EXPECT_FLOAT_EQ(s.dry_base, 1.5f);
  EXPECT_EQ(s.dry_allowed_length, 3);
  EXPECT_EQ(s.dry_range, 0);  // -1: all, as llama.cpp
  EXPECT_EQ(*r.dry_sequence_breakers, (std::vector<std::string>{"\n", "."}));
  EXPECT_THROW(parse_request({{"prompt", "a"}, {"dry_sequence_breakers", "x"}}, Endpoint::Completions), ApiError);
  EXPECT_FLOAT_EQ(s.typical_p, 0.9f);
  EXPECT_FLOAT_EQ(s.top_n_sigma, 1.5f);
  EXPECT_FLOAT_EQ(s.xtc_probability, 0.5f);
  EXPECT_FLOAT_EQ(s.xtc_threshold, 0.2f);
  CompletionRequest bad = r;
  bad.typical_p = 0.0f;
  try {
    request_sampler(runtime::SamplerConfig{}, bad);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("typical-p must be in (0, 1], got 0"), std::string::npos) << e.what();
  }
}

TEST(RequestSampler, RequestOverridesDefaultsAndIsValidated) {
  runtime::SamplerConfig d;
  d.temperature = 0.7f;
  d.top_k = 50;
  CompletionRequest r;
  r.top_k = 5;
  r.seed = 9;
  const runtime::SamplerConfig s = request_sampler(d, r);
  EXPECT_FLOAT_EQ(s.temperature, 0.7f);
  EXPECT_EQ(s.top_k, 5);
  EXPECT_EQ(s.seed, 9u);
  r.top_p = 1.5f;
  EXPECT_THROW(request_sampler(d, r), ApiError);
}

TEST(Bodies, CompletionAndChunks) {
  const ResponseMeta meta{"chatcmpl-1", 1700000000, "m"};
  const json c = completion_body(Endpoint::ChatCompletions, meta, {{"hello", "stop"}}, {5, 4, 2});
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(c["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"]["total_tokens"], 7);
  EXPECT_EQ(c["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  EXPECT_EQ(c["usage"]["completion_tokens_details"]["accepted_prediction_tokens"], 0);
  const json d = completion_body(Endpoint::ChatCompletions, meta, {{"hello", "stop"}}, {5, 0, 9, 6, 2});
  EXPECT_EQ(d["usage"]["completion_tokens_details"],
            (json{{"accepted_prediction_tokens", 6}, {"rejected_prediction_tokens", 2}}));
  const json t = completion_body(Endpoint::Completions, meta, {{"x", "length"}, {"yz", "stop"}}, {1, 0, 1});
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "x");
  EXPECT_EQ(t["choices"][1]["index"], 1);
  EXPECT_EQ(t["choices"][1]["text"], "yz");
  EXPECT_EQ(t["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(chunk_body(Endpoint::Completions, meta, "q", nullptr, false, nullptr, 3)["choices"][0]["index"], 3);

  const json first = chunk_body(Endpoint::ChatCompletions, meta, "He", nullptr, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", "He"}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json last = chunk_body(Endpoint::ChatCompletions, meta, "", "length", false);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const json u = usage_chunk(Endpoint::ChatCompletions, meta, {3, 0, 4});
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["completion_tokens"], 4);

  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_event(json{{"t", std::string("\xff")}}), "data: {\"t\":\"\xEF\xBF\xBD\"}\n\n");
  const json e = error_body("bad", "invalid_request_error", "stop");
  EXPECT_EQ(e["error"]["message"], "bad");
  EXPECT_EQ(e["error"]["param"], "stop");
  EXPECT_TRUE(error_body("x")["error"]["param"].is_null());
}

// Token text of a made-up vocabulary: id 9 is a special token, ids 7 and 8 the two halves of "é".
std::string text_of(int32_t id, bool skip_special) {
  static const std::vector<std::string> t = {"He", "llo", " wor", "ld", "#", "##", " x", "\xC3", "\xA9", "<|end|>"};
  return id == 9 && skip_special ? std::string() : t.at(static_cast<size_t>(id));
}

runtime::TokenLogprob lp(int32_t id, float v, std::vector<std::pair<int32_t, float>> top = {}) {
  return {id, v, std::move(top)};
}

TEST(Logprobs, ChatAndCompletionsObjects) {
  const std::vector<LogprobEntry> es = {{7, -0.5f, {{7, -0.5f}, {0, -1.5f}}, 0, false},
                                        {8, -0.25f, {}, 1, false}};
  const json chat = logprobs_json(Endpoint::ChatCompletions, es, text_of);
  ASSERT_EQ(chat["content"].size(), 2u);
  const json& a = chat["content"][0];
  EXPECT_EQ(a["bytes"], (json{0xC3}));  // half a character: the bytes say what it is
  EXPECT_FLOAT_EQ(a["logprob"].get<float>(), -0.5f);
  ASSERT_EQ(a["top_logprobs"].size(), 2u);
  EXPECT_EQ(a["top_logprobs"][1]["token"], "He");
  EXPECT_FLOAT_EQ(a["top_logprobs"][1]["logprob"].get<float>(), -1.5f);
  EXPECT_EQ(a["top_logprobs"][1]["bytes"], (json{72, 101}));
  EXPECT_TRUE(chat["content"][1]["top_logprobs"].empty());
  EXPECT_TRUE(chat["refusal"].is_null());

  const std::vector<LogprobEntry> echoed = {{0, std::nullopt, {}, 0, true}, {1, -2.0f, {{3, -0.1f}}, 2, true}};
  const json c = logprobs_json(Endpoint::Completions, echoed, text_of);
  EXPECT_EQ(c["tokens"], (json{"He", "llo"}));
  EXPECT_TRUE(c["token_logprobs"][0].is_null());
  EXPECT_FLOAT_EQ(c["token_logprobs"][1].get<float>(), -2.0f);
  EXPECT_TRUE(c["top_logprobs"][0].is_null());
  EXPECT_FLOAT_EQ(c["top_logprobs"][1]["ld"].get<float>(), -0.1f);
  EXPECT_EQ(c["text_offset"], (json{0, 2}));

  const ResponseMeta meta{"cmpl-1", 1, "m"};
  EXPECT_TRUE(completion_body(Endpoint::Completions, meta, {{"x", "stop"}}, {})["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(completion_body(Endpoint::Completions, meta, {{"x", "stop", c}}, {})["choices"][0]["logprobs"], c);
  EXPECT_EQ(chunk_body(Endpoint::ChatCompletions, meta, "x", nullptr, false, chat)["choices"][0]["logprobs"], chat);
}

TEST(Logprobs, TrackHandsOutWhatTheTextCovers) {
  LogprobTrack t(text_of);
  t.add_prompt(std::vector<int32_t>{0, 1}, std::vector<runtime::TokenLogprob>{lp(1, -3.0f)});
  t.add(lp(2, -0.1f));   // " wor": answer bytes 0..4
  t.add(lp(3, -0.2f));   // "ld": 4..6
  t.add(lp(9, -0.3f));   // a special token: no text, at 6
  t.add(lp(4, -0.4f));   // "#": 6..7
  t.add(lp(5, -0.5f));   // "##": 7..9
  std::span<const LogprobEntry> a = t.take(4);  // the prompt's, and " wor"
  ASSERT_EQ(a.size(), 3u);
  EXPECT_FALSE(a[0].logprob.has_value());
  EXPECT_FLOAT_EQ(*a[1].logprob, -3.0f);
  EXPECT_EQ(a[2].id, 2);
  EXPECT_EQ(a[2].offset, 5u);  // after "Hello"
  EXPECT_TRUE(t.take(4).empty());
  // A stop string "#" cut the text after "ld": the tokens from there on are not sent.
  std::span<const LogprobEntry> b = t.take(6);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].id, 3);
  std::span<const LogprobEntry> rest = t.take(SIZE_MAX);  // or all of them, without a stop
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_EQ(rest[0].id, 9);
  EXPECT_EQ(rest[2].offset, 12u);
}

// Pushes pieces one by one; returns everything emitted (plus finish() when not stopped).
std::string run(StopMatcher& m, const std::vector<std::string>& pieces, std::vector<std::string>* emitted = nullptr) {
  std::string out;
  for (const std::string& p : pieces) {
    const std::string e = m.push(p);
    if (emitted) emitted->push_back(e);
    out += e;
  }
  return out + m.finish();
}

TEST(StopMatcher, StopsAtTheFirstStopStringAcrossPieces) {
  StopMatcher m({"</s>", "END"});
  std::vector<std::string> emitted;
  EXPECT_EQ(run(m, {"Hello <", "/", "s> more"}, &emitted), "Hello ");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(emitted, (std::vector<std::string>{"Hello ", "", ""}));  // "<" and "</" held back

  StopMatcher two({"xyz", "b"});
  EXPECT_EQ(run(two, {"axy", "zb"}), "a");  // both in the text: the earlier one wins
  EXPECT_TRUE(two.stopped());
}

TEST(StopMatcher, ReleasesHeldTextThatDoesNotMatch) {
  StopMatcher m({"STOP"});
  std::vector<std::string> emitted;
  EXPECT_EQ(run(m, {"a S", "T", "x", "ST"}, &emitted), "a STxST");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(emitted, (std::vector<std::string>{"a ", "", "STx", ""}));  // the last "ST" comes from finish()

  StopMatcher none({});
  EXPECT_EQ(run(none, {"a", "b"}), "ab");
  StopMatcher repeated({"aab"});
  EXPECT_EQ(run(repeated, {"a", "a", "a", "b", "c"}), "a");  // "aaab": the match starts at 1
}

}  // namespace
}  // namespace exq::server
