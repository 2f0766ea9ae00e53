// Measurement over the decoder layers of a Hugging Face model on the CPU: embeds the calibration
// rows, carries the float32 reference states through the layers, and measures the attention and
// MLP (or mixture-of-experts) block of the selected layers (quant/measure.h). Output is exllamav2's measurement.json
// schema. No job file or state store yet: everything lives in memory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "quant/calibration.h"
#include "quant/measure.h"

namespace exq::quant {

struct LayerMeasureResult {
  std::vector<ModuleResult> modules;  // attention then MLP of each selected layer (target dropped)
  double carry_s = 0;                 // forwards of the layers that are not measured
  Measurement measurement() const;    // the modules in order, as measurement.json holds them
};

// layers: indices to measure (ascending); empty = all. Layers after the last selected one are
// not run. progress (optional) is called after each measured module. options.causal applies to
// the carried layers too (a non-causal measurement needs non-causal input states).
LayerMeasureResult measure_layers(const std::filesystem::path& model_dir,
                                  const CalibrationRows& calibration,
                                  const std::vector<int64_t>& layers,
                                  const MeasureOptions& options = {},
                                  const std::function<void(const ModuleResult&)>& progress = {});

}  // namespace exq::quant
