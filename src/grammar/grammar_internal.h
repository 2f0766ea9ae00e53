// Internals shared by the GBNF parser, the grammar compiler and the matcher: the parsed
// rule form (RawGrammar), the compiled flat form (CompiledGrammar) and a matcher state
// (StackSet). Not part of the public API.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace exq::grammar {

// Limits against hostile grammars and inputs (each refused with a clear exq::Error).
inline constexpr uint32_t kMaxRepetition = 10000;          // m and n of {m,n}
inline constexpr int kMaxNesting = 256;                    // ( ) groups inside each other
inline constexpr size_t kMaxSymbols = size_t{1} << 20;     // symbols after rewriting repetitions
inline constexpr size_t kMaxStacks = 10000;                // live parse stacks after one character
inline constexpr size_t kMaxStackWords = size_t{1} << 22;  // scratch words for one character

inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// Inclusive code point range.
struct CharRange {
  uint32_t lo = 0;
  uint32_t hi = 0;
};

// ---- Parsed form (gbnf_parser.cpp) ---------------------------------------------------------

struct Symbol {
  bool is_ref = false;
  uint32_t id = 0;  // rule id when is_ref, else charset id
};

struct RawRule {
  std::string name;     // empty for generated rules (see raw_rule_name)
  uint32_t parent = 0;  // generated rules: the user rule whose definition made them
  bool defined = false;
  bool generated = false;  // made by rewriting a group or a repetition
  size_t def_offset = 0;   // byte offset of the definition (or of the parent rule's name)
  size_t ref_offset = 0;   // byte offset of the first reference
  bool referenced = false;
  std::vector<std::vector<Symbol>> alts;
};

struct RawGrammar {
  std::vector<RawRule> rules;
  // Sorted, disjoint, surrogate-free ranges; may be empty (a class that matches nothing).
  std::vector<std::vector<CharRange>> charsets;
};

RawGrammar parse_gbnf(std::string_view text);

// The rule's name for messages; generated rules are "parent/id" (never a valid GBNF name).
std::string raw_rule_name(const RawGrammar& raw, uint32_t rule);

// "line L, column C" (1-based, columns in code points) for a byte offset of text, and
// "grammar: line L, column C: ", the prefix of every located grammar error.
std::string line_column(std::string_view text, size_t offset);
std::string grammar_location(std::string_view text, size_t offset);

// ---- Compiled form (grammar_compile.cpp) ---------------------------------------------------

// An element of the flat rule array: a terminal (index into terminals), a rule reference or
// the end of an alternative. Kind lives in the top two bits.
inline constexpr uint32_t kElemRef = 0x40000000u;
inline constexpr uint32_t kElemEnd = 0x80000000u;
inline constexpr uint32_t kElemPayload = 0x3FFFFFFFu;

inline bool elem_is_terminal(uint32_t e) { return (e & (kElemRef | kElemEnd)) == 0; }
inline bool elem_is_ref(uint32_t e) { return (e & kElemRef) != 0; }
inline bool elem_is_end(uint32_t e) { return (e & kElemEnd) != 0; }

struct Terminal {
  // Bit b: some code point whose UTF-8 encoding starts with byte b is in the set (for
  // b < 0x80: the code point b itself is).
  uint64_t lead[4] = {0, 0, 0, 0};
  uint32_t range_begin = 0;  // into CompiledGrammar::ranges
  uint32_t range_count = 0;
};

// Code points whose UTF-8 encoding starts with the bytes gathered so far: `bits` holds their
// payload bits, len is the full length, `left` the continuation bytes still to come. Overlong
// forms are excluded; lo > hi when no code point fits.
CharRange utf8_prefix_range(uint32_t bits, int len, int left);

struct StackSet;

struct CompiledGrammar {
  std::vector<uint32_t> elems;        // alternatives, each terminated by kElemEnd
  std::vector<uint32_t> alt_offsets;  // rule r's alternatives: alt_starts[alt_offsets[r]..[r+1])
  std::vector<uint32_t> alt_starts;   // position in elems of each alternative's first element
  std::vector<Terminal> terminals;
  std::vector<CharRange> ranges;
  uint32_t root = 0;
  // Parse stacks before any text. Matchers point at it with a shared_ptr that aliases the
  // owning Grammar, so a fresh matcher allocates nothing.
  std::unique_ptr<StackSet> initial;

  bool terminal_contains(uint32_t terminal, uint32_t cp) const;
  bool terminal_intersects(uint32_t terminal, uint32_t lo, uint32_t hi) const;
};

std::unique_ptr<CompiledGrammar> compile_grammar(std::string_view text, RawGrammar raw,
                                                 std::string_view root);

// ---- Matcher state (grammar_match.cpp) -----------------------------------------------------

inline constexpr uint32_t kNoTop = 0xFFFFFFFFu;

// An immutable, deduplicated, canonically ordered set of parse stacks. Matchers share it by
// pointer; the memo bits are filled in lazily by any thread (relaxed atomics: each bit is a
// deterministic fact, so racing writers agree).
struct StackSet {
  const CompiledGrammar* grammar = nullptr;
  // Keeps the Grammar alive (null for CompiledGrammar::initial, which the Grammar owns). A set
  // never points at the set it came from, so old sets are freed as the text moves on.
  std::shared_ptr<const void> keep_alive;
  uint32_t count = 0;
  bool accepting = false;           // some stack is empty: the text may end here
  uint64_t lead[4] = {0, 0, 0, 0};  // union of the tops' lead-byte masks
  // [offset of stack i (n)] [top terminal of stack i or kNoTop (n)] then the stacks, each
  // [len, hash, elem positions bottom..top].
  std::vector<uint32_t> words;
  // Characters known to lead back to this very set (byte memo for ASCII; for others, the
  // bit set of stacks whose top matched, when count <= 64).
  mutable std::atomic<uint64_t> self_ascii[2] = {0, 0};
  mutable std::atomic<uint64_t> self_sig[4] = {0, 0, 0, 0};

  uint32_t top(uint32_t i) const { return words[count + i]; }
};

// Parse stacks at the start of the text.
std::unique_ptr<StackSet> initial_stacks(const CompiledGrammar& g);

// Result of consuming one whole code point: refused, the same set again, or a new set.
struct StepResult {
  bool accepted = false;
  std::shared_ptr<const StackSet> next;  // null when accepted and the set did not change
};
// keep_alive goes into the new set (see StackSet::keep_alive).
StepResult step_stacks(const StackSet& s, uint32_t cp,
                       const std::shared_ptr<const void>& keep_alive);

}  // namespace exq::grammar
