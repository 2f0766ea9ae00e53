// Fuzzes the GBNF parser and matcher: the input is grammar text, a NUL byte, then bytes to feed
// the matcher. Any outcome but a result or an exq::Error (crash, hang, sanitizer report, other
// exception, or a broken matcher invariant) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "grammar/grammar.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t split = in.find('\0');
  const std::string_view text = in.substr(0, split);
  const std::string_view bytes =
      split == std::string_view::npos ? std::string_view() : in.substr(split + 1);
  if (text.size() > 4096 || bytes.size() > 4096) return 0;  // keep each run fast
  try {
    const auto grammar = exq::grammar::Grammar::parse(text);
    exq::grammar::GrammarMatcher m(grammar);
    for (size_t i = 0; i < bytes.size(); ++i) {
      const exq::grammar::GrammarMatcher before = m;
      const bool predicted = m.accepts(bytes.substr(i, 1));
      const bool took = m.accept_byte(static_cast<uint8_t>(bytes[i]));
      check(predicted == took);
      // A refused byte changes nothing; an accepted prefix can always finish.
      if (!took)
        check(m.complete() == before.complete() && m.can_continue() == before.can_continue());
      check(m.complete() || m.can_continue());
    }
  } catch (const exq::Error&) {
  }
  return 0;
}
