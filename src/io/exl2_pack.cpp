// Bit packing of EXL2 layers: per output column, the codes of a group's rows form a
// little-endian bit stream cut into 32-bit words stacked down q_weight (value k at bit
// offset k*bits, possibly straddling two words); scale codes 8 columns per word.
#include <fmt/format.h>

#include <limits>

#include "core/error.h"
#include "core/half.h"
#include "io/exl2.h"

namespace exq::io {
namespace {

constexpr int kPadScaleCode = 15;  // exllamav2's pack_rows_4 turns the padding qs=0 into 0xF

Error layer_error(const std::string& key, const std::string& message) {
  return Error(message, ErrorContext{.tensor = key});
}

}  // namespace

Exl2Linear unpack_exl2(const Exl2Tensors& t, int64_t in, int64_t out, const std::string& key) {
  Exl2Linear layer;
  layer.groups = validate_exl2(t, in, out, key);
  layer.in = in;
  layer.out = out;
  const int64_t out_pad = exl2_out_pad(out);
  const int64_t num_groups = static_cast<int64_t>(layer.groups.size());
  const auto* qw = reinterpret_cast<const uint32_t*>(t.q_weight.data<int32_t>());
  const auto* qsc = reinterpret_cast<const uint32_t*>(t.q_scale.data<int32_t>());

  layer.q.resize(static_cast<size_t>(in * out));
  for (const Exl2Group& g : layer.groups) {
    const uint32_t mask = (1u << g.bits) - 1u;
    const uint32_t* words = qw + g.word_begin * out_pad;
    for (int64_t k = 0; k < g.rows; ++k) {
      const int64_t off = k * g.bits;
      const uint32_t* w0 = words + (off >> 5) * out_pad;
      const int sh = static_cast<int>(off & 31);
      const bool straddles = sh + g.bits > 32;
      uint8_t* dst = &layer.q[(g.row_begin + k) * out];
      for (int64_t c = 0; c < out; ++c) {
        uint32_t v = w0[c] >> sh;
        if (straddles) v |= w0[c + out_pad] << (32 - sh);
        dst[c] = static_cast<uint8_t>(v & mask);
      }
    }
  }

  layer.qs.resize(static_cast<size_t>(num_groups * out));
  for (int64_t g = 0; g < num_groups; ++g)
    for (int64_t c = 0; c < out; ++c)
      layer.qs[g * out + c] =
          static_cast<uint8_t>(((qsc[g * (out_pad / 8) + c / 8] >> (4 * (c % 8))) & 15u) + 1u);

  const auto sm = t.q_scale_max.span<uint16_t>();
  layer.scale_max.assign(sm.begin(), sm.end());
  const auto inv = t.q_invperm.span<int32_t>();
  layer.invperm.assign(inv.begin(), inv.end());
  layer.perm.resize(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i)
    layer.perm[static_cast<size_t>(layer.invperm[i])] = static_cast<int32_t>(i);
  if (!t.bias.empty()) {
    const auto b = t.bias.span<uint16_t>();
    layer.bias.assign(b.begin(), b.end());
  }
  return layer;
}

void check_exl2_linear(const Exl2Linear& l, const std::string& key) {
  const auto fail = [&](const std::string& m) { return layer_error(key, m); };
  if (l.in <= 0 || l.out <= 0)
    throw fail(fmt::format("shape [{}, {}] must be positive", l.out, l.in));
  if (l.groups.empty()) throw fail("no groups");
  int64_t row = 0;
  for (size_t g = 0; g < l.groups.size(); ++g) {
    const Exl2Group& grp = l.groups[g];
    if (!is_exl2_bit_width(grp.bits))
      throw fail(fmt::format("group {} has {} bits, expected 2, 3, 4, 5, 6 or 8", g, grp.bits));
    if (grp.rows <= 0 || grp.row_begin != row)
      throw fail(fmt::format("group {} covers rows [{}, +{}), expected to start at {}", g,
                             grp.row_begin, grp.rows, row));
    row += grp.rows;
  }
  if (row != l.in) throw fail(fmt::format("groups cover {} rows, expected in = {}", row, l.in));
  const auto n = [](int64_t v) { return static_cast<size_t>(v); };
  const size_t num_groups = l.groups.size();
  if (l.q.size() != n(l.in * l.out) || l.qs.size() != num_groups * n(l.out) ||
      l.scale_max.size() != num_groups || l.perm.size() != n(l.in) || l.invperm.size() != n(l.in) ||
      !(l.bias.empty() || l.bias.size() == n(l.out)))
    throw fail("array sizes do not match [out, in] and the group count");
  for (const Exl2Group& grp : l.groups) {
    const int maxq = (1 << grp.bits) - 1;
    for (int64_t i = grp.row_begin * l.out; i < (grp.row_begin + grp.rows) * l.out; ++i)
      if (l.q[n(i)] > maxq)
        throw fail(
            fmt::format("code {} at row {} exceeds {} bits", l.q[n(i)], i / l.out, grp.bits));
  }
  for (size_t i = 0; i < l.qs.size(); ++i)
    if (l.qs[i] < 1 || l.qs[i] > 16) throw fail(fmt::format("scale code {} not in 1..16", l.qs[i]));
  for (int64_t i = 0; i < l.in; ++i) {
    const int32_t p = l.perm[n(i)];
    if (p < 0 || p >= l.in || l.invperm[n(p)] != i)
      throw fail(fmt::format("perm/invperm are not inverse permutations (at {})", i));
  }
}

Exl2Packed pack_exl2(const Exl2Linear& l) {
  check_exl2_linear(l);
  std::vector<std::pair<int, int64_t>> bits_rows;
  for (const Exl2Group& g : l.groups) bits_rows.emplace_back(g.bits, g.rows);
  const std::vector<Exl2Group> groups = exl2_group_table(bits_rows);
  const int64_t out = l.out, out_pad = exl2_out_pad(out);
  const int64_t num_groups = static_cast<int64_t>(groups.size());
  const int64_t total_words = groups.back().word_begin + groups.back().words;
  // q_groups stores the first q_weight row of each group as int16.
  EXQ_CHECK(groups.back().word_begin <= std::numeric_limits<int16_t>::max(),
            "EXL2 layer too tall: group starts at q_weight row {} (int16 limit)",
            groups.back().word_begin);

  Exl2Packed p;
  p.q_weight = Tensor::zeros(DType::I32, {total_words, out_pad});
  auto* qw = reinterpret_cast<uint32_t*>(p.q_weight.data<int32_t>());
  for (const Exl2Group& g : groups) {
    const uint32_t zero = 1u << (g.bits - 1);
    uint32_t* words = qw + g.word_begin * out_pad;
    for (int64_t k = 0; k < g.rows; ++k) {
      const int64_t off = k * g.bits;
      uint32_t* w0 = words + (off >> 5) * out_pad;
      const int sh = static_cast<int>(off & 31);
      const bool straddles = sh + g.bits > 32;
      const uint8_t* src = &l.q[(g.row_begin + k) * out];
      for (int64_t c = 0; c < out_pad; ++c) {
        const uint32_t v = c < out ? src[c] : zero;
        w0[c] |= v << sh;
        if (straddles) w0[c + out_pad] |= v >> (32 - sh);
      }
    }
  }

  p.q_scale = Tensor::zeros(DType::I32, {num_groups, out_pad / 8});
  auto* qsc = reinterpret_cast<uint32_t*>(p.q_scale.data<int32_t>());
  for (int64_t g = 0; g < num_groups; ++g)
    for (int64_t c = 0; c < out_pad; ++c) {
      const uint32_t code = c < out ? l.qs[g * out + c] - 1u : kPadScaleCode;
      qsc[g * (out_pad / 8) + c / 8] |= code << (4 * (c % 8));
    }

  p.q_scale_max = Tensor(DType::F16, {num_groups});
  std::copy(l.scale_max.begin(), l.scale_max.end(), p.q_scale_max.data<uint16_t>());
  p.q_groups = Tensor(DType::I16, {2 * num_groups});
  int16_t* qg = p.q_groups.data<int16_t>();
  for (int64_t g = 0; g < num_groups; ++g) {
    qg[2 * g] = static_cast<int16_t>(groups[g].bits);
    qg[2 * g + 1] = static_cast<int16_t>(groups[g].word_begin);
  }
  p.q_invperm = Tensor(DType::I32, {l.in});
  std::copy(l.invperm.begin(), l.invperm.end(), p.q_invperm.data<int32_t>());
  if (!l.bias.empty()) {
    p.bias = Tensor(DType::F16, {out});
    std::copy(l.bias.begin(), l.bias.end(), p.bias.data<uint16_t>());
  }
  return p;
}

}  // namespace exq::io
