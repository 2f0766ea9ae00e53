// EXL2 linear layers as exllamav2 stores them (q_weight, q_scale, q_scale_max, q_groups,
// q_invperm, optional bias): validation, unpack to per-value codes, pack back byte for byte,
// and dequantization bit-exact with exllamav2's half-precision reconstruction.
// Format reference: docs exl2.md section 1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace exq::io {

// Suffixes of the tensors of one layer `KEY` ("KEY.q_weight", ...).
inline constexpr const char* kExl2Suffixes[] = {".q_weight", ".q_scale", ".q_scale_max",
                                                ".q_groups", ".q_invperm"};

// The stored tensors of one layer (non-owning views, e.g. into a mapped safetensors file).
struct Exl2Tensors {
  TensorView q_weight;     // int32 [sum_g rows_g*bits_g/32, out_pad]
  TensorView q_scale;      // int32 [groups, out_pad/8], 4-bit codes qs-1
  TensorView q_scale_max;  // f16 [groups]
  TensorView q_groups;     // int16 [2*groups]: (bits, first q_weight row) per group
  TensorView q_invperm;    // int32 [in]
  TensorView bias;         // f16 [out], empty when the layer has no bias
};

// Owning tensors as pack_exl2 produces them.
struct Exl2Packed {
  Tensor q_weight, q_scale, q_scale_max, q_groups, q_invperm, bias;

  Exl2Tensors view() const;
  // Appends KEY.q_weight ... (views into this object) for write_safetensors.
  void append_to(std::vector<NamedTensor>& out, const std::string& key) const;
};

// One group along the permuted input dimension.
struct Exl2Group {
  int bits = 0;
  int64_t row_begin = 0;  // first permuted input row
  int64_t rows = 0;
  int64_t word_begin = 0;  // first q_weight row
  int64_t words = 0;       // q_weight rows: ceil(rows*bits/32)
};

// out rounded up to a multiple of 32, the column count of q_weight.
int64_t exl2_out_pad(int64_t out);
bool is_exl2_bit_width(int bits);

// Checks shapes, dtypes, the group table and the permutation against the expected layer shape
// (HF [out, in]) and returns the group table. Every failure throws exq::Error naming
// `key`.<tensor> with expected vs actual.
std::vector<Exl2Group> validate_exl2(const Exl2Tensors& t, int64_t in, int64_t out,
                                     const std::string& key);

// Unpacked layer. Row i of the quantized matrix is input channel perm[i].
struct Exl2Linear {
  int64_t in = 0;
  int64_t out = 0;
  std::vector<Exl2Group> groups;    // word_begin/words are derived by pack
  std::vector<uint8_t> q;           // [in, out] codes 0 .. 2^bits-1, permuted row order
  std::vector<uint8_t> qs;          // [groups, out] scale codes 1..16
  std::vector<uint16_t> scale_max;  // [groups] fp16 bits of q_scale_max
  std::vector<int32_t> perm;        // [in]
  std::vector<int32_t> invperm;     // [in]
  std::vector<uint16_t> bias;       // [out] fp16 bits, empty without bias
};

// Group table of an unpacked layer from (bits, rows) pairs: fills row_begin, word_begin, words.
std::vector<Exl2Group> exl2_group_table(const std::vector<std::pair<int, int64_t>>& bits_rows);

Exl2Linear unpack_exl2(const Exl2Tensors& t, int64_t in, int64_t out, const std::string& key);
// Checks an unpacked layer (sizes, code ranges, permutation); throws exq::Error naming `key`.
void check_exl2_linear(const Exl2Linear& layer, const std::string& key = "exl2 layer");
// Padding columns get the zero code 2^(bits-1) and scale code 15, as exllamav2 writes them.
Exl2Packed pack_exl2(const Exl2Linear& layer);

// W in HF layout [out, in], original channel order. F16: exllamav2's rounding exactly
// (m = fp16(q_scale_max/256), scale = fp16(qs^2*m), w = fp16((q - 2^(b-1))*scale));
// F32: the same fp16 values widened.
Tensor dequantize_exl2(const Exl2Linear& layer, DType dtype = DType::F16);
// Same, directly from packed tensors (validates first).
Tensor dequantize_exl2(const Exl2Tensors& t, int64_t in, int64_t out, const std::string& key,
                       DType dtype = DType::F16);

// Lookup of KEY.* in a file or model folder. has_exl2 is true when KEY.q_weight exists.
bool has_exl2(const SafetensorsFile& file, const std::string& key);
bool has_exl2(const SafetensorsModel& model, const std::string& key);
Exl2Tensors exl2_tensors(const SafetensorsFile& file, const std::string& key);
Exl2Tensors exl2_tensors(const SafetensorsModel& model, const std::string& key);

}  // namespace exq::io
