// Table of small templates with the output worked out by hand from Jinja2/Python semantics
// (Hugging Face settings: trim_blocks, lstrip_blocks). One row per construct; render_cases_test
// runs each row as its own test.
#pragma once

namespace exq::chat::test {

struct RenderCase {
  const char* name;
  const char* tmpl;
  const char* ctx;  // JSON object
  const char* want;
};

inline constexpr RenderCase kLiteralCases[] = {
    {"StringEscapes", R"({{ 'a\tb' }}|{{ "it's" }}|{{ 'x\'y' }}|{{ '\u00e9\x41\n' }})", "{}",
     "a\tb|it's|x'y|\xc3\xa9" "A\n"},
    {"AdjacentStrings", R"({{ "a" 'b' }})", "{}", "ab"},
    {"Integers", R"({{ 42 }} {{ -7 }} {{ 1_000 }} {{ 0x1f }} {{ 0b101 }})", "{}", "42 -7 1000 31 5"},
    {"Floats", R"({{ 1.5 }} {{ 1e3 }} {{ 2.0 }} {{ 1e-7 }} {{ 1e16 }} {{ 0.1 }})", "{}",
     "1.5 1000.0 2.0 1e-07 1e+16 0.1"},
    {"Constants", R"({{ true }} {{ True }} {{ none }} {{ None }} {{ false }} {{ False }})", "{}",
     "True True None None False False"},
    {"ListRepr", R"({{ [1, 'a', none, true, 2.5, "it's"] }})", "{}",
     "[1, 'a', None, True, 2.5, \"it's\"]"},
    {"DictRepr", R"({{ {'a': 1, 'b': [2]} }})", "{}", "{'a': 1, 'b': [2]}"},
    {"TupleRepr", R"({{ (1, 2) }} {{ (1,) }} {{ () }})", "{}", "(1, 2) (1,) ()"},
    {"ZeroIntegers", R"({{ 00 }} {{ 0_0 }} {{ 0.5 }} {{ 00.5 }})", "{}", "0 0 0.5 0.5"},
    {"TrailingCommas", R"({{ [1, 2,] }} {{ {'a': 1,} }})", "{}", "[1, 2] {'a': 1}"},
};

inline constexpr RenderCase kOperatorCases[] = {
    {"Arithmetic", R"({{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }})",
     "{}", "3 -4 1 2 3.5 2.0"},
    {"Power", R"({{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }})", "{}", "1024 0.5 64"},
    {"Precedence", R"({{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 10 - 2 - 3 }} {{ -2 * 3 }})", "{}",
     "7 9 5 -6"},
    {"FloatMath", R"({{ 0.1 + 0.2 }} {{ 1 + 1.5 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }})", "{}",
     "0.30000000000000004 2.5 3.0 0.5"},
    {"StringAndListOps", R"({{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 2 }} {{ 2 * [0] }})", "{}",
     "ab [1, 2] abab [0, 0]"},
    {"Tilde", R"({{ 'ab' ~ 1 ~ none ~ nope ~ [1] }})", "{}", "ab1None[1]"},
    {"Comparisons",
     R"({{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 2 >= 2 }} {{ 'a' <= 'b' }} {{ true == 1 }})",
     "{}", "True True True False True True True"},
    {"In", R"({{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'x' in nope }})",
     "{}", "True True True True False"},
    {"Logic", R"({{ true and 'x' }} {{ 0 or 'y' }} {{ not '' }} {{ none or [] }} {{ not 1 == 2 }})",
     "{}", "x y True [] True"},
    {"Ternary", R"({{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }}[{{ 'only' if false }}])", "{}",
     "yes no[]"},
    {"UnaryMinusThenFilter", R"({{ -3|abs }} {{ -x|abs }})", R"({"x": 2.5})", "3 2.5"},
    {"FilterBindsTighterThanPlus", R"({{ 'a' + ' b '|trim + 'c' }})", "{}", "abc"},
};

inline constexpr RenderCase kAccessCases[] = {
    {"AttrAndIndex", R"({{ m.role }} {{ m['content'] }} {{ l[0] }} {{ l[-1] }} {{ l.1 }})",
     R"({"m": {"role": "user", "content": "hi"}, "l": [10, 20, 30]})", "user hi 10 30 20"},
    {"Slicing",
     R"({{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[5:] }} {{ 'hello'[1:3] }} {{ 'h\u00e9llo'[::-1] }})",
     R"({"l": [10, 20, 30]})", "[20, 30] [10, 20] [30, 20, 10] [10, 30] [] el oll\xc3\xa9h"},
    {"StringIndexByCodePoint", R"({{ s[1] }}{{ s[-1] }}{{ s|length }})", R"({"s": "h\u00e9!"})",
     "\xc3\xa9!3"},
    {"Undefined",
     R"([{{ nope }}][{{ m.missing }}][{{ nope is defined }}][{{ m.missing is not defined }}][{{ nope|default('d') }}][{{ l[9] }}])",
     R"({"m": {}, "l": []})", "[][][False][True][d][]"},
    {"UndefinedIsFalsyAndEmpty",
     R"({% if nope %}t{% else %}f{% endif %}{{ nope|length }}{% for x in nope %}x{% endfor %}{{ nope == nope }})",
     "{}", "f0True"},
    {"DictMethodVsKey", R"({{ d.items()|list }} {{ d['items'] }})", R"({"d": {"items": 5}})",
     "[('items', 5)] 5"},
};

inline constexpr RenderCase kFilterCases[] = {
    {"Trim", R"([{{ '  hi \n'|trim }}][{{ 'xxhixx'|trim('x') }}][{{ nope|trim }}])", "{}", "[hi][hi][]"},
    {"Length", R"({{ [1,2,3]|length }} {{ 'h\u00e9llo'|length }} {{ {'a':1}|count }})", "{}", "3 5 1"},
    {"Case",
     R"({{ 'Hello'|upper }} {{ 'Hello'|lower }} {{ 'hELLO wORLD'|capitalize }} {{ 'hello big-world(x'|title }})",
     "{}", "HELLO hello Hello world Hello Big-World(X"},
    {"ToJson", R"({{ d|tojson }})", R"({"d": {"a": [1, 2.5, "\u00e9\n\"q\""], "b": null, "c": true}})",
     R"({"a": [1, 2.5, "é\n\"q\""], "b": null, "c": true})"},
    {"ToJsonIndent", R"({{ d|tojson(indent=2) }})", R"({"d": {"a": [1, {}], "b": []}})",
     "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"},
    {"ToJsonOptions",
     R"({{ {'b': 1, 'a': 2}|tojson }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ [1, 2]|tojson(separators=(',', ':')) }} {{ '\u00e9<'|tojson(ensure_ascii=true) }} {{ 1.0|tojson }} {{ nothing|default(none)|tojson }})",
     "{}", R"({"b": 1, "a": 2} {"a": 2, "b": 1} [1,2] "\u00e9<" 1.0 null)"},
    {"StringJoin", R"({{ 5|string ~ 'x' }} {{ [1, 2]|join(', ') }} {{ ['a','b']|join }} {{ users|join(',', attribute='n') }})",
     R"({"users": [{"n": "x"}, {"n": "y"}]})", "5x 1, 2 ab x,y"},
    {"FirstLast", R"({{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ 'abc'|first }} {{ 'abc'|last }}[{{ []|first }}])",
     "{}", "1 3 a c[]"},
    {"Default", R"({{ none|default('d') }} {{ ''|default('d', true) }} {{ nope|d('x') }} {{ 0|default(5) }})",
     "{}", "None d x 0"},
    {"Replace", R"({{ 'a-b-c'|replace('-', '+') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'ab'|replace('', '.') }})",
     "{}", "a+b+c bba .a.b."},
    {"Int", R"({{ '42'|int + 1 }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 2.7|int }} {{ 'ff'|int(base=16) }} {{ ' -5 '|int }})",
     "{}", "43 3 0 7 2 255 -5"},
    {"ListItems", R"({{ 'ab'|list }} {{ {'x': 1}|items|list }} {{ {'x': 1, 'y': 2}|list }})", "{}",
     "['a', 'b'] [('x', 1)] ['x', 'y']"},
    {"ItemsLoop", R"({% for k, v in d|items %}{{ k }}={{ v }};{% endfor %})", R"({"d": {"a": 1, "b": [2]}})",
     "a=1;b=[2];"},
    {"ReverseSort", R"({{ 'hello'|reverse }} {{ [1, 3, 2]|reverse|list }} {{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }})",
     "{}", "olleh [2, 3, 1] [1, 2, 3] ['A', 'b', 'c']"},
    {"SelectMap",
     R"({{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ ms|rejectattr('role', 'equalto', 'user')|list|length }} {{ [1, 2, 3, 4]|select('even')|list }})",
     R"({"ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})",
     "['a', 'c'] 1 [2, 4]"},
    {"GeneratorsAreAlwaysTrue",
     R"({{ 'yes' if []|select else 'no' }} {{ 'yes' if []|select|list else 'no' }} {{ [3, 4]|map('string')|first }} [{{ ([1]|map('string'))[0] }}])",
     "{}", "yes no 3 []"},
    {"Indent", R"({{ 'a\nb\n\nc'|indent(2) }}|{{ 'x\ny'|indent(2, true) }})", "{}", "a\n  b\n\n  c|  x\n  y"},
    {"Misc", R"({{ -2.5|abs }} {{ 2.5|round }} {{ 3.14159|round(2) }} {{ [1, 2, 1]|unique|list }} {{ [3, 1]|min }} {{ [3, 1]|max }} {{ [1, 2]|sum }} {{ '<a>'|e }})",
     "{}", "2.5 2.0 3.14 [1, 2] 1 3 3 &lt;a&gt;"},
};

inline constexpr RenderCase kTestCases[] = {
    {"TypeTests",
     R"({{ none is none }} {{ 'a' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 1 is iterable }} {{ 1 is number }} {{ 1.5 is number }} {{ 'a' is number }})",
     "{}", "True True False True False True False True True False"},
    {"ValueTests",
     R"({{ 4 is even }} {{ 3 is odd }} {{ 2.0 is even }} {{ 0.5 is not odd }} {{ 9 is divisibleby 3 }} {{ 2 is equalto 2 }} {{ 'a' is in ['a'] }} {{ x is defined }} {{ x is not none }} {{ 1 is integer }} {{ true is boolean }})",
     R"({"x": 0})", "True True True True True True True True True True True"},
};

inline constexpr RenderCase kMethodCases[] = {
    {"Strip", R"({{ '  x  '.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\n\nx'.lstrip('\n') }})",
     "{}", "x|x  |  x|a|x"},
    {"Split", R"({{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a/b/c'.rsplit('/', 1) }} {{ 'x</think>y'.split('</think>')[-1] }})",
     "{}", "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a/b', 'c'] y"},
    {"Affixes", R"({{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'Hi'.upper() }} {{ 'Hi'.lower() }} {{ 'ab ab'.title() }} {{ 'a-b'.replace('-', '_') }})",
     "{}", "True True True HI hi Ab Ab a_b"},
    {"DictMethods", R"({% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }})",
     R"({"d": {"a": 1, "b": 2}})", "a=1;b=2; ['a', 'b'] [1, 2] 1 None 0"},
    {"ListMethods", R"({{ [1, 2, 1].count(1) }} {{ ['a', 'b'].index('b') }})", "{}", "2 1"},
    {"Range", R"({{ range(3)|list }} {{ range(1, 4)|list }} {{ range(5, 0, -2)|list }})", "{}",
     "[0, 1, 2] [1, 2, 3] [5, 3, 1]"},
    {"DictAndNamespaceRepr", R"({{ dict(a=1) }} {{ namespace(b=2).b }})", "{}", "{'a': 1} 2"},
};

inline constexpr RenderCase kStatementCases[] = {
    {"ForElse", R"({% for x in [] %}x{% else %}empty{% endfor %})", "{}", "empty"},
    {"LoopVariables",
     R"({% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %})",
     "{}", "1032TrueFalse3|2121FalseFalse3|3210FalseTrue3|"},
    {"LoopPrevNext", R"({% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {% endfor %})", "{}",
     "<1>2 1<2>3 2<3> "},
    {"LoopCycle", R"({% for x in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %})", "{}", "aba"},
    {"ForElseRunsWhenNoIterationCompleted",
     R"({% for x in [1, 2] %}{{ x }}{% continue %}{% else %}!{% endfor %}|{% for x in [1] %}{% break %}{% else %}!{% endfor %}|{% for x in [1, 2] %}{{ x }}{% if x == 2 %}{% break %}{% endif %}{% else %}!{% endfor %})",
     "{}", "12!|!|12"},
    {"ForIfFilter", R"({% for x in range(6) if x is even %}{{ x }}{{ ',' if not loop.last }}{% endfor %})", "{}",
     "0,2,4"},
    {"BreakContinue",
     R"({% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %})",
     "{}", "013"},
    {"NestedLoops", R"({% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }};{% endfor %})",
     "{}", "1x1 1y2 1;2x1 2y2 2;"},
    {"IfElifElse",
     R"({% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %} {% endfor %})",
     "{}", "one two many "},
    {"SetScoping", R"({% set x = 1 %}{% for i in [1, 2] %}{% set x = x + 10 %}{{ x }} {% endfor %}{{ x }})", "{}",
     "11 11 1"},
    {"SetInIfIsGlobal", R"({% if true %}{% set y = 'in-if' %}{% endif %}{{ y }})", "{}", "in-if"},
    {"Namespace",
     R"({% set ns = namespace(count=0, found=false) %}{% for i in [1, 2, 3] %}{% set ns.count = ns.count + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }})",
     "{}", "6 True"},
    {"TupleSet", R"({% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 3, 4 %} {{ c }})", "{}", "12 (3, 4)"},
    {"SetBlock", R"({% set s %}hi {{ 1 + 1 }}{% endset %}[{{ s }}]{% set t | upper %}x{% endset %}{{ t }})", "{}",
     "[hi 2]X"},
    {"Macro",
     R"({% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet(name='Cy') }})",
     "{}", "Hello Bob! Hello Al? Hello Cy!"},
    {"MacroRecursion", R"({% macro count(n) %}{{ n }}{% if n > 0 %}{{ count(n - 1) }}{% endif %}{% endmacro %}{{ count(3) }})",
     "{}", "3210"},
    {"FilterBlock", R"({% filter upper %}abc{{ 'd' }}{% endfilter %})", "{}", "ABCD"},
    {"With", R"({% with y = 5 %}{{ y }}{% endwith %}[{{ y }}])", "{}", "5[]"},
    {"Generation", R"({% generation %}gen{% endgeneration %})", "{}", "gen"},
    {"Comment", R"(a{# comment {{ x }} #}b)", "{}", "ab"},
    {"Raw", R"({% raw %}{{ x }}{% endraw %})", "{}", "{{ x }}"},
    {"PrintTuple", R"({{ 1, 'a' }})", "{}", "(1, 'a')"},
};

// Whitespace handling: trim_blocks and lstrip_blocks on, keep_trailing_newline off.
inline constexpr RenderCase kWhitespaceCases[] = {
    {"TrimBlocks", "{% if true %}\nyes\n{% endif %}\nafter", "{}", "yes\nafter"},
    {"LstripBlocks", "  {% if true %}\n  x\n  {% endif %}\n", "{}", "  x\n"},
    {"LstripNotForVariables", "  {{ 'v' }}\n", "{}", "  v"},
    {"LstripOnlyAtLineStart", "x {% if true %}y{% endif %}", "{}", "x y"},
    {"MinusMarkers", "a  {{- 'b' -}}  c|\n  {%- if true -%}  x  {%- endif -%}  \n|", "{}", "abc|x|"},
    {"VariableKeepsNewline", "{{ 'a' }}\nb", "{}", "a\nb"},
    {"PlusDisablesLstrip", "  {%+ if true %}x{% endif %}", "{}", "  x"},
    {"PlusDisablesTrim", "{% if true +%}\nx{% endif %}", "{}", "\nx"},
    {"NewlinesNormalized", "a\r\nb\rc\r\n", "{}", "a\nb\nc"},
    {"CommentTrim", "a\n  {# c #}\nb", "{}", "a\nb"},
    {"OnlyOneTrailingNewlineDropped", "a\n\n", "{}", "a\n"},
    {"LstripAfterTrimmedBlock", "{% if true %}\n  {% if true %}x{% endif %}\n{% endif %}", "{}", "x"},
    {"CommentOpenAtEndIsDropped", "a {#", "{}", "a "},
    {"MinusCommentEatsNewlines", "a\n\n{#- c -#}\n\nb", "{}", "ab"},
};

}  // namespace exq::chat::test
