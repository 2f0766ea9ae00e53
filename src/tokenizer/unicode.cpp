#include "tokenizer/unicode.h"

namespace exq::tokenizer {
namespace {

// Length of the valid (possibly incomplete) sequence at s[i]: returns the number of bytes of
// a complete valid sequence, or -k where k >= 1 is the maximal invalid subpart to replace.
int utf8_check_at(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  int need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return -1;
  }
  size_t j = i + 1;
  for (int k = 0; k < need; ++k, ++j) {
    if (j >= s.size()) return -static_cast<int>(j - i);
    const auto b = static_cast<unsigned char>(s[j]);
    const unsigned char l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
    if (b < l || b > h) return -static_cast<int>(j - i);
  }
  return need + 1;
}

bool in(char32_t c, char32_t lo, char32_t hi) { return c >= lo && c <= hi; }

bool nfc_safe_cp(char32_t c) {
  if (c < 0x300) return true;
  if (in(c, 0x370, 0x3FF)) return c != 0x374 && c != 0x37E && c != 0x387;  // singletons
  if (in(c, 0x400, 0x482) || in(c, 0x48A, 0x52F)) return true;                // Cyrillic
  if (in(c, 0x531, 0x58A) || in(c, 0x5D0, 0x5EA)) return true;                // Armenian, Hebrew
  if (in(c, 0x620, 0x64A) || in(c, 0x660, 0x66F) || in(c, 0x671, 0x6D3)) return true;  // Arabic
  if (in(c, 0x1E00, 0x1EFF)) return true;  // Latin Extended Additional (primary composites)
  if (in(c, 0x2002, 0x20CF)) return true;  // punctuation, super/subscripts, currency
  if (in(c, 0x2100, 0x218F)) return c != 0x2126 && c != 0x212A && c != 0x212B;
  if (in(c, 0x2190, 0x2BFF)) return c != 0x2329 && c != 0x232A && c != 0x2ADC;
  if (in(c, 0x2E80, 0x3029) || in(c, 0x3030, 0x3098) || in(c, 0x309B, 0xA48F)) return true;
  if (in(c, 0xAC00, 0xD7A3) || in(c, 0xE000, 0xF8FF)) return true;  // Hangul syllables, PUA
  if (in(c, 0xFB00, 0xFB06) || in(c, 0xFE00, 0xFE0F) || in(c, 0xFE30, 0xFFFD)) return true;
  if (in(c, 0x1D400, 0x1D7FF) || in(c, 0x1F000, 0x1FAFF)) return true;  // math, emoji
  if (in(c, 0x20000, 0x2F7FF) || in(c, 0x30000, 0x3134F)) return true;  // CJK extensions
  return in(c, 0xE0100, 0xE01EF);                                       // variation selectors
}

struct ByteMaps {
  std::array<char32_t, 256> to_unicode{};
  std::array<int16_t, 324> to_byte{};  // every mapped character is below U+0144
  ByteMaps() {
    to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_unicode[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_unicode[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}

}  // namespace

size_t utf8_valid_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const int n = utf8_check_at(s, i);
    if (n < 0) return i;
    i += static_cast<size_t>(n);
  }
  return i;
}

int utf8_seq_len(unsigned char lead) {
  if (lead >= 0xF0 && lead <= 0xF7) return 4;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xC0 && lead <= 0xDF) return 2;
  return 1;
}

char32_t utf8_next(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const int n = utf8_seq_len(b0);
  if (n == 1 || i + static_cast<size_t>(n) > s.size()) {
    ++i;
    return b0;
  }
  char32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += static_cast<size_t>(n);
  return cp;
}

std::string utf8_lossy(std::string_view bytes) {
  const size_t valid = utf8_valid_prefix(bytes);
  if (valid == bytes.size()) return std::string(bytes);
  std::string out(bytes.substr(0, valid));
  size_t i = valid;
  while (i < bytes.size()) {
    const int n = utf8_check_at(bytes, i);
    if (n > 0) {
      out.append(bytes.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      out += "\xEF\xBF\xBD";
      i += static_cast<size_t>(-n);
    }
  }
  return out;
}

bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

const std::array<char32_t, 256>& byte_to_unicode() { return byte_maps().to_unicode; }

int unicode_to_byte(char32_t cp) {
  const auto& m = byte_maps().to_byte;
  return cp < m.size() ? m[cp] : -1;
}

bool nfc_stable(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    if (!nfc_safe_cp(utf8_next(s, i))) return false;
  }
  return true;
}

}  // namespace exq::tokenizer
