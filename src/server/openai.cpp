#include "server/openai.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "grammar/json_schema.h"

namespace exq::server {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param);
}

// The field, or null when absent (null counts as absent, as in OpenAI's API).
const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number", key));
  return v->get<double>();
}

std::optional<int64_t> integer(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  bad(key, fmt::format("'{}' must be an integer", key));
}

std::optional<bool> boolean(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be true or false", key));
  return v->get<bool>();
}

std::optional<float> as_float(const std::optional<double>& d) {
  if (!d) return std::nullopt;
  return static_cast<float>(*d);
}

// Features exq does not have: refused rather than ignored, so no answer is silently different.
void refuse_unsupported(const json& body, Endpoint endpoint) {
  if (auto b = integer(body, "best_of"); b && *b != 1) bad("best_of", "only best_of = 1 is supported");
  if (const json* t = field(body, "functions"); t && !(t->is_array() && t->empty()))
    bad("functions", "the deprecated 'functions' are not supported: send 'tools'");
  if (endpoint == Endpoint::Completions)
    if (const json* t = field(body, "tools"); t && !(t->is_array() && t->empty()))
      bad("tools", "tools need /v1/chat/completions");
  if (endpoint == Endpoint::Completions) {
    if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
      bad("suffix", "suffix is not supported");
  }
}

// OpenAI's {"token id": bias} or llama.cpp's [[id, bias], ...].
std::vector<runtime::LogitBias> parse_logit_bias(const json& body) {
  std::vector<runtime::LogitBias> out;
  const json* b = field(body, "logit_bias");
  if (!b) return out;
  const std::string what = "'logit_bias' must map token ids to numbers";
  auto add = [&](int64_t id, const json& v) {
    if (!v.is_number()) bad("logit_bias", what);
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      bad("logit_bias", fmt::format("logit_bias: token id {} is outside the vocabulary", id));
    out.push_back({static_cast<int32_t>(id), static_cast<float>(v.get<double>())});
  };
  if (b->is_object()) {
    for (const auto& [key, v] : b->items()) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != key.size()) bad("logit_bias", fmt::format("logit_bias: '{}' is not a token id", key));
      add(id, v);
    }
  } else if (b->is_array()) {
    for (const json& e : *b) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_number_integer()) bad("logit_bias", what);
      add(e[0].get<int64_t>(), e[1]);
    }
  } else {
    bad("logit_bias", what);
  }
  return out;
}

// The schema at `path` of the body: from `raw` (the body's text) parsed keeping key order when
// given, so properties are generated in the schema's order (json sorts keys).
std::string schema_gbnf(const json& schema, std::string_view raw, const json::json_pointer& path, const char* param) {
  try {
    if (!raw.empty()) {
      const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(raw);
      const nlohmann::ordered_json::json_pointer p(path.to_string());
      if (ordered.contains(p)) return grammar::json_schema_to_gbnf(ordered.at(p));
    }
    return grammar::json_schema_to_gbnf(schema);
  } catch (const Error& e) {
    bad(param, e.message());
  }
}

// The grammar a request asks for (at most one way of asking), as GBNF.
void parse_grammar(const json& body, std::string_view raw, CompletionRequest& r) {
  auto set = [&](const char* param, std::string gbnf) {
    if (!r.grammar_param.empty())
      bad(param, fmt::format("'{}' and '{}' both constrain the answer: send one", r.grammar_param, param));
    r.grammar = std::move(gbnf);
    r.grammar_param = param;
  };
  if (const json* f = field(body, "response_format")) {
    const std::string type = f->is_object() ? f->value("type", "") : "";
    if (type == "json_object") {
      set("response_format", grammar::json_object_gbnf());
    } else if (type == "json_schema") {
      const json* js = field(*f, "json_schema");
      if (!js || !js->is_object()) bad("response_format", "response_format json_schema needs a 'json_schema' object");
      const json* schema = field(*js, "schema");
      set("response_format", schema ? schema_gbnf(*schema, raw, json::json_pointer("/response_format/json_schema/schema"),
                                                  "response_format")
                                    : grammar::json_object_gbnf());
    } else if (type != "text") {
      bad("response_format", "response_format type must be 'text', 'json_object' or 'json_schema'");
    }
  }
  if (const json* s = field(body, "json_schema"))
    set("json_schema", schema_gbnf(*s, raw, json::json_pointer("/json_schema"), "json_schema"));
  if (const json* g = field(body, "grammar")) {
    if (!g->is_string()) bad("grammar", "'grammar' must be a string (GBNF)");
    if (!g->get<std::string>().empty()) set("grammar", g->get<std::string>());
  }
}

void require_object(const json& body) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
}

// A string, or an array of text parts joined by newlines (message content, a prediction).
std::string text_content(const json* c, const std::string& param) {
  if (!c) bad(param, fmt::format("'{}' is required", param));
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) bad(param, "content must be a string or an array of text parts");
  std::string text;
  for (const json& part : *c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad(param, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    if (!text.empty()) text += '\n';
    text += part["text"].get<std::string>();
  }
  return text;
}

std::string message_content(const json& m, size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  const json* c = field(m, "content");
  if (!c) bad(param, "every message needs a content");
  return text_content(c, param);
}

std::optional<std::string> parse_prediction(const json& body) {
  const json* p = field(body, "prediction");
  if (!p) return std::nullopt;
  if (!p->is_object() || p->value("type", "") != "content")
    bad("prediction", "'prediction' must be {\"type\": \"content\", \"content\": ...}");
  return text_content(field(*p, "content"), "prediction.content");
}

// An assistant turn's content beside its tool calls: text, or null.
std::string text_or_empty(const json* c, size_t i) {
  if (c->is_null()) return {};
  return text_content(c, fmt::format("messages[{}].content", i));
}

// An assistant turn's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}].
json parse_message_tool_calls(const json& calls, size_t i) {
  json out = json::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    const std::string at = fmt::format("messages[{}].tool_calls[{}]", i, k);
    const json& c = calls[k];
    const json* f = c.is_object() ? field(c, "function") : nullptr;
    if (!f || !f->is_object() || !field(*f, "name") || !(*f)["name"].is_string())
      bad(at, "a tool call must be {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
    json call = {{"type", "function"}, {"function", {{"name", (*f)["name"]}, {"arguments", "{}"}}}};
    if (const json* a = field(*f, "arguments")) {
      if (!a->is_string() && !a->is_object()) bad(at + ".function.arguments", "arguments must be a JSON string");
      call["function"]["arguments"] = a->is_string() ? *a : json(a->dump());
    }
    if (const json* id = field(c, "id"); id && id->is_string()) call["id"] = *id;
    out.push_back(std::move(call));
  }
  return out;
}

json parse_messages(const json& body) {
  const json* ms = field(body, "messages");
  if (!ms) bad("messages", "'messages' is required");
  if (!ms->is_array() || ms->empty()) bad("messages", "'messages' must be a non-empty array");
  json out = json::array();
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    if (!m.is_object()) bad(fmt::format("messages[{}]", i), "every message must be an object");
    const json* r = field(m, "role");
    if (!r || !r->is_string()) bad(fmt::format("messages[{}].role", i), "every message needs a role");
    std::string role = r->get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system turn
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      bad(fmt::format("messages[{}].role", i),
          fmt::format("role '{}' is not supported (system, user, assistant, tool)", role));
    const json* calls = role == "assistant" ? field(m, "tool_calls") : nullptr;
    if (calls && calls->is_array() && !calls->empty()) {
      // A turn that called tools: content may be null or absent.
      json msg = {{"role", role}, {"content", field(m, "content") ? text_or_empty(field(m, "content"), i) : ""}};
      msg["tool_calls"] = parse_message_tool_calls(*calls, i);
      out.push_back(std::move(msg));
      continue;
    }
    json msg = {{"role", role}, {"content", message_content(m, i)}};
    if (role == "tool") {
      if (const json* id = field(m, "tool_call_id")) {
        if (!id->is_string()) bad(fmt::format("messages[{}].tool_call_id", i), "'tool_call_id' must be a string");
        msg["tool_call_id"] = *id;
      }
      if (const json* n = field(m, "name"); n && n->is_string()) msg["name"] = *n;
    }
    out.push_back(std::move(msg));
  }
  return out;
}

// True for a non-empty array of integers (a prompt of token ids).
bool token_ids(const json& v) {
  return v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); });
}

// The prompt: a string, token ids, or an array holding one of them.
void parse_prompt(const json& body, CompletionRequest& r) {
  const json* p = field(body, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  const json* one = p;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) one = &(*p)[0];
  if (one->is_string()) {
    r.prompt = one->get<std::string>();
    return;
  }
  if (token_ids(*one)) {
    for (const json& x : *one) {
      const auto id = x.get<int64_t>();
      if (id < 0 || id > std::numeric_limits<int32_t>::max()) bad("prompt", fmt::format("token id {} is negative or too large", id));
      r.prompt_ids.push_back(static_cast<int32_t>(id));
    }
    return;
  }
  if (p->is_array() && p->size() > 1 && ((*p)[0].is_string() || (*p)[0].is_array()))
    bad("prompt", "one prompt per request: send the others as separate requests");
  bad("prompt", "'prompt' must be a string or an array of token ids (or an array holding one of them)");
}

// completions: logprobs N (0..20, false or null: off); chat: logprobs true with top_logprobs N.
int parse_logprobs(const json& body, Endpoint endpoint) {
  const json* l = field(body, "logprobs");
  const auto in_range = [](const char* key, int64_t n) {
    if (n < 0 || n > runtime::kMaxTopLogprobs)
      bad(key, fmt::format("'{}' must be between 0 and {}", key, runtime::kMaxTopLogprobs));
    return static_cast<int>(n);
  };
  if (endpoint == Endpoint::Completions) {
    if (field(body, "top_logprobs")) bad("top_logprobs", "'top_logprobs' is a chat field: give /v1/completions 'logprobs' N");
    if (!l || (l->is_boolean() && !l->get<bool>())) return -1;
    if (!l->is_number_integer()) bad("logprobs", "'logprobs' must be an integer (alternatives per token)");
    return in_range("logprobs", l->get<int64_t>());
  }
  const bool on = boolean(body, "logprobs").value_or(false);
  const std::optional<int64_t> top = integer(body, "top_logprobs");
  if (top && !on) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  return on ? in_range("top_logprobs", top.value_or(0)) : -1;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* s = field(body, "stop");
  if (!s) return {};
  std::vector<std::string> out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    for (const json& v : *s) {
      if (!v.is_string()) bad("stop", "'stop' must be a string or an array of strings");
      out.push_back(v.get<std::string>());
    }
  } else {
    bad("stop", "'stop' must be a string or an array of strings");
  }
  if (out.size() > 16) bad("stop", "at most 16 stop strings");
  for (const std::string& v : out)
    if (v.empty()) bad("stop", "stop strings must not be empty");
  return out;
}

}  // namespace

CompletionRequest parse_request(const json& body, Endpoint endpoint, std::string_view raw) {
  require_object(body);
  refuse_unsupported(body, endpoint);
  CompletionRequest r;
  r.endpoint = endpoint;
  if (const json* m = field(body, "model"); m && !m->is_string()) bad("model", "'model' must be a string");
  if (endpoint == Endpoint::ChatCompletions) {
    r.messages = parse_messages(body);
    r.tools = parse_tools(body, raw);
  } else
    parse_prompt(body, r);
  r.max_tokens = integer(body, "max_tokens");
  if (endpoint == Endpoint::ChatCompletions)
    if (auto m = integer(body, "max_completion_tokens")) r.max_tokens = m;
  if (r.max_tokens && *r.max_tokens < 0) bad("max_tokens", "'max_tokens' must be >= 0");
  r.temperature = as_float(number(body, "temperature"));
  r.top_p = as_float(number(body, "top_p"));
  r.min_p = as_float(number(body, "min_p"));
  r.repetition_penalty = as_float(number(body, "repetition_penalty"));
  r.presence_penalty = as_float(number(body, "presence_penalty"));
  r.frequency_penalty = as_float(number(body, "frequency_penalty"));
  r.typical_p = as_float(number(body, "typical_p"));
  r.top_n_sigma = as_float(number(body, "top_n_sigma"));
  r.xtc_probability = as_float(number(body, "xtc_probability"));
  r.xtc_threshold = as_float(number(body, "xtc_threshold"));
  r.dry_multiplier = as_float(number(body, "dry_multiplier"));
  r.dry_base = as_float(number(body, "dry_base"));
  auto int_at_least = [&](const char* key, int64_t min) -> std::optional<int> {
    const auto v = integer(body, key);
    if (v && (*v < min || *v > std::numeric_limits<int>::max())) bad(key, fmt::format("'{}' is out of range", key));
    return v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
  };
  r.dry_allowed_length = int_at_least("dry_allowed_length", 0);
  r.dry_penalty_last_n = int_at_least("dry_penalty_last_n", -1);
  if (const json* b = field(body, "dry_sequence_breakers")) {
    if (!b->is_array() || !std::all_of(b->begin(), b->end(), [](const json& x) { return x.is_string(); }))
      bad("dry_sequence_breakers", "'dry_sequence_breakers' must be an array of strings");
    r.dry_sequence_breakers = b->get<std::vector<std::string>>();
  }
  r.logit_bias = parse_logit_bias(body);
  parse_grammar(body, raw, r);
  if (auto k = integer(body, "top_k")) {
    if (*k < 0 || *k > std::numeric_limits<int>::max()) bad("top_k", "'top_k' must be >= 0");
    r.top_k = static_cast<int>(*k);
  }
  if (auto s = integer(body, "seed")) r.seed = static_cast<uint64_t>(*s);
  r.stop = parse_stop(body);
  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }
  r.cache_prompt = boolean(body, "cache_prompt").value_or(true);
  r.prediction = parse_prediction(body);
  r.logprobs = parse_logprobs(body, endpoint);
  if (auto n = integer(body, "n")) {
    if (*n < 1 || *n > kMaxChoices) bad("n", fmt::format("'n' must be between 1 and {}", kMaxChoices));
    r.n = static_cast<int>(*n);
  }
  if (endpoint == Endpoint::Completions) {
    r.echo = boolean(body, "echo").value_or(false);
    if (r.echo && r.stream) bad("echo", "echo is not supported with stream");
  }
  return r;
}

TokenizeRequest parse_tokenize(const json& body) {
  require_object(body);
  const json* c = field(body, "content");
  if (!c || !c->is_string()) bad("content", "'content' must be a string");
  TokenizeRequest r;
  r.content = c->get<std::string>();
  r.add_special = boolean(body, "add_special").value_or(false);
  r.with_pieces = boolean(body, "with_pieces").value_or(false);
  return r;
}

std::vector<int32_t> parse_detokenize(const json& body, int64_t vocab) {
  require_object(body);
  const json* t = field(body, "tokens");
  if (!t || !t->is_array()) bad("tokens", "'tokens' must be an array of token ids");
  std::vector<int32_t> ids;
  for (const json& v : *t) {
    if (!v.is_number_integer()) bad("tokens", "'tokens' must be an array of token ids");
    const auto id = v.get<int64_t>();
    check_token_id(id, vocab, "tokens");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

void check_token_id(int64_t id, int64_t vocab, const char* param) {
  if (id < 0 || id >= vocab) bad(param, fmt::format("token id {} is outside the vocabulary ({} tokens)", id, vocab));
}

EmbeddingRequest parse_embeddings(const json& body, int64_t vocab, int64_t width) {
  require_object(body);
  const json* in = field(body, "input");
  if (!in) bad("input", "'input' is required");
  const auto ids_of = [&](const json& list) {
    EmbeddingRequest::Input input;
    for (const json& v : list) {
      if (!v.is_number_integer()) bad("input", "'input' token lists must hold integers");
      const auto id = v.get<int64_t>();
      check_token_id(id, vocab, "input");
      input.ids.push_back(static_cast<int32_t>(id));
    }
    return input;
  };
  EmbeddingRequest r;
  if (in->is_string()) {
    r.inputs.push_back({in->get<std::string>(), {}});
  } else if (in->is_array() && !in->empty() && (*in)[0].is_number_integer()) {
    r.inputs.push_back(ids_of(*in));
  } else if (in->is_array() && !in->empty()) {
    for (const json& item : *in) {
      if (item.is_string()) r.inputs.push_back({item.get<std::string>(), {}});
      else if (item.is_array()) r.inputs.push_back(ids_of(item));
      else bad("input", "'input' must be a string, a list of strings or a list of token lists");
    }
  } else {
    bad("input", "'input' must be a non-empty string, list of strings or list of token lists");
  }
  if (const json* d = field(body, "dimensions")) {
    if (!d->is_number_integer() || d->get<int64_t>() < 1 || d->get<int64_t>() > width)
      bad("dimensions", fmt::format("'dimensions' must be an integer from 1 to {}", width));
    r.dimensions = d->get<int64_t>();
  }
  if (const json* f = field(body, "encoding_format")) {
    if (!f->is_string() || (*f != "float" && *f != "base64"))
      bad("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    r.base64 = *f == "base64";
  }
  return r;
}

runtime::SamplerConfig request_sampler(const runtime::SamplerConfig& defaults, const CompletionRequest& r) {
  runtime::SamplerConfig s = defaults;
  if (r.temperature) s.temperature = *r.temperature;
  if (r.top_p) s.top_p = *r.top_p;
  if (r.top_k) s.top_k = *r.top_k;
  if (r.min_p) s.min_p = *r.min_p;
  if (r.repetition_penalty) s.repetition_penalty = *r.repetition_penalty;
  if (r.presence_penalty) s.presence_penalty = *r.presence_penalty;
  if (r.frequency_penalty) s.frequency_penalty = *r.frequency_penalty;
  if (r.typical_p) s.typical_p = *r.typical_p;
  if (r.top_n_sigma) s.top_n_sigma = *r.top_n_sigma;
  if (r.xtc_probability) s.xtc_probability = *r.xtc_probability;
  if (r.xtc_threshold) s.xtc_threshold = *r.xtc_threshold;
  if (r.dry_multiplier) s.dry_multiplier = *r.dry_multiplier;
  if (r.dry_base) s.dry_base = *r.dry_base;
  if (r.dry_allowed_length) s.dry_allowed_length = *r.dry_allowed_length;
  if (r.dry_penalty_last_n) s.dry_range = std::max(*r.dry_penalty_last_n, 0);  // llama.cpp's -1: all
  s.logit_bias = r.logit_bias;
  if (r.seed) s.seed = *r.seed;
  try {
    s.validate();
  } catch (const Error& e) {
    throw ApiError(400, e.message());
  }
  return s;
}

}  // namespace exq::server
