#include "tokenizer/json_util.h"

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer::detail {

std::string json_type_name(const Json& v) {
  switch (v.type()) {
    case Json::value_t::object: return "object";
    case Json::value_t::array: return "array";
    case Json::value_t::string: return "string";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::null: return "null";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: return "number";
    default: return "binary";
  }
}

void json_fail(const std::string& path, const std::string& what) {
  throw Error(fmt::format("field '{}': {}", path, what));
}

std::string json_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string json_path(const std::string& parent, size_t index) {
  return fmt::format("{}[{}]", parent, index);
}

void json_expect_object(const Json& v, const std::string& path) {
  if (!v.is_object()) json_fail(path, "expected object, got " + json_type_name(v));
}

void json_expect_array(const Json& v, const std::string& path) {
  if (!v.is_array()) json_fail(path, "expected array, got " + json_type_name(v));
}

const Json& json_field(const Json& obj, std::string_view key, const std::string& path) {
  json_expect_object(obj, path);
  auto it = obj.find(key);
  if (it == obj.end()) json_fail(json_path(path, key), "missing");
  return *it;
}

const Json* json_opt(const Json& obj, std::string_view key, const std::string& path) {
  json_expect_object(obj, path);
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string json_string(const Json& v, const std::string& path) {
  if (!v.is_string()) json_fail(path, "expected string, got " + json_type_name(v));
  return v.get<std::string>();
}

bool json_bool(const Json& v, const std::string& path) {
  if (!v.is_boolean()) json_fail(path, "expected boolean, got " + json_type_name(v));
  return v.get<bool>();
}

int64_t json_int(const Json& v, const std::string& path) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) json_fail(path, "integer out of range");
    return static_cast<int64_t>(u);
  }
  if (!v.is_number_integer()) json_fail(path, "expected integer, got " + json_type_name(v));
  return v.get<int64_t>();
}

int32_t json_token_id(const Json& v, const std::string& path) {
  const int64_t id = json_int(v, path);
  if (id < 0 || id >= kMaxTokenId)
    json_fail(path, fmt::format("token id {} out of range [0, {})", id, kMaxTokenId));
  return static_cast<int32_t>(id);
}

char32_t json_char(const Json& v, const std::string& path) {
  const std::string s = json_string(v, path);
  size_t i = 0;
  if (s.empty() || !utf8_is_valid(s) || (utf8_next(s, i), i != s.size()))
    json_fail(path, fmt::format("expected exactly one character, got \"{}\"", utf8_lossy(s)));
  i = 0;
  return utf8_next(s, i);
}

std::string json_string_or(const Json& obj, std::string_view key, const std::string& path,
                           const std::string& fallback) {
  const Json* v = json_opt(obj, key, path);
  return v ? json_string(*v, json_path(path, key)) : fallback;
}

bool json_bool_or(const Json& obj, std::string_view key, const std::string& path, bool fallback) {
  const Json* v = json_opt(obj, key, path);
  return v ? json_bool(*v, json_path(path, key)) : fallback;
}

}  // namespace exq::tokenizer::detail
