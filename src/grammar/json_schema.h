// JSON Schema (the subset structured-output APIs use) to GBNF, for exq::grammar::Grammar:
// text the grammar accepts is JSON that validates against the schema.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace exq::grammar {

// GBNF whose `root` rule matches exactly the JSON texts valid under `schema` (whitespace
// between tokens bounded so a model cannot loop on it). Throws exq::Error naming the JSON
// pointer of the schema holding a keyword or value it cannot express (e.g. "json schema:
// /properties/a: 'pattern' is not supported").
std::string json_schema_to_gbnf(const nlohmann::json& schema);
// The same for a schema parsed as ordered_json: properties then come in the schema's order
// (nlohmann::json sorts keys, so the overload above emits them alphabetically).
std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema);

// GBNF for any JSON object (OpenAI's response_format {"type": "json_object"}).
std::string json_object_gbnf();

}  // namespace exq::grammar
