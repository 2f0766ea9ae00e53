// exq::Error: the one exception type for bad input and failed operations. It carries where
// the problem is (file, tensor, layer) so the CLI can print one precise line.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace exq {

struct ErrorContext {
  std::string file;    // path of the file being read or written
  std::string tensor;  // tensor name
  int layer = -1;      // decoder layer index, -1 when not applicable
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorContext context = {});

  const std::string& message() const { return message_; }
  const ErrorContext& context() const { return context_; }

  // Returns a copy with missing context fields filled in (outer layers add what they know).
  Error with_file(const std::string& file) const;
  Error with_tensor(const std::string& tensor) const;
  Error with_layer(int layer) const;

 private:
  std::string message_;
  ErrorContext context_;
};

// Formats "file: tensor 'name': layer N: message" from the set fields.
std::string format_error(const std::string& message, const ErrorContext& context);

}  // namespace exq

// Input validation: throws exq::Error with a formatted message when cond is false.
#define EXQ_CHECK(cond, ...)                                 \
  do {                                                       \
    if (!(cond)) throw ::exq::Error(fmt::format(__VA_ARGS__)); \
  } while (0)

// Internal invariants (bugs, not bad input). Still an exception, never abort().
#define EXQ_ASSERT(cond)                                                                 \
  do {                                                                                   \
    if (!(cond))                                                                         \
      throw ::exq::Error(fmt::format("internal error: {} ({}:{})", #cond, __FILE__, __LINE__)); \
  } while (0)
