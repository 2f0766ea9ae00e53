#include "quant/option_match.h"

#include <algorithm>

#include "core/error.h"

namespace exq::quant {
namespace {

bool same_layout(const QuantOption& option, int64_t in, const std::vector<io::Exl2Group>& groups) {
  std::vector<GroupSpan> layout;
  try {
    layout = group_layout(option, in);
  } catch (const Error&) {
    return false;  // the option does not fit this width at all
  }
  if (layout.size() != groups.size()) return false;
  for (size_t g = 0; g < groups.size(); ++g)
    if (layout[g].bits != groups[g].bits || layout[g].rows != groups[g].rows ||
        layout[g].row_begin != groups[g].row_begin)
      return false;
  return true;
}

}  // namespace

std::optional<QuantOption> table_option_for_groups(std::string_view linear, int64_t in,
                                                   const std::vector<io::Exl2Group>& groups) {
  std::vector<QuantOption> candidates;
  auto add = [&](const QuantOption& o) {
    if (std::find(candidates.begin(), candidates.end(), o) == candidates.end())
      candidates.push_back(o);
  };
  for (size_t c = 0; c < kAttnLinears.size(); ++c)
    if (kAttnLinears[c] == linear)
      for (const AttnOptions& row : attn_option_table()) add(row[c]);
  for (size_t c = 0; c < kMlpLinears.size(); ++c)
    if (kMlpLinears[c] == linear)
      for (const MlpOptions& row : mlp_option_table()) add(row[c]);
  if (linear == "lm_head")
    for (int bits : {2, 3, 4, 5, 6, 8}) add(head_option(bits));
  for (const QuantOption& o : candidates)
    if (same_layout(o, in, groups)) return o;
  return std::nullopt;
}

}  // namespace exq::quant
