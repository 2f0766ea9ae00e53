// exllamav2's measurement.json: for each module (attention block, MLP block), every measured
// combination of options with its accuracy and total bits. exq reads and writes the same
// schema, so measurements move between exq and exllamav2 in both directions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "quant/options.h"

namespace exq::quant {

// One row of a module's measurement: an option per linear ("q_proj", ...), in file order.
struct MeasuredRow {
  double accuracy = 0.0;  // 1 - mean relative Frobenius error of the module output
  int64_t total_bits = 0;
  std::vector<std::pair<std::string, QuantOption>> linears;

  const QuantOption* find(std::string_view linear) const;
};

struct ModuleMeasurement {
  std::string key;  // "model.layers.0.self_attn", "lm_head.linear", ...
  std::optional<std::vector<MeasuredRow>> rows;  // null in the file for unmeasured modules
};

struct Measurement {
  std::vector<ModuleMeasurement> modules;  // file order
  std::optional<int64_t> last_module_idx;

  const ModuleMeasurement* find(std::string_view key) const;
};

// JSON in exllamav2's schema. `source` names the file in error messages.
Measurement measurement_from_json(const nlohmann::ordered_json& j, const std::string& source = {});
nlohmann::ordered_json measurement_to_json(const Measurement& m);

// Option <-> {"group_size": {"BITS": G, ...}, "bits": [...], "bits_prop": [...], "scale_bits": 4}
QuantOption option_from_json(const nlohmann::ordered_json& j);
nlohmann::ordered_json option_to_json(const QuantOption& option);

// Files: read checks the schema and throws exq::Error naming the file; write uses exllamav2's
// layout (4-space indent).
Measurement read_measurement(const std::filesystem::path& path);
void write_measurement(const std::filesystem::path& path, const Measurement& m);

}  // namespace exq::quant
