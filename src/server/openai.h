// The OpenAI API's request and response bodies for `exq serve`, without sockets: a
// /v1/completions or /v1/chat/completions body parsed into one CompletionRequest (or an ApiError
// naming the field), the sampler settings it asks for, response and stream-chunk bodies, error
// bodies, and StopMatcher, which ends streamed text at a stop string without ever sending a
// piece of it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/logprobs.h"
#include "runtime/sampler.h"
#include "server/tool_calls.h"

namespace exq::server {

// A request the server refuses: HTTP status, OpenAI error type and the parameter at fault.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {},
           std::string type = "invalid_request_error")
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string type_, param_;
};

enum class Endpoint { Completions, ChatCompletions };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string prompt;                         // completions
  std::vector<int32_t> prompt_ids;            // completions: a prompt of token ids (run as sent)
  // chat: [{role, content (string)}]; an assistant turn may add tool_calls (its content then may
  // be empty), a "tool" turn tool_call_id.
  nlohmann::json messages = nlohmann::json::array();
  ToolRequest tools;  // chat: tools, tool_choice, parallel_tool_calls (tool_calls.h)
  std::optional<int64_t> max_tokens;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<float> typical_p, top_n_sigma, xtc_probability, xtc_threshold;  // llama.cpp's fields
  std::optional<float> dry_multiplier, dry_base;
  std::optional<int> dry_allowed_length, dry_penalty_last_n;
  std::optional<std::vector<std::string>> dry_sequence_breakers;  // strings; the server makes them ids
  std::vector<runtime::LogitBias> logit_bias;  // {"id": bias} (OpenAI) or [[id, bias]] (llama.cpp)
  std::optional<int> top_k;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool cache_prompt = true;    // llama.cpp's field: may reuse the context the last request left
  // OpenAI's predicted outputs ({"type": "content", "content": text or text parts}): text the
  // answer is expected to repeat, used for speculative drafts.
  std::optional<std::string> prediction;
  // >= 0: each answer token's log-probability with this many alternatives (completions'
  // `logprobs` N; chat's `top_logprobs` when `logprobs` is true).
  int logprobs = -1;
  bool echo = false;  // completions: the prompt comes back before the answer (and its logprobs)
  int n = 1;          // choices, generated one after another (seed + i for choice i)
  // GBNF the answer must follow, from response_format json_object / json_schema or llama.cpp's
  // `grammar` / `json_schema` (grammar_param names which); empty: free text.
  std::string grammar;
  std::string grammar_param;
};

inline constexpr int kMaxChoices = 16;  // the most choices (n) a request may ask

// Parses a request body; throws ApiError (400) for a missing or mistyped field and for
// features exq does not have (functions, echo when streaming, more than one prompt, best_of, a
// JSON schema keyword the grammar cannot express).
// Fields the server does not use (user, metadata, ...) are ignored. `raw`: the body's text, if
// at hand, for a JSON schema's property order (nlohmann::json sorts keys).
CompletionRequest parse_request(const nlohmann::json& body, Endpoint endpoint, std::string_view raw = {});

// llama.cpp's server routes beside OpenAI's: POST /tokenize {"content", "add_special" (false),
// "with_pieces" (false)} and POST /detokenize {"tokens": [ids]}. ApiError (400) naming the field
// for a missing or mistyped one and, for /detokenize, an id outside [0, vocab).
struct TokenizeRequest {
  std::string content;
  bool add_special = false;  // the tokenizer's post-processor (e.g. a BOS token)
  bool with_pieces = false;  // each id with its text
};
TokenizeRequest parse_tokenize(const nlohmann::json& body);
std::vector<int32_t> parse_detokenize(const nlohmann::json& body, int64_t vocab);
// ApiError (400, naming `param`) for a token id outside [0, vocab).
void check_token_id(int64_t id, int64_t vocab, const char* param);

// OpenAI's POST /v1/embeddings: `input` a string, a list of strings, a list of token ids or a
// list of such lists; `dimensions` (1 .. width; 0: absent); `encoding_format` "float" or
// "base64". ApiError (400) naming the field for a missing or mistyped one, an id outside
// [0, vocab) or dimensions out of range.
struct EmbeddingRequest {
  struct Input {
    std::optional<std::string> text;  // to tokenize with the model's special tokens; else `ids`
    std::vector<int32_t> ids;
  };
  std::vector<Input> inputs;
  int64_t dimensions = 0;
  bool base64 = false;
};
EmbeddingRequest parse_embeddings(const nlohmann::json& body, int64_t vocab, int64_t width);

// The model's defaults with the request's fields over them; ApiError for values out of range.
runtime::SamplerConfig request_sampler(const runtime::SamplerConfig& defaults,
                                       const CompletionRequest& request);

// /v1/embeddings' answer: {"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
// "model", "usage"}, each embedding a list of floats or, with `base64`, its float32 bytes
// (little-endian) in standard base64.
nlohmann::json embeddings_body(const std::vector<std::vector<float>>& vectors, bool base64, const std::string& model,
                               int64_t prompt_tokens);

// {"error": {"message", "type", "param", "code"}}
nlohmann::json error_body(const std::string& message, const std::string& type = "invalid_request_error",
                          const std::string& param = {});

// What a response names besides its text.
struct ResponseMeta {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
};

// A response's token counts: "usage", with prompt_tokens_details.cached_tokens (OpenAI's name
// for prompt tokens that did not run again) and completion_tokens_details: the speculative
// guesses the model confirmed (accepted_prediction_tokens) and those it did not
// (rejected_prediction_tokens), OpenAI's predicted-output counts.
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t accepted_draft_tokens = 0;
  int64_t rejected_draft_tokens = 0;
};

// One choice of a whole response: finish_reason "stop" (end of sequence or a stop string) or
// "length"; `logprobs` the choice's (null: not asked).
struct Choice {
  std::string text;
  const char* finish_reason = nullptr;
  nlohmann::json logprobs = nullptr;
  nlohmann::json tool_calls = nullptr;  // chat: the message's tool_calls (its content null when empty)
};
// The whole response, choice i with index i.
nlohmann::json completion_body(Endpoint endpoint, const ResponseMeta& meta, const std::vector<Choice>& choices,
                               const Usage& usage);
// One streamed chunk of choice `index`: `text` as the delta (chat: the choice's first chunk also
// carries the role), and finish_reason on its last one (null before).
// A chat stream chunk of choice `index` whose delta carries tool calls (tool_calls_json with
// delta: each with its index), the role too on the choice's first chunk.
nlohmann::json tool_calls_chunk(const ResponseMeta& meta, const nlohmann::json& tool_calls, bool first, int index = 0);
nlohmann::json chunk_body(Endpoint endpoint, const ResponseMeta& meta, const std::string& text,
                          const char* finish_reason, bool first, nlohmann::json logprobs = nullptr, int index = 0);

// A token of a response's logprobs: its log-probability (none for the echoed prompt's first
// token) and alternatives, and where its text starts (bytes) in the response's text.
struct LogprobEntry {
  int32_t id = -1;
  std::optional<float> logprob;
  std::vector<std::pair<int32_t, float>> top;
  size_t offset = 0;
  bool prompt = false;  // an echoed prompt token
};

// A token's text: with special tokens as their names (the `token` field) or dropped (how much
// of the answer's text it is).
using TokenText = std::function<std::string(int32_t id, bool skip_special)>;

// A choice's `logprobs` object for entries in order. Chat: {"content": [{token, logprob, bytes,
// top_logprobs: [{token, logprob, bytes}]}]}; completions: {tokens, token_logprobs,
// top_logprobs: [{token: logprob}], text_offset}. Tokens that are not valid UTF-8 alone (a
// piece of a character) keep their bytes in `bytes`; the strings get U+FFFD when sent.
nlohmann::json logprobs_json(Endpoint endpoint, std::span<const LogprobEntry> entries, const TokenText& text);

// The logprobs of one response as generation goes: the echoed prompt's tokens first, then the
// answer's, each at the byte offset where its text starts; take() hands out those a text of
// `end` bytes of answer covers (so a token cut off by a stop string is never sent).
class LogprobTrack {
 public:
  explicit LogprobTrack(TokenText text) : text_(std::move(text)) {}
  // The echoed prompt: ids[0] without a logprob, then scored[i] for ids[i + 1].
  void add_prompt(std::span<const int32_t> ids, std::span<const runtime::TokenLogprob> scored);
  void add(const runtime::TokenLogprob& lp);  // an answer token, in order
  // Entries not yet taken: all prompt ones, and answer ones starting before byte `end` of the
  // answer's text (SIZE_MAX: all).
  std::span<const LogprobEntry> take(size_t end);

 private:
  void append(LogprobEntry e);  // at the text's current end, which its text extends

  TokenText text_;
  std::vector<LogprobEntry> entries_;
  size_t taken_ = 0;
  size_t bytes_ = 0;         // text so far (prompt pieces, then answer pieces)
  size_t answer_start_ = 0;  // bytes_ when the answer began
};
// The usage chunk of stream_options.include_usage (no choices).
nlohmann::json usage_chunk(Endpoint endpoint, const ResponseMeta& meta, const Usage& usage);
// "data: <json>\n\n" (invalid UTF-8 replaced: the text is the model's).
std::string sse_event(const nlohmann::json& body);

// Ends a text stream at the first stop string: push() returns what may be sent now, holding
// back a tail that could still grow into a stop string; once one appears, the text before it
// has been returned and stopped() is true (the stop string itself is never returned).
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  std::string push(std::string_view piece);
  std::string finish();  // the held-back tail, at the end of generation
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace exq::server
