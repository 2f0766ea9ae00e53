// exq tokenize: encodes a prompt or a file with a model folder's tokenizer.json and prints the
// ids (space-separated), optionally each id's vocab piece, or one JSON object.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace exq::cli {
namespace {

namespace fs = std::filesystem;

struct TokenizeOptions {
  std::string model;
  std::string prompt;
  std::string file;
  bool pieces = false;
  bool json = false;
  bool add_special = false;
};

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open input file", ErrorContext{path});
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Pieces can hold control characters or raw byte-level symbols: print them as JSON strings.
std::string quoted(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void run_tokenize(const TokenizeOptions& o, bool from_file) {
  fs::path tokenizer_json = o.model;
  if (fs::is_directory(tokenizer_json)) tokenizer_json /= "tokenizer.json";
  const auto tok = tokenizer::Tokenizer::from_file(tokenizer_json);
  const std::string text = from_file ? read_text_file(o.file) : o.prompt;
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, o.add_special);
  } catch (const Error& e) {
    throw e.with_file(from_file ? o.file : std::string("--prompt"));
  }

  if (o.json) {
    nlohmann::ordered_json out = {{"ids", ids}, {"count", ids.size()}};
    if (o.pieces) {
      auto& pieces = out["pieces"] = nlohmann::ordered_json::array();
      for (int32_t id : ids) pieces.push_back(tok.id_to_token(id));
    }
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  fmt::print("{}\n", fmt::join(ids, " "));
  if (o.pieces)
    for (int32_t id : ids) fmt::print("{}\t{}\n", id, quoted(tok.id_to_token(id)));
}

}  // namespace

void add_tokenize(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text with a model's tokenizer and print the token ids");
  cmd->add_option("-m,--model", opts->model, "Model folder (or its tokenizer.json)")->required();
  auto* prompt = cmd->add_option("-p,--prompt", opts->prompt, "Text to encode");
  auto* file = cmd->add_option("-f,--file", opts->file, "File whose contents to encode");
  prompt->excludes(file);
  cmd->add_flag("--pieces", opts->pieces, "Also print the vocab piece of each id");
  cmd->add_flag("--json", opts->json, "Print {\"ids\": [...], \"count\": N} as one JSON object");
  cmd->add_flag("--add-special", opts->add_special,
                "Apply the tokenizer's post-processor (e.g. add BOS); off by default");
  cmd->callback([opts, prompt, file] {
    if (prompt->count() == 0 && file->count() == 0) throw Error("tokenize: give the text with -p TEXT or -f FILE");
    run_tokenize(*opts, file->count() > 0);
  });
}

}  // namespace exq::cli
