// Internals of the JSON Schema -> GBNF converter (json_schema.cpp): keyword tables, GBNF
// literal and number-range writers, $ref resolution, an exact validator for the supported
// keywords (to filter enum values), allOf merging and a oneOf disjointness test.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace exq::grammar::schema {

// Ordered, so that properties keep the schema's order.
using Json = nlohmann::ordered_json;

// Integers and integral parts have at most this many digits (bounded like llama.cpp's, so a
// model cannot write digits forever).
inline constexpr int kMaxDigits = 16;
inline constexpr int64_t kIntCap = 9999999999999999;  // largest kMaxDigits-digit integer
// Larger maxLength / maxItems are lowered to this (accepting fewer texts stays sound); a
// larger minLength / minItems is refused. Keeps the expanded grammar small.
inline constexpr uint64_t kMaxRepeat = 4096;

// Throws exq::Error "json schema: <pointer>: <what>".
[[noreturn]] void fail(const std::string& pointer, const std::string& what);
// pointer + "/" + token, with ~ and / escaped as JSON Pointer requires.
std::string child(const std::string& pointer, std::string_view token);

// How the converter treats a keyword.
enum class KeywordKind { kAnnotation, kSupported, kRefused };
KeywordKind keyword_kind(const std::string& key);
// Refuses every refused keyword of `schema` (pointer names it in the message).
void check_keywords(const Json& schema, const std::string& pointer);
// Whether `schema` (an object) holds keywords other than annotations and `except`.
bool has_validation_keywords(const Json& schema, const std::set<std::string>& except);

// Rewrites older drafts' forms into 2020-12's: boolean exclusiveMinimum/Maximum (draft 4),
// array-valued items with additionalItems (draft 2019 and before).
Json normalize(const Json& schema, const std::string& pointer);
// `schema` itself, or its normalized copy kept in `storage` when it has such forms (copying
// every node would make deep schemas quadratic).
const Json& normalized(const Json& schema, const std::string& pointer, Json& storage);

std::string join(const std::vector<std::string>& parts, std::string_view sep);

// A copy of the object `schema` without `key` (copies only the other members).
Json without(const Json& schema, const std::string& key);

// GBNF text: a quoted literal of `bytes` (UTF-8; non-ASCII written as \u escapes) and one
// character of a character class.
std::string gbnf_literal(std::string_view bytes, const std::string& pointer);
std::string class_char(uint32_t code_point);
std::vector<uint32_t> code_points(std::string_view utf8, const std::string& pointer);
// Alternatives of literal texts, factored by common prefixes (a rule from `make_rule` per
// branching point) so that many similar texts stay unambiguous for the matcher.
std::string literal_trie(const std::vector<std::string>& texts, const std::string& pointer,
                         const std::function<std::string(const std::string& body)>& make_rule);
// item{lo,hi} in GBNF (hi empty: unbounded); "" when it can only be empty.
std::string repeat(const std::string& item, uint64_t lo, std::optional<uint64_t> hi);

// Canonical decimal integers (no leading zeros, no "-0") in [lo, hi], both within +-kIntCap.
std::string int_range_gbnf(int64_t lo, int64_t hi);
// Number bounds as written in a schema (2020-12 form).
struct NumberBounds {
  std::optional<long double> minimum, exclusive_minimum, maximum, exclusive_maximum;
  bool any() const { return minimum || exclusive_minimum || maximum || exclusive_maximum; }
};
NumberBounds number_bounds(const Json& schema, const std::string& pointer);
// Integers within the bounds, as [lo, hi] clamped to +-kIntCap; empty if none.
std::optional<std::pair<int64_t, int64_t>> integer_interval(const NumberBounds& b);
// GBNF for JSON numbers within the bounds (no exponent; see json_schema_util.cpp); empty if
// the expression could match nothing.
std::string number_range_gbnf(const NumberBounds& b);

// Whether a string has the format as the converter's grammar writes it (date, time, date-time,
// uuid); true for the other formats, which are annotations.
bool format_matches(const std::string& format, const std::string& s);

// JSON Schema equality: numbers by value, objects regardless of key order.
bool json_equal(const Json& a, const Json& b);
bool is_integral(const Json& v);
// The JSON Schema type name of an instance ("integer" for integral numbers).
std::string instance_type(const Json& v);
// `type` as a set of names (throws for a malformed one); empty when absent.
std::set<std::string> declared_types(const Json& schema, const std::string& pointer);
// The types the converter emits for a schema without `type`: from the keywords present
// (e.g. properties -> object), or every type.
std::set<std::string> inferred_types(const Json& schema);

// A non-negative integer keyword (minLength, maxItems, ...); empty when absent.
std::optional<uint64_t> read_count(const Json& schema, const char* key, const std::string& pointer);

// The schema a local $ref ("#", "#/$defs/x", any "#/json/pointer") names, and its pointer.
const Json& resolve_ref(const Json& root, const Json& ref, const std::string& pointer,
                        std::string* target_pointer);

// Whether `instance` is valid under `schema` (exact for the supported keywords; refuses
// the others).
bool validate(const Json& instance, const Json& schema, const Json& root);

// The conjunction of two schemas as one schema object (allOf), with their $ref and allOf
// expanded; refuses combinations it cannot express.
Json merge(const Json& a, const Json& b, const Json& root, const std::string& pointer);
// Expands a schema's own allOf (and a $ref beside validation keywords) into one schema.
Json flatten(const Json& schema, const Json& root, const std::string& pointer);

// True when no text the converter emits for `emitted` is valid under `other`: what makes
// oneOf alternatives safe to emit as alternatives. False when unsure.
bool excludes(const Json& emitted, const Json& other, const Json& root);

}  // namespace exq::grammar::schema
