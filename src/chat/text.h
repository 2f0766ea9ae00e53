// Python str semantics over UTF-8 std::string: code-point length and indexing, Unicode-aware
// strip/split (Python's whitespace set), and Python's repr of floats and strings. Invalid
// UTF-8 bytes are treated as one code point each, never as an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace exq::chat {

// Decodes the code point at s[pos] and advances pos (by 1 for an invalid byte).
char32_t decode_utf8(std::string_view s, size_t& pos);
void append_utf8(std::string& out, char32_t cp);

// Byte offset of every code point start, plus s.size() at the end.
std::vector<size_t> utf8_offsets(std::string_view s);
size_t utf8_length(std::string_view s);

// Python's str.isspace() for one code point.
bool is_py_space(char32_t cp);

// str.strip / lstrip / rstrip; chars == nullopt strips whitespace.
std::string py_strip(std::string_view s, bool left, bool right,
                     const std::optional<std::string>& chars = std::nullopt);
// str.split(sep, maxsplit) and str.rsplit; sep == nullopt splits on whitespace runs.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, const std::optional<std::string>& sep,
                                   int64_t maxsplit);
// str.replace(old, new, count); count < 0 replaces all. max_bytes bounds the result.
std::string py_replace(std::string_view s, std::string_view old, std::string_view repl,
                       int64_t count, size_t max_bytes);

// Python's str.upper / str.lower / str.capitalize for ASCII, Latin-1, Latin Extended-A, Greek,
// Cyrillic and fullwidth Latin (with 'ß' -> "SS"); other scripts pass through unchanged.
char32_t upper_cp(char32_t cp);
char32_t lower_cp(char32_t cp);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
// Jinja's |title: upper-cases the first letter after whitespace, '-', '(', '{', '[' or '<'.
std::string jinja_title(std::string_view s);

// repr(float) as Python prints it: shortest round-trip digits, "1.0", "1e-05", "1e+16".
std::string py_float_repr(double d);
// repr(str): single quotes unless the text has ' and no ", escapes for control characters.
std::string py_repr_string(std::string_view s);

}  // namespace exq::chat
