#include "io/exl2.h"

#include <fmt/format.h>

#include <cmath>

#include "core/error.h"
#include "core/half.h"

namespace exq::io {
namespace {

Error tensor_error(const std::string& key, const char* suffix, const std::string& message) {
  return Error(message, ErrorContext{.tensor = key + suffix});
}

// dtype, rank and contiguity of one stored tensor; dims are checked by the caller.
void check_stored(const TensorView& v, const std::string& key, const char* suffix, DType dtype,
                  int rank) {
  if (v.empty()) throw tensor_error(key, suffix, "missing");
  if (v.dtype() != dtype || v.rank() != rank)
    throw tensor_error(key, suffix,
                       fmt::format("expected {} of rank {}, got {} {}", dtype_name(dtype), rank,
                                   dtype_name(v.dtype()), shape_str(v.shape())));
  if (!v.is_contiguous()) throw tensor_error(key, suffix, "not contiguous");
}

void check_shape(const TensorView& v, const std::string& key, const char* suffix,
                 const Shape& expected, const char* why) {
  if (v.shape() != expected)
    throw tensor_error(key, suffix,
                       fmt::format("expected shape {} ({}), got {}", shape_str(expected), why,
                                   shape_str(v.shape())));
}

template <typename Source>
Exl2Tensors lookup(const Source& src, const std::string& key) {
  Exl2Tensors t;
  t.q_weight = src.get(key + ".q_weight");
  t.q_scale = src.get(key + ".q_scale");
  t.q_scale_max = src.get(key + ".q_scale_max");
  t.q_groups = src.get(key + ".q_groups");
  t.q_invperm = src.get(key + ".q_invperm");
  if (src.contains(key + ".bias")) t.bias = src.get(key + ".bias");
  return t;
}

}  // namespace

int64_t exl2_out_pad(int64_t out) { return (out + 31) / 32 * 32; }

bool is_exl2_bit_width(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

std::vector<Exl2Group> exl2_group_table(const std::vector<std::pair<int, int64_t>>& bits_rows) {
  std::vector<Exl2Group> groups;
  int64_t row = 0, word = 0;
  for (const auto& [bits, rows] : bits_rows) {
    EXQ_CHECK(is_exl2_bit_width(bits), "group of {} bits: expected 2, 3, 4, 5, 6 or 8", bits);
    EXQ_CHECK(rows > 0, "group of {} rows", rows);
    const int64_t words = (rows * bits + 31) / 32;
    groups.push_back({bits, row, rows, word, words});
    row += rows;
    word += words;
  }
  return groups;
}

std::vector<Exl2Group> validate_exl2(const Exl2Tensors& t, int64_t in, int64_t out,
                                     const std::string& key) {
  EXQ_CHECK(in > 0 && out > 0, "{}: layer shape [{}, {}] must be positive", key, out, in);
  check_stored(t.q_weight, key, ".q_weight", DType::I32, 2);
  check_stored(t.q_scale, key, ".q_scale", DType::I32, 2);
  check_stored(t.q_scale_max, key, ".q_scale_max", DType::F16, 1);
  check_stored(t.q_groups, key, ".q_groups", DType::I16, 1);
  check_stored(t.q_invperm, key, ".q_invperm", DType::I32, 1);
  const int64_t out_pad = exl2_out_pad(out);

  const int64_t n = t.q_groups.numel();
  if (n == 0 || n % 2 != 0)
    throw tensor_error(key, ".q_groups", fmt::format("expected 2*groups entries, got {}", n));
  const int64_t num_groups = n / 2;
  check_shape(t.q_invperm, key, ".q_invperm", {in}, "in");
  check_shape(t.q_scale_max, key, ".q_scale_max", {num_groups}, "groups");
  check_shape(t.q_scale, key, ".q_scale", {num_groups, out_pad / 8}, "groups, out_pad/8");
  if (t.q_weight.dim(1) != out_pad)
    throw tensor_error(key, ".q_weight",
                       fmt::format("expected {} columns (out {} padded to 32), got shape {}",
                                   out_pad, out, shape_str(t.q_weight.shape())));
  if (!t.bias.empty()) {
    check_stored(t.bias, key, ".bias", DType::F16, 1);
    check_shape(t.bias, key, ".bias", {out}, "out");
  }

  // Group table: rows of a group follow from its q_weight rows; the last group holds the rest.
  const int16_t* qg = t.q_groups.data<int16_t>();
  const int64_t total_words = t.q_weight.dim(0);
  std::vector<Exl2Group> groups;
  int64_t row = 0;
  for (int64_t g = 0; g < num_groups; ++g) {
    const int bits = qg[2 * g];
    const int64_t begin = qg[2 * g + 1];
    const int64_t end = g + 1 < num_groups ? qg[2 * g + 3] : total_words;
    if (!is_exl2_bit_width(bits))
      throw tensor_error(key, ".q_groups",
                         fmt::format("group {} has {} bits, expected 2, 3, 4, 5, 6 or 8", g, bits));
    if (g == 0 && begin != 0)
      throw tensor_error(key, ".q_groups",
                         fmt::format("group 0 starts at row {}, expected 0", begin));
    if (end <= begin || end > total_words)
      throw tensor_error(key, ".q_groups",
                         fmt::format("group {} spans q_weight rows [{}, {}), q_weight has {}", g,
                                     begin, end, total_words));
    const int64_t words = end - begin;
    int64_t rows;
    if (g + 1 < num_groups) {
      if (words * 32 % bits != 0)
        throw tensor_error(
            key, ".q_groups",
            fmt::format("group {}: {} words do not hold a whole number of {}-bit rows", g, words,
                        bits));
      rows = words * 32 / bits;
    } else {
      rows = in - row;
      if (rows <= 0 || (rows * bits + 31) / 32 != words)
        throw tensor_error(key, ".q_groups",
                           fmt::format("last group ({} words of {} bits) does not hold the {} "
                                       "remaining of {} input rows",
                                       words, bits, rows, in));
    }
    if (row + rows > in)
      throw tensor_error(key, ".q_groups",
                         fmt::format("groups cover more than the {} input rows", in));
    groups.push_back({bits, row, rows, begin, words});
    row += rows;
  }

  const int32_t* inv = t.q_invperm.data<int32_t>();
  std::vector<uint8_t> seen(static_cast<size_t>(in), 0);
  for (int64_t i = 0; i < in; ++i) {
    const int32_t v = inv[i];
    if (v < 0 || v >= in || seen[static_cast<size_t>(v)])
      throw tensor_error(key, ".q_invperm",
                         fmt::format("not a permutation of 0..{}: entry {} is {}{}", in - 1, i, v,
                                     v >= 0 && v < in ? " (repeated)" : ""));
    seen[static_cast<size_t>(v)] = 1;
  }
  const uint16_t* sm = t.q_scale_max.data<uint16_t>();
  for (int64_t g = 0; g < num_groups; ++g)
    if (!std::isfinite(half_to_float(sm[g])))
      throw tensor_error(key, ".q_scale_max", fmt::format("group {} is not finite", g));
  return groups;
}

Tensor dequantize_exl2(const Exl2Linear& layer, DType dtype) {
  EXQ_CHECK(dtype == DType::F16 || dtype == DType::F32,
            "EXL2 dequantization to {} unsupported (F16 or F32)", dtype_name(dtype));
  check_exl2_linear(layer);
  const int64_t in = layer.in, out = layer.out;
  Tensor result(dtype, {out, in});
  uint16_t* h = dtype == DType::F16 ? result.data<uint16_t>() : nullptr;
  float* f = dtype == DType::F32 ? result.data<float>() : nullptr;
  std::vector<float> scale(static_cast<size_t>(out));
  for (size_t g = 0; g < layer.groups.size(); ++g) {
    const Exl2Group& grp = layer.groups[g];
    // Each product below is exact in float32 (at most 9 + 11 significant bits), so rounding
    // it to fp16 once reproduces the half-precision kernel.
    const float m = half_to_float(float_to_half(half_to_float(layer.scale_max[g]) / 256.0f));
    for (int64_t c = 0; c < out; ++c) {
      const float qs = layer.qs[g * out + c];
      scale[c] = half_to_float(float_to_half(qs * qs * m));
    }
    const int zero = 1 << (grp.bits - 1);
    for (int64_t r = grp.row_begin; r < grp.row_begin + grp.rows; ++r) {
      const int64_t ch = layer.perm[r];
      const uint8_t* q = &layer.q[r * out];
      for (int64_t c = 0; c < out; ++c) {
        const uint16_t w = float_to_half(static_cast<float>(q[c] - zero) * scale[c]);
        if (h)
          h[c * in + ch] = w;
        else
          f[c * in + ch] = half_to_float(w);
      }
    }
  }
  return result;
}

Tensor dequantize_exl2(const Exl2Tensors& t, int64_t in, int64_t out, const std::string& key,
                       DType dtype) {
  return dequantize_exl2(unpack_exl2(t, in, out, key), dtype);
}

Exl2Tensors Exl2Packed::view() const {
  Exl2Tensors t{q_weight.view(), q_scale.view(),   q_scale_max.view(),
                q_groups.view(), q_invperm.view(), {}};
  if (!bias.empty()) t.bias = bias.view();
  return t;
}

void Exl2Packed::append_to(std::vector<NamedTensor>& out, const std::string& key) const {
  out.push_back({key + ".q_weight", q_weight.view()});
  out.push_back({key + ".q_scale", q_scale.view()});
  out.push_back({key + ".q_scale_max", q_scale_max.view()});
  out.push_back({key + ".q_groups", q_groups.view()});
  out.push_back({key + ".q_invperm", q_invperm.view()});
  if (!bias.empty()) out.push_back({key + ".bias", bias.view()});
}

bool has_exl2(const SafetensorsFile& file, const std::string& key) {
  return file.contains(key + ".q_weight");
}
bool has_exl2(const SafetensorsModel& model, const std::string& key) {
  return model.contains(key + ".q_weight");
}
Exl2Tensors exl2_tensors(const SafetensorsFile& file, const std::string& key) {
  return lookup(file, key);
}
Exl2Tensors exl2_tensors(const SafetensorsModel& model, const std::string& key) {
  return lookup(model, key);
}

}  // namespace exq::io
