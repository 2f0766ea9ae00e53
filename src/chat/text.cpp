#include "chat/text.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

#include "core/error.h"
#include "core/utf8.h"

namespace exq::chat {

namespace {

// Invalid bytes decode to U+DC80..U+DCFF (Python's surrogateescape) and encode back unchanged.
constexpr char32_t kEscapeBase = 0xDC00;

bool is_escaped_byte(char32_t cp) { return cp >= 0xDC80 && cp <= 0xDCFF; }

// Code points Python's repr() escapes besides ASCII controls: C1 controls, non-ASCII spaces,
// line/paragraph separators, common format characters, private use and lone surrogates.
bool is_unprintable(char32_t cp) {
  if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0xa0) || cp == 0xad) return true;
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f)) return true;
  if ((cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0xfeff) return true;
  if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61c || cp == 0x6dd || cp == 0x70f || cp == 0x180e)
    return true;
  if ((cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xe000 && cp <= 0xf8ff)) return true;
  if ((cp >= 0xfff9 && cp <= 0xfffb) || cp >= 0xf0000 || (cp >= 0xe0000 && cp <= 0xe007f)) return true;
  return false;
}

bool in_chars(char32_t cp, const std::vector<char32_t>& set) {
  for (char32_t c : set)
    if (c == cp) return true;
  return false;
}

std::vector<char32_t> decode_all(std::string_view s) {
  std::vector<char32_t> out;
  for (size_t pos = 0; pos < s.size();) out.push_back(decode_utf8(s, pos));
  return out;
}

}  // namespace

char32_t decode_utf8(std::string_view s, size_t& pos) {
  char32_t cp = 0;
  const int len = utf8_decode(s, pos, cp);
  if (len == 0) return kEscapeBase + static_cast<unsigned char>(s[pos++]);
  pos += static_cast<size_t>(len);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (is_escaped_byte(cp)) {
    out.push_back(static_cast<char>(cp - kEscapeBase));
  } else {
    utf8_append(out, cp);
  }
}

std::vector<size_t> utf8_offsets(std::string_view s) {
  std::vector<size_t> out;
  out.reserve(s.size() + 1);
  for (size_t pos = 0; pos < s.size();) {
    out.push_back(pos);
    decode_utf8(s, pos);
  }
  out.push_back(s.size());
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) decode_utf8(s, pos);
  return n;
}

bool is_py_space(char32_t cp) {
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f)) return true;
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

std::string py_strip(std::string_view s, bool left, bool right,
                     const std::optional<std::string>& chars) {
  const std::vector<char32_t> set = chars ? decode_all(*chars) : std::vector<char32_t>{};
  auto strippable = [&](char32_t cp) { return chars ? in_chars(cp, set) : is_py_space(cp); };
  const std::vector<size_t> off = utf8_offsets(s);
  size_t begin = 0;
  size_t end = off.size() - 1;  // code point indices [begin, end)
  auto cp_at = [&](size_t i) {
    size_t p = off[i];
    return decode_utf8(s, p);
  };
  if (left)
    while (begin < end && strippable(cp_at(begin))) ++begin;
  if (right)
    while (end > begin && strippable(cp_at(end - 1))) --end;
  return std::string(s.substr(off[begin], off[end] - off[begin]));
}

std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    EXQ_CHECK(!sep->empty(), "split(): empty separator");
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t hit = s.find(*sep, start);
      if (hit == std::string_view::npos) break;
      out.emplace_back(s.substr(start, hit - start));
      start = hit + sep->size();
    }
    out.emplace_back(s.substr(start));
    return out;
  }
  size_t pos = 0;
  while (true) {
    size_t word = pos;  // skip a whitespace run
    while (word < s.size()) {
      size_t next = word;
      if (!is_py_space(decode_utf8(s, next))) break;
      word = next;
    }
    if (word >= s.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      out.emplace_back(py_strip(s.substr(word), false, true));
      break;
    }
    size_t end = word;
    while (end < s.size()) {
      size_t next = end;
      if (is_py_space(decode_utf8(s, next))) break;
      end = next;
    }
    out.emplace_back(s.substr(word, end - word));
    pos = end;
  }
  return out;
}

std::vector<std::string> py_rsplit(std::string_view s, const std::optional<std::string>& sep,
                                   int64_t maxsplit) {
  if (maxsplit < 0) return py_split(s, sep, maxsplit);
  std::vector<std::string> out;
  if (sep) {
    EXQ_CHECK(!sep->empty(), "rsplit(): empty separator");
    size_t end = s.size();
    while (static_cast<int64_t>(out.size()) < maxsplit && end >= sep->size()) {
      const size_t hit = s.rfind(*sep, end - sep->size());
      if (hit == std::string_view::npos) break;
      out.emplace_back(s.substr(hit + sep->size(), end - hit - sep->size()));
      end = hit;
    }
    out.emplace_back(s.substr(0, end));
  } else {
    const std::vector<char32_t> cps = decode_all(s);
    size_t end = cps.size();
    auto slice = [&](size_t b, size_t e) {
      std::string r;
      for (size_t i = b; i < e; ++i) append_utf8(r, cps[i]);
      return r;
    };
    while (true) {
      while (end > 0 && is_py_space(cps[end - 1])) --end;
      if (end == 0) break;
      if (static_cast<int64_t>(out.size()) >= maxsplit) {
        out.push_back(py_strip(slice(0, end), true, false));
        break;
      }
      size_t b = end;
      while (b > 0 && !is_py_space(cps[b - 1])) --b;
      out.push_back(slice(b, end));
      end = b;
    }
  }
  return {out.rbegin(), out.rend()};
}

std::string py_replace(std::string_view s, std::string_view old, std::string_view repl,
                       int64_t count, size_t max_bytes) {
  std::string out;
  auto add = [&](std::string_view piece) {
    EXQ_CHECK(out.size() + piece.size() <= max_bytes,
              "replace(): result exceeds the {} byte limit", max_bytes);
    out.append(piece);
  };
  int64_t done = 0;
  if (old.empty()) {  // Python inserts repl before every code point and at the end
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t start = pos;
      decode_utf8(s, pos);
      if (count < 0 || done < count) add(repl), ++done;
      add(s.substr(start, pos - start));
    }
    if (count < 0 || done < count) add(repl);
    return out;
  }
  size_t start = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old, start);
    if (hit == std::string_view::npos) break;
    add(s.substr(start, hit - start));
    add(repl);
    start = hit + old.size();
    ++done;
  }
  add(s.substr(start));
  return out;
}

namespace {

// Pairs laid out as (upper, lower) at (even, odd) or (odd, even) code points.
bool in_pair_range(char32_t cp, char32_t lo, char32_t hi) { return cp >= lo && cp <= hi; }

}  // namespace

char32_t upper_cp(char32_t cp) {
  if (cp < 0x80) return cp >= 'a' && cp <= 'z' ? cp - 32 : cp;
  if ((cp >= 0xe0 && cp <= 0xfe && cp != 0xf7) || (cp >= 0x3b1 && cp <= 0x3c9 && cp != 0x3c2) ||
      (cp >= 0x430 && cp <= 0x44f))
    return cp - 32;
  if (cp == 0xff) return 0x178;
  if (cp == 0xb5) return 0x39c;
  if (cp == 0x131) return 'I';
  if (cp == 0x17f) return 'S';
  if (cp == 0x3c2) return 0x3a3;
  if (cp == 0x3ac) return 0x386;
  if (cp >= 0x3ad && cp <= 0x3af) return cp - 37;
  if (cp == 0x3cc) return 0x38c;
  if (cp == 0x3cd || cp == 0x3ce) return cp - 63;
  if (cp >= 0x450 && cp <= 0x45f) return cp - 80;
  if (cp >= 0xff41 && cp <= 0xff5a) return cp - 32;
  const bool even_upper = in_pair_range(cp, 0x100, 0x12f) || in_pair_range(cp, 0x132, 0x137) ||
                          in_pair_range(cp, 0x14a, 0x177) || in_pair_range(cp, 0x460, 0x481) ||
                          in_pair_range(cp, 0x48a, 0x4bf) || in_pair_range(cp, 0x4d0, 0x4ff);
  if (even_upper) return cp & ~char32_t{1};
  const bool odd_upper = in_pair_range(cp, 0x139, 0x148) || in_pair_range(cp, 0x179, 0x17e) ||
                         in_pair_range(cp, 0x4c1, 0x4ce);
  if (odd_upper && (cp & 1) == 0) return cp - 1;
  return cp;
}

char32_t lower_cp(char32_t cp) {
  if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
  if ((cp >= 0xc0 && cp <= 0xde && cp != 0xd7) || (cp >= 0x391 && cp <= 0x3a9 && cp != 0x3a2) ||
      (cp >= 0x410 && cp <= 0x42f))
    return cp + 32;
  if (cp == 0x178) return 0xff;
  if (cp == 0x386) return 0x3ac;
  if (cp >= 0x388 && cp <= 0x38a) return cp + 37;
  if (cp == 0x38c) return 0x3cc;
  if (cp == 0x38e || cp == 0x38f) return cp + 63;
  if (cp >= 0x400 && cp <= 0x40f) return cp + 80;
  if (cp >= 0xff21 && cp <= 0xff3a) return cp + 32;
  const bool even_upper = in_pair_range(cp, 0x100, 0x12f) || in_pair_range(cp, 0x132, 0x137) ||
                          in_pair_range(cp, 0x14a, 0x177) || in_pair_range(cp, 0x460, 0x481) ||
                          in_pair_range(cp, 0x48a, 0x4bf) || in_pair_range(cp, 0x4d0, 0x4ff);
  if (even_upper) return cp | 1;
  const bool odd_upper = in_pair_range(cp, 0x139, 0x148) || in_pair_range(cp, 0x179, 0x17e) ||
                         in_pair_range(cp, 0x4c1, 0x4ce);
  if (odd_upper && (cp & 1) == 1) return cp + 1;
  return cp;
}

std::string py_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const char32_t cp = decode_utf8(s, pos);
    if (cp == 0xdf) out += "SS";
    else append_utf8(out, upper_cp(cp));
  }
  return out;
}

std::string py_lower(std::string_view s) {
  const std::vector<char32_t> cps = decode_all(s);
  auto cased = [](char32_t cp) { return upper_cp(cp) != cp || lower_cp(cp) != cp; };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    // Final sigma: a capital sigma ending a word lowers to U+03C2.
    if (cps[i] == 0x3a3 && i > 0 && cased(cps[i - 1]) && (i + 1 == cps.size() || !cased(cps[i + 1])))
      append_utf8(out, 0x3c2);
    else
      append_utf8(out, lower_cp(cps[i]));
  }
  return out;
}

std::string py_capitalize(std::string_view s) {
  if (s.empty()) return "";
  size_t pos = 0;
  const char32_t first = decode_utf8(s, pos);
  std::string out;
  if (first == 0xdf) out = "Ss";  // title case of 'ß'
  else append_utf8(out, upper_cp(first));
  return out + py_lower(s.substr(pos));
}

std::string jinja_title(std::string_view s) {
  std::string out;
  bool word_start = true;
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const char32_t cp = decode_utf8(s, pos);
    const bool sep = is_py_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
    if (sep) out.append(s.substr(start, pos - start));
    else out += word_start ? py_upper(s.substr(start, pos - start)) : py_lower(s.substr(start, pos - start));
    word_start = sep;
  }
  return out;
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-d.ddde+XX"
  std::string sign;
  if (sci[0] == '-') sign = "-", sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int exp10 = std::stoi(sci.substr(e + 1));
  const int decpt = exp10 + 1;  // digits are 0.DIGITS * 10^decpt
  const int nd = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    std::string out = sign + digits.substr(0, 1);
    if (nd > 1) out += "." + digits.substr(1);
    return out + fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', std::abs(exp10));
  }
  if (decpt <= 0) return sign + "0." + std::string(-decpt, '0') + digits;
  if (decpt >= nd) return sign + digits + std::string(decpt - nd, '0') + ".0";
  return sign + digits.substr(0, decpt) + "." + digits.substr(decpt);
}

std::string py_repr_string(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t pos = 0; pos < s.size();) {
    const char32_t cp = decode_utf8(s, pos);
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (is_unprintable(cp)) {
      const auto v = static_cast<uint32_t>(cp);
      if (v < 0x100) out += fmt::format("\\x{:02x}", v);
      else if (v < 0x10000) out += fmt::format("\\u{:04x}", v);
      else out += fmt::format("\\U{:08x}", v);
    } else {
      append_utf8(out, cp);
    }
  }
  out += quote;
  return out;
}

}  // namespace exq::chat
