#include "quant/engine.h"

#include <fmt/format.h>

#include "core/error.h"

namespace exq::quant {
namespace {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const io::ModelConfig& config, int64_t max_tokens) : fwd_(config, max_tokens) {}
  std::string name() const override { return "cpu"; }

  ModuleResult measure_attention(const LayerF32& layer, const TensorView& states,
                                 const std::string& key, const MeasureOptions& options) override {
    return quant::measure_attention(fwd_, layer, states, key, options);
  }
  ModuleResult measure_mlp(const LayerF32& layer, const TensorView& states,
                           const std::string& key, const MeasureOptions& options) override {
    return quant::measure_mlp(fwd_, layer, states, key, options);
  }
  QuantStep quantize_attention(const LayerF32& layer, int64_t index, const TensorView& states,
                               const AttnOptions& options) override {
    return quantize_attention_step(fwd_, layer, index, states, options);
  }
  QuantStep quantize_mlp(const LayerF32& layer, int64_t index, const TensorView& states,
                         const MlpOptions& options) override {
    return quantize_mlp_step(fwd_, layer, index, states, options);
  }
  ModuleResult measure_moe(const LayerF32& layer, const TensorView& states, const std::string& key,
                           const MeasureOptions& options) override {
    return quant::measure_moe(fwd_, layer, states, key, options);
  }
  QuantStep quantize_moe(const LayerF32& layer, int64_t index, const TensorView& states,
                         const MlpOptions& options) override {
    return quantize_moe_step(fwd_, layer, index, states, options);
  }
  void forward_moe(const MoeWeights& w, const TensorView& x, const TensorView& y) override {
    fwd_.moe_rows(w, x, y);
  }
  // Same per-row ModuleForward calls as measure.cpp's reference pass and quantize.cpp's output.
  void forward_attention(const AttnWeights& w, const TensorView& x, const TensorView& y) override {
    fwd_.attention_rows(w, x, y);
  }
  void forward_mlp(const MlpWeights& w, const TensorView& x, const TensorView& y) override {
    fwd_.mlp_rows(w, x, y);
  }

 private:
  ModuleForward fwd_;
};

}  // namespace

QuantStep Engine::quantize_head(const TensorView& states, const TensorView& final_norm,
                                const TensorView& head_weight, float eps, int head_bits) {
  return quantize_head_step(states, final_norm, head_weight, eps, head_bits);
}

void Engine::forward_attention(const AttnWeights&, const TensorView&, const TensorView&) {
  throw Error(fmt::format("engine {} cannot replay an attention block (forward_attention); "
                          "resume with --device cpu or run with --snapshot-interval 0", name()));
}

void Engine::forward_mlp(const MlpWeights&, const TensorView&, const TensorView&) {
  throw Error(fmt::format("engine {} cannot replay an MLP block (forward_mlp); resume with "
                          "--device cpu or run with --snapshot-interval 0", name()));
}

ModuleResult Engine::measure_moe(const LayerF32&, const TensorView&, const std::string& key, const MeasureOptions&) {
  throw Error(fmt::format("{}: engine {} cannot convert mixture-of-experts layers", key, name()));
}

QuantStep Engine::quantize_moe(const LayerF32&, int64_t index, const TensorView&, const MlpOptions&) {
  throw Error(fmt::format("{}: engine {} cannot convert mixture-of-experts layers", moe_module_key(index), name()));
}

void Engine::forward_moe(const MoeWeights&, const TensorView&, const TensorView&) {
  throw Error(fmt::format("engine {} cannot replay a mixture-of-experts block (forward_moe)", name()));
}

std::unique_ptr<Engine> make_cpu_engine(const io::ModelConfig& config, int64_t max_tokens) {
  return std::make_unique<CpuEngine>(config, max_tokens);
}

}  // namespace exq::quant
