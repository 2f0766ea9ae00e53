#include "runtime/generation_config.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace exq::runtime {
namespace {

using nlohmann::json;

int32_t token_id(const json& v, const std::string& key, const std::string& file) {
  EXQ_CHECK(v.is_number_integer(), "{}: '{}' must be an integer token id, got {}", file, key, v.dump());
  const int64_t id = v.get<int64_t>();
  EXQ_CHECK(id >= 0 && id <= std::numeric_limits<int32_t>::max(), "{}: '{}' token id {} is out of range",
            file, key, id);
  return static_cast<int32_t>(id);
}

std::optional<int32_t> opt_id(const json& j, const std::string& key, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return token_id(*it, key, file);
}

std::optional<float> opt_float(const json& j, const std::string& key, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  EXQ_CHECK(it->is_number(), "{}: '{}' must be a number, got {}", file, key, it->dump());
  return it->get<float>();
}

std::optional<int> opt_int(const json& j, const std::string& key, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  EXQ_CHECK(it->is_number_integer(), "{}: '{}' must be an integer, got {}", file, key, it->dump());
  const int64_t v = it->get<int64_t>();
  EXQ_CHECK(v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max(),
            "{}: '{}' = {} is out of range", file, key, v);
  return static_cast<int>(v);
}

}  // namespace

GenerationConfig parse_generation_config(const std::string& json_text, const std::string& file) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON: {}", file, e.what()));
  }
  EXQ_CHECK(j.is_object(), "{}: expected a JSON object at the top level", file);
  GenerationConfig g;
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_array()) {
      for (const auto& v : *it) g.eos_token_ids.push_back(token_id(v, "eos_token_id", file));
    } else {
      g.eos_token_ids.push_back(token_id(*it, "eos_token_id", file));
    }
  }
  g.bos_token_id = opt_id(j, "bos_token_id", file);
  g.pad_token_id = opt_id(j, "pad_token_id", file);
  if (auto it = j.find("do_sample"); it != j.end() && !it->is_null()) {
    EXQ_CHECK(it->is_boolean(), "{}: 'do_sample' must be true or false, got {}", file, it->dump());
    g.do_sample = it->get<bool>();
  }
  g.temperature = opt_float(j, "temperature", file);
  g.top_k = opt_int(j, "top_k", file);
  g.top_p = opt_float(j, "top_p", file);
  g.min_p = opt_float(j, "min_p", file);
  g.typical_p = opt_float(j, "typical_p", file);
  g.repetition_penalty = opt_float(j, "repetition_penalty", file);
  g.max_new_tokens = opt_int(j, "max_new_tokens", file);
  return g;
}

GenerationConfig load_generation_config(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  std::ifstream f(path, std::ios::binary);
  EXQ_CHECK(f.good(), "{}: cannot open file", path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_generation_config(ss.str(), path.string());
}

SamplerConfig sampler_defaults(const GenerationConfig& gen) {
  SamplerConfig s;
  if (gen.temperature) s.temperature = *gen.temperature;
  if (gen.top_k) s.top_k = *gen.top_k;
  if (gen.top_p) s.top_p = *gen.top_p;
  if (gen.min_p) s.min_p = *gen.min_p;
  if (gen.typical_p) s.typical_p = *gen.typical_p;
  if (gen.repetition_penalty) s.repetition_penalty = *gen.repetition_penalty;
  if (gen.do_sample && !*gen.do_sample) s.temperature = 0.0f;
  return s;
}

}  // namespace exq::runtime
