// Typed access to tokenizer.json values. Every failure throws exq::Error naming the field by its
// JSON path ("model.merges[3]") and the expected vs actual type, so bad files are diagnosable.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace exq::tokenizer::detail {

using Json = nlohmann::json;

// "object", "array", "string", "number", "boolean" or "null".
std::string json_type_name(const Json& v);
[[noreturn]] void json_fail(const std::string& path, const std::string& what);

std::string json_path(const std::string& parent, std::string_view key);
std::string json_path(const std::string& parent, size_t index);

// A required member of an object (which must be an object itself).
const Json& json_field(const Json& obj, std::string_view key, const std::string& path);
// An optional member: nullptr when absent or null.
const Json* json_opt(const Json& obj, std::string_view key, const std::string& path);

std::string json_string(const Json& v, const std::string& path);
bool json_bool(const Json& v, const std::string& path);
int64_t json_int(const Json& v, const std::string& path);
// A token id: an integer in [0, kMaxTokenId).
int32_t json_token_id(const Json& v, const std::string& path);
// Exactly one Unicode character, as HF's `char` fields (Metaspace replacement, Strip content).
char32_t json_char(const Json& v, const std::string& path);
void json_expect_array(const Json& v, const std::string& path);
void json_expect_object(const Json& v, const std::string& path);

// Optional typed members with defaults.
std::string json_string_or(const Json& obj, std::string_view key, const std::string& path,
                           const std::string& fallback);
bool json_bool_or(const Json& obj, std::string_view key, const std::string& path, bool fallback);

// Ids above this are rejected: real vocabularies are far smaller, and it bounds allocations.
constexpr int32_t kMaxTokenId = 1 << 22;
// Nesting limit for Sequence components, so hostile files cannot exhaust the stack.
constexpr int kMaxComponentDepth = 16;

}  // namespace exq::tokenizer::detail
