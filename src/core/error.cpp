#include "core/error.h"

namespace exq {

std::string format_error(const std::string& message, const ErrorContext& context) {
  std::string out;
  if (!context.file.empty()) out += context.file + ": ";
  if (!context.tensor.empty()) out += "tensor '" + context.tensor + "': ";
  if (context.layer >= 0) out += fmt::format("layer {}: ", context.layer);
  return out + message;
}

Error::Error(const std::string& message, ErrorContext context)
    : std::runtime_error(format_error(message, context)),
      message_(message),
      context_(std::move(context)) {}

Error Error::with_file(const std::string& file) const {
  ErrorContext c = context_;
  if (c.file.empty()) c.file = file;
  return Error(message_, c);
}

Error Error::with_tensor(const std::string& tensor) const {
  ErrorContext c = context_;
  if (c.tensor.empty()) c.tensor = tensor;
  return Error(message_, c);
}

Error Error::with_layer(int layer) const {
  ErrorContext c = context_;
  if (c.layer < 0) c.layer = layer;
  return Error(message_, c);
}

}  // namespace exq
