// Pre-tokenizers of a tokenizer.json (the "pre_tokenizer" field): Sequence, Split (literal or
// regex pattern, every HF delimiter behavior, invert), Digits, ByteLevel (GPT-2 regex and byte
// map), Metaspace (prepend_scheme first/always/never, split), Whitespace, WhitespaceSplit.
// They stream: each piece is handed to a sink (the next stage or the model) as soon as it is
// cut, so no per-word containers are built.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "tokenizer/json_util.h"

namespace exq::tokenizer {

// A non-owning reference to a callable, cheap to pass down a chain of stages.
template <typename Sig>
class FunctionRef;
template <typename R, typename... A>
class FunctionRef<R(A...)> {
 public:
  template <typename F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef>)
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor)
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

// Receives one non-empty piece; `at_start` is true when the piece begins at offset 0 of the
// original input (Metaspace's prepend_scheme "first" needs it).
using PieceSink = FunctionRef<void(std::string_view piece, bool at_start)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Cuts `text` (valid UTF-8) and calls `sink` for each non-empty piece, in order.
  virtual void split(std::string_view text, bool at_start, PieceSink sink) const = 0;
};

// Builds the pre-tokenizer described at `path`; an unknown "type" throws exq::Error naming it.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const detail::Json& v, const std::string& path,
                                                 int depth = 0);

}  // namespace exq::tokenizer
