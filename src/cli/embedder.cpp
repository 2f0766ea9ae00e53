#include "cli/embedder.h"

#include <fmt/format.h>

#include "core/error.h"
#if EXQ_HAVE_CUDA
#include "runtime/cuda/cuda_llama.h"
#endif

namespace exq::cli {

runtime::EmbeddingOptions default_embedding_options(const std::filesystem::path& model_dir) {
  if (auto o = runtime::sentence_transformers_options(model_dir)) return *o;
  return runtime::EmbeddingOptions{};
}

struct Embedder::Impl {
  std::unique_ptr<model::LlamaModel> model;
#if EXQ_HAVE_CUDA
  std::unique_ptr<runtime::cuda::CudaLlama> gpu;
#endif
};

Embedder::Embedder(model::LlamaModel model, Device device, int64_t max_context) : impl_(std::make_unique<Impl>()) {
  EXQ_CHECK(max_context >= 1, "embeddings: the context must hold at least 1 token, got {}", max_context);
  width_ = model.config().hidden_size;
  max_context_ = std::min<int64_t>(max_context, model.config().context_length());
  impl_->model = std::make_unique<model::LlamaModel>(std::move(model));
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = max_context_;
    impl_->gpu = std::make_unique<runtime::cuda::CudaLlama>(*impl_->model, co);
    if (impl_->model->cpu_moe_layers() == 0) impl_->model.reset();  // the weights live on the GPU now
    device_name_ = fmt::format("cuda:{} ({})", co.device, impl_->gpu->device().name);
  }
#else
  (void)device;
#endif
}

Embedder::~Embedder() = default;

std::vector<float> Embedder::embed(std::span<const int32_t> tokens, const runtime::EmbeddingOptions& options) {
  const auto n = static_cast<int64_t>(tokens.size());
  EXQ_CHECK(n >= 1 && n <= max_context_, "embeddings: {} tokens; 1 to {} (the context) are allowed", n, max_context_);
#if EXQ_HAVE_CUDA
  if (impl_->gpu) {
    impl_->gpu->reset();
    const Tensor hidden = impl_->gpu->hidden_states(tokens);
    return runtime::pool_embedding(hidden, options);
  }
#endif
  model::KvCache cache = impl_->model->make_cache(n);
  const Tensor hidden = impl_->model->hidden_states(tokens, cache);
  return runtime::pool_embedding(hidden, options);
}

}  // namespace exq::cli
