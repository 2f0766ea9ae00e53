// A model held for embeddings (exq embed, exq serve --embeddings) on the CPU or a CUDA GPU: each
// text runs alone from an empty KV cache, and the final norm's output of its tokens is pooled
// (runtime/embedding.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cli/run_util.h"
#include "model/llama.h"
#include "runtime/embedding.h"

namespace exq::cli {

// The model folder's pooling and normalization: sentence-transformers' files when it has them
// (modules.json), else the last token's state, normalized.
runtime::EmbeddingOptions default_embedding_options(const std::filesystem::path& model_dir);

class Embedder {
 public:
  // Takes the model (uploaded and then dropped on the GPU). Texts of up to max_context tokens
  // (capped at the model's context length).
  Embedder(model::LlamaModel model, Device device, int64_t max_context);
  ~Embedder();
  Embedder(const Embedder&) = delete;
  Embedder& operator=(const Embedder&) = delete;

  // The embedding of 1 .. max_context() tokens; exq::Error otherwise. Not thread-safe.
  std::vector<float> embed(std::span<const int32_t> tokens, const runtime::EmbeddingOptions& options);
  int64_t width() const { return width_; }  // the hidden size: an embedding's full length
  int64_t max_context() const { return max_context_; }
  const std::string& device_name() const { return device_name_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t width_ = 0, max_context_ = 0;
  std::string device_name_ = "cpu";
};

}  // namespace exq::cli
