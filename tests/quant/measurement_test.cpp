#include "quant/measurement.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "core/error.h"
#include "test_support.h"

namespace exq::quant {
namespace {

std::filesystem::path measurement_path() {
  return test::shared_dir() / "fixtures" / "exl2" / "smollm2_measurement.json";
}

// SmolLM2-135M: hidden 576, intermediate 1536, 9 heads / 3 kv heads of 64. {in, out}.
const std::map<std::string, std::pair<int64_t, int64_t>> kShapes = {
    {"q_proj", {576, 576}},    {"k_proj", {576, 192}},     {"v_proj", {576, 192}},
    {"o_proj", {576, 576}},    {"gate_proj", {576, 1536}}, {"up_proj", {576, 1536}},
    {"down_proj", {1536, 576}}};

TEST(Measurement, TotalBitsMatchExllamav2ForEveryOption) {
  const Measurement m = read_measurement(measurement_path());
  ASSERT_EQ(m.modules.size(), 62u);
  int rows = 0, options = 0, null_modules = 0;
  for (const ModuleMeasurement& mod : m.modules) {
    if (!mod.rows) {
      ++null_modules;
      continue;
    }
    for (const MeasuredRow& row : *mod.rows) {
      int64_t sum = 0;
      for (const auto& [name, option] : row.linears) {
        const auto [in, out] = kShapes.at(name);
        sum += total_bits(option, in, out, false);
        ++options;
      }
      EXPECT_EQ(sum, row.total_bits) << mod.key << " row " << rows;
      ++rows;
    }
  }
  EXPECT_EQ(null_modules, 2);       // model.norm.norm, lm_head.linear
  EXPECT_EQ(rows, 30 * (19 + 17));  // 1080 rows
  EXPECT_EQ(options, 30 * (19 * 4 + 17 * 3));
}

TEST(Measurement, RowsFollowTheOptionTables) {
  const Measurement m = read_measurement(measurement_path());
  for (int layer = 0; layer < 30; ++layer) {
    const auto* attn = m.find(fmt::format("model.layers.{}.self_attn", layer));
    const auto* mlp = m.find(fmt::format("model.layers.{}.mlp", layer));
    ASSERT_TRUE(attn && attn->rows && mlp && mlp->rows);
    ASSERT_EQ(attn->rows->size(), 19u);
    ASSERT_EQ(mlp->rows->size(), 17u);
    for (size_t r = 0; r < 19; ++r)
      for (size_t c = 0; c < 4; ++c)
        EXPECT_EQ(*(*attn->rows)[r].find(kAttnLinears[c]), attn_option_table()[r][c]);
    for (size_t r = 0; r < 17; ++r)
      for (size_t c = 0; c < 3; ++c)
        EXPECT_EQ(*(*mlp->rows)[r].find(kMlpLinears[c]), mlp_option_table()[r][c]);
  }
}

TEST(Measurement, RoundTripsTheSameJson) {
  const std::string text = test::read_file(measurement_path());
  const auto original = nlohmann::ordered_json::parse(text);
  const Measurement m = measurement_from_json(original);
  const nlohmann::ordered_json back = measurement_to_json(m);
  EXPECT_EQ(back, original);  // same keys in the same order, same values and number kinds
  const auto dir = test::temp_dir("measurement");
  write_measurement(dir / "m.json", m);
  EXPECT_EQ(read_measurement(dir / "m.json").modules.size(), m.modules.size());
  // Byte for byte as exllamav2 (Python json.dump, indent 4) wrote it.
  EXPECT_EQ(test::read_file(dir / "m.json"), text);
}

TEST(Measurement, RejectsBadSchema) {
  using Json = nlohmann::ordered_json;
  const auto opt = R"({"group_size": {"4": 128}, "bits": [4], "bits_prop": [1], "scale_bits": 4})";
  EXPECT_NO_THROW(option_from_json(Json::parse(opt)));
  for (const char* bad :
       {R"({"group_size": {"4": 128}, "bits": [7], "bits_prop": [1], "scale_bits": 4})",
        R"({"group_size": {"3": 128}, "bits": [4], "bits_prop": [1], "scale_bits": 4})",
        R"({"group_size": {"4": 128}, "bits": [4, 3], "bits_prop": [1], "scale_bits": 4})",
        R"({"group_size": {"4": 128}, "bits": [4], "bits_prop": [0.5], "scale_bits": 4})",
        R"({"group_size": {"4": 128}, "bits": [4], "bits_prop": [1]})", R"([1, 2])"}) {
    EXPECT_THROW(option_from_json(Json::parse(bad)), Error) << bad;
  }
  EXPECT_THROW(measurement_from_json(Json::parse(R"({"x": 1})")), Error);
  EXPECT_THROW(measurement_from_json(Json::parse(R"({"measurement": {"a": [{"accuracy": 1}]}})")),
               Error);
  const auto dir = test::temp_dir("measurement_bad");
  std::ofstream(dir / "bad.json") << "{ not json";
  try {
    read_measurement(dir / "bad.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace exq::quant
