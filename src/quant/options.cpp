#include "quant/options.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>

#include "core/error.h"

namespace exq::quant {
namespace {

[[noreturn]] void bad_option(std::string_view text, const std::string& why) {
  throw Error(fmt::format("bad quantization option '{}': {}", text, why));
}

bool parse_int(std::string_view s, int* out) {
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

OptionPart parse_part(std::string_view option_text, std::string_view s) {
  OptionPart part;
  const size_t colon = s.find(':');
  const size_t b_ = s.find("b_", colon == std::string_view::npos ? 0 : colon);
  if (colon == std::string_view::npos || b_ == std::string_view::npos || s.size() < 2 ||
      s.back() != 'g')
    bad_option(option_text, fmt::format("part '{}' is not PROP:BITSb_GROUPg", s));
  const std::string_view prop = s.substr(0, colon);
  const std::string_view bits = s.substr(colon + 1, b_ - colon - 1);
  const std::string_view group = s.substr(b_ + 2, s.size() - b_ - 3);
  const auto [ptr, ec] = std::from_chars(prop.data(), prop.data() + prop.size(), part.prop);
  if (prop.empty() || ec != std::errc() || ptr != prop.data() + prop.size())
    bad_option(option_text, fmt::format("proportion '{}' is not a number", prop));
  part.prop_is_int = prop.find_first_of(".eE") == std::string_view::npos;
  if (!parse_int(bits, &part.bits))
    bad_option(option_text, fmt::format("bit width '{}' is not an integer", bits));
  if (!parse_int(group, &part.group_size))
    bad_option(option_text, fmt::format("group size '{}' is not an integer", group));
  return part;
}

}  // namespace

bool is_exl2_bits(int bits) {
  return std::find(kExl2Bits.begin(), kExl2Bits.end(), bits) != kExl2Bits.end();
}

std::string format_prop(double prop, bool is_int) {
  if (is_int && prop == std::floor(prop) && std::fabs(prop) < 1e15)
    return fmt::format("{}", static_cast<int64_t>(prop));
  std::string s = fmt::format("{}", prop);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string QuantOption::desc() const {
  std::string s;
  for (const OptionPart& p : parts) {
    if (!s.empty()) s += '/';
    s += fmt::format("{}:{}b_{}g", format_prop(p.prop, p.prop_is_int), p.bits, p.group_size);
  }
  return s + fmt::format(" s{}", scale_bits);
}

void validate_option(const QuantOption& option) {
  const std::string text = option.desc();
  if (option.parts.empty()) bad_option(text, "no parts");
  double sum = 0.0;
  for (size_t i = 0; i < option.parts.size(); ++i) {
    const OptionPart& p = option.parts[i];
    if (!is_exl2_bits(p.bits))
      bad_option(text, fmt::format("bit width {} is not one of 2, 3, 4, 5, 6, 8", p.bits));
    const int unit = p.bits == 2 ? 16 : 32;
    if (p.group_size <= 0 || p.group_size % unit != 0)
      bad_option(text, fmt::format("group size {} for {}-bit is not a positive multiple of {}",
                                   p.group_size, p.bits, unit));
    if (!(p.prop > 0.0 && p.prop <= 1.0))
      bad_option(text, fmt::format("proportion {} is not in (0, 1]", p.prop));
    for (size_t j = 0; j < i; ++j)
      if (option.parts[j].bits == p.bits)
        bad_option(text, fmt::format("bit width {} appears twice", p.bits));
    sum += p.prop;
  }
  if (std::fabs(sum - 1.0) > 1e-9)
    bad_option(text, fmt::format("proportions sum to {}, expected 1", sum));
  if (option.scale_bits != 4)
    bad_option(text, fmt::format("scale bits {} unsupported (only s4)", option.scale_bits));
}

QuantOption parse_option(std::string_view text) {
  QuantOption option;
  std::string_view s = text;
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  const size_t space = s.find(' ');
  std::string_view main = s;
  if (space != std::string_view::npos) {
    std::string_view suffix = s.substr(space + 1);
    while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
    if (suffix.size() < 2 || suffix.front() != 's' ||
        !parse_int(suffix.substr(1), &option.scale_bits))
      bad_option(text, fmt::format("scale suffix '{}' is not sN", suffix));
    main = s.substr(0, space);
  }
  if (main.empty()) bad_option(text, "empty option");
  size_t begin = 0;
  while (true) {
    const size_t slash = main.find('/', begin);
    option.parts.push_back(parse_part(text, main.substr(begin, slash - begin)));
    if (slash == std::string_view::npos) break;
    begin = slash + 1;
  }
  validate_option(option);
  return option;
}

// ---- Groups ---------------------------------------------------------------------------------

std::vector<int64_t> part_group_counts(const QuantOption& option, int64_t in) {
  std::vector<int64_t> counts;
  int64_t remaining = in;
  for (const OptionPart& p : option.parts) {
    // Same operations and rounding as Python: float product, min with an int, true division.
    const double rows = std::min(static_cast<double>(in) * p.prop, static_cast<double>(remaining));
    const auto g = static_cast<int64_t>(std::ceil(rows / static_cast<double>(p.group_size)));
    counts.push_back(g);
    remaining -= g * p.group_size;
  }
  return counts;
}

std::vector<GroupSpan> group_layout(const QuantOption& option, int64_t in) {
  const std::vector<int64_t> counts = part_group_counts(option, in);
  std::vector<GroupSpan> groups;
  int64_t row = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const OptionPart& p = option.parts[i];
    EXQ_CHECK(counts[i] >= 0, "option '{}' is too coarse for {} input rows ({} groups of {}-bit)",
              option.desc(), in, counts[i], p.bits);
    for (int64_t g = 0; g < counts[i]; ++g) {
      const int64_t rows = std::min<int64_t>(p.group_size, in - row);
      EXQ_CHECK(rows > 0, "option '{}' gives an empty {}-bit group for {} input rows",
                option.desc(), p.bits, in);
      groups.push_back({p.bits, row, rows});
      row += rows;
    }
  }
  EXQ_CHECK(row == in, "option '{}' covers {} of {} input rows", option.desc(), row, in);
  return groups;
}

int64_t total_bits(const QuantOption& option, int64_t in, int64_t out, bool has_bias) {
  const std::vector<int64_t> counts = part_group_counts(option, in);
  int64_t groups = 0;
  int64_t bits = 0;
  int64_t rows_left = in;
  for (size_t i = 0; i < counts.size(); ++i) {
    groups += counts[i];
    const int64_t r = std::min<int64_t>(counts[i] * option.parts[i].group_size, rows_left);
    rows_left -= r;
    bits += r * out * option.parts[i].bits;  // q_weight
  }
  bits += groups * 16;                       // q_scale_max
  bits += groups * (16 + 16);                // q_groups
  bits += groups * out * option.scale_bits;  // q_scale
  bits += in * 32;                           // q_invperm
  if (has_bias) bits += out * 16;
  return bits;
}

double bits_per_weight(const QuantOption& option, int64_t in, int64_t out, bool has_bias) {
  const int64_t numel = in * out + (has_bias ? out : 0);
  return static_cast<double>(total_bits(option, in, out, has_bias)) / static_cast<double>(numel);
}

// ---- Tables -----------------------------------------------------------------------------------

namespace {

// Transcribed from exllamav2 0.3.x conversion/qparams.py (see docs option-tables.md).
// clang-format off
constexpr std::string_view kAttnTable[19][4] = {
    {"0.05:3b_64g/0.95:2b_64g", "0.05:3b_64g/0.95:2b_64g", "0.05:3b_64g/0.95:2b_64g", "0.05:3b_64g/0.95:2b_64g"},
    {"0.1:3b_64g/0.9:2b_64g", "0.1:3b_64g/0.9:2b_64g", "0.25:3b_64g/0.75:2b_64g", "0.1:3b_64g/0.9:2b_64g"},
    {"0.1:3b_64g/0.9:2b_64g", "0.1:3b_64g/0.9:2b_64g", "0.1:4b_128g/0.9:3b_128g", "0.1:3b_64g/0.9:2b_64g"},
    {"0.1:3b_64g/0.9:2b_64g", "0.1:3b_64g/0.9:2b_64g", "0.1:4b_128g/0.9:3b_128g", "0.1:4b_128g/0.9:3b_128g"},
    {"0.1:4b_128g/0.9:3b_128g", "0.1:4b_128g/0.9:3b_128g", "0.1:4b_128g/0.9:3b_128g", "0.1:4b_128g/0.9:3b_128g"},
    {"0.1:4b_128g/0.9:3b_128g", "0.1:4b_128g/0.9:3b_128g", "0.1:4b_64g/0.9:3b_64g", "0.1:4b_128g/0.9:3b_128g"},
    {"1:4b_128g", "1:4b_128g", "1:4b_128g", "1:4b_128g"},
    {"1:4b_128g", "1:4b_128g", "1:4b_64g", "1:4b_128g"},
    {"1:4b_64g", "1:4b_64g", "1:4b_32g", "1:4b_64g"},
    {"1:4b_32g", "1:4b_32g", "1:4b_32g", "1:4b_32g"},
    {"0.1:5b_128g/0.9:4b_128g", "0.1:5b_128g/0.9:4b_128g", "0.1:5b_64g/0.9:4b_64g", "0.1:5b_128g/0.9:4b_128g"},
    {"0.1:5b_64g/0.9:4b_64g", "0.1:5b_64g/0.9:4b_64g", "0.1:5b_32g/0.9:4b_32g", "0.1:5b_64g/0.9:4b_64g"},
    {"0.1:5b_64g/0.9:4b_64g", "0.1:5b_64g/0.9:4b_64g", "1:5b_64g", "0.1:5b_64g/0.9:4b_64g"},
    {"0.1:5b_32g/0.9:4b_32g", "0.1:5b_32g/0.9:4b_32g", "1:5b_32g", "0.1:5b_32g/0.9:4b_32g"},
    {"0.1:6b_128g/0.9:5b_128g", "0.1:6b_128g/0.9:5b_128g", "1:6b_128g", "0.1:6b_128g/0.9:5b_128g"},
    {"0.1:6b_32g/0.9:5b_32g", "0.1:6b_32g/0.9:5b_32g", "1:6b_32g", "0.1:6b_32g/0.9:5b_32g"},
    {"1:6b_128g", "1:6b_128g", "1:6b_128g", "1:6b_128g"},
    {"1:6b_32g", "1:6b_32g", "1:8b_32g", "1:6b_32g"},
    {"1:8b_128g", "1:8b_128g", "1:8b_128g", "1:8b_128g"},
};

constexpr std::string_view kMlpTable[17][3] = {
    {"0.05:3b_64g/0.95:2b_64g", "0.05:3b_64g/0.95:2b_64g", "0.05:6b_32g/0.2:3b_64g/0.75:2b_64g"},
    {"0.1:3b_64g/0.9:2b_64g", "0.25:3b_64g/0.75:2b_64g", "0.05:6b_32g/0.2:3b_64g/0.75:2b_64g"},
    {"0.1:3b_64g/0.9:2b_64g", "0.3:3b_64g/0.7:2b_64g", "0.05:5b_32g/0.95:3b_32g"},
    {"0.1:3b_64g/0.9:2b_64g", "0.3:3b_64g/0.7:2b_64g", "0.05:5b_32g/0.95:4b_32g"},
    {"0.1:4b_128g/0.9:3b_128g", "0.25:4b_128g/0.75:3b_128g", "0.05:8b_32g/0.1:4b_128g/0.85:3b_128g"},
    {"0.1:4b_32g/0.9:3b_32g", "0.25:4b_32g/0.75:3b_32g", "0.05:8b_32g/0.1:4b_32g/0.85:3b_32g"},
    {"0.1:4b_32g/0.9:3b_32g", "0.25:4b_32g/0.75:3b_32g", "0.05:8b_32g/0.95:4b_128g"},
    {"1:4b_128g", "1:4b_32g", "0.05:8b_32g/0.95:4b_128g"},
    {"1:4b_32g", "1:4b_32g", "0.05:8b_32g/0.95:4b_32g"},
    {"0.1:5b_128g/0.9:4b_128g", "0.25:5b_128g/0.75:4b_128g", "0.05:8b_32g/0.1:5b_128g/0.85:4b_128g"},
    {"0.1:5b_32g/0.9:4b_32g", "0.25:5b_32g/0.75:4b_32g", "0.05:8b_32g/0.1:5b_32g/0.85:4b_32g"},
    {"0.1:6b_128g/0.9:5b_128g", "0.25:6b_128g/0.75:5b_128g", "0.05:8b_32g/0.1:6b_128g/0.85:5b_128g"},
    {"0.1:6b_32g/0.9:5b_32g", "0.25:6b_32g/0.75:5b_32g", "0.05:8b_32g/0.1:6b_32g/0.85:5b_32g"},
    {"1:6b_128g", "1:6b_128g", "0.05:8b_32g/0.95:6b_128g"},
    {"0.1:8b_128g/0.9:6b_128g", "0.1:8b_128g/0.9:6b_128g", "0.15:8b_128g/0.85:6b_128g"},
    {"0.1:8b_128g/0.9:6b_128g", "0.1:8b_128g/0.9:6b_128g", "1:8b_128g"},
    {"1:8b_128g", "1:8b_128g", "1:8b_128g"},
};
// clang-format on

}  // namespace

const std::vector<AttnOptions>& attn_option_table() {
  static const std::vector<AttnOptions> table = [] {
    std::vector<AttnOptions> t;
    for (const auto& row : kAttnTable)
      t.push_back(
          {parse_option(row[0]), parse_option(row[1]), parse_option(row[2]), parse_option(row[3])});
    return t;
  }();
  return table;
}

const std::vector<MlpOptions>& mlp_option_table() {
  static const std::vector<MlpOptions> table = [] {
    std::vector<MlpOptions> t;
    for (const auto& row : kMlpTable)
      t.push_back({parse_option(row[0]), parse_option(row[1]), parse_option(row[2])});
    return t;
  }();
  return table;
}

const QuantOption& head_option(int head_bits) {
  static const std::map<int, QuantOption> table = {
      {2, parse_option("0.3:4b_32g/0.7:2b_32g s4")},
      {3, parse_option("0.15:4b_32g/0.85:3b_32g s4")},
      {4, parse_option("0.15:6b_32g/0.85:4b_32g s4")},
      {5, parse_option("0.15:6b_128g/0.85:5b_128g s4")},
      {6, parse_option("0.15:8b_128g/0.85:6b_128g s4")},
      {8, parse_option("1.0:8b_128g s4")},
  };
  const auto it = table.find(head_bits);
  EXQ_CHECK(it != table.end(), "head_bits {} unsupported (expected 2, 3, 4, 5, 6 or 8)", head_bits);
  return it->second;
}

}  // namespace exq::quant
