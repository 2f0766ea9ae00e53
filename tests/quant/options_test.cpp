#include "quant/options.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "test_support.h"

namespace exq::quant {
namespace {

TEST(QuantOption, ParsesAndDescribes) {
  const QuantOption o = parse_option("0.05:8b_32g/0.1:4b_128g/0.85:3b_128g s4");
  ASSERT_EQ(o.parts.size(), 3u);
  EXPECT_EQ(o.parts[0], (OptionPart{0.05, false, 8, 32}));
  EXPECT_EQ(o.parts[1], (OptionPart{0.1, false, 4, 128}));
  EXPECT_EQ(o.parts[2], (OptionPart{0.85, false, 3, 128}));
  EXPECT_EQ(o.scale_bits, 4);
  EXPECT_EQ(o.desc(), "0.05:8b_32g/0.1:4b_128g/0.85:3b_128g s4");
  EXPECT_EQ(parse_option("1:4b_128g").desc(), "1:4b_128g s4");
  EXPECT_EQ(parse_option("1.0:8b_128g s4").desc(), "1.0:8b_128g s4");
  EXPECT_EQ(parse_option("0.3:4b_32g/0.7:2b_16g s4").parts[1].group_size, 16);
}

TEST(QuantOption, RejectsBadOptions) {
  for (const char* bad : {"", "1:7b_128g s4", "1:4b_48g s4", "1:4b_16g s4", "0.5:4b_32g/0.5:4b_64g",
                          "0.5:4b_32g/0.4:3b_32g", "1:4b_128g s6", "1:4b_128g x4", "abc",
                          "1:4b_128", "1:b_128g", "0:4b_128g", "1.5:4b_128g", "1:4b_0g"}) {
    EXPECT_THROW(parse_option(bad), Error) << bad;
  }
  try {
    parse_option("1:7b_128g s4");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1:7b_128g"), std::string::npos) << e.what();
  }
}

// Option strings of a markdown table "| # | a | b | ... |" following the heading `title`.
std::vector<std::vector<std::string>> md_table(const std::string& text, const std::string& title) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text.substr(text.find(title)));
  std::string line;
  bool started = false;
  while (std::getline(in, line)) {
    if (line.rfind("|", 0) != 0) {
      if (started) break;
      continue;
    }
    started = true;
    std::vector<std::string> cells;
    std::istringstream ls(line);
    std::string cell;
    std::getline(ls, cell, '|');
    while (std::getline(ls, cell, '|')) {
      const size_t a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      if (a != std::string::npos) cells.push_back(cell.substr(a, b - a + 1));
    }
    if (cells.empty() || cells[0] == "#" || cells[0] == "head_bits" || cells[0][0] == '-') continue;
    rows.push_back(std::vector<std::string>(cells.begin() + 1, cells.end()));
    rows.back().insert(rows.back().begin(), cells[0]);
  }
  return rows;
}

TEST(QuantOption, TablesMatchOptionTablesDoc) {
  const std::string doc = test::read_file(test::shared_dir() / "docs" / "option-tables.md");
  const auto attn = md_table(doc, "## Attention");
  const auto mlp = md_table(doc, "## MLP");
  const auto head = md_table(doc, "## Head");
  ASSERT_EQ(attn.size(), 19u);
  ASSERT_EQ(mlp.size(), 17u);
  ASSERT_EQ(head.size(), 6u);
  ASSERT_EQ(attn_option_table().size(), 19u);
  ASSERT_EQ(mlp_option_table().size(), 17u);
  for (size_t r = 0; r < 19; ++r)
    for (size_t c = 0; c < 4; ++c) {
      EXPECT_EQ(attn_option_table()[r][c].desc(), attn[r][c + 1]) << "attn row " << r;
      EXPECT_EQ(parse_option(attn[r][c + 1]), attn_option_table()[r][c]);
    }
  for (size_t r = 0; r < 17; ++r)
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(mlp_option_table()[r][c].desc(), mlp[r][c + 1]);
  for (const auto& row : head) EXPECT_EQ(head_option(std::stoi(row[0])).desc(), row[1]);
  EXPECT_THROW(head_option(7), Error);
}

TEST(QuantOption, GroupLayoutFollowsTheSpec) {
  // 576 rows: 8-bit ceil(28.8/32)=1 group, 4-bit ceil(57.6/128)=1, 3-bit ceil(min(489.6,416)/128)=4
  // groups of which the last is short (416 = 3*128 + 32).
  const auto g = group_layout(parse_option("0.05:8b_32g/0.1:4b_128g/0.85:3b_128g s4"), 576);
  ASSERT_EQ(g.size(), 6u);
  const int bits[] = {8, 4, 3, 3, 3, 3};
  const int64_t rows[] = {32, 128, 128, 128, 128, 32};
  int64_t begin = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_EQ(g[i].bits, bits[i]);
    EXPECT_EQ(g[i].rows, rows[i]);
    EXPECT_EQ(g[i].row_begin, begin);
    begin += rows[i];
  }
  // down_proj of SmolLM2 (in 1536) with the 2-bit MLP option: 3 + 5 + 18 groups, last one 32 rows.
  const auto d = group_layout(parse_option("0.05:6b_32g/0.2:3b_64g/0.75:2b_64g s4"), 1536);
  ASSERT_EQ(d.size(), 26u);
  EXPECT_EQ(d.back().rows, 32);
  // Too coarse for a tiny layer: the 5-bit part already covers everything.
  EXPECT_EQ(group_layout(parse_option("0.1:5b_128g/0.9:4b_128g"), 64).size(), 1u);
}

TEST(QuantOption, TotalBitsByHand) {
  const QuantOption o = parse_option("1:4b_128g s4");
  // [out 576, in 576]: 576*576*4 + 5 groups*(16+32+4*576) + 32*576
  EXPECT_EQ(total_bits(o, 576, 576, false), 576 * 576 * 4 + 5 * (16 + 32 + 4 * 576) + 32 * 576);
  EXPECT_EQ(total_bits(o, 576, 576, true) - total_bits(o, 576, 576, false), 16 * 576);
  // 4 bits + per 128-row group (16 + 32 + 4*4096) bits over 128*4096 weights + 32 bits per row.
  EXPECT_DOUBLE_EQ(bits_per_weight(o, 4096, 4096, false), 4.0 + 16432.0 / 524288.0 + 32.0 / 4096.0);
}

}  // namespace
}  // namespace exq::quant
