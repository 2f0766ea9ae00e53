// UTF-8 and Unicode helpers for the tokenizer: validation, code point iteration, lossy decoding
// (U+FFFD per maximal invalid subpart, as Rust's String::from_utf8_lossy that HF decoders use),
// GPT-2's byte <-> character map, and a conservative "already NFC" check.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/utf8.h"

namespace exq::tokenizer {

// Length of the longest valid UTF-8 prefix of s (s.size() when s is entirely valid).
size_t utf8_valid_prefix(std::string_view s);
inline bool utf8_is_valid(std::string_view s) { return utf8_valid_prefix(s) == s.size(); }

// Byte length of the sequence that starts with `lead` (1 for ASCII and for invalid leads).
int utf8_seq_len(unsigned char lead);

// Decodes the code point at s[i] and advances i past it. s must be valid UTF-8.
char32_t utf8_next(std::string_view s, size_t& i);

// Valid UTF-8 from arbitrary bytes: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_unicode_whitespace(char32_t cp);

// GPT-2 bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100 and up.
const std::array<char32_t, 256>& byte_to_unicode();
// Inverse of byte_to_unicode(): the byte, or -1 for a character outside the map.
int unicode_to_byte(char32_t cp);

// True when NFC(s) == s is certain: every code point is a starter that never composes with
// its neighbours (Latin, Greek, Cyrillic, CJK, kana, Hangul syllables, emoji, ...).
bool nfc_stable(std::string_view s);

}  // namespace exq::tokenizer
