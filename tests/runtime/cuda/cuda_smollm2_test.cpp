// The CUDA runtime on SmolLM2-135M against the fixtures: greedy.json token for token (GPU
// sampler loop and CPU sampler over CUDA logits), ppl.json wiki / c4 within 0.5 % on the CPU
// test's windows, and exllamav2's 4.0 bpw layer 0: each linear on the GPU against the CPU's
// Exl2Linear (decode and prefill paths), and the model holding it against the CPU.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <random>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/stream.h"
#include "cuda_require.h"
#include "exl2_test_models.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "model/exl2_linear.h"
#include "model/llama.h"
#include "runtime/cuda/cuda_draft.h"
#include "runtime/cuda/cuda_generate.h"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/model_step.h"
#include "test_support.h"
#include "tiny_models.h"

namespace exq::runtime::cuda {
namespace {

namespace fs = std::filesystem;
namespace gpu = exq::cuda;
using nlohmann::json;

TEST(CudaSmolLM2, GreedyMatchesFixture) {
  EXQ_REQUIRE_CUDA();
  EXQ_REQUIRE_MODEL();
  const model::LlamaModel cpu = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const json cases = json::parse(test::read_file(test::shared_dir() / "fixtures" / "smollm2" / "greedy.json"));
  CudaOptions o;
  o.max_context = 512;
  CudaLlama m(cpu, o);
  for (const auto& c : cases) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto want = c["greedy_ids"].get<std::vector<int32_t>>();
    GenerateOptions g;
    g.max_new_tokens = static_cast<int64_t>(want.size()) + 4;
    g.eos_token_ids = {2};
    g.sampler.temperature = 0.0f;
    std::string streamed;
    const GenerateResult r = generate_text_cuda(m, tok, prompt, g, [&](std::string_view s) {
      streamed += s;
      return true;
    });
    EXPECT_EQ(r.ids, want);
    EXPECT_EQ(r.stop, StopReason::Eos);
    EXPECT_EQ(r.decode_steps, static_cast<int64_t>(want.size()) - 1);
    EXPECT_EQ(streamed, r.text);
    EXPECT_EQ(r.text + "<|im_end|>", c["text"].get<std::string>());
    // The host loop (CPU sampler) over the same CUDA logits.
    m.reset();
    CudaStep step(m);
    EXPECT_EQ(generate(step, nullptr, prompt, g).ids, want);
    // Drafts (from the context, then from the answer itself as a prediction) check several
    // tokens per pass; the greedy tokens stay the fixture's.
    GenerateOptions d = g;
    d.draft.max_tokens = 7;
    d.draft.ngram_min = 1;
    const GenerateResult lookup = generate_text_cuda(m, tok, prompt, d);
    EXPECT_EQ(lookup.ids, want);
    d.prediction = want;
    const GenerateResult predicted = generate_text_cuda(m, tok, prompt, d);
    EXPECT_EQ(predicted.ids, want);
    EXPECT_GE(predicted.accepted_draft_tokens, static_cast<int64_t>(want.size()) / 2);
    // Each pass gives its kept drafts and one token more, but the last pass none more when the
    // end-of-sequence token was itself a kept draft.
    const int64_t passes_and_kept = predicted.decode_steps + predicted.accepted_draft_tokens;
    EXPECT_GE(passes_and_kept, static_cast<int64_t>(want.size()) - 1);
    EXPECT_LE(passes_and_kept, static_cast<int64_t>(want.size()));
    std::printf("  %zu prompt tokens, %zu generated: prefill %.0f tok/s, decode %.0f tok/s\n", prompt.size(),
                r.ids.size(), r.prefill_tokens_per_s(), r.decode_tokens_per_s());
  }
}

// The windows and procedure of tests/runtime/perplexity_test.cpp (SmolLM2MatchesTransformers).
// A draft model on the GPU (SmolLM2 drafting for itself, a second CudaLlama): guesses picked on
// the device, the tokens of a generation without drafts (greedy and sampled with a seed), nearly
// every greedy guess kept; the CPU draft model over the same GPU run gives the same guesses.
TEST(CudaSmolLM2, DraftModelGivesTheSameTokens) {
  EXQ_REQUIRE_CUDA();
  EXQ_REQUIRE_MODEL();
  const model::LlamaModel cpu = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const std::vector<int32_t> prompt = tok.encode("The history of the printing press begins", true);
  CudaOptions o;
  o.max_context = 256;
  CudaLlama m(cpu, o), draft_gpu(cpu, o);
  CudaDraftModel draft(draft_gpu, cpu.config().vocab_size);
  for (const float temperature : {0.0f, 0.7f}) {
    SCOPED_TRACE(testing::Message() << "temperature " << temperature);
    GenerateOptions g;
    g.max_new_tokens = 64;
    g.sampler.temperature = temperature;
    g.sampler.seed = 11;
    const GenerateResult plain = generate_text_cuda(m, tok, prompt, g);
    g.draft.max_tokens = 7;
    g.draft.model = &draft;
    g.draft.p_min = 0.0f;
    const GenerateResult spec = generate_text_cuda(m, tok, prompt, g);
    EXPECT_EQ(spec.ids, plain.ids);
    EXPECT_EQ(spec.decode_steps + spec.accepted_draft_tokens, plain.decode_steps);
    if (temperature == 0.0f) {
      EXPECT_GE(spec.accepted_draft_tokens * 10, spec.draft_tokens * 9)
          << spec.accepted_draft_tokens << " of " << spec.draft_tokens;
      EXPECT_LE(spec.decode_steps, 16);
    }
  }
  // The device's picks against the host's over the same model: the same greedy guesses.
  CudaLlama host_side(cpu, o);
  CudaStep step(host_side);
  StepDraftModel host_draft(step, cpu.config().vocab_size);
  const std::vector<int32_t> ctx = tok.encode("Once upon a time, in a small village by the sea,", true);
  EXPECT_EQ(draft.propose(ctx, 12, 0.0f), host_draft.propose(ctx, 12, 0.0f));
}

TEST(CudaSmolLM2, PerplexityMatchesTransformers) {
  EXQ_REQUIRE_CUDA();
  EXQ_REQUIRE_MODEL();
  const model::LlamaModel cpu = model::LlamaModel::load(test::test_model());
  const auto dir = test::shared_dir() / "fixtures/smollm2";
  const auto ref = json::parse(test::read_file(dir / "ppl.json"));
  const io::SafetensorsFile ids = io::SafetensorsFile::open(dir / "ppl_ids.safetensors");
  CudaOptions o;
  o.max_context = 511;
  CudaLlama m(cpu, o);
  for (const auto& [name, file] : {std::pair{"wiki", "wiki.utf8"}, std::pair{"c4", "c4.utf8"}}) {
    const auto& want = ref["windows"][file];
    const int64_t window = want["window"].get<int64_t>(), count = want["count"].get<int64_t>();
    const auto windows = split_windows(ids.get(name).span<int32_t>(), window, count);
    ASSERT_EQ(static_cast<int64_t>(windows.size()), count);
    const PerplexityResult r = perplexity_cuda(m, windows);
    const double want_ppl = want["ppl"].get<double>();
    const double rel = std::fabs(r.ppl / want_ppl - 1.0);
    double worst_window = 0;
    for (int64_t i = 0; i < count; ++i)
      worst_window = std::max(worst_window, std::fabs(r.window_ppl[i] / want["ppl_per_window"][i].get<double>() - 1));
    std::printf("  %-4s cuda ppl %.6f (transformers %.6f), relative error %.3g, worst window %.3g\n", name, r.ppl,
                want_ppl, rel, worst_window);
    EXPECT_EQ(r.tokens, count * (window - 1));
    EXPECT_LE(rel, 5e-3) << name;
  }
}

// y = x W^T in double from exllamav2's reconstruction [out, in] f16.
std::vector<double> dense_ref(const TensorView& w, const Tensor& x) {
  const int64_t out = w.dim(0), in = w.dim(1), rows = x.dim(0);
  std::vector<double> y(static_cast<size_t>(rows * out));
  const uint16_t* wp = w.data<uint16_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0.0;
      for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(x.data<float>()[r * in + i]) * half_to_float(wp[o * in + i]);
      y[static_cast<size_t>(r * out + o)] = acc;
    }
  return y;
}

TEST(CudaSmolLM2, Exl2FixtureLayer0LinearsMatchCpu) {
  EXQ_REQUIRE_CUDA();
  gpu::require_device(0);
  const auto f = io::SafetensorsFile::open(test::exl2_layer0_fixture("4.0"));
  gpu::CachingAllocator alloc;
  gpu::Stream stream;
  gpu::CublasHandle cublas;
  gpu::Exl2Workspace ws;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const char* name : test::kLlamaLinears) {
    const std::string key = std::string("model.layers.0.") + name;
    const TensorView dq = f.get(key + ".dequant");
    const int64_t out = dq.dim(0), in = dq.dim(1);
    const model::Exl2Linear cpu(io::exl2_tensors(f, key), in, out, key);
    const GpuLinear dev(cpu, false, alloc, stream, key);
    dev.reserve(ws, stream);
    gpu::DeviceTensor dequant(DType::F16, {in * out}, alloc, stream);
    for (int64_t rows : {1, 8, 64}) {
      Tensor x(DType::F32, {rows, in});
      for (float& v : x.span<float>()) v = nd(rng);
      Tensor want(DType::F32, {rows, out});
      cpu.forward(x.view(), want.view());
      gpu::DeviceTensor dx = gpu::to_device(x.view(), alloc, stream), dy(DType::F32, {rows, out}, alloc, stream);
      gpu::DeviceTensor mm(DType::U8, {static_cast<int64_t>(gpu::matmul_workspace_bytes(rows, in))}, alloc, stream);
      dev.forward(LinearScratch{&cublas, &ws, mm.view(), dequant.view()}, dx, dy, stream);
      const Tensor got = gpu::to_host(dy, stream);
      const double rel_cpu = test::rel_max_abs(got, want);
      const std::vector<double> ref = dense_ref(dq, x);
      double diff = 0.0, mag = 0.0;
      for (size_t i = 0; i < ref.size(); ++i) {
        diff = std::max(diff, std::fabs(got.data<float>()[i] - ref[i]));
        mag = std::max(mag, std::fabs(ref[i]));
      }
      std::printf("  %-16s rows %2lld: vs CPU Exl2Linear %.3g, vs exllamav2 dequant (double) %.3g\n", name,
                  static_cast<long long>(rows), rel_cpu, diff / mag);
      EXPECT_LE(rel_cpu, 2e-3) << name << " rows " << rows;
      EXPECT_LE(diff / mag, 2e-3) << name << " rows " << rows;
    }
  }
}

TEST(CudaSmolLM2, Exl2Layer0ModelMatchesCpu) {
  EXQ_REQUIRE_CUDA();
  EXQ_REQUIRE_MODEL();
  const fs::path root = test::temp_dir("cuda_exl2_smollm2");
  const test::Exl2Folders folders = test::make_smollm2_layer0_folders(test::test_model(), root);
  model::LlamaModel cpu = model::LlamaModel::load(folders.exl2);
  const auto f = io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "smollm2" / "ppl_ids.safetensors");
  const auto all = f.get("wiki").span<int32_t>();
  const std::vector<int32_t> ids(all.begin(), all.begin() + 64);
  model::KvCache cache = cpu.make_cache(64);
  const Tensor want = cpu.forward(ids, cache, true);
  CudaOptions o;
  o.max_context = 64;
  CudaLlama m(cpu, o);
  const Tensor got = m.forward(ids, true);
  const double rel = test::rel_max_abs(got, want);
  std::printf("[exl2 layer 0 SmolLM2] CUDA vs CPU logits [64, 49152] rel max-abs diff %.3g\n", rel);
  EXPECT_LE(rel, 1e-2);
  int agree = 0;
  for (int64_t t = 0; t < 64; ++t) agree += test::argmax_row(got, t) == test::argmax_row(want, t);
  EXPECT_GE(agree, 62);
  fs::remove_all(root);
}

}  // namespace
}  // namespace exq::runtime::cuda
