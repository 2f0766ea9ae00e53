// CudaLlama on mixture-of-experts models (mixtral, qwen3_moe with a dense layer; dense fp16 /
// bf16 and EXL2 experts) against the CPU LlamaModel: a chunked prefill (experts on their gathered
// rows), 20 decode steps whose experts the CUDA graph picks on the device, passes of several
// tokens and batched sequences (routing read back on the host; the grouped expert GEMM and a
// launch set per expert); the rule between those two; EXL2 experts of different layouts (the host-routed decode without a graph); experts kept on the CPU; the tiny golden
// models of tests/model/data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/device_tensor.h"
#include "batch_step.h"
#include "cuda_require.h"
#include "model/llama.h"
#include "runtime/cuda/cuda_llama.h"
#include "runtime/cuda/cuda_moe.h"
#include "tiny_models.h"

namespace exq::runtime::cuda {
namespace {

namespace fs = std::filesystem;

struct MoeCase {
  const char* name;
  test::TinySpec spec;
  double tol;  // logits: max |gpu - cpu| / max |cpu|
  int device_layers;  // MoE layers the decode graph routes on the device
};

std::vector<int32_t> ids_of(size_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((seed + 37 * i * i + 11 * i) % vocab));
  return ids;
}

// Prompt (prefill chunks of 12 and 5), then 20 greedy steps, each against the CPU.
double prefill_and_decode(model::LlamaModel& cpu, CudaLlama& gpu, double tol, const char* name, int steps = 20) {
  const int64_t vocab = cpu.config().vocab_size;
  const std::vector<int32_t> prompt = ids_of(17, vocab, 5);
  model::KvCache cache = cpu.make_cache(64);
  const Tensor want = cpu.forward(prompt, cache, /*all_logits=*/true);
  const Tensor got = gpu.forward(prompt, /*all_logits=*/true);
  double worst = test::rel_max_abs(got, want);
  std::printf("[%s] prefill logits [17, %lld] rel max-abs diff %.3g\n", name, static_cast<long long>(vocab), worst);
  EXPECT_LE(worst, tol);
  int32_t token = test::argmax_row(want, 16);
  for (int step = 0; step < steps; ++step) {
    const Tensor w = cpu.forward(std::span(&token, 1), cache);
    const Tensor g = gpu.forward(std::span(&token, 1));
    const double rel = test::rel_max_abs(g, w);
    worst = std::max(worst, rel);
    EXPECT_LE(rel, tol) << "decode step " << step;
    token = test::argmax_row(w);
  }
  std::printf("[%s] after %d decode steps: worst rel max-abs diff %.3g\n", name, steps, worst);
  return worst;
}

class CudaMoe : public ::testing::TestWithParam<MoeCase> {};

TEST_P(CudaMoe, PrefillAndDecodeMatchCpu) {
  EXQ_REQUIRE_CUDA();
  const MoeCase& c = GetParam();
  const fs::path dir = test::write_tiny_llama(test::temp_dir(std::string("cuda_moe_") + c.name), c.spec);
  model::LlamaModel cpu = model::LlamaModel::load(dir);
  CudaOptions o;
  o.max_context = 64;
  o.prefill_chunk = 12;  // EXL2: a chunk of 12 rows dequantizes the experts that get > 8 of them
  CudaLlama gpu(cpu, o);
  prefill_and_decode(cpu, gpu, c.tol, c.name);
  const CudaLlama::Stats st = gpu.stats();
  EXPECT_EQ(st.moe_device_layers, c.device_layers);
  EXPECT_EQ(st.graph_captured, c.device_layers > 0);
  EXPECT_EQ(st.graph_replays, c.device_layers > 0 ? 19 : 0);
  fs::remove_all(dir);
}

// A several-row pass through a launch set per expert (EXQ_MOE_ROWS=experts) and through the
// grouped expert GEMM (=grouped; the tiny models' default), each against the CPU and the two
// against each other.
TEST_P(CudaMoe, GroupedAndPerExpertPassesAgree) {
  EXQ_REQUIRE_CUDA();
  const MoeCase& c = GetParam();
  const fs::path dir = test::write_tiny_llama(test::temp_dir(std::string("cuda_moe_paths_") + c.name), c.spec);
  model::LlamaModel cpu = model::LlamaModel::load(dir);
  const std::vector<int32_t> prompt = ids_of(40, cpu.config().vocab_size, 9);
  model::KvCache cache = cpu.make_cache(64);
  const Tensor want = cpu.forward(prompt, cache, /*all_logits=*/true);
  CudaOptions o;
  o.max_context = 64;
  o.prefill_chunk = 40;
  Tensor got[2];
  const char* modes[2] = {"experts", "grouped"};
  for (int m = 0; m < 2; ++m) {
    ::setenv("EXQ_MOE_ROWS", modes[m], 1);
    CudaLlama gpu(cpu, o);
    ::unsetenv("EXQ_MOE_ROWS");
    got[m] = gpu.forward(prompt, /*all_logits=*/true);
    const double rel = test::rel_max_abs(got[m], want);
    std::printf("[%s] %s: prefill logits [40, %lld] rel max-abs diff %.3g\n", c.name, modes[m],
                static_cast<long long>(cpu.config().vocab_size), rel);
    EXPECT_LE(rel, c.tol) << modes[m];
  }
  EXPECT_LE(test::rel_max_abs(got[1], got[0]), c.tol);
  fs::remove_all(dir);
}

// Experts in host memory (--n-cpu-moe 1, --cpu-moe): those layers' MoE MLPs run on the CPU
// between a download and an upload, the decode step without a graph, the logits as close to the
// CPU's as with every expert on the device; a decode step reads fewer device weight bytes.
TEST_P(CudaMoe, ExpertsOnTheCpuMatchCpu) {
  EXQ_REQUIRE_CUDA();
  const MoeCase& c = GetParam();
  const fs::path dir = test::write_tiny_llama(test::temp_dir(std::string("cuda_moe_cpu_") + c.name), c.spec);
  model::LlamaModel cpu = model::LlamaModel::load(dir);
  CudaOptions o;
  o.max_context = 64;
  o.prefill_chunk = 12;
  const size_t all_bytes = CudaLlama(cpu, o).stats().weight_bytes;
  size_t last = all_bytes;
  for (const int64_t layers : {int64_t{1}, cpu.config().num_hidden_layers}) {
    model::LlamaModel host = model::LlamaModel::load(dir);  // its weights run the CPU's experts
    host.set_cpu_moe_layers(layers);
    CudaLlama gpu(host, o);
    const std::string name = std::string(c.name) + " cpu_moe_layers " + std::to_string(layers);
    prefill_and_decode(cpu, gpu, c.tol, name.c_str(), 8);
    const CudaLlama::Stats st = gpu.stats();
    EXPECT_EQ(st.moe_device_layers, 0);
    EXPECT_FALSE(st.graph_captured);
    EXPECT_LE(st.weight_bytes, last) << layers;  // qwen3_moe's layer 1 is dense
    EXPECT_LT(st.weight_bytes, all_bytes) << layers;
    last = st.weight_bytes;
  }
  std::printf("[%s] weight bytes a step: %zu with every expert on the device, %zu with none\n", c.name, all_bytes,
              last);
  fs::remove_all(dir);
}

// forward_rows of 2..8 tokens (eager for MoE models), then three sequences through decode_batch.
TEST_P(CudaMoe, RowsAndSequencesMatchCpu) {
  EXQ_REQUIRE_CUDA();
  const MoeCase& c = GetParam();
  const fs::path dir = test::write_tiny_llama(test::temp_dir(std::string("cuda_moe_rows_") + c.name), c.spec);
  model::LlamaModel cpu = model::LlamaModel::load(dir);
  const int64_t vocab = cpu.config().vocab_size;
  CudaOptions o;
  o.max_context = 64;
  o.sequences = 3;
  CudaLlama gpu(cpu, o);
  std::vector<model::KvCache> caches;
  std::vector<int32_t> next;
  double worst = 0;
  const size_t lengths[] = {5, 17, 9};
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> prompt = ids_of(lengths[s], vocab, 7 + static_cast<uint32_t>(s));
    caches.push_back(cpu.make_cache(64));
    gpu.select_sequence(s);
    // Sequence 1: 3 tokens through forward_rows (the draft check's pass), then the rest.
    if (s == 1) {
      const std::vector<int32_t> head(prompt.begin(), prompt.begin() + 3), tail(prompt.begin() + 3, prompt.end());
      const Tensor w3 = cpu.forward(head, caches.back(), /*all_logits=*/true);
      const Tensor g3 = exq::cuda::to_host(gpu.forward_rows(head), gpu.stream());
      const double rel = test::rel_max_abs(g3, w3);
      worst = std::max(worst, rel);
      EXPECT_LE(rel, c.tol) << "forward_rows of 3 tokens";
      const Tensor w = cpu.forward(tail, caches.back());
      EXPECT_LE(test::rel_max_abs(gpu.forward(tail), w), c.tol) << "prefill after the pass";
      next.push_back(test::argmax_row(w));
      continue;
    }
    const Tensor w = cpu.forward(prompt, caches.back());
    EXPECT_LE(test::rel_max_abs(gpu.forward(prompt), w), c.tol) << "prefill of sequence " << s;
    next.push_back(test::argmax_row(w));
  }
  auto step = [&](const std::vector<int>& seqs) {
    worst = std::max(worst, test::batch_step(cpu, gpu, caches, next, seqs, c.tol));
  };

  for (int i = 0; i < 5; ++i) step({2, 0, 1});
  for (int i = 0; i < 2; ++i) step({1, 2});
  gpu.select_sequence(0);
  const Tensor w = cpu.forward(std::span(&next[0], 1), caches[0]);
  const double rel = test::rel_max_abs(gpu.forward(std::span(&next[0], 1)), w);
  EXPECT_LE(rel, c.tol) << "single step after the batched ones";
  std::printf("[%s] rows and 3 sequences: worst rel max-abs diff %.3g\n", c.name, std::max(worst, rel));
  fs::remove_all(dir);
}

test::TinySpec moe(DType dtype, bool exl2, bool qwen3, int64_t experts, int64_t k, uint32_t seed,
                   int64_t head_dim = 32) {
  test::TinySpec s;
  s.dtype = dtype;
  s.exl2 = exl2;
  s.qwen3 = qwen3;
  s.experts = experts;
  s.experts_per_token = k;
  s.seed = seed;
  s.shape.head_dim = head_dim;
  return s;
}

test::TinySpec unnormalized(test::TinySpec s) {
  s.norm_topk = false;
  return s;
}

test::TinySpec mixed_layouts(test::TinySpec s) {
  s.mixed_layouts = true;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Models, CudaMoe,
    ::testing::Values(MoeCase{"mixtral_f16_e4k2", moe(DType::F16, false, false, 4, 2, 31), 5e-3, 2},
                      MoeCase{"mixtral_bf16_e8k2", moe(DType::BF16, false, false, 8, 2, 32), 3e-2, 2},
                      MoeCase{"mixtral_exl2_e4k2", moe(DType::F16, true, false, 4, 2, 33), 5e-3, 2},
                      // qwen3_moe: q/k norms, layer 1 dense, top 3 of 6, renormalized or not.
                      MoeCase{"qwen3moe_f16_e6k3", moe(DType::F16, false, true, 6, 3, 34), 5e-3, 1},
                      MoeCase{"qwen3moe_exl2_hd64_e6k3_nonorm",
                              unnormalized(moe(DType::F16, true, true, 6, 3, 35, 64)), 5e-3, 1},
                      // EXL2 experts of different bit widths: no shared layout, routed on the host.
                      MoeCase{"mixtral_exl2_mixed_layouts", mixed_layouts(moe(DType::F16, true, false, 4, 2, 36)),
                              5e-3, 0}),
    [](const ::testing::TestParamInfo<MoeCase>& i) { return std::string(i.param.name); });

// Host only: the tiny MoE folders load on the CPU with their experts, a dense layer where
// qwen3_moe's mlp_only_layers says, and finite logits.
TEST(CudaMoeModels, TinyFoldersLoadOnCpu) {
  for (const bool qwen3 : {false, true})
    for (const bool exl2 : {false, true}) {
      const test::TinySpec s = moe(DType::F16, exl2, qwen3, 6, 3, 40);
      const fs::path dir = test::write_tiny_llama(test::temp_dir("cuda_moe_host"), s);
      model::LlamaModel cpu = model::LlamaModel::load(dir);
      const io::ModelConfig& c = cpu.config();
      EXPECT_EQ(c.model_type, qwen3 ? "qwen3_moe" : "mixtral");
      EXPECT_EQ(c.num_experts, 6);
      EXPECT_EQ(c.experts_per_token, 3);
      EXPECT_EQ(c.expert_intermediate, s.expert_inter);
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        const model::LayerWeights& L = cpu.weights().layers[static_cast<size_t>(l)];
        const bool dense = qwen3 && l == 1;
        EXPECT_EQ(c.moe_layer(l), !dense);
        EXPECT_EQ(L.experts.size(), dense ? 0u : 6u);
        EXPECT_EQ(L.gate != nullptr, dense);
      }
      model::KvCache cache = cpu.make_cache(16);
      const Tensor logits = cpu.forward(ids_of(5, c.vocab_size, 3), cache);
      for (float v : logits.span<const float>()) ASSERT_TRUE(std::isfinite(v));
      fs::remove_all(dir);
    }
}

// The goldens' folders, found from the working directory (the device run's checkout) or the
// source tree this binary was built from.
fs::path golden_dir(const char* name) {
  const fs::path rel = fs::path("tests") / "model" / "data" / name;
  if (fs::exists(rel / "config.json")) return rel;
  return fs::path(EXQ_SOURCE_DIR) / rel;
}

TEST(CudaMoeGolden, TinyModelsMatchCpu) {
  EXQ_REQUIRE_CUDA();
  for (const char* name : {"mixtral_tiny", "qwen3_moe_tiny", "granitemoe_tiny"}) {
    const fs::path dir = golden_dir(name);
    if (!fs::exists(dir / "config.json")) GTEST_SKIP() << "no " << dir;
    model::LlamaModel cpu = model::LlamaModel::load(dir);
    CudaOptions o;
    o.max_context = 64;
    o.prefill_chunk = 12;
    CudaLlama gpu(cpu, o);
    prefill_and_decode(cpu, gpu, 5e-3, name, 10);
    EXPECT_EQ(gpu.stats().moe_device_layers, 2);  // mixtral: both layers; qwen3_moe: 0 and 2
  }
}

// Host only: the choice between the grouped expert GEMM and a launch set per expert, at the
// crossovers measured on the H200 (Mixtral's 8 experts of [14336, 4096]) and for many small
// experts (Qwen3-30B-A3B's 128 of [768, 2048]).
TEST(MoeGroupedRule, MeasuredCrossovers) {
  const int64_t mh = 4096, mi = 14336, qh = 2048, qi = 768;
  const size_t mixtral_exl2 = 3 * static_cast<size_t>(mh * mi) / 2, qwen3_exl2 = 3 * static_cast<size_t>(qh * qi) / 2;
  const size_t mixtral_f16 = 6 * static_cast<size_t>(mh * mi), qwen3_f16 = 6 * static_cast<size_t>(qh * qi);
  // Mixtral-shaped, 8 experts active: slots = 8 x rows an expert.
  for (const auto& [rows, dense, exl2] : {std::tuple{2, true, false}, std::tuple{4, true, false},
                                          std::tuple{16, true, true}, std::tuple{64, false, true},
                                          std::tuple{128, false, false}, std::tuple{512, false, false}}) {
    EXPECT_EQ(moe_grouped_wins(false, 8 * rows, 8, mh, mi, mixtral_f16), dense) << rows;
    EXPECT_EQ(moe_grouped_wins(true, 8 * rows, 8, mh, mi, mixtral_exl2), exl2) << rows;
  }
  // Qwen3-30B-A3B-shaped: grouped from a batch of single tokens to prefill chunks of 2048.
  for (const int64_t tokens : {8, 16, 512, 2048}) {
    const int64_t slots = 8 * tokens, active = std::min<int64_t>(128, slots);
    EXPECT_TRUE(moe_grouped_wins(true, slots, active, qh, qi, qwen3_exl2)) << tokens;
    EXPECT_TRUE(moe_grouped_wins(false, slots, active, qh, qi, qwen3_f16)) << tokens;
  }
  EXPECT_FALSE(moe_grouped_wins(true, 0, 0, qh, qi, qwen3_exl2));
}

// A top k the routing kernel has no room for: refused by name, nothing uploaded.
TEST(CudaMoeErrors, TooManyExpertsPerTokenRefused) {
  EXQ_REQUIRE_CUDA();
  test::TinySpec s = moe(DType::F16, false, false, 40, 33, 37);
  s.expert_inter = 32;
  s.shape.layers = 1;
  const fs::path dir = test::write_tiny_llama(test::temp_dir("cuda_moe_k33"), s);
  model::LlamaModel cpu = model::LlamaModel::load(dir);
  try {
    CudaLlama gpu(cpu, CudaOptions{});
    ADD_FAILURE() << "33 experts per token were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("experts per token"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exq::runtime::cuda
