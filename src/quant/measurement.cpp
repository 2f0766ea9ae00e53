#include "quant/measurement.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace exq::quant {
namespace {

using Json = nlohmann::ordered_json;

[[noreturn]] void bad_schema(const std::string& where, const std::string& why) {
  throw Error(fmt::format("measurement: {}: {}", where, why));
}

int64_t get_int(const Json& j, const std::string& where) {
  if (!j.is_number_integer())
    bad_schema(where, fmt::format("expected an integer, got {}", j.dump()));
  return j.get<int64_t>();
}

const Json& member(const Json& j, const char* name, const std::string& where) {
  if (!j.is_object()) bad_schema(where, "expected an object");
  const auto it = j.find(name);
  if (it == j.end()) bad_schema(where, fmt::format("missing '{}'", name));
  return *it;
}

MeasuredRow row_from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) bad_schema(where, "expected an object");
  MeasuredRow row;
  const Json& acc = member(j, "accuracy", where);
  if (!acc.is_number()) bad_schema(where + ".accuracy", "expected a number");
  row.accuracy = acc.get<double>();
  row.total_bits = get_int(member(j, "total_bits", where), where + ".total_bits");
  for (const auto& [name, value] : j.items()) {
    if (name == "accuracy" || name == "total_bits") continue;
    try {
      row.linears.emplace_back(name, option_from_json(value));
    } catch (const Error& e) {
      bad_schema(where + "." + name, e.message());
    }
  }
  return row;
}

Json row_to_json(const MeasuredRow& row) {
  Json j = Json::object();
  j["accuracy"] = row.accuracy;
  j["total_bits"] = row.total_bits;
  for (const auto& [name, option] : row.linears) j[name] = option_to_json(option);
  return j;
}

}  // namespace

const QuantOption* MeasuredRow::find(std::string_view linear) const {
  for (const auto& [name, option] : linears)
    if (name == linear) return &option;
  return nullptr;
}

const ModuleMeasurement* Measurement::find(std::string_view key) const {
  for (const ModuleMeasurement& m : modules)
    if (m.key == key) return &m;
  return nullptr;
}

QuantOption option_from_json(const Json& j) {
  const std::string where = "option";
  const Json& gs = member(j, "group_size", where);
  const Json& bits = member(j, "bits", where);
  const Json& props = member(j, "bits_prop", where);
  if (!bits.is_array() || !props.is_array() || bits.size() != props.size() || bits.empty())
    bad_schema(where, "'bits' and 'bits_prop' must be arrays of equal, non-zero length");
  QuantOption option;
  option.scale_bits = static_cast<int>(get_int(member(j, "scale_bits", where), "scale_bits"));
  for (size_t i = 0; i < bits.size(); ++i) {
    OptionPart part;
    part.bits = static_cast<int>(get_int(bits[i], "bits"));
    if (!props[i].is_number()) bad_schema("bits_prop", "expected numbers");
    part.prop = props[i].get<double>();
    part.prop_is_int = props[i].is_number_integer();
    // exllamav2 accepts one group size for all widths, a list per width, or a dict keyed by
    // the width as a string; it writes the dict.
    if (gs.is_number_integer()) {
      part.group_size = static_cast<int>(gs.get<int64_t>());
    } else if (gs.is_array()) {
      if (gs.size() != bits.size()) bad_schema("group_size", "list length differs from 'bits'");
      part.group_size = static_cast<int>(get_int(gs[i], "group_size"));
    } else if (gs.is_object()) {
      if (gs.size() != bits.size()) bad_schema("group_size", "keys differ from 'bits'");
      const auto it = gs.find(std::to_string(part.bits));
      if (it == gs.end()) bad_schema("group_size", fmt::format("no entry for {} bits", part.bits));
      part.group_size = static_cast<int>(get_int(*it, "group_size"));
    } else {
      bad_schema("group_size", "expected an integer, list or object");
    }
    option.parts.push_back(part);
  }
  validate_option(option);
  return option;
}

Json option_to_json(const QuantOption& option) {
  Json gs = Json::object();
  Json bits = Json::array();
  Json props = Json::array();
  for (const OptionPart& p : option.parts) {
    gs[std::to_string(p.bits)] = p.group_size;
    bits.push_back(p.bits);
    if (p.prop_is_int)
      props.push_back(static_cast<int64_t>(p.prop));
    else
      props.push_back(p.prop);
  }
  Json j = Json::object();
  j["group_size"] = std::move(gs);
  j["bits"] = std::move(bits);
  j["bits_prop"] = std::move(props);
  j["scale_bits"] = option.scale_bits;
  return j;
}

Measurement measurement_from_json(const Json& j, const std::string& source) {
  try {
    Measurement m;
    const Json& modules = member(j, "measurement", "top level");
    if (!modules.is_object()) bad_schema("measurement", "expected an object");
    for (const auto& [key, value] : modules.items()) {
      ModuleMeasurement mod{key, std::nullopt};
      if (!value.is_null()) {
        if (!value.is_array()) bad_schema(key, "expected a list of rows or null");
        std::vector<MeasuredRow> rows;
        for (size_t i = 0; i < value.size(); ++i)
          rows.push_back(row_from_json(value[i], fmt::format("{}[{}]", key, i)));
        mod.rows = std::move(rows);
      }
      m.modules.push_back(std::move(mod));
    }
    if (const auto it = j.find("last_module_idx"); it != j.end())
      m.last_module_idx = get_int(*it, "last_module_idx");
    return m;
  } catch (const Error& e) {
    throw source.empty() ? e : e.with_file(source);
  }
}

Json measurement_to_json(const Measurement& m) {
  Json modules = Json::object();
  for (const ModuleMeasurement& mod : m.modules) {
    if (!mod.rows) {
      modules[mod.key] = nullptr;
      continue;
    }
    Json rows = Json::array();
    for (const MeasuredRow& row : *mod.rows) rows.push_back(row_to_json(row));
    modules[mod.key] = std::move(rows);
  }
  Json j = Json::object();
  j["measurement"] = std::move(modules);
  if (m.last_module_idx) j["last_module_idx"] = *m.last_module_idx;
  return j;
}

Measurement read_measurement(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open measurement file", ErrorContext{.file = path.string()});
  std::stringstream ss;
  ss << f.rdbuf();
  Json j;
  try {
    j = Json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("invalid JSON: {}", e.what()), ErrorContext{.file = path.string()});
  }
  return measurement_from_json(j, path.string());
}

void write_measurement(const std::filesystem::path& path, const Measurement& m) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error("cannot create measurement file", ErrorContext{.file = path.string()});
  f << measurement_to_json(m).dump(4);
  if (!f) throw Error("write failed", ErrorContext{.file = path.string()});
}

}  // namespace exq::quant
