// GGUF (v2/v3) reader over a read-only mmap: header, typed key/value metadata (scalars,
// strings, nested arrays), tensor infos and data, plus dequantization to float16 of F32, F16,
// BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants Q2_K-Q6_K and IQ4_NL/IQ4_XS tensors. Every
// count, length and offset is checked against the bytes left in the file before it is used to
// read or allocate, so corrupt input gives exq::Error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "io/mmap_file.h"

namespace exq::io {

enum class GgufValueType : uint32_t {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType t);

// One metadata value. Integers are widened to 64 bits, floats to double; arrays hold their
// elements as values (possibly arrays again). Accessors throw exq::Error on a type mismatch.
class GgufValue {
 public:
  GgufValueType type() const { return type_; }
  GgufValueType array_type() const { return array_type_; }  // element type of an array
  bool is_array() const { return type_ == GgufValueType::Array; }
  bool is_string() const { return type_ == GgufValueType::String; }
  bool is_integer() const;
  bool is_float() const {
    return type_ == GgufValueType::Float32 || type_ == GgufValueType::Float64;
  }

  int64_t as_int() const;    // any integer type that fits int64
  double as_double() const;  // float or integer
  bool as_bool() const;
  const std::string& as_string() const;
  size_t size() const { return items_.size(); }  // array length
  const GgufValue& operator[](size_t i) const;
  const std::vector<GgufValue>& items() const { return items_; }
  std::vector<std::string> as_strings() const;  // array of strings
  std::vector<int64_t> as_ints() const;         // array of integers
  std::vector<double> as_doubles() const;       // array of numbers
  std::string describe() const;                 // short form for listings, e.g. "[string x 49152]"

 private:
  friend class GgufParser;
  GgufValueType type_ = GgufValueType::Uint8;
  GgufValueType array_type_ = GgufValueType::Uint8;
  uint64_t u_ = 0;  // unsigned integers and bool
  int64_t i_ = 0;   // signed integers
  double f_ = 0;
  std::string s_;
  std::vector<GgufValue> items_;
};

// ggml tensor type ids as stored in GGUF.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30,
};
// Name of a ggml type id ("Q4_1"), or "type <id>" when unknown.
std::string ggml_type_name(uint32_t type);
// Elements per block and bytes per block; false when the id is unknown.
bool ggml_type_block(uint32_t type, int64_t* block_size, int64_t* type_size);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: innermost (contiguous) dimension first
  uint32_t type = 0;          // ggml type id
  uint64_t offset = 0;        // relative to the data section
  size_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping

  int64_t numel() const;
  Shape hf_shape() const { return Shape(dims.rbegin(), dims.rend()); }  // outermost first
};

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path);
  static GgufFile parse(MappedFile file);  // bytes already loaded; errors name file.path()

  uint32_t version() const { return version_; }
  const std::filesystem::path& path() const { return file_.path(); }
  size_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& at(const std::string& key) const;  // Error naming the file and key if absent
  // Typed lookups; errors name the file and key. The *_or forms return `fallback` if absent.
  int64_t get_int(const std::string& key) const;
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::string get_string_or(const std::string& key, const std::string& fallback) const;
  bool get_bool_or(const std::string& key, bool fallback) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // Error naming it if absent

  // Dequantizes to a new float16 tensor in HF shape (GGUF dims reversed), in parallel.
  // Unsupported types throw "unsupported tensor type <name>" naming the tensor; so does a
  // value that is not finite in float16 (a scale out of range, or inf/NaN in the file).
  Tensor dequantize_f16(const GgufTensorInfo& info) const;

 private:
  friend class GgufParser;
  MappedFile file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// True for the types dequantize_to_f16 handles.
bool gguf_dequant_supported(uint32_t type);
// Converts `n` values (a whole number of blocks) of ggml type `type` at `src` to float16 bits:
// each value is computed in float32 (scale multiply, then offset add, never fused) and rounded
// to nearest-even. Throws for unsupported types.
void dequantize_to_f16(uint32_t type, const uint8_t* src, uint16_t* dst, int64_t n);

}  // namespace exq::io
