// Small templates written in the style of well-known model families (Llama 3, Qwen 2.5 with
// tools, Qwen 3 reasoning, Mistral), using their characteristic constructs, with conversations
// and the output worked out by hand.
#pragma once

namespace exq::chat::test {

// Llama 3: system message split off with messages[1:], |trim binding tighter than +.
inline constexpr const char* kLlama3Template = R"TPL({{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)TPL";

// Qwen 2.5: tools rendered with |tojson, tool calls, grouped tool responses via loop.index0.
inline constexpr const char* kQwen2Template = R"TPL({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)TPL";

// Qwen 3: namespace() updated from a reversed loop, str methods to cut reasoning out.
inline constexpr const char* kQwen3Template = R"TPL({%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and reasoning_content %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)TPL";

// Mistral: raise_exception when roles do not alternate, eos_token after assistant turns.
inline constexpr const char* kMistralTemplate = R"TPL({{- bos_token }}
{%- for message in messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {{- '[INST] ' + message['content'] + ' [/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {{- message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported!') }}
    {%- endif %}
{%- endfor %}
)TPL";

struct ChatCase {
  const char* name;
  const char* tmpl;
  const char* messages;  // JSON array
  const char* tools;     // JSON array, or "" for none
  bool add_generation_prompt;
  const char* bos;
  const char* eos;
  const char* want;  // expected output, or the raise_exception message when error is true
  bool error;
};

inline constexpr ChatCase kChatCases[] = {
    {"Llama3WithSystem", kLlama3Template,
     R"([{"role": "system", "content": "Be brief. "}, {"role": "user", "content": " Hi "}, {"role": "assistant", "content": "Hello!"}])",
     "", true, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n",
     false},
    {"Llama3NoSystem", kLlama3Template, R"([{"role": "user", "content": "Q"}])", "", false,
     "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>",
     false},
    {"Qwen2Plain", kQwen2Template, R"([{"role": "user", "content": "Hi"}])", "", true, "", "<|im_end|>",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
     "<|im_start|>assistant\n",
     false},
    {"Qwen2Tools", kQwen2Template,
     R"([{"role": "system", "content": "Sys"},
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
         {"role": "tool", "content": "18"},
         {"role": "tool", "content": "sunny"},
         {"role": "assistant", "content": "18 and sunny."}])",
     R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}}])",
     false, "", "<|im_end|>",
     "<|im_start|>system\nSys\n\n# Tools\n\n<tools>\n"
     R"({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}})"
     "\n</tools><|im_end|>\n"
     "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
     "<|im_start|>assistant\n<tool_call>\n"
     R"({"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}})"
     "\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\n18\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
     "<|im_start|>assistant\n18 and sunny.<|im_end|>\n",
     false},
    {"Qwen3Reasoning", kQwen3Template,
     R"([{"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
         {"role": "user", "content": "3+3?"},
         {"role": "assistant", "content": "<think>\nadd again\n</think>\n\n6"}])",
     "", true, "", "<|im_end|>",
     "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
     "<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n<think>\nadd again\n</think>\n\n6<|im_end|>\n"
     "<|im_start|>assistant\n",
     false},
    {"MistralAlternating", kMistralTemplate,
     R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}])",
     "", false, "<s>", "</s>", "<s>[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]", false},
    {"MistralRejectsTwoUsers", kMistralTemplate,
     R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])", "", false, "<s>", "</s>",
     "Conversation roles must alternate user/assistant/user/assistant/...", true},
    {"MistralRejectsSystem", kMistralTemplate, R"([{"role": "system", "content": "a"}])", "", false, "<s>",
     "</s>", "Conversation roles must alternate user/assistant/user/assistant/...", true},
    {"MistralRejectsToolRole", kMistralTemplate,
     R"([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])", "", false, "<s>", "</s>",
     "Only user and assistant roles are supported!", true},
};

}  // namespace exq::chat::test
