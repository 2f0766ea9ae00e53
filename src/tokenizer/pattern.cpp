#include "tokenizer/pattern.h"

#include "core/error.h"

namespace exq::tokenizer {

using detail::Json;

Pattern Pattern::from_json(const Json& v, const std::string& path) {
  detail::json_expect_object(v, path);
  if (const Json* lit = detail::json_opt(v, "String", path))
    return literal(detail::json_string(*lit, detail::json_path(path, "String")));
  if (const Json* re = detail::json_opt(v, "Regex", path)) {
    const std::string where = detail::json_path(path, "Regex");
    const std::string text = detail::json_string(*re, where);
    Pattern p;
    try {
      p.regex_ = std::make_shared<const Regex>(text);
    } catch (const Error& e) {
      detail::json_fail(where, e.message());
    }
    return p;
  }
  detail::json_fail(path, "expected {\"String\": ...} or {\"Regex\": ...}");
}

Pattern Pattern::literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

std::string Pattern::replace_all(std::string_view s, std::string_view content) const {
  std::string out;
  size_t prev = 0;
  for_each_match(s, [&](size_t b, size_t e) {
    out.append(s.substr(prev, b - prev));
    out.append(content);
    prev = e;
  });
  out.append(s.substr(prev));
  return out;
}

}  // namespace exq::tokenizer
