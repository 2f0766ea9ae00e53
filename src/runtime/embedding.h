// Embeddings from a decoder's final hidden states (exq embed, exq serve --embeddings): one vector
// a text, pooled over its tokens (the last, their mean, or the first), optionally cut to its
// first dimensions (Matryoshka models such as Qwen3-Embedding) and L2-normalized, as
// sentence-transformers and llama.cpp's --pooling compute them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace exq::runtime {

enum class Pooling { kLast, kMean, kFirst };

// "last", "mean" or "cls" (the first token; llama.cpp's name).
const char* pooling_name(Pooling p);
// Those names, and "first"; throws exq::Error naming the text otherwise.
Pooling parse_pooling(const std::string& name);

struct EmbeddingOptions {
  Pooling pooling = Pooling::kLast;
  bool normalize = true;   // to unit L2 norm
  int64_t dimensions = 0;  // keep the first N values (before normalizing); 0: all
};

// What a sentence-transformers folder says (modules.json, its Pooling module's config.json):
// the pooling, whether a Normalize module follows. nullopt without modules.json; exq::Error
// naming the file for one that is broken or asks for a pooling exq lacks (max, weighted mean).
std::optional<EmbeddingOptions> sentence_transformers_options(const std::filesystem::path& model_dir);

// The embedding of hidden [T, width] F32 (T >= 1); throws exq::Error for dimensions above width
// or below 0.
std::vector<float> pool_embedding(const TensorView& hidden, const EmbeddingOptions& options);

// Cosine similarity of two vectors of one length (0 when either is zero).
double cosine_similarity(std::span<const float> a, std::span<const float> b);

}  // namespace exq::runtime
