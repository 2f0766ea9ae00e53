#include "tokenizer/tokenizer_config.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "tokenizer/json_util.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;
namespace fs = std::filesystem;

namespace {

std::optional<std::string> read_text(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open file", ErrorContext{path.string()});
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::optional<Json> read_json(const fs::path& path) {
  auto text = read_text(path);
  if (!text) return std::nullopt;
  try {
    Json j = Json::parse(*text);
    detail::json_expect_object(j, "(root)");
    return j;
  } catch (const Json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), ErrorContext{path.string()});
  } catch (const Error& e) {
    throw e.with_file(path.string());
  }
}

// "<s>" or {"content": "<s>", ...} (an AddedToken dict); null when absent.
std::optional<std::string> token_name(const Json& obj, const char* key) {
  const Json* v = detail::json_opt(obj, key, "");
  if (!v) return std::nullopt;
  if (v->is_object()) return detail::json_string(detail::json_field(*v, "content", key), json_path(key, "content"));
  return detail::json_string(*v, key);
}

std::string chat_template_of(const Json& v, const std::string& path) {
  if (v.is_string()) return v.get<std::string>();
  detail::json_expect_array(v, path);
  std::string first;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string ip = json_path(path, i);
    const std::string name = detail::json_string(detail::json_field(v[i], "name", ip), json_path(ip, "name"));
    std::string tmpl = detail::json_string(detail::json_field(v[i], "template", ip), json_path(ip, "template"));
    if (name == "default") return tmpl;
    if (i == 0) first = std::move(tmpl);
  }
  return first;  // no "default" entry: the first named template
}

void apply_tokens(const Json& j, TokenizerConfig& cfg, bool override_set) {
  auto set = [&](std::string& field, const char* key) {
    if (!override_set && !field.empty()) return;
    if (auto name = token_name(j, key)) field = *name;
  };
  set(cfg.bos_token, "bos_token");
  set(cfg.eos_token, "eos_token");
  set(cfg.pad_token, "pad_token");
}

}  // namespace

TokenizerConfig load_tokenizer_config(const fs::path& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) throw Error("model folder does not exist", ErrorContext{model_dir.string()});
  TokenizerConfig cfg;
  const fs::path config_path = model_dir / "tokenizer_config.json";
  if (auto j = read_json(config_path)) {
    try {
      if (const Json* t = detail::json_opt(*j, "chat_template", "")) cfg.chat_template = chat_template_of(*t, "chat_template");
      apply_tokens(*j, cfg, true);
      cfg.add_bos = detail::json_bool_or(*j, "add_bos_token", "", false);
      cfg.add_eos = detail::json_bool_or(*j, "add_eos_token", "", false);
    } catch (const Error& e) {
      throw e.with_file(config_path.string());
    }
  }
  const fs::path map_path = model_dir / "special_tokens_map.json";
  if (auto j = read_json(map_path)) {
    try {
      apply_tokens(*j, cfg, false);
    } catch (const Error& e) {
      throw e.with_file(map_path.string());
    }
  }
  // Newer transformers keep the template in its own file.
  if (cfg.chat_template.empty()) {
    if (auto jinja = read_text(model_dir / "chat_template.jinja")) {
      cfg.chat_template = *jinja;
    } else if (auto j = read_json(model_dir / "chat_template.json")) {
      try {
        if (const Json* t = detail::json_opt(*j, "chat_template", "")) cfg.chat_template = chat_template_of(*t, "chat_template");
      } catch (const Error& e) {
        throw e.with_file((model_dir / "chat_template.json").string());
      }
    }
  }
  return cfg;
}

}  // namespace exq::tokenizer
