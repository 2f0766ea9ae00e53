// The groups exllamav2 wrote into the layer-0 fixtures are exactly the layout exq computes for
// one of the table options of that linear.
#include <gtest/gtest.h>

#include <map>

#include "io/exl2.h"
#include "quant/options.h"
#include "exl2_test_models.h"
#include "test_support.h"

namespace exq::quant {
namespace {

TEST(Exl2Layout, FixtureGroupsMatchATableOption) {
  const auto& linears = test::smollm2_layer0_linears();
  for (const char* bpw : {"4.0", "2.5"}) {
    const auto f = io::SafetensorsFile::open(test::exl2_layer0_fixture(bpw));
    for (const auto& [name, shape] : linears) {
      const std::string key = "model.layers.0." + name;
      const auto groups =
          io::validate_exl2(io::exl2_tensors(f, key), shape.first, shape.second, key);
      std::vector<QuantOption> candidates;
      const std::string lin = name.substr(name.find('.') + 1);
      for (const auto& row : attn_option_table())
        for (size_t c = 0; c < 4; ++c)
          if (kAttnLinears[c] == lin) candidates.push_back(row[c]);
      for (const auto& row : mlp_option_table())
        for (size_t c = 0; c < 3; ++c)
          if (kMlpLinears[c] == lin) candidates.push_back(row[c]);
      std::string found;
      for (const QuantOption& o : candidates) {
        const auto layout = group_layout(o, shape.first);
        bool same = layout.size() == groups.size();
        for (size_t g = 0; same && g < groups.size(); ++g)
          same = layout[g].bits == groups[g].bits && layout[g].rows == groups[g].rows &&
                 layout[g].row_begin == groups[g].row_begin;
        if (same) found = o.desc();
      }
      EXPECT_FALSE(found.empty()) << bpw << " " << key;
      std::printf("[%s bpw] %-18s %s\n", bpw, name.c_str(), found.c_str());
    }
  }
}

}  // namespace
}  // namespace exq::quant
