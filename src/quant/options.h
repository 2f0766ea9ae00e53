// EXL2 quantization options ("0.05:8b_32g/0.1:4b_128g/0.85:3b_128g s4"): parsing, the
// exllamav2 option tables (attention, MLP, head), the group layout an option gives a linear
// layer, and exllamav2's bits accounting (total_bits), reproduced to the integer.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace exq::quant {

// One part of an option: the first `prop` of the (permuted) input rows at `bits` bits, in
// groups of `group_size` rows.
struct OptionPart {
  double prop = 1.0;
  // exllamav2 writes 1 and 1.0 differently ("1:4b_128g" vs "1.0:8b_128g", JSON 1 vs 1.0);
  // kept so descriptions and measurement files round-trip exactly.
  bool prop_is_int = false;
  int bits = 4;
  int group_size = 128;

  bool operator==(const OptionPart&) const = default;
};

struct QuantOption {
  std::vector<OptionPart> parts;  // higher bit widths first
  int scale_bits = 4;

  // exllamav2's description, e.g. "0.1:5b_32g/0.9:4b_32g s4".
  std::string desc() const;
  bool operator==(const QuantOption&) const = default;
};

constexpr std::array<int, 6> kExl2Bits = {2, 3, 4, 5, 6, 8};
bool is_exl2_bits(int bits);

// Parses "PROP:BITSb_GROUPg[/...] [sN]" (the scale suffix defaults to s4). Throws exq::Error
// naming the option on bad syntax, a bit width outside {2,3,4,5,6,8}, a group size that is not
// a positive multiple of 32 (16 for 2-bit), repeated bit widths, proportions outside (0, 1] or
// not summing to 1, or scale bits other than 4.
QuantOption parse_option(std::string_view text);
// Same checks for an option built in code (from JSON, tests).
void validate_option(const QuantOption& option);

// Python's str(float) for the proportions: shortest round-trip digits, "1.0" for integers.
std::string format_prop(double prop, bool is_int);

// ---- Groups ---------------------------------------------------------------------------------

struct GroupSpan {
  int bits = 0;
  int64_t row_begin = 0;  // first permuted input row
  int64_t rows = 0;       // the last group of a part may be short
};

// Groups per part exactly as exllamav2 counts them (double arithmetic, math.ceil):
// remaining = in; g = ceil(min(in*p, remaining) / gs); remaining -= g*gs. Raw counts, which
// can be zero or (for options far too coarse for `in`) negative.
std::vector<int64_t> part_group_counts(const QuantOption& option, int64_t in);

// The groups along the permuted input dimension. Throws exq::Error when the option does not
// cover `in` rows (exllamav2 asserts) or yields a negative group count.
std::vector<GroupSpan> group_layout(const QuantOption& option, int64_t in);

// exllamav2's QParams.total_bits for a weight of HF shape [out, in]: q_weight bits + 16 per
// group (q_scale_max) + 32 per group (q_groups) + scale_bits*out per group (q_scale)
// + 32*in (q_invperm) + 16*out with a bias.
int64_t total_bits(const QuantOption& option, int64_t in, int64_t out, bool has_bias);
double bits_per_weight(const QuantOption& option, int64_t in, int64_t out, bool has_bias);

// ---- exllamav2 0.3.x option tables -------------------------------------------------------------

using AttnOptions = std::array<QuantOption, 4>;  // q_proj, k_proj, v_proj, o_proj
using MlpOptions = std::array<QuantOption, 3>;   // gate_proj, up_proj, down_proj

inline constexpr std::array<std::string_view, 4> kAttnLinears = {"q_proj", "k_proj", "v_proj",
                                                                 "o_proj"};
inline constexpr std::array<std::string_view, 3> kMlpLinears = {"gate_proj", "up_proj",
                                                                "down_proj"};
// A mixture-of-experts block's measurement columns (exllamav2's): every expert's gate, up, down.
inline constexpr std::array<std::string_view, 3> kMoeLinears = {"w1", "w3", "w2"};

const std::vector<AttnOptions>& attn_option_table();  // 19 rows
const std::vector<MlpOptions>& mlp_option_table();    // 17 rows
// head_bits in {2,3,4,5,6,8}; anything else throws.
const QuantOption& head_option(int head_bits);

}  // namespace exq::quant
