// `exq embed -m MODEL (-p TEXT ... | -f FILE)`: the embedding of each text (llama.cpp's
// llama-embedding): the model's final hidden states pooled (--pooling), cut to --dimensions and
// normalized, printed one vector a line (or as JSON), and the texts' cosine similarities.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/embedder.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "runtime/embedding.h"
#include "tokenizer/tokenizer.h"

namespace exq::cli {
namespace {

namespace fs = std::filesystem;

struct EmbedArgs {
  std::string model, file, pooling, device = "auto";
  std::vector<std::string> prompts;
  bool no_normalize = false, json = false;
  int64_t dimensions = 0, ctx_size = 8192;
  int threads = 0;
  CpuMoeFlags cpu_moe;
};

// The file's non-empty lines (a trailing \r dropped).
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

void run_embed(const EmbedArgs& a) {
  if (a.model.empty()) throw Error("embed needs a model folder: -m MODEL");
  if (a.prompts.empty() == a.file.empty()) throw Error("embed needs texts: -p TEXT (repeatable) or -f FILE (a text a line)");
  if (a.dimensions < 0) throw Error(fmt::format("--dimensions must be >= 0 (0 = all), got {}", a.dimensions));
  if (a.ctx_size < 1) throw Error(fmt::format("--ctx-size must be >= 1, got {}", a.ctx_size));
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);
  const fs::path dir = a.model;
  require_model_dir(dir);
  runtime::EmbeddingOptions opts = default_embedding_options(dir);
  if (!a.pooling.empty()) opts.pooling = runtime::parse_pooling(a.pooling);
  if (a.no_normalize) opts.normalize = false;
  opts.dimensions = a.dimensions;
  const std::vector<std::string> texts = a.file.empty() ? a.prompts : lines_of(read_text_file(a.file));
  if (texts.empty()) throw Error("no text to embed: the file has no non-empty line", ErrorContext{.file = a.file});
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& t : texts) ids.push_back(tok.encode(t, /*add_special_tokens=*/true));

  model::LlamaModel model = model::LlamaModel::load(dir);
  apply_cpu_moe_flags(model, a.cpu_moe);
  if (opts.dimensions > model.config().hidden_size)
    throw Error(fmt::format("--dimensions {}: the model's embeddings have {}", opts.dimensions,
                            model.config().hidden_size));
  Embedder embedder(std::move(model), device, a.ctx_size);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> vectors;
  int64_t tokens = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i].empty()) throw Error(fmt::format("text {} encodes to no tokens", i));
    if (static_cast<int64_t>(ids[i].size()) > embedder.max_context())
      throw Error(fmt::format("text {} has {} tokens, more than the context of {} (--ctx-size)", i, ids[i].size(),
                              embedder.max_context()));
    vectors.push_back(embedder.embed(ids[i], opts));
    tokens += static_cast<int64_t>(ids[i].size());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::vector<double>> sim(vectors.size(), std::vector<double>(vectors.size()));
  for (size_t i = 0; i < vectors.size(); ++i)
    for (size_t j = 0; j < vectors.size(); ++j) sim[i][j] = runtime::cosine_similarity(vectors[i], vectors[j]);

  if (a.json) {
    nlohmann::ordered_json out = {{"model", a.model},
                                  {"device", embedder.device_name()},
                                  {"pooling", runtime::pooling_name(opts.pooling)},
                                  {"normalized", opts.normalize},
                                  {"dimensions", vectors.front().size()}};
    auto& data = out["data"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < vectors.size(); ++i)
      data.push_back({{"index", i}, {"tokens", ids[i].size()}, {"embedding", vectors[i]}});
    out["similarity"] = sim;
    out["usage"] = {{"prompt_tokens", tokens}, {"seconds", seconds}};
    fmt::print("{}\n", out.dump());
    return;
  }
  for (size_t i = 0; i < vectors.size(); ++i) fmt::print("embedding {}: {:.6g}\n", i, fmt::join(vectors[i], " "));
  if (vectors.size() > 1) {
    fmt::print("\ncosine similarity:\n");
    for (const auto& row : sim) fmt::print("{:.4f}\n", fmt::join(row, " "));
  }
  fmt::print(stderr, "exq embed: {} text(s), {} tokens in {:.3f} s on {} ({} pooling{}, {} dimensions)\n",
             vectors.size(), tokens, seconds, embedder.device_name(), runtime::pooling_name(opts.pooling),
             opts.normalize ? ", normalized" : "", vectors.front().size());
}

}  // namespace

void add_embed(CLI::App& app) {
  auto a = std::make_shared<EmbedArgs>();
  auto* cmd = app.add_subcommand("embed", "Embeddings of texts: the model's final hidden states pooled (embedding "
                                          "models such as Qwen3-Embedding)");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  auto* p = cmd->add_option("-p,--prompt", a->prompts, "a text to embed (repeatable)");
  cmd->add_option("-f,--file", a->file, "a UTF-8 file: each non-empty line a text")->excludes(p);
  cmd->add_option("--pooling", a->pooling,
                  "last, mean or cls (default: the model's sentence-transformers config, else last)");
  cmd->add_flag("--no-normalize", a->no_normalize, "keep the pooled vectors' length (default: unit length)");
  cmd->add_option("--dimensions", a->dimensions, "keep the first N values, then normalize (Matryoshka; 0 = all)");
  cmd->add_option("--ctx-size", a->ctx_size, "the longest text in tokens")->capture_default_str();
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")->capture_default_str();
  add_cpu_moe_flags(*cmd, a->cpu_moe);
  cmd->add_flag("--json", a->json, "print one JSON object (vectors, similarities, token counts)");
  cmd->callback([a] { run_embed(*a); });
}

}  // namespace exq::cli
