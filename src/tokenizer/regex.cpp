#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

namespace {

std::string pcre2_message(int rc) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(rc, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match scratch: match data (only the whole-match pair is read) and a JIT stack
// larger than PCRE2's 32 KiB default, so long runs of a repeated group do not fail.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  auto code = std::make_shared<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!code->code)
    throw Error(fmt::format("regex \"{}\" does not compile at offset {}: {}", utf8_lossy(pattern),
                            err_offset, pcre2_message(err)));
  code->jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
  code_ = std::move(code);
}

std::optional<std::pair<size_t, size_t>> Regex::find(std::string_view subject, size_t start) const {
  if (start > subject.size()) return std::nullopt;
  MatchScratch& s = scratch();
  const auto* ptr = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const int rc = code_->jit
                     ? pcre2_jit_match(code_->code, ptr, subject.size(), start, 0, s.data, s.context)
                     : pcre2_match(code_->code, ptr, subject.size(), start, PCRE2_NO_UTF_CHECK,
                                   s.data, s.context);
  if (rc == PCRE2_ERROR_NOMATCH) return std::nullopt;
  if (rc < 0)
    throw Error(fmt::format("regex \"{}\" failed on a {}-byte input: {}", utf8_lossy(pattern_),
                            subject.size(), pcre2_message(rc)));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  // \K inside a lookahead can yield end < begin; treat such a match as empty.
  const size_t b = ov[0], e = ov[1] < ov[0] ? ov[0] : ov[1];
  return std::make_pair(b, e);
}

size_t Regex::next_char(std::string_view s, size_t pos) {
  if (pos >= s.size()) return pos + 1;
  return pos + static_cast<size_t>(utf8_seq_len(static_cast<unsigned char>(s[pos])));
}

}  // namespace exq::tokenizer
