// Tool calling without a model: the request's tools and tool_choice, the format a template
// implies, the messages a template is given, the grammar of a required call (sentences it takes
// and refuses), calls parsed out of answers in each format, and the streaming gate.
#include "server/tool_calls.h"

#include <gtest/gtest.h>

#include "../chat/real_templates.h"
#include "chat/template.h"
#include "grammar/grammar.h"
#include "server/openai.h"

namespace exq::server {
namespace {

using nlohmann::json;

const char* kWeatherTools = R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
   "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                  "required": ["city"]}}},
  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
])";

ToolRequest tools_of(const std::string& extra = "") {
  const std::string raw = std::string(R"({"tools": )") + kWeatherTools + extra + "}";
  return parse_tools(json::parse(raw), raw);
}

std::string refusal(const json& body) {
  try {
    parse_request(body, Endpoint::ChatCompletions, body.dump());
  } catch (const ApiError& e) {
    return e.param() + ": " + e.what();
  }
  return "";
}

TEST(ToolCalls, ParsesToolsAndChoices) {
  const ToolRequest t = tools_of();
  ASSERT_EQ(t.tools.size(), 2u);
  EXPECT_EQ(t.tools[0].name, "get_weather");
  EXPECT_EQ(t.tools[0].description, "Weather of a city");
  // Key order as sent (city before days), for the grammar and the template.
  EXPECT_EQ(t.tools[0].parameters["properties"].begin().key(), "city");
  EXPECT_EQ(t.choice, ToolRequest::Choice::Auto);
  EXPECT_FALSE(t.parallel);  // llama.cpp's default
  EXPECT_EQ(tools_of(R"(, "tool_choice": "required", "parallel_tool_calls": true)").choice,
            ToolRequest::Choice::Required);
  EXPECT_TRUE(tools_of(R"(, "parallel_tool_calls": true)").parallel);
  const ToolRequest named = tools_of(R"(, "tool_choice": {"type": "function", "function": {"name": "get_time"}})");
  EXPECT_EQ(named.choice, ToolRequest::Choice::Named);
  EXPECT_EQ(named.named, "get_time");
  EXPECT_FALSE(tools_of(R"(, "tool_choice": "none")").active());

  const json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  auto with = [&](json extra) {
    json b = {{"messages", msgs}};
    for (auto& [k, v] : extra.items()) b[k] = v;
    return refusal(b);
  };
  EXPECT_EQ(with({{"tools", "x"}}), "tools: 'tools' must be an array");
  EXPECT_EQ(with({{"tools", {{{"type", "code"}}}}}),
            "tools[0]: every tool must be {\"type\": \"function\", \"function\": {...}}");
  EXPECT_EQ(with({{"tools", {{{"type", "function"}, {"function", {{"description", "d"}}}}}}}),
            "tools[0].function.name: a function needs a name");
  EXPECT_EQ(with({{"tools", json::parse(kWeatherTools)}, {"tool_choice", {{"type", "function"}, {"function", {{"name", "nope"}}}}}}),
            "tool_choice: tool_choice names 'nope', which is not among the tools");
  EXPECT_EQ(with({{"tool_choice", "required"}}), "tool_choice: 'tool_choice' asks for a tool, but the request has no tools");
  EXPECT_EQ(with({{"tools", json::parse(kWeatherTools)}, {"tool_choice", 3}}).rfind("tool_choice: 'tool_choice' must be", 0), 0u);
  try {
    parse_request({{"prompt", "a"}, {"tools", json::parse(kWeatherTools)}}, Endpoint::Completions);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "tools");
  }
}

TEST(ToolCalls, MessagesWithCallsAndResults) {
  const json body = json::parse(R"({"messages": [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "rain, 7 C"}]})");
  const CompletionRequest r = parse_request(body, Endpoint::ChatCompletions, body.dump());
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1]["content"], "");
  EXPECT_EQ(r.messages[1]["tool_calls"][0]["function"]["arguments"], "{\"city\": \"Oslo\"}");
  EXPECT_EQ(r.messages[2]["role"], "tool");
  EXPECT_EQ(r.messages[2]["tool_call_id"], "call_1");

  // A template that renders tools gets the arguments as an object; Qwen 2.5's renders them.
  const ToolRequest tools = tools_of();
  const json own = tool_messages(r.messages, tools, ToolFormat::Hermes);
  EXPECT_EQ(own[1]["tool_calls"][0]["function"]["arguments"], json({{"city", "Oslo"}}));
  const chat::Template qwen(chat::test::kQwen2Template);
  const std::string text = chat::render_chat(qwen, nlohmann::ordered_json::parse(own.dump()), true, "", "<|im_end|>",
                                             nlohmann::ordered_json{{"tools", tools.tools_json}});
  EXPECT_NE(text.find("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\""), std::string::npos)
      << text;
  EXPECT_NE(text.find("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("<tool_response>\nrain, 7 C\n</tool_response>"), std::string::npos) << text;

  // Generic: the tools join a system turn; calls and results become text.
  const json gen = tool_messages(r.messages, tools, ToolFormat::Generic);
  ASSERT_EQ(gen.size(), 4u);
  EXPECT_EQ(gen[0]["role"], "system");
  const std::string sys = gen[0]["content"];
  EXPECT_NE(sys.find(R"({"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city")"),
            std::string::npos)
      << sys;
  EXPECT_NE(sys.find(R"({"tool_calls": [{"name": "<tool name>")"), std::string::npos) << sys;
  EXPECT_EQ(gen[2]["content"], R"({"tool_calls":[{"name":"get_weather","arguments":{"city":"Oslo"}}]})");
  EXPECT_EQ(gen[3]["role"], "user");
  EXPECT_EQ(gen[3]["content"], "Result of tool call call_1:\nrain, 7 C");
  // A system turn of the request keeps its text first.
  json with_sys = r.messages;
  with_sys.insert(with_sys.begin(), json{{"role", "system"}, {"content", "Be brief."}});
  EXPECT_EQ(tool_messages(with_sys, tools, ToolFormat::Generic)[0]["content"].get<std::string>().rfind("Be brief.\n\n", 0),
            0u);
  // No tools, no system turn added.
  EXPECT_EQ(tool_messages(r.messages, ToolRequest{}, ToolFormat::Generic)[0]["role"], "user");
}

TEST(ToolCalls, FormatFromTheTemplate) {
  EXPECT_EQ(tool_format(chat::test::kQwen2Template), ToolFormat::Hermes);
  EXPECT_EQ(tool_format(chat::test::kLlama3Template), ToolFormat::Generic);  // renders no tools
  EXPECT_EQ(tool_format("{{ tools }} <|python_tag|>"), ToolFormat::Llama3);
  EXPECT_EQ(tool_format("{{ tools }} [TOOL_CALLS]"), ToolFormat::Mistral);
  EXPECT_EQ(tool_format("{% for m in messages %}{{ m.content }}{% endfor %}"), ToolFormat::Generic);
}

// Sentences of the grammar of a required call, and what it refuses.
bool takes(const std::string& gbnf, ToolFormat f, const std::string& text) {
  auto g = grammar::Grammar::parse(gbnf, f == ToolFormat::Hermes ? "exq-tools" : "root");
  grammar::GrammarMatcher m(g);
  return m.accept(text) && m.complete();
}

TEST(ToolCalls, GrammarOfARequiredCall) {
  ToolRequest t = tools_of(R"(, "tool_choice": "required", "parallel_tool_calls": true)");
  const std::string generic = tool_call_grammar(t, ToolFormat::Generic);
  EXPECT_TRUE(takes(generic, ToolFormat::Generic, R"({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})"));
  EXPECT_TRUE(takes(generic, ToolFormat::Generic,
                    R"({"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}]})"));
  EXPECT_FALSE(takes(generic, ToolFormat::Generic, R"({"tool_calls": []})"));
  EXPECT_FALSE(takes(generic, ToolFormat::Generic, R"({"tool_calls": [{"name": "get_weather", "arguments": {}}]})"));
  EXPECT_FALSE(takes(generic, ToolFormat::Generic, R"({"tool_calls": [{"name": "other", "arguments": {}}]})"));
  EXPECT_FALSE(takes(generic, ToolFormat::Generic, "Sure!"));

  const std::string hermes = tool_call_grammar(t, ToolFormat::Hermes);
  const std::string one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 3}}\n</tool_call>";
  EXPECT_TRUE(takes(hermes, ToolFormat::Hermes, one));
  EXPECT_TRUE(takes(hermes, ToolFormat::Hermes, one + "\n" + one));
  EXPECT_FALSE(takes(hermes, ToolFormat::Hermes, "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"));

  t.parallel = false;
  EXPECT_FALSE(takes(tool_call_grammar(t, ToolFormat::Hermes), ToolFormat::Hermes, one + "\n" + one));
  EXPECT_FALSE(takes(tool_call_grammar(t, ToolFormat::Generic), ToolFormat::Generic,
                     R"({"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_time", "arguments": {}}]})"));
  const std::string llama = tool_call_grammar(t, ToolFormat::Llama3);
  EXPECT_TRUE(takes(llama, ToolFormat::Llama3, R"({"name": "get_time", "parameters": {}})"));
  const std::string mistral = tool_call_grammar(t, ToolFormat::Mistral);
  EXPECT_TRUE(takes(mistral, ToolFormat::Mistral, R"([{"name": "get_time", "arguments": {}}])"));

  // A named function: only its calls.
  const ToolRequest n = tools_of(R"(, "tool_choice": {"type": "function", "function": {"name": "get_time"}})");
  const std::string named = tool_call_grammar(n, ToolFormat::Generic);
  EXPECT_TRUE(takes(named, ToolFormat::Generic, R"({"tool_calls": [{"name": "get_time", "arguments": {}}]})"));
  EXPECT_FALSE(takes(named, ToolFormat::Generic, R"({"tool_calls": [{"name": "get_weather", "arguments": {"city": "a"}}]})"));

  // A schema keyword the grammar cannot hold: a 400 naming the tools.
  const std::string raw = R"({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}}}}], "tool_choice": "required"})";
  try {
    tool_call_grammar(parse_tools(json::parse(raw), raw), ToolFormat::Generic);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "tools");
    EXPECT_NE(std::string(e.what()).find("pattern"), std::string::npos) << e.what();
  }
}

TEST(ToolCalls, ParsesCallsOutOfAnswers) {
  const ToolRequest t = tools_of();
  ParsedAnswer p = parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 2}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
      ToolFormat::Hermes, t);
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.content, "Let me check.");
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(p.calls[0].arguments, R"({"city":"Oslo","days":2})");  // key order kept
  EXPECT_EQ(p.calls[1].arguments, "{}");
  // The answer ended inside its call (eos before the closing tag); arguments as a JSON string.
  p = parse_tool_calls("<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{}\"}", ToolFormat::Hermes, t);
  ASSERT_EQ(p.calls.size(), 1u);
  // Not calls: text stays content.
  for (const char* bad : {"<tool_call>\n{\"name\": \"unknown\", \"arguments\": {}}\n</tool_call>",
                          "<tool_call>\n{not json}\n</tool_call>", "<tool_call>\n{\"name\": \"get_time\"}\n</tool_call>",
                          "no call here"}) {
    p = parse_tool_calls(bad, ToolFormat::Hermes, t);
    EXPECT_TRUE(p.calls.empty()) << bad;
    EXPECT_EQ(p.content, bad);
  }

  p = parse_tool_calls(R"(  {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}]} )", ToolFormat::Generic, t);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.content, "");
  EXPECT_TRUE(parse_tool_calls(R"({"answer": 1})", ToolFormat::Generic, t).calls.empty());
  EXPECT_TRUE(parse_tool_calls("The weather is fine.", ToolFormat::Generic, t).calls.empty());

  p = parse_tool_calls(R"(<|python_tag|>{"name": "get_weather", "parameters": {"city": "Kyiv"}})", ToolFormat::Llama3, t);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].arguments, R"({"city":"Kyiv"})");
  p = parse_tool_calls(R"(Sure. [TOOL_CALLS] [{"name": "get_time", "arguments": {}}])", ToolFormat::Mistral, t);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.content, "Sure.");
  // The marker is a special token a decoder may drop: a bare array of calls counts.
  EXPECT_EQ(parse_tool_calls(R"([{"name": "get_time", "arguments": {}}])", ToolFormat::Mistral, t).calls.size(), 1u);
  // Without tools nothing is parsed.
  EXPECT_TRUE(parse_tool_calls(R"({"tool_calls": [{"name": "get_time", "arguments": {}}]})", ToolFormat::Generic,
                               ToolRequest{})
                  .calls.empty());

  const json j = tool_calls_json(p.calls, "call_x", true);
  EXPECT_EQ(j, json::parse(R"([{"id": "call_x_0", "type": "function", "index": 0,
                                "function": {"name": "get_time", "arguments": "{}"}}])"));
}

TEST(ToolCalls, GateHoldsWhatMayBeACall) {
  ToolTextGate h(ToolFormat::Hermes);
  std::string out = h.push("Let me ");
  out += h.push("look. <tool");
  EXPECT_EQ(out, "Let me look. ");  // "<tool" may begin the marker
  EXPECT_FALSE(h.holding());
  out += h.push("_call>\n{\"name\"");
  EXPECT_TRUE(h.holding());
  out += h.push("...");
  EXPECT_EQ(out, "Let me look. ");
  EXPECT_EQ(h.answer(), "Let me look. <tool_call>\n{\"name\"...");
  // After the answer: what follows its call is content still to send.
  ToolTextGate done(ToolFormat::Hermes);
  std::string sent = done.push("Checking.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\nDone.");
  EXPECT_EQ(sent, "Checking.\n");
  const ParsedAnswer parsed = parse_tool_calls(done.answer(), ToolFormat::Hermes, tools_of());
  ASSERT_EQ(parsed.calls.size(), 1u);
  EXPECT_EQ(parsed.content, "Checking.\nDone.");
  EXPECT_EQ(done.unsent_content(parsed), "Done.");
  ToolTextGate h2(ToolFormat::Hermes);
  std::string out2 = h2.push("a <to");
  out2 += h2.push("o> b");
  EXPECT_EQ(out2, "a <too> b");

  ToolTextGate g(ToolFormat::Generic);
  EXPECT_EQ(g.push("  "), "");
  EXPECT_EQ(g.push("{\"tool"), "");
  EXPECT_TRUE(g.holding());
  // It made no call: all the held text is content still to send.
  EXPECT_EQ(g.unsent_content(parse_tool_calls(g.answer(), ToolFormat::Generic, tools_of())), "  {\"tool");
  ToolTextGate plain(ToolFormat::Generic);
  EXPECT_EQ(plain.push(" \n"), "");
  EXPECT_EQ(plain.push("Hi {x}"), " \nHi {x}");
  EXPECT_FALSE(plain.holding());
}

}  // namespace
}  // namespace exq::server
