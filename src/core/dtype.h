// Element types of tensors and their names in safetensors / GGUF-derived files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace exq {

enum class DType : uint8_t { F32, F16, BF16, I8, I16, I32, U8 };

size_t dtype_size(DType t);
// Safetensors spelling: "F32", "F16", "BF16", "I8", "I16", "I32", "U8".
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);

}  // namespace exq
