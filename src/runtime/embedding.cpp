#include "runtime/embedding.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include "core/error.h"
#include "io/atomic_file.h"

namespace exq::runtime {

namespace fs = std::filesystem;
using nlohmann::json;

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::kLast: return "last";
    case Pooling::kMean: return "mean";
    case Pooling::kFirst: return "cls";
  }
  return "?";
}

Pooling parse_pooling(const std::string& name) {
  if (name == "last") return Pooling::kLast;
  if (name == "mean") return Pooling::kMean;
  if (name == "cls" || name == "first") return Pooling::kFirst;
  throw Error(fmt::format("unknown pooling '{}' (last, mean or cls)", name));
}

namespace {

json read_json(const fs::path& path) {
  const std::string text = io::read_file(path, "the sentence-transformers file");
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), ErrorContext{.file = path.string()});
  }
}

}  // namespace

std::optional<EmbeddingOptions> sentence_transformers_options(const fs::path& model_dir) {
  const fs::path modules_path = model_dir / "modules.json";
  std::error_code ec;
  if (!fs::is_regular_file(modules_path, ec)) return std::nullopt;
  const json modules = read_json(modules_path);
  if (!modules.is_array())
    throw Error("expected a list of modules", ErrorContext{.file = modules_path.string()});
  EmbeddingOptions o;
  o.normalize = false;
  bool pooled = false;
  for (const json& m : modules) {
    const std::string type = m.is_object() ? m.value("type", "") : "";
    if (type.ends_with(".Normalize")) o.normalize = true;
    if (!type.ends_with(".Pooling")) continue;
    const fs::path config_path = model_dir / m.value("path", "") / "config.json";
    const json c = read_json(config_path);
    auto on = [&](const char* key) { return c.is_object() && c.value(key, false); };
    if (on("pooling_mode_lasttoken")) o.pooling = Pooling::kLast;
    else if (on("pooling_mode_mean_tokens")) o.pooling = Pooling::kMean;
    else if (on("pooling_mode_cls_token")) o.pooling = Pooling::kFirst;
    else
      throw Error("no pooling exq computes (pooling_mode_lasttoken, pooling_mode_mean_tokens or "
                  "pooling_mode_cls_token)",
                  ErrorContext{.file = config_path.string()});
    pooled = true;
  }
  if (!pooled) throw Error("no Pooling module", ErrorContext{.file = modules_path.string()});
  return o;
}

std::vector<float> pool_embedding(const TensorView& hidden, const EmbeddingOptions& options) {
  EXQ_CHECK(hidden.dtype() == DType::F32 && hidden.rank() == 2 && hidden.dim(0) >= 1 && hidden.is_contiguous(),
            "embedding: expected contiguous F32 hidden states [tokens, width], got {} {}",
            dtype_name(hidden.dtype()), shape_str(hidden.shape()));
  const int64_t T = hidden.dim(0), W = hidden.dim(1);
  EXQ_CHECK(options.dimensions >= 0 && options.dimensions <= W,
            "embedding: {} dimensions asked of a model whose embeddings have {}", options.dimensions, W);
  const float* h = hidden.data<float>();
  std::vector<double> sum(static_cast<size_t>(W), 0.0);
  const auto add_row = [&](int64_t t) {
    for (int64_t i = 0; i < W; ++i) sum[static_cast<size_t>(i)] += h[t * W + i];
  };
  switch (options.pooling) {
    case Pooling::kLast: add_row(T - 1); break;
    case Pooling::kFirst: add_row(0); break;
    case Pooling::kMean:
      for (int64_t t = 0; t < T; ++t) add_row(t);
      for (double& x : sum) x /= static_cast<double>(T);
      break;
  }
  if (options.dimensions > 0) sum.resize(static_cast<size_t>(options.dimensions));
  if (options.normalize) {
    double norm = 0;
    for (double x : sum) norm += x * x;
    norm = std::sqrt(norm);
    if (norm > 0)
      for (double& x : sum) x /= norm;
  }
  return std::vector<float>(sum.begin(), sum.end());
}

double cosine_similarity(std::span<const float> a, std::span<const float> b) {
  EXQ_CHECK(a.size() == b.size(), "cosine similarity of vectors of {} and {} values", a.size(), b.size());
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

}  // namespace exq::runtime
