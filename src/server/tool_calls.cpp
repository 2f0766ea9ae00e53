#include "server/tool_calls.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "grammar/json_schema.h"
#include "server/openai.h"

namespace exq::server {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

constexpr std::string_view kHermesOpen = "<tool_call>", kHermesClose = "</tool_call>";
constexpr std::string_view kMistralMarker = "[TOOL_CALLS]", kPythonTag = "<|python_tag|>";

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// The key a format's calls carry their arguments under.
const char* args_key(ToolFormat f) { return f == ToolFormat::Llama3 ? "parameters" : "arguments"; }

// A call object of the answer: {"name": a tool's, args: an object (or a string holding one)}.
std::optional<ToolCall> call_of(const ordered_json& c, ToolFormat f, const ToolRequest& tools) {
  if (!c.is_object() || !c.contains("name") || !c["name"].is_string()) return std::nullopt;
  const std::string name = c["name"].get<std::string>();
  if (std::none_of(tools.tools.begin(), tools.tools.end(), [&](const ToolSpec& t) { return t.name == name; }))
    return std::nullopt;
  const char* key = c.contains(args_key(f)) ? args_key(f) : "arguments";
  if (!c.contains(key)) return std::nullopt;
  ordered_json args = c[key];
  if (args.is_string()) args = ordered_json::parse(args.get<std::string>(), nullptr, false);
  if (!args.is_object()) return std::nullopt;
  return ToolCall{name, args.dump()};
}

// Calls from a JSON array (or one object when `single`); nullopt when any is not a call.
std::optional<std::vector<ToolCall>> calls_of(std::string_view text, ToolFormat f, const ToolRequest& tools) {
  const ordered_json j = ordered_json::parse(text, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  std::vector<ToolCall> out;
  const ordered_json list = j.is_array() ? j : ordered_json::array({j});
  for (const ordered_json& c : list) {
    std::optional<ToolCall> call = call_of(c, f, tools);
    if (!call) return std::nullopt;
    out.push_back(std::move(*call));
  }
  if (out.empty()) return std::nullopt;
  return out;
}

ParsedAnswer parse_hermes(std::string_view answer, const ToolRequest& tools) {
  ParsedAnswer p;
  size_t at = answer.find(kHermesOpen);
  if (at == std::string_view::npos) return {std::string(answer), {}};
  std::string content(trim(answer.substr(0, at)));
  while (at != std::string_view::npos) {
    const size_t from = at + kHermesOpen.size();
    const size_t end = answer.find(kHermesClose, from);
    std::optional<std::vector<ToolCall>> c =
        calls_of(trim(answer.substr(from, end == std::string_view::npos ? end : end - from)), ToolFormat::Hermes, tools);
    if (!c || c->size() != 1) return {std::string(answer), {}};
    p.calls.push_back(std::move(c->front()));
    if (end == std::string_view::npos) break;  // the answer ended inside its last call
    const size_t after = end + kHermesClose.size();
    at = answer.find(kHermesOpen, after);
    const std::string_view between = trim(answer.substr(after, at == std::string_view::npos ? at : at - after));
    if (at != std::string_view::npos && !between.empty()) return {std::string(answer), {}};
    if (at == std::string_view::npos && !between.empty()) {
      if (!content.empty()) content.push_back('\n');
      content.append(between);
    }
  }
  p.content = std::move(content);
  return p;
}

}  // namespace

ToolFormat tool_format(std::string_view t) {
  const bool renders_tools = t.find("tools") != std::string_view::npos;
  if (!renders_tools) return ToolFormat::Generic;
  if (t.find(kHermesOpen) != std::string_view::npos) return ToolFormat::Hermes;
  if (t.find(kMistralMarker) != std::string_view::npos) return ToolFormat::Mistral;
  if (t.find(kPythonTag) != std::string_view::npos || t.find("ipython") != std::string_view::npos)
    return ToolFormat::Llama3;
  return ToolFormat::Generic;
}

const char* tool_format_name(ToolFormat f) {
  switch (f) {
    case ToolFormat::Hermes: return "hermes";
    case ToolFormat::Llama3: return "llama3";
    case ToolFormat::Mistral: return "mistral";
    case ToolFormat::Generic: return "generic";
  }
  return "generic";
}

ToolRequest parse_tools(const json& body, std::string_view raw) {
  ToolRequest r;
  const auto t = body.find("tools");
  if (t == body.end() || t->is_null()) {
    if (body.contains("tool_choice") && !body["tool_choice"].is_null() && body["tool_choice"] != "none" &&
        body["tool_choice"] != "auto")
      bad("tool_choice", "'tool_choice' asks for a tool, but the request has no tools");
    return r;
  }
  if (!t->is_array()) bad("tools", "'tools' must be an array");
  if (t->empty()) return r;
  // The tools again with their keys in the request's order (schemas, and what the template shows).
  ordered_json ordered;
  if (!raw.empty()) {
    const ordered_json b = ordered_json::parse(raw, nullptr, false);
    if (b.is_object() && b.contains("tools")) ordered = b["tools"];
  }
  if (!ordered.is_array() || ordered.size() != t->size()) ordered = ordered_json::parse(t->dump());
  for (size_t i = 0; i < ordered.size(); ++i) {
    const std::string at = fmt::format("tools[{}]", i);
    const ordered_json& tool = ordered[i];
    if (!tool.is_object() || tool.value("type", "") != "function")
      bad(at, "every tool must be {\"type\": \"function\", \"function\": {...}}");
    if (!tool.contains("function") || !tool["function"].is_object()) bad(at + ".function", "a tool needs a 'function' object");
    const ordered_json& f = tool["function"];
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty())
      bad(at + ".function.name", "a function needs a name");
    ToolSpec spec;
    spec.name = f["name"].get<std::string>();
    for (const ToolSpec& s : r.tools)
      if (s.name == spec.name) bad(at + ".function.name", fmt::format("two tools are named '{}'", spec.name));
    if (f.contains("description")) {
      if (!f["description"].is_string()) bad(at + ".function.description", "a description must be a string");
      spec.description = f["description"].get<std::string>();
    }
    spec.parameters = f.contains("parameters") ? f["parameters"] : ordered_json{{"type", "object"}};
    if (!spec.parameters.is_object()) bad(at + ".function.parameters", "parameters must be a JSON schema object");
    r.tools.push_back(std::move(spec));
  }
  r.tools_json = ordered;
  if (const auto p = body.find("parallel_tool_calls"); p != body.end() && !p->is_null()) {
    if (!p->is_boolean()) bad("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
    r.parallel = p->get<bool>();
  }
  const auto c = body.find("tool_choice");
  if (c == body.end() || c->is_null() || *c == "auto") return r;
  if (*c == "none") {
    r.tools.clear();
    r.tools_json = ordered_json();
    return r;
  }
  if (*c == "required") {
    r.choice = ToolRequest::Choice::Required;
    return r;
  }
  const std::string what =
      "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}";
  if (!c->is_object() || c->value("type", "") != "function" || !c->contains("function") ||
      !(*c)["function"].is_object() || !(*c)["function"].contains("name") || !(*c)["function"]["name"].is_string())
    bad("tool_choice", what);
  r.choice = ToolRequest::Choice::Named;
  r.named = (*c)["function"]["name"].get<std::string>();
  if (std::none_of(r.tools.begin(), r.tools.end(), [&](const ToolSpec& s) { return s.name == r.named; }))
    bad("tool_choice", fmt::format("tool_choice names '{}', which is not among the tools", r.named));
  return r;
}

json tool_messages(const json& messages, const ToolRequest& tools, ToolFormat format) {
  json out = json::array();
  const bool generic = format == ToolFormat::Generic;
  for (const json& m : messages) {
    json msg = m;
    const std::string role = m.value("role", "");
    if (m.contains("tool_calls")) {
      json calls = json::array();
      for (const json& c : m["tool_calls"]) {
        json call = c;
        json& args = call["function"]["arguments"];
        if (args.is_string()) {
          json parsed = json::parse(args.get<std::string>(), nullptr, false);
          if (!parsed.is_discarded()) args = std::move(parsed);
        }
        calls.push_back(std::move(call));
      }
      if (generic) {
        ordered_json list = ordered_json::array();
        for (const json& c : calls)
          list.push_back({{"name", c["function"]["name"]}, {"arguments", ordered_json::parse(c["function"]["arguments"].dump())}});
        const std::string text = ordered_json{{"tool_calls", list}}.dump();
        const std::string content = msg.value("content", "");
        msg = {{"role", "assistant"}, {"content", content.empty() ? text : content + "\n" + text}};
      } else {
        msg["tool_calls"] = std::move(calls);
      }
    } else if (role == "tool" && generic) {
      const std::string id = m.value("tool_call_id", "");
      msg = {{"role", "user"},
             {"content", fmt::format("Result of tool call{}:\n{}", id.empty() ? "" : " " + id, m.value("content", ""))}};
    }
    out.push_back(std::move(msg));
  }
  if (!generic || !tools.active()) return out;

  std::string text =
      "You can call tools. Each is given as a JSON object with its name, what it does and the JSON schema of its "
      "arguments:\n";
  for (const ToolSpec& t : tools.tools)
    text += ordered_json{{"name", t.name}, {"description", t.description}, {"parameters", t.parameters}}.dump() + "\n";
  text +=
      "To call tools, answer with only a JSON object of this form: {\"tool_calls\": [{\"name\": \"<tool name>\", "
      "\"arguments\": {<the arguments>}}]}. Tool results come back in a user message. When no tool is needed, "
      "answer in plain text.";
  if (!out.empty() && out[0].value("role", "") == "system") {
    const std::string sys = out[0].value("content", "");
    out[0]["content"] = sys.empty() ? text : sys + "\n\n" + text;
  } else {
    out.insert(out.begin(), json{{"role", "system"}, {"content", text}});
  }
  return out;
}

std::string tool_call_grammar(const ToolRequest& tools, ToolFormat format) {
  ordered_json branches = ordered_json::array();
  for (const ToolSpec& t : tools.tools) {
    if (tools.choice == ToolRequest::Choice::Named && t.name != tools.named) continue;
    ordered_json props = ordered_json::object();
    props["name"] = {{"const", t.name}};
    props[args_key(format)] = t.parameters;
    branches.push_back({{"type", "object"},
                        {"properties", props},
                        {"required", {"name", args_key(format)}},
                        {"additionalProperties", false}});
  }
  const ordered_json call = branches.size() == 1 ? branches[0] : ordered_json{{"anyOf", branches}};
  ordered_json list = {{"type", "array"}, {"items", call}, {"minItems", 1}};
  if (!tools.parallel) list["maxItems"] = 1;
  ordered_json schema;
  switch (format) {
    case ToolFormat::Hermes:
    case ToolFormat::Llama3: schema = call; break;
    case ToolFormat::Mistral: schema = list; break;
    case ToolFormat::Generic:
      schema = {{"type", "object"},
                {"properties", {{"tool_calls", list}}},
                {"required", {"tool_calls"}},
                {"additionalProperties", false}};
      break;
  }
  std::string gbnf;
  try {
    gbnf = grammar::json_schema_to_gbnf(schema);
  } catch (const Error& e) {
    bad("tools", fmt::format("a tool call cannot be required of these tools: {}", e.message()));
  }
  if (format != ToolFormat::Hermes) return gbnf;
  // Hermes: the call between its tags, repeated when calls may come in parallel; the schema's
  // rules stay as generated, a new start rule wraps them (Grammar::parse's root "exq-tools").
  gbnf += "\nexq-tool-call ::= \"<tool_call>\\n\" root \"\\n</tool_call>\"\n";
  gbnf += tools.parallel ? "exq-tools ::= exq-tool-call (\"\\n\" exq-tool-call)*\n" : "exq-tools ::= exq-tool-call\n";
  return gbnf;
}

ParsedAnswer parse_tool_calls(std::string_view answer, ToolFormat format, const ToolRequest& tools) {
  if (!tools.active()) return {std::string(answer), {}};
  const ParsedAnswer none{std::string(answer), {}};
  switch (format) {
    case ToolFormat::Hermes: return parse_hermes(answer, tools);
    case ToolFormat::Mistral: {
      const size_t at = answer.find(kMistralMarker);
      const std::string_view calls =
          trim(at == std::string_view::npos ? answer : answer.substr(at + kMistralMarker.size()));
      if (calls.empty() || calls.front() != '[') return none;
      auto c = calls_of(calls, format, tools);
      if (!c) return none;
      return {std::string(trim(at == std::string_view::npos ? std::string_view() : answer.substr(0, at))), *c};
    }
    case ToolFormat::Llama3: {
      std::string_view text = trim(answer);
      if (text.substr(0, kPythonTag.size()) == kPythonTag) text = trim(text.substr(kPythonTag.size()));
      if (text.empty() || text.front() != '{') return none;
      auto c = calls_of(text, format, tools);
      if (!c) return none;
      return {std::string(), *c};
    }
    case ToolFormat::Generic: {
      const std::string_view text = trim(answer);
      if (text.empty() || text.front() != '{') return none;
      const ordered_json j = ordered_json::parse(text, nullptr, false);
      if (!j.is_object() || !j.contains("tool_calls") || !j["tool_calls"].is_array()) return none;
      auto c = calls_of(j["tool_calls"].dump(), format, tools);
      if (!c) return none;
      return {std::string(), *c};
    }
  }
  return none;
}

json tool_calls_json(const std::vector<ToolCall>& calls, const std::string& id_base, bool delta) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json c = {{"id", fmt::format("{}_{}", id_base, i)},
              {"type", "function"},
              {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (delta) c["index"] = i;
    out.push_back(std::move(c));
  }
  return out;
}

std::string ToolTextGate::push(std::string_view piece) {
  all_.append(piece);
  if (held_) return {};
  size_t safe = all_.size();
  if (format_ == ToolFormat::Hermes || format_ == ToolFormat::Mistral) {
    const std::string_view marker = format_ == ToolFormat::Hermes ? kHermesOpen : kMistralMarker;
    const size_t at = all_.find(marker, sent_ > marker.size() ? sent_ - marker.size() : 0);
    if (at != std::string::npos) {
      held_ = true;
      safe = at;
    } else {
      // Hold a tail that may be the marker's beginning.
      for (size_t k = std::min(marker.size() - 1, all_.size()); k > 0; --k)
        if (std::string_view(all_).substr(all_.size() - k) == marker.substr(0, k)) {
          safe = all_.size() - k;
          break;
        }
    }
  }
  // A call as bare JSON comes first: hold while the answer is blank or starts with one.
  if (!held_ && sent_ == 0 && format_ != ToolFormat::Hermes) {
    const size_t first = all_.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) return {};
    const char c = all_[first];
    if (c == '{' || (format_ == ToolFormat::Mistral && c == '[')) {
      held_ = true;
      return {};
    }
  }
  std::string out = all_.substr(sent_, safe > sent_ ? safe - sent_ : 0);
  sent_ = std::max(sent_, safe);
  return out;
}

std::string ToolTextGate::unsent_content(const ParsedAnswer& parsed) const {
  if (parsed.calls.empty()) return all_.substr(sent_);
  // The content is the sent text (trimmed), then a newline and the text after the calls.
  const std::string_view sent = trim(std::string_view(all_).substr(0, sent_));
  if (parsed.content.size() <= sent.size() || std::string_view(parsed.content).substr(0, sent.size()) != sent) return {};
  std::string rest = parsed.content.substr(sent.size());
  if (!sent.empty() && !rest.empty() && rest.front() == '\n') rest.erase(0, 1);
  return rest;
}

}  // namespace exq::server
