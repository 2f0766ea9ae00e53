// Parse-stack sets: expanding stacks until each top is a terminal, and stepping a set over
// one code point. Work happens in a per-thread scratch arena so that a step allocates only
// the resulting set (and nothing when the set comes back unchanged).
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "grammar/grammar_internal.h"

namespace exq::grammar {
namespace {

uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

// murmur3-style mixing over the stack's positions.
uint32_t hash_words(const uint32_t* p, uint32_t n) {
  uint32_t h = 0x9747B28Cu ^ n;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t k = p[i] * 0xCC9E2D51u;
    k = rotl(k, 15) * 0x1B873593u;
    h ^= k;
    h = rotl(h, 13) * 5 + 0xE6546B64u;
  }
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  return h;
}

struct Scratch {
  std::vector<uint32_t> pool;    // stacks as [len, hash, positions bottom..top]
  std::vector<uint32_t> work;    // pool offsets still to expand
  std::vector<uint32_t> finals;  // pool offsets of expanded stacks (terminal on top, or empty)
  // Open-addressing set of the stacks seen this step: (generation << 32) | pool offset. The
  // generation makes clearing free.
  std::vector<uint64_t> table;
  uint64_t generation = 0;
  size_t entries = 0;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

[[noreturn]] void too_ambiguous() {
  throw Error(fmt::format(
      "grammar: too many parse stacks (limit {} stacks, {} words): the grammar is too ambiguous "
      "for this text",
      kMaxStacks, kMaxStackWords));
}

class Expander {
 public:
  explicit Expander(const CompiledGrammar& g) : g_(g), s_(scratch()) {
    s_.pool.clear();
    s_.work.clear();
    s_.finals.clear();
    s_.entries = 0;
    if (s_.table.empty()) s_.table.assign(64, 0);
    if (++s_.generation > 0xFFFFFFFFu) {
      std::fill(s_.table.begin(), s_.table.end(), 0);
      s_.generation = 1;
    }
  }

  // Reserves a stack of len positions in the pool; the caller fills pool[off + 2 ..].
  uint32_t begin(uint32_t len) {
    const size_t off = s_.pool.size();
    if (off + 2 + len > kMaxStackWords) too_ambiguous();
    s_.pool.resize(off + 2 + len);
    s_.pool[off] = len;
    return static_cast<uint32_t>(off);
  }

  // Queues the stack begun at off for expansion, or drops it if this step has seen it.
  void commit(uint32_t off) {
    uint32_t* pool = s_.pool.data();
    const uint32_t len = pool[off];
    const uint32_t h = hash_words(pool + off + 2, len);
    pool[off + 1] = h;
    if ((s_.entries + 1) * 2 > s_.table.size()) grow();
    const size_t mask = s_.table.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const uint64_t e = s_.table[i];
      if ((e >> 32) != s_.generation) {
        s_.table[i] = (s_.generation << 32) | off;
        ++s_.entries;
        s_.work.push_back(off);
        return;
      }
      const auto other = static_cast<uint32_t>(e);
      if (pool[other + 1] == h && pool[other] == len &&
          std::memcmp(pool + other + 2, pool + off + 2, len * sizeof(uint32_t)) == 0) {
        s_.pool.resize(off);
        return;
      }
    }
  }

  // Expands queued stacks until each top is a terminal (or the stack is empty). A rule
  // reference on top is replaced by the position after it (unless it ends its alternative:
  // a tail call pushes nothing) and the start of each of the rule's alternatives.
  void run() {
    const uint32_t* elems = g_.elems.data();
    while (!s_.work.empty()) {
      const uint32_t off = s_.work.back();
      s_.work.pop_back();
      const uint32_t len = s_.pool[off];
      if (len == 0) {
        add_final(off);
        continue;
      }
      const uint32_t top = s_.pool[off + 1 + len];
      const uint32_t e = elems[top];
      if (elem_is_terminal(e)) {
        if (g_.terminals[e].range_count > 0) add_final(off);
        continue;
      }
      const uint32_t rule = e & kElemPayload;
      const uint32_t next = top + 1;
      const bool push_next = !elem_is_end(elems[next]);
      for (uint32_t a = g_.alt_offsets[rule]; a < g_.alt_offsets[rule + 1]; ++a) {
        const uint32_t start = g_.alt_starts[a];
        const bool push_start = !elem_is_end(elems[start]);
        const uint32_t item = begin(len - 1 + push_next + push_start);
        uint32_t* dst = s_.pool.data() + item + 2;
        const uint32_t* src = s_.pool.data() + off + 2;
        std::copy(src, src + len - 1, dst);
        uint32_t k = len - 1;
        if (push_next) dst[k++] = next;
        if (push_start) dst[k++] = start;
        commit(item);
      }
    }
    // Canonical order, so equal sets compare equal word for word.
    const uint32_t* pool = s_.pool.data();
    std::sort(s_.finals.begin(), s_.finals.end(), [pool](uint32_t a, uint32_t b) {
      if (pool[a + 1] != pool[b + 1]) return pool[a + 1] < pool[b + 1];
      if (pool[a] != pool[b]) return pool[a] < pool[b];
      return std::lexicographical_compare(pool + a + 2, pool + a + 2 + pool[a], pool + b + 2,
                                          pool + b + 2 + pool[b]);
    });
  }

  bool empty() const { return s_.finals.empty(); }

  bool same_as(const StackSet& s) const {
    if (s.count != s_.finals.size()) return false;
    for (uint32_t i = 0; i < s.count; ++i) {
      const uint32_t* a = s.words.data() + s.words[i];
      const uint32_t* b = s_.pool.data() + s_.finals[i];
      if (a[0] != b[0] || a[1] != b[1] || std::memcmp(a + 2, b + 2, a[0] * sizeof(uint32_t)) != 0) {
        return false;
      }
    }
    return true;
  }

  void fill(StackSet& set_ref) const {
    StackSet* set = &set_ref;
    set->grammar = &g_;
    const auto n = static_cast<uint32_t>(s_.finals.size());
    size_t total = 2 * size_t{n};
    for (uint32_t off : s_.finals) total += 2 + s_.pool[off];
    set->count = n;
    set->words.resize(total);
    uint32_t* w = set->words.data();
    size_t at = 2 * size_t{n};
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t* src = s_.pool.data() + s_.finals[i];
      const uint32_t len = src[0];
      w[i] = static_cast<uint32_t>(at);
      std::copy(src, src + 2 + len, w + at);
      at += 2 + len;
      if (len == 0) {
        w[n + i] = kNoTop;
        set->accepting = true;
        continue;
      }
      const uint32_t terminal = g_.elems[src[1 + len]];
      w[n + i] = terminal;
      for (int k = 0; k < 4; ++k) set->lead[k] |= g_.terminals[terminal].lead[k];
    }
  }

 private:
  void add_final(uint32_t off) {
    if (s_.finals.size() >= kMaxStacks) too_ambiguous();
    s_.finals.push_back(off);
  }

  void grow() {
    std::vector<uint64_t> bigger(s_.table.size() * 2, 0);
    const size_t mask = bigger.size() - 1;
    for (uint64_t e : s_.table) {
      if ((e >> 32) != s_.generation) continue;
      size_t i = s_.pool[static_cast<uint32_t>(e) + 1] & mask;
      while (bigger[i] != 0) i = (i + 1) & mask;
      bigger[i] = e;
    }
    s_.table.swap(bigger);
  }

  const CompiledGrammar& g_;
  Scratch& s_;
};

}  // namespace

std::unique_ptr<StackSet> initial_stacks(const CompiledGrammar& g) {
  Expander ex(g);
  for (uint32_t a = g.alt_offsets[g.root]; a < g.alt_offsets[g.root + 1]; ++a) {
    const uint32_t start = g.alt_starts[a];
    const bool push = !elem_is_end(g.elems[start]);
    const uint32_t item = ex.begin(push ? 1 : 0);
    if (push) scratch().pool[item + 2] = start;
    ex.commit(item);
  }
  ex.run();
  auto set = std::make_unique<StackSet>();
  ex.fill(*set);
  return set;
}

StepResult step_stacks(const StackSet& s, uint32_t cp,
                       const std::shared_ptr<const void>& keep_alive) {
  const CompiledGrammar& g = *s.grammar;
  Expander ex(g);
  bool any = false;
  for (uint32_t i = 0; i < s.count; ++i) {
    const uint32_t terminal = s.top(i);
    if (terminal == kNoTop || !g.terminal_contains(terminal, cp)) continue;
    any = true;
    const uint32_t* stack = s.words.data() + s.words[i];
    const uint32_t len = stack[0];
    const uint32_t next = stack[1 + len] + 1;  // the position after the matched terminal
    const bool push = !elem_is_end(g.elems[next]);
    const uint32_t item = ex.begin(len - 1 + push);
    uint32_t* dst = scratch().pool.data() + item + 2;
    std::copy(stack + 2, stack + 1 + len, dst);
    if (push) dst[len - 1] = next;
    ex.commit(item);
  }
  if (!any) return {};
  ex.run();
  if (ex.empty()) return {};
  if (ex.same_as(s)) return {true, nullptr};
  auto set = std::make_shared<StackSet>();
  ex.fill(*set);
  set->keep_alive = keep_alive;
  return {true, std::move(set)};
}

}  // namespace exq::grammar
