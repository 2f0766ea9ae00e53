// RawGrammar -> CompiledGrammar: checks (undefined rules, missing root, left recursion, rules
// that match nothing), drops alternatives that can never finish, and lays the rules out as
// one flat element array with per-terminal lead-byte masks for the matcher.
#include <algorithm>
#include <deque>

#include "core/error.h"
#include "grammar/grammar_internal.h"

namespace exq::grammar {
namespace {

// Code points whose UTF-8 encoding is `bits` (the payload bits of the first len-left bytes)
// followed by `left` more continuation bytes, clamped to what a len-byte encoding may hold
// (overlong forms excluded). lo > hi when there is none.
CharRange prefix_range_of(uint32_t bits, int len, int left) {
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  static constexpr uint32_t kMax[5] = {0, 0x7F, 0x7FF, 0xFFFF, kMaxCodePoint};
  const uint32_t lo = bits << (6 * left);
  const uint32_t hi = lo | ((1u << (6 * left)) - 1);
  return {std::max(lo, kMin[len]), std::min(hi, kMax[len])};
}

void set_bit(uint64_t* mask, uint32_t b) { mask[b >> 6] |= uint64_t{1} << (b & 63); }

struct Edge {
  uint32_t to = 0;
  bool tail = false;  // the reference ends its alternative, so following it pushes nothing
};

[[noreturn]] void fail_at(std::string_view text, size_t offset, const std::string& message) {
  throw Error(grammar_location(text, offset) + message);
}

// Rules with an alternative whose terminals all pass `terminal_ok` and whose references all
// name such rules (a worklist over "alternatives with k references still open", linear in
// the grammar size).
template <typename TerminalOk>
std::vector<bool> rules_that_hold(const RawGrammar& raw, TerminalOk terminal_ok) {
  const size_t n = raw.rules.size();
  std::vector<bool> holds(n, false);
  std::vector<uint32_t> pending;               // per alternative
  std::vector<uint32_t> alt_owner;             // alternative -> rule
  std::vector<std::vector<uint32_t>> uses(n);  // rule -> alternatives referring to it
  std::vector<uint32_t> queue;
  for (uint32_t r = 0; r < n; ++r) {
    for (const auto& alt : raw.rules[r].alts) {
      const auto a = static_cast<uint32_t>(pending.size());
      bool blocked = false;
      uint32_t refs = 0;
      for (const Symbol& s : alt) {
        if (s.is_ref) {
          ++refs;
        } else {
          blocked |= !terminal_ok(s);
        }
      }
      pending.push_back(blocked ? 0xFFFFFFFFu : refs);
      alt_owner.push_back(r);
      if (blocked) continue;
      for (const Symbol& s : alt) {
        if (s.is_ref) uses[s.id].push_back(a);
      }
      if (refs == 0 && !holds[r]) {
        holds[r] = true;
        queue.push_back(r);
      }
    }
  }
  while (!queue.empty()) {
    const uint32_t r = queue.back();
    queue.pop_back();
    for (uint32_t a : uses[r]) {
      if (--pending[a] != 0) continue;
      const uint32_t owner = alt_owner[a];
      if (!holds[owner]) {
        holds[owner] = true;
        queue.push_back(owner);
      }
    }
  }
  return holds;
}

// Rules that can match the empty text: no terminal at all.
std::vector<bool> nullable_rules(const RawGrammar& raw) {
  return rules_that_hold(raw, [](const Symbol&) { return false; });
}

// Rules that can match some finite text; an alternative with a rule that cannot, or with a
// class that matches nothing, is dropped (so every parse stack can still finish).
std::vector<bool> productive_rules(const RawGrammar& raw) {
  return rules_that_hold(raw, [&](const Symbol& s) { return !raw.charsets[s.id].empty(); });
}

// Left recursion: a rule reachable from itself through references at the start of
// alternatives (after nullable symbols). A cycle whose references are all tail references
// pushes nothing, so the matcher's duplicate check ends it (e.g. (x?)*); a cycle with any
// other reference grows the stack forever and is refused. Iterative Tarjan SCC, so a long
// chain of rules cannot overflow the C++ stack.
void check_left_recursion(std::string_view text, const RawGrammar& raw,
                          const std::vector<bool>& nullable) {
  const auto n = static_cast<uint32_t>(raw.rules.size());
  std::vector<std::vector<Edge>> edges(n);
  for (uint32_t r = 0; r < n; ++r) {
    for (const auto& alt : raw.rules[r].alts) {
      for (size_t i = 0; i < alt.size(); ++i) {
        if (!alt[i].is_ref) break;
        edges[r].push_back({alt[i].id, i + 1 == alt.size()});
        if (!nullable[alt[i].id]) break;
      }
    }
  }
  constexpr uint32_t kUnset = 0xFFFFFFFFu;
  std::vector<uint32_t> index(n, kUnset), low(n, 0), comp(n, kUnset);
  std::vector<bool> on_stack(n, false);
  std::vector<uint32_t> tarjan;
  std::vector<std::pair<uint32_t, size_t>> frames;  // (rule, next edge)
  uint32_t counter = 0;
  for (uint32_t start = 0; start < n; ++start) {
    if (index[start] != kUnset) continue;
    frames.push_back({start, 0});
    index[start] = low[start] = counter++;
    tarjan.push_back(start);
    on_stack[start] = true;
    while (!frames.empty()) {
      auto& [v, next] = frames.back();
      if (next < edges[v].size()) {
        const uint32_t w = edges[v][next++].to;
        if (index[w] == kUnset) {
          index[w] = low[w] = counter++;
          tarjan.push_back(w);
          on_stack[w] = true;
          frames.push_back({w, 0});
        } else if (on_stack[w]) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      const uint32_t done = v;
      frames.pop_back();
      if (!frames.empty()) low[frames.back().first] = std::min(low[frames.back().first], low[done]);
      if (low[done] != index[done]) continue;
      uint32_t w = 0;
      do {
        w = tarjan.back();
        tarjan.pop_back();
        on_stack[w] = false;
        comp[w] = done;
      } while (w != done);
    }
  }
  for (uint32_t u = 0; u < n; ++u) {
    for (const Edge& e : edges[u]) {
      if (e.tail || comp[e.to] != comp[u]) continue;
      // Cycle u -> e.to -> ... -> u: breadth-first path back inside the component.
      std::vector<uint32_t> parent(n, kUnset);
      std::deque<uint32_t> queue{e.to};
      parent[e.to] = e.to;
      while (!queue.empty() && parent[u] == kUnset) {
        const uint32_t v = queue.front();
        queue.pop_front();
        for (const Edge& f : edges[v]) {
          if (comp[f.to] != comp[u] || parent[f.to] != kUnset) continue;
          parent[f.to] = v;
          queue.push_back(f.to);
        }
      }
      std::vector<uint32_t> cycle;
      for (uint32_t v = u; v != e.to; v = parent[v]) cycle.push_back(v);
      cycle.push_back(e.to);
      std::reverse(cycle.begin(), cycle.end());  // e.to ... u
      // Start the cycle at the first rule the user wrote (generated rules share their
      // parent's offset, so this is a user rule whenever there is one).
      auto first = std::min_element(cycle.begin(), cycle.end(), [&](uint32_t a, uint32_t b) {
        const RawRule& ra = raw.rules[a];
        const RawRule& rb = raw.rules[b];
        if (ra.def_offset != rb.def_offset) return ra.def_offset < rb.def_offset;
        return !ra.generated && rb.generated;
      });
      std::rotate(cycle.begin(), first, cycle.end());
      std::string path;
      for (uint32_t r : cycle) path += raw_rule_name(raw, r) + " -> ";
      path += raw_rule_name(raw, cycle.front());
      fail_at(
          text, raw.rules[cycle.front()].def_offset,
          fmt::format("left recursion: rule '{}' can reach itself without consuming any text ({})",
                      raw_rule_name(raw, cycle.front()), path));
    }
  }
}

Terminal make_terminal(const std::vector<CharRange>& set, std::vector<CharRange>& ranges) {
  Terminal t;
  t.range_begin = static_cast<uint32_t>(ranges.size());
  t.range_count = static_cast<uint32_t>(set.size());
  ranges.insert(ranges.end(), set.begin(), set.end());
  auto intersects = [&](CharRange r) {
    auto it = std::lower_bound(set.begin(), set.end(), r.lo,
                               [](CharRange a, uint32_t v) { return a.hi < v; });
    return it != set.end() && it->lo <= r.hi;
  };
  for (uint32_t b = 0; b < 0x80; ++b) {
    if (intersects({b, b})) set_bit(t.lead, b);
  }
  for (uint32_t b = 0xC2; b <= 0xF4; ++b) {
    const int len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    const CharRange r = prefix_range_of(b & (0x7Fu >> len), len, len - 1);
    if (r.lo <= r.hi && intersects(r)) set_bit(t.lead, b);
  }
  return t;
}

}  // namespace

CharRange utf8_prefix_range(uint32_t bits, int len, int left) {
  return prefix_range_of(bits, len, left);
}

bool CompiledGrammar::terminal_contains(uint32_t terminal, uint32_t cp) const {
  const Terminal& t = terminals[terminal];
  if (cp < 0x80) return (t.lead[cp >> 6] >> (cp & 63)) & 1;
  return terminal_intersects(terminal, cp, cp);
}

bool CompiledGrammar::terminal_intersects(uint32_t terminal, uint32_t lo, uint32_t hi) const {
  const Terminal& t = terminals[terminal];
  const CharRange* begin = ranges.data() + t.range_begin;
  const CharRange* end = begin + t.range_count;
  const CharRange* it =
      std::lower_bound(begin, end, lo, [](const CharRange& a, uint32_t v) { return a.hi < v; });
  return it != end && it->lo <= hi;
}

std::unique_ptr<CompiledGrammar> compile_grammar(std::string_view text, RawGrammar raw,
                                                 std::string_view root) {
  // Report the earliest reference to an undefined rule.
  const RawRule* undefined = nullptr;
  for (const RawRule& r : raw.rules) {
    if (!r.defined && (undefined == nullptr || r.ref_offset < undefined->ref_offset))
      undefined = &r;
  }
  if (undefined != nullptr)
    fail_at(text, undefined->ref_offset, fmt::format("undefined rule '{}'", undefined->name));
  uint32_t root_id = 0xFFFFFFFFu;
  for (uint32_t r = 0; r < raw.rules.size(); ++r) {
    if (!raw.rules[r].generated && raw.rules[r].name == root) root_id = r;
  }
  if (root_id == 0xFFFFFFFFu) {
    throw Error(
        fmt::format("grammar: missing root rule '{}' (no rule of that name is defined)", root));
  }
  const std::vector<bool> nullable = nullable_rules(raw);
  check_left_recursion(text, raw, nullable);
  const std::vector<bool> productive = productive_rules(raw);
  if (!productive[root_id]) {
    fail_at(text, raw.rules[root_id].def_offset,
            fmt::format("root rule '{}' cannot match any text (each alternative needs an empty "
                        "class or a rule that never ends)",
                        root));
  }

  auto g = std::make_unique<CompiledGrammar>();
  g->root = root_id;
  for (const auto& set : raw.charsets) g->terminals.push_back(make_terminal(set, g->ranges));
  g->alt_offsets.push_back(0);
  for (const RawRule& r : raw.rules) {
    for (const auto& alt : r.alts) {
      bool keep = true;
      for (const Symbol& s : alt) {
        keep &= s.is_ref ? productive[s.id] : !raw.charsets[s.id].empty();
      }
      if (!keep) continue;
      g->alt_starts.push_back(static_cast<uint32_t>(g->elems.size()));
      for (const Symbol& s : alt) g->elems.push_back(s.is_ref ? (kElemRef | s.id) : s.id);
      g->elems.push_back(kElemEnd);
    }
    g->alt_offsets.push_back(static_cast<uint32_t>(g->alt_starts.size()));
  }
  g->initial = initial_stacks(*g);
  return g;
}

}  // namespace exq::grammar
