// Grammar (parse + compile) and GrammarMatcher (UTF-8 bytes -> code point steps over a shared
// parse-stack set, with memo bits for characters that leave the set unchanged).
#include "grammar/grammar.h"

#include "core/error.h"
#include "grammar/grammar_internal.h"

namespace exq::grammar {

namespace {

bool test_bit(const uint64_t* mask, uint32_t b) { return (mask[b >> 6] >> (b & 63)) & 1; }

// Slot of a "stacks that matched" signature in StackSet::self_sig.
size_t sig_slot(uint64_t sig) { return static_cast<size_t>((sig * 0x9E3779B97F4A7C15ull) >> 62); }

}  // namespace

Grammar::Grammar(std::unique_ptr<CompiledGrammar> compiled) : compiled_(std::move(compiled)) {
  EXQ_ASSERT(compiled_ != nullptr);
}

Grammar::~Grammar() = default;

std::shared_ptr<const Grammar> Grammar::parse(std::string_view text, std::string_view root) {
  return std::make_shared<const Grammar>(compile_grammar(text, parse_gbnf(text), root));
}

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar) {
  EXQ_CHECK(grammar != nullptr, "grammar: GrammarMatcher needs a grammar, got null");
  const StackSet* initial = grammar->compiled().initial.get();
  state_ = std::shared_ptr<const StackSet>(std::move(grammar), initial);  // owned by the grammar
}

bool GrammarMatcher::advance(uint32_t cp) {
  const StackSet& s = *state_;
  uint64_t sig = 0;
  if (cp < 0x80) {
    if (!test_bit(s.lead, cp)) return false;
    if ((s.self_ascii[cp >> 6].load(std::memory_order_relaxed) >> (cp & 63)) & 1) return true;
  } else if (s.count <= 64) {
    // Only which stacks match decides the step, so a non-ASCII character can reuse the
    // memo of any other character that matched the same stacks.
    const CompiledGrammar& g = *s.grammar;
    for (uint32_t i = 0; i < s.count; ++i) {
      const uint32_t t = s.top(i);
      if (t != kNoTop && g.terminal_contains(t, cp)) sig |= uint64_t{1} << i;
    }
    if (sig == 0) return false;
    if (s.self_sig[sig_slot(sig)].load(std::memory_order_relaxed) == sig) return true;
  }
  // The initial set lives in the Grammar and state_ shares the Grammar's ownership; later
  // sets carry their own reference to it.
  StepResult r =
      step_stacks(s, cp, s.keep_alive ? s.keep_alive : std::shared_ptr<const void>(state_));
  if (!r.accepted) return false;
  if (r.next) {
    state_ = std::move(r.next);
  } else if (cp < 0x80) {
    s.self_ascii[cp >> 6].fetch_or(uint64_t{1} << (cp & 63), std::memory_order_relaxed);
  } else if (sig != 0) {
    s.self_sig[sig_slot(sig)].store(sig, std::memory_order_relaxed);
  }
  return true;
}

bool GrammarMatcher::accept_byte(uint8_t byte) {
  if (partial_left_ == 0) {
    if (byte < 0x80) return advance(byte);
    // Invalid leads (continuation bytes, C0, C1, F5+) have no bit in any lead mask.
    if (!test_bit(state_->lead, byte)) return false;
    const int len = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2;
    partial_ = byte & (0x7Fu >> len);
    partial_len_ = static_cast<uint8_t>(len);
    partial_left_ = static_cast<uint8_t>(len - 1);
    return true;
  }
  if ((byte & 0xC0) != 0x80) return false;
  const uint32_t bits = (partial_ << 6) | (byte & 0x3Fu);
  const int left = partial_left_ - 1;
  if (left == 0) {
    if (!advance(bits)) return false;
    partial_ = 0;
    partial_left_ = 0;
    partial_len_ = 0;
    return true;
  }
  // Keep the byte only if some allowed code point starts with the bytes so far; the code
  // points sharing a UTF-8 prefix form one contiguous range.
  const CharRange range = utf8_prefix_range(bits, partial_len_, left);
  if (range.lo > range.hi) return false;
  const StackSet& s = *state_;
  const CompiledGrammar& g = *s.grammar;
  bool allowed = false;
  for (uint32_t i = 0; i < s.count && !allowed; ++i) {
    const uint32_t t = s.top(i);
    allowed = t != kNoTop && g.terminal_intersects(t, range.lo, range.hi);
  }
  if (!allowed) return false;
  partial_ = bits;
  partial_left_ = static_cast<uint8_t>(left);
  return true;
}

bool GrammarMatcher::accept(std::string_view bytes) {
  GrammarMatcher next = *this;
  for (char c : bytes) {
    if (!next.accept_byte(static_cast<uint8_t>(c))) return false;
  }
  *this = std::move(next);
  return true;
}

bool GrammarMatcher::accepts(std::string_view bytes) const {
  GrammarMatcher probe = *this;
  return probe.accept(bytes);
}

bool GrammarMatcher::complete() const { return partial_left_ == 0 && state_->accepting; }

bool GrammarMatcher::can_continue() const {
  if (partial_left_ != 0) return true;  // the partial character was checked to be completable
  const uint64_t* lead = state_->lead;
  return (lead[0] | lead[1] | lead[2] | lead[3]) != 0;
}

bool GrammarMatcher::same_state(const GrammarMatcher& other) const {
  return state_ == other.state_ && partial_ == other.partial_ &&
         partial_left_ == other.partial_left_ && partial_len_ == other.partial_len_;
}

}  // namespace exq::grammar
