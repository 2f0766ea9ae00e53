// config.json of the tiny golden models (tests/model/data/NAME) for the config-rule tests:
// read, parsed as exq parses it, and refusals checked by the field they name.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

#include "core/error.h"
#include "golden_logits.h"
#include "io/hf_config.h"
#include "test_support.h"

namespace exq::test {

// A JSON file of tests/model/data/NAME (config.json unless named).
inline nlohmann::json config_json(const char* name, const char* file = "config.json") {
  return nlohmann::json::parse(read_file(model_data_dir(name) / file));
}

inline io::ModelConfig parse_config(const nlohmann::json& j) {
  return io::parse_model_config(j.dump(), "config.json");
}

// parse_config(j) throws exq::Error naming `field`.
inline void expect_config_refused(const nlohmann::json& j, const char* field) {
  try {
    parse_config(j);
    ADD_FAILURE() << "accepted: " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

}  // namespace exq::test
