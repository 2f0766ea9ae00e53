// The response half of the OpenAI API (openai.h): error, completion, chunk and usage bodies,
// logprobs, embeddings, SSE framing and StopMatcher; request parsing stays in openai.cpp.
#include "server/openai.h"

#include <algorithm>

namespace exq::server {
namespace {
using nlohmann::json;
}  // namespace

json error_body(const std::string& message, const std::string& type, const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}}}};
}

namespace {

// A vector's float32 bytes (little-endian, as x86 and ARM hold them) in standard base64.
std::string base64_of_floats(const std::vector<float>& v) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* b = reinterpret_cast<const unsigned char*>(v.data());
  const size_t n = v.size() * sizeof(float);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t x = static_cast<uint32_t>(b[i]) << 16 | (i + 1 < n ? static_cast<uint32_t>(b[i + 1]) << 8 : 0) |
                       (i + 2 < n ? b[i + 2] : 0);
    out += kDigits[x >> 18 & 63];
    out += kDigits[x >> 12 & 63];
    out += i + 1 < n ? kDigits[x >> 6 & 63] : '=';
    out += i + 2 < n ? kDigits[x & 63] : '=';
  }
  return out;
}

}  // namespace

json embeddings_body(const std::vector<std::vector<float>>& vectors, bool base64, const std::string& model,
                     int64_t prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i)
    data.push_back({{"object", "embedding"},
                    {"index", i},
                    {"embedding", base64 ? json(base64_of_floats(vectors[i])) : json(vectors[i])}});
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

namespace {

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"completion_tokens_details",
           {{"accepted_prediction_tokens", u.accepted_draft_tokens},
            {"rejected_prediction_tokens", u.rejected_draft_tokens}}}};
}

json reason(const char* finish_reason) { return finish_reason ? json(finish_reason) : json(nullptr); }

// What every response and chunk starts with; `object`: chat.completion, .chunk or text_completion.
json envelope(const char* object, const ResponseMeta& meta, json choices) {
  return {{"id", meta.id},
          {"object", object},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", std::move(choices)}};
}

const char* chunk_object(Endpoint endpoint) {
  return endpoint == Endpoint::ChatCompletions ? "chat.completion.chunk" : "text_completion";
}

}  // namespace

json completion_body(Endpoint endpoint, const ResponseMeta& meta, const std::vector<Choice>& choices,
                     const Usage& usage) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice = {{"index", i}, {"logprobs", c.logprobs}, {"finish_reason", reason(c.finish_reason)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      if (!c.tool_calls.is_null()) {
        choice["message"]["tool_calls"] = c.tool_calls;
        if (c.text.empty()) choice["message"]["content"] = nullptr;
      }
    } else
      choice["text"] = c.text;
    list.push_back(std::move(choice));
  }
  json body = envelope(chat ? "chat.completion" : "text_completion", meta, std::move(list));
  body["usage"] = usage_json(usage);
  return body;
}

json chunk_body(Endpoint endpoint, const ResponseMeta& meta, const std::string& text,
                const char* finish_reason, bool first, json logprobs, int index) {
  json choice = {{"index", index}, {"logprobs", std::move(logprobs)}, {"finish_reason", reason(finish_reason)}};
  const bool chat = endpoint == Endpoint::ChatCompletions;
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return envelope(chunk_object(endpoint), meta, json::array({choice}));
}

json tool_calls_chunk(const ResponseMeta& meta, const json& tool_calls, bool first, int index) {
  json delta = {{"tool_calls", tool_calls}};
  if (first) delta["role"] = "assistant";
  json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullptr}, {"delta", std::move(delta)}};
  return envelope(chunk_object(Endpoint::ChatCompletions), meta, json::array({choice}));
}

json usage_chunk(Endpoint endpoint, const ResponseMeta& meta, const Usage& usage) {
  json body = envelope(chunk_object(endpoint), meta, json::array());
  body["usage"] = usage_json(usage);
  return body;
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (const char c : s) b.push_back(static_cast<unsigned char>(c));
  return b;
}

}  // namespace

json logprobs_json(Endpoint endpoint, std::span<const LogprobEntry> entries, const TokenText& text) {
  if (endpoint == Endpoint::ChatCompletions) {
    json content = json::array();
    for (const LogprobEntry& e : entries) {
      const std::string t = text(e.id, false);
      json top = json::array();
      for (const auto& [id, lp] : e.top) {
        const std::string s = text(id, false);
        top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_of(s)}});
      }
      content.push_back({{"token", t},
                         {"logprob", e.logprob ? json(*e.logprob) : json(nullptr)},
                         {"bytes", bytes_of(t)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(text(e.id, false));
    lps.push_back(e.logprob ? json(*e.logprob) : json(nullptr));
    if (!e.logprob) {
      tops.push_back(nullptr);
    } else {
      json top = json::object();
      for (const auto& [id, lp] : e.top) top.emplace(text(id, false), lp);  // the likelier of equal strings
      tops.push_back(std::move(top));
    }
    offsets.push_back(e.offset);
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

void LogprobTrack::append(LogprobEntry e) {
  e.offset = bytes_;
  bytes_ += text_(e.id, true).size();
  entries_.push_back(std::move(e));
}

void LogprobTrack::add_prompt(std::span<const int32_t> ids, std::span<const runtime::TokenLogprob> scored) {
  for (size_t i = 0; i < ids.size(); ++i) {
    LogprobEntry e;
    e.id = ids[i];
    if (i > 0 && i - 1 < scored.size()) {
      e.logprob = scored[i - 1].logprob;
      e.top = scored[i - 1].top;
    }
    e.prompt = true;
    append(std::move(e));
  }
  answer_start_ = bytes_;
}

void LogprobTrack::add(const runtime::TokenLogprob& lp) {
  LogprobEntry e;
  e.id = lp.id;
  e.logprob = lp.logprob;
  e.top = lp.top;
  append(std::move(e));
}

std::span<const LogprobEntry> LogprobTrack::take(size_t end) {
  const size_t from = taken_;
  while (taken_ < entries_.size() &&
         (entries_[taken_].prompt || end == SIZE_MAX || entries_[taken_].offset - answer_start_ < end))
    ++taken_;
  return std::span<const LogprobEntry>(entries_).subspan(from, taken_ - from);
}

std::string sse_event(const json& body) {
  return "data: " + body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string StopMatcher::push(std::string_view piece) {
  if (stopped_) return {};
  held_.append(piece);
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Keep the longest tail that is the start of a stop string: a match can only begin there.
  size_t keep = 0;
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k)
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::finish() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

}  // namespace exq::server
