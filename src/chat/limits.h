// Resource limits of one template render, so a hostile or broken template (or a fuzzer) can
// neither hang nor exhaust memory: every evaluation step and every byte built is charged here.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/error.h"

namespace exq::chat {

struct Limits {
  size_t max_output_bytes = size_t{64} << 20;  // the rendered text, and any one string or list
  uint64_t max_steps = 50'000'000;              // statements + expressions + loop iterations
  int max_call_depth = 64;                      // nested macro calls
};

// Nesting of containers in one value (bounds recursion in printing, compare and destruction).
constexpr int kMaxValueDepth = 200;
// Nesting of the syntax tree (bounds recursion in the parser and evaluator).
constexpr int kMaxSyntaxDepth = 200;
// Nested statement/expression evaluations in one render, macro calls included: bounds the
// evaluator's stack (a few KB per level in sanitizer builds) well below the usual 8 MB.
constexpr int kMaxRenderDepth = 500;

class Budget {
 public:
  explicit Budget(const Limits& limits) : limits_(limits) {}

  const Limits& limits() const { return limits_; }

  void step(uint64_t n = 1) {
    steps_ += n;
    if (steps_ > limits_.max_steps)
      throw Error(fmt::format("chat template: render exceeded {} steps", limits_.max_steps));
  }
  void check_size(size_t bytes) const {
    if (bytes > limits_.max_output_bytes)
      throw Error(fmt::format("chat template: value of {} bytes exceeds the {} byte limit", bytes,
                              limits_.max_output_bytes));
  }
  // For operations whose cost grows with the size of what they build.
  void charge_bytes(size_t bytes) {
    check_size(bytes);
    step(bytes / 64 + 1);
  }

 private:
  Limits limits_;
  uint64_t steps_ = 0;
};

}  // namespace exq::chat
