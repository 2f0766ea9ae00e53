// Which option of exllamav2's tables produced a stored EXL2 layer: its group table (bits and
// rows per group, from q_groups) is compared with the layout of each table option of that
// linear. Used to re-quantize a layer at the option exllamav2 chose, and to describe EXL2 models.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "io/exl2.h"
#include "quant/options.h"

namespace exq::quant {

// linear: "q_proj" ... "down_proj" (searches that column of the attention or MLP table) or
// "lm_head" (the head options). in: the layer's input width. Several options can give the same
// layout for a given width; the first in table order is returned. nullopt when none matches.
std::optional<QuantOption> table_option_for_groups(std::string_view linear, int64_t in,
                                                   const std::vector<io::Exl2Group>& groups);

}  // namespace exq::quant
