// OpenAI tool calling for /v1/chat/completions (`tools`, `tool_choice`, `parallel_tool_calls`,
// assistant `tool_calls` and `tool` messages). How a model learns of the tools and how it calls
// them follows its chat template:
// - Hermes: the template renders `tools` and shows calls as <tool_call>{"name", "arguments"}
//   </tool_call> (Qwen 2.5 and 3, Hermes);
// - Llama3: the template renders `tools` and a call is a bare JSON {"name", "parameters"}
//   (Llama 3.1+, after <|python_tag|> or alone);
// - Mistral: [TOOL_CALLS] then a JSON array of {"name", "arguments"};
// - Generic: any other template: exq lists the tools in the system message and asks for
//   {"tool_calls": [{"name", "arguments"}]} (tool results come back as user turns).
// tool_choice "required" or a named function makes the answer a call with a grammar (the
// arguments valid under the tool's JSON schema); "auto" lets the model choose and parses what
// it wrote; "none" hides the tools.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace exq::server {

enum class ToolFormat { Hermes, Llama3, Mistral, Generic };
ToolFormat tool_format(std::string_view chat_template);
const char* tool_format_name(ToolFormat f);

struct ToolSpec {
  std::string name, description;
  nlohmann::ordered_json parameters;  // JSON schema of the arguments, in the request's key order
};

struct ToolRequest {
  enum class Choice { Auto, Required, Named };
  std::vector<ToolSpec> tools;          // empty: no tools (none sent, or tool_choice "none")
  nlohmann::ordered_json tools_json;    // the tools as sent, for a template that renders them
  Choice choice = Choice::Auto;
  std::string named;                    // Choice::Named: the function's name
  // parallel_tool_calls: more than one call per answer. Off unless asked, as in llama.cpp's
  // server (OpenAI's default is on): a small model asked for calls tends to repeat one.
  bool parallel = false;
  bool active() const { return !tools.empty(); }
};

// The body's tools, tool_choice and parallel_tool_calls (`raw`: the body's text, for key order).
// Throws ApiError (400) naming the field for a malformed tool or choice.
ToolRequest parse_tools(const nlohmann::json& body, std::string_view raw);

// Messages as the template takes them (parse_messages' output): for a template that renders
// tools they pass as they are (a call's arguments as a JSON object, as Hugging Face templates
// expect); for Generic, calls and tool results become text and the tools join the system turn.
nlohmann::json tool_messages(const nlohmann::json& messages, const ToolRequest& tools, ToolFormat format);

// GBNF for an answer that is one call (or several, with parallel_tool_calls) in `format`, of the
// named function or of any tool. Throws ApiError (400, "tools") when a parameter schema holds a
// keyword the grammar cannot express.
std::string tool_call_grammar(const ToolRequest& tools, ToolFormat format);

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text of an object
};
struct ParsedAnswer {
  std::string content;  // the text beside the calls (all of it when there is no call)
  std::vector<ToolCall> calls;
};
// The calls an answer makes; none unless every call in it is well-formed JSON naming a tool of
// the request.
ParsedAnswer parse_tool_calls(std::string_view answer, ToolFormat format, const ToolRequest& tools);

// A response message's tool_calls: [{"id": "<id_base>_<i>", "type": "function", "function":
// {"name", "arguments"}}] ("index" too in a stream's delta).
nlohmann::json tool_calls_json(const std::vector<ToolCall>& calls, const std::string& id_base, bool delta);

// Streaming with tools: passes on text that cannot belong to a call and holds back everything
// from where one may begin (a marker, or a leading '{' / '[' in the formats whose calls are bare
// JSON), so a call never streams as content.
class ToolTextGate {
 public:
  explicit ToolTextGate(ToolFormat format) : format_(format) {}
  std::string push(std::string_view piece);  // text to send now
  const std::string& answer() const { return all_; }
  bool holding() const { return held_; }
  // What is still to send as content once the answer (`parsed`, from answer()) is whole: the
  // held text when it made no call, else the text after the calls.
  std::string unsent_content(const ParsedAnswer& parsed) const;

 private:
  ToolFormat format_;
  std::string all_;
  size_t sent_ = 0;
  bool held_ = false;
};

}  // namespace exq::server
