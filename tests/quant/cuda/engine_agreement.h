// The CUDA engine against the CPU engine on one random layer (measurement, quantization and
// the forward-only replay), and how far leaving out a model rule moves the CPU's targets:
// shared by the gemma and granite engine tests. Needs a GPU (callers gate on EXQ_REQUIRE_GPU).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "engine_test_util.h"
#include "quant/cuda/cuda_engine.h"
#include "quant/engine.h"
#include "quant/module_forward.h"

namespace exq::quant::cuda::test {

inline MeasureOptions some_rows() {
  MeasureOptions o;
  for (size_t i : {0, 3, 9, 18}) o.attn_table.push_back(attn_option_table()[i]);
  for (size_t i : {0, 3, 6, 16}) o.mlp_table.push_back(mlp_option_table()[i]);
  return o;
}

// Measurement, quantization and forward-only replay of both modules against the CPU engine,
// on the tensor-core and on the exact attention path.
inline void expect_engines_agree(const io::ModelConfig& c, const LayerF32& layer, const Tensor& x) {
  const MeasureOptions opts = some_rows();
  const auto cpu = make_cpu_engine(c, 128);
  const ModuleResult ca = cpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
  const ModuleResult cm = cpu->measure_mlp(layer, ca.target, "model.layers.0.mlp", opts);
  const AttnOptions ao = attn_option_table()[10];
  const MlpOptions mo = mlp_option_table()[9];
  const QuantStep cqa = cpu->quantize_attention(layer, 0, x, ao);
  const QuantStep cqm = cpu->quantize_mlp(layer, 0, ca.target, mo);
  for (const bool exact : {false, true}) {
    SCOPED_TRACE(exact ? "exact f32 attention" : "tensor-core attention where the head fits");
    CudaEngineOptions o;
    o.exact_attention = exact;
    const auto gpu = make_cuda_engine(c, 128, o);
    const ModuleResult ga = gpu->measure_attention(layer, x, "model.layers.0.self_attn", opts);
    expect_measurements_close(ga, ca, 0.002, 1e-3);
    const ModuleResult gm = gpu->measure_mlp(layer, ca.target, "model.layers.0.mlp", opts);
    expect_measurements_close(gm, cm, 0.002, 1e-3);
    expect_step_close(gpu->quantize_attention(layer, 0, x, ao), cqa);
    expect_step_close(gpu->quantize_mlp(layer, 0, ca.target, mo), cqm);
    // Resume replay: the forward with the layer's weights is the measurement's target.
    Tensor ya = Tensor::zeros(DType::F32, x.shape()), ym = Tensor::zeros(DType::F32, x.shape());
    gpu->forward_attention(attn_weights(layer), x, ya);
    gpu->forward_mlp(mlp_weights(layer), ca.target, ym);
    EXPECT_TRUE(same_bytes(ya, ga.target)) << "attention forward";
    EXPECT_TRUE(same_bytes(ym, gm.target)) << "MLP forward";
  }
}

// The CPU targets without one rule of the config differ from the full one's by more than 1e-2.
inline void expect_rule_matters(const char* what, const io::ModelConfig& c, const LayerF32& layer,
                                const io::ModelConfig& c2, const LayerF32& layer2, const Tensor& x) {
  const MeasureOptions opts = some_rows();
  const auto a = make_cpu_engine(c, 128), b = make_cpu_engine(c2, 128);
  const ModuleResult ra = a->measure_attention(layer, x, "a", opts);
  const ModuleResult rb = b->measure_attention(layer2, x, "a", opts);
  const ModuleResult ma = a->measure_mlp(layer, ra.target, "m", opts);
  const ModuleResult mb = b->measure_mlp(layer2, ra.target, "m", opts);
  const double da = relative_error(rb.target, ra.target), dm = relative_error(mb.target, ma.target);
  std::printf("  without %s: attention target moves %.3g, MLP target %.3g\n", what, da, dm);
  EXPECT_GT(std::max(da, dm), 1e-2) << what;
}

}  // namespace exq::quant::cuda::test
