// GPU sampling in the loop: CudaSampler draws the same tokens as runtime::Sampler from the same
// logits and seed (penalty history included); generate_cuda (token fed back on the device)
// gives what runtime::generate over CudaStep (host logits, CPU sampler) gives, with the same
// stop reasons; perplexity_cuda and kl_divergence_cuda against the CPU on tiny models.
#include "runtime/cuda/cuda_generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "backend/cuda/stream.h"
#include "grammar/grammar.h"
#include "cuda_require.h"
#include "model/llama.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "runtime/kl_divergence.h"
#include "runtime/perplexity.h"
#include "tiny_models.h"

namespace exq::runtime::cuda {
namespace {

namespace fs = std::filesystem;
namespace gpu = exq::cuda;

SamplerConfig config(float temperature, int top_k, float top_p, float min_p, float penalty, uint64_t seed) {
  SamplerConfig c;
  c.temperature = temperature;
  c.top_k = top_k;
  c.top_p = top_p;
  c.min_p = min_p;
  c.repetition_penalty = penalty;
  c.seed = seed;
  return c;
}

// Random logits; odd steps are rounded to quarters so ties occur (top-k and top-p tie rules).
std::vector<float> random_logits(int64_t vocab, std::mt19937& rng, bool ties) {
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> v(static_cast<size_t>(vocab));
  for (float& x : v) x = ties ? std::round(nd(rng) * 4.0f) / 4.0f : nd(rng);
  return v;
}

TEST(CudaSampler, SameSeedPicksTheCpuSamplersTokens) {
  EXQ_REQUIRE_CUDA();
  gpu::require_device(0);
  gpu::CachingAllocator alloc;
  gpu::Stream stream;
  const int64_t vocab = 32000;
  const SamplerConfig configs[] = {
      config(0.8f, 40, 0.95f, 0.05f, 1.0f, 11),  // the defaults
      config(1.2f, 0, 0.9f, 0.0f, 1.3f, 12),     // top-p over the whole vocabulary, penalty
      config(0.6f, 0, 1.0f, 0.1f, 1.0f, 13),     // min-p alone
      config(1.0f, 0, 1.0f, 0.0f, 1.0f, 14),     // plain softmax draw
      config(0.9f, 5, 0.5f, 0.2f, 0.8f, 15),     // everything at once, penalty < 1
      config(1.5f, 1000, 0.99f, 0.0f, 1.0f, 16),
      config(0.0f, 40, 0.95f, 0.05f, 1.5f, 17),  // greedy with a penalty
      config(1.0f, 1, 1.0f, 0.0f, 1.0f, 18),     // top-k 1 is greedy (no random number drawn)
  };
  gpu::DeviceTensor d_logits(DType::F32, {1, vocab}, alloc, stream);
  gpu::DeviceTensor out(DType::I32, {1}, alloc, stream);
  int index = 0;
  for (const SamplerConfig& c : configs) {
    Sampler cpu(c);
    CudaSampler dev(c, vocab, alloc, stream);
    EXPECT_EQ(dev.seed(), cpu.seed());
    std::vector<int32_t> history = {5, 9, 31999, 100, 9};
    dev.set_history(history);
    std::mt19937 rng(100 + index);
    int same = 0;
    for (int step = 0; step < 40; ++step) {
      const std::vector<float> logits = random_logits(vocab, rng, step % 2 == 1);
      gpu::copy_to_device(TensorView(const_cast<float*>(logits.data()), DType::F32, {1, vocab}), d_logits,
                          stream);
      const int32_t want = cpu.sample(logits, history);
      const int32_t got = dev.sample(d_logits, out);
      EXPECT_EQ(got, want) << "config " << index << " step " << step;
      same += got == want;
      history.push_back(want);
    }
    std::printf("[sampler config %d] %d of 40 draws identical\n", index, same);
    ++index;
  }
}

TEST(CudaSampler, BadLogitsGiveTheCpuSamplersErrors) {
  EXQ_REQUIRE_CUDA();
  gpu::require_device(0);
  gpu::CachingAllocator alloc;
  gpu::Stream stream;
  const int64_t vocab = 1000;
  gpu::DeviceTensor d_logits(DType::F32, {1, vocab}, alloc, stream);
  gpu::DeviceTensor out(DType::I32, {1}, alloc, stream);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> logits(vocab, 0.5f);
    logits[700] = bad;
    gpu::copy_to_device(TensorView(logits.data(), DType::F32, {1, vocab}), d_logits, stream);
    for (float t : {0.0f, 0.8f}) {
      CudaSampler dev(config(t, 40, 0.95f, 0.05f, 1.0f, 1), vocab, alloc, stream);
      try {
        dev.sample(d_logits, out);
        ADD_FAILURE() << "expected an error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("NaN or +Inf"), std::string::npos) << e.what();
      }
    }
  }
  std::vector<float> logits(vocab, -std::numeric_limits<float>::infinity());
  gpu::copy_to_device(TensorView(logits.data(), DType::F32, {1, vocab}), d_logits, stream);
  CudaSampler dev(config(0.8f, 40, 0.95f, 0.05f, 1.0f, 1), vocab, alloc, stream);
  try {
    dev.sample(d_logits, out);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("every logit is -inf"), std::string::npos) << e.what();
  }
  EXPECT_THROW({ CudaSampler bad(config(-1.0f, 40, 0.95f, 0.05f, 1.0f, 1), vocab, alloc, stream); }, Error);
}

// One character per id, so the callback can stop generation.
class LetterDecoder : public TextDecoder {
 public:
  std::string push(int32_t id) override { return std::string(1, static_cast<char>('a' + id % 26)); }
  std::string finish() override { return ""; }
  void reset() override {}
};

// The same generation by the device loop (generate_cuda) and by the host loop over CudaStep,
// each from an empty cache.
struct BothLoops {
  GenerateResult device, host;
};
BothLoops run_both_loops(CudaLlama& m, std::span<const int32_t> prompt, const GenerateOptions& g) {
  LetterDecoder d1, d2;
  m.reset();
  GenerateResult a = generate_cuda(m, &d1, prompt, g);
  m.reset();
  CudaStep step(m);
  return {std::move(a), generate(step, &d2, prompt, g)};
}

class CudaGenerate : public ::testing::Test {
 protected:
  void SetUp() override {
    EXQ_REQUIRE_CUDA();
    test::TinySpec s;
    s.exl2 = true;
    s.seed = 21;
    dir_ = test::write_tiny_llama(test::temp_dir("cuda_generate_tiny"), s);
    model_ = std::make_unique<model::LlamaModel>(model::LlamaModel::load(dir_));
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
  std::unique_ptr<model::LlamaModel> model_;
};

TEST_F(CudaGenerate, DeviceLoopMatchesHostLoopOverTheSameLogits) {
  CudaOptions o;
  o.max_context = 64;
  CudaLlama m(*model_, o);
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35};
  const SamplerConfig configs[] = {config(0.0f, 40, 0.95f, 0.05f, 1.0f, 1), config(0.8f, 40, 0.95f, 0.05f, 1.0f, 2),
                                   config(1.3f, 0, 0.9f, 0.0f, 1.2f, 3), config(1.0f, 0, 1.0f, 0.0f, 1.0f, 4)};
  for (const SamplerConfig& c : configs) {
    GenerateOptions g;
    g.max_new_tokens = 30;
    g.sampler = c;
    const BothLoops r = run_both_loops(m, prompt, g);
    const GenerateResult &a = r.device, &b = r.host;
    EXPECT_EQ(a.ids, b.ids) << "temperature " << c.temperature;
    EXPECT_EQ(a.text, b.text);
    EXPECT_EQ(a.stop, StopReason::MaxTokens);
    EXPECT_EQ(a.decode_steps, 29);
    EXPECT_EQ(a.seed, b.seed);
  }
}

// Logit bias, presence / frequency penalties and a grammar (refused draws redrawn under its
// mask, uploaded to the device): the same tokens as the host loop with the CPU sampler.
TEST_F(CudaGenerate, BiasPenaltiesAndGrammarMatchTheHostLoop) {
  CudaOptions o;
  o.max_context = 96;
  CudaLlama m(*model_, o);
  const int64_t vocab = m.config().vocab_size;
  std::vector<std::string> bytes(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) bytes[static_cast<size_t>(i)] = std::string(1, static_cast<char>('a' + i % 26));
  std::vector<uint8_t> special(static_cast<size_t>(vocab), 0);
  special[0] = 1;  // eos
  const auto tv = std::make_shared<const TokenVocab>(bytes, special);
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35};
  SamplerConfig configs[] = {config(0.0f, 40, 0.95f, 0.05f, 1.0f, 1), config(0.9f, 40, 0.95f, 0.05f, 1.1f, 2),
                             config(1.2f, 0, 1.0f, 0.0f, 1.0f, 3)};
  int masked_steps = 0;
  for (SamplerConfig& c : configs) {
    c.presence_penalty = 0.7f;
    c.frequency_penalty = 0.3f;
    c.logit_bias = {{5, 4.0f}, {31, -100.0f}, {200, 2.5f}};
    for (const char* gbnf : {"", "root ::= [a-f]+ \"z\" [a-c]{2,6}", "root ::= ([x-z] | \"ab\")+"}) {
      GenerateOptions g;
      g.max_new_tokens = 40;
      g.eos_token_ids = {0};
      g.sampler = c;
      if (*gbnf) {
        g.grammar = grammar::Grammar::parse(gbnf);
        g.grammar_vocab = tv;
      }
      const BothLoops r = run_both_loops(m, prompt, g);
      const GenerateResult &a = r.device, &b = r.host;
      EXPECT_EQ(a.ids, b.ids) << "temperature " << c.temperature << " grammar " << gbnf;
      EXPECT_EQ(a.stop, b.stop);
      if (*gbnf) {
        grammar::GrammarMatcher match(g.grammar);
        EXPECT_TRUE(match.accept(a.text)) << a.text;
        // The unconstrained model would not have followed it: count the steps it was steered.
        for (size_t i = 0; i < a.ids.size(); ++i) masked_steps += a.ids[i] % 26 >= 6;
      } else {
        EXPECT_EQ(std::count(a.ids.begin(), a.ids.end(), 31), 0);
      }
    }
  }
  EXPECT_GT(masked_steps, 0);
}

// Typical-p, top-n-sigma, XTC and DRY sample on the host (the kernel has none of them): the
// device loop gives the host loop's tokens, with drafts too, and the sampler's seed.
TEST_F(CudaGenerate, HostOnlySamplersMatchTheHostLoop) {
  CudaOptions o;
  o.max_context = 96;
  CudaLlama m(*model_, o);
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35};
  SamplerConfig configs[] = {config(1.0f, 0, 1.0f, 0.0f, 1.0f, 5), config(0.9f, 40, 0.95f, 0.05f, 1.1f, 6),
                             config(1.3f, 0, 1.0f, 0.0f, 1.0f, 7), config(0.0f, 40, 0.95f, 0.05f, 1.0f, 8)};
  configs[3].dry_multiplier = 0.8f;  // greedy with DRY
  configs[3].dry_breakers = {3};
  configs[2].dry_multiplier = 0.5f;
  configs[0].typical_p = 0.7f;
  configs[1].top_n_sigma = 1.5f;
  configs[1].presence_penalty = 0.4f;
  configs[2].xtc_probability = 0.5f;
  configs[2].xtc_threshold = 0.05f;
  configs[2].typical_p = 0.95f;
  for (const SamplerConfig& c : configs) {
    ASSERT_TRUE(c.host_only());
    for (const int draft : {0, 4}) {
      GenerateOptions g;
      g.max_new_tokens = 40;
      g.sampler = c;
      g.draft.max_tokens = draft;
      g.draft.ngram_min = 1;
      const BothLoops r = run_both_loops(m, prompt, g);
      const GenerateResult &a = r.device, &b = r.host;
      EXPECT_EQ(a.ids, b.ids) << "seed " << *c.seed << " draft " << draft;
      EXPECT_EQ(a.seed, b.seed);
    }
  }
}

TEST_F(CudaGenerate, StopReasons) {
  const std::vector<int32_t> prompt = {7, 8, 9};
  CudaOptions o;
  o.max_context = static_cast<int64_t>(prompt.size()) + 3;
  CudaLlama small(*model_, o);
  GenerateOptions g;
  g.max_new_tokens = 100;
  g.sampler.temperature = 0.0f;
  const GenerateResult full = generate_cuda(small, nullptr, prompt, g);
  EXPECT_EQ(full.stop, StopReason::ContextFull);
  EXPECT_EQ(full.ids.size(), 4u);
  EXPECT_EQ(small.position(), small.max_context());

  o.max_context = 64;
  CudaLlama m(*model_, o);
  g.eos_token_ids = {full.ids[1]};
  const GenerateResult eos = generate_cuda(m, nullptr, prompt, g);
  EXPECT_EQ(eos.stop, StopReason::Eos);
  EXPECT_EQ(eos.ids, (std::vector<int32_t>{full.ids[0], full.ids[1]}));

  m.reset();
  g.eos_token_ids.clear();
  LetterDecoder d;
  int pieces = 0;
  const GenerateResult cb = generate_cuda(m, &d, prompt, g, [&](std::string_view) { return ++pieces < 3; });
  EXPECT_EQ(cb.stop, StopReason::Callback);
  EXPECT_EQ(cb.ids.size(), 3u);
  EXPECT_EQ(cb.text.size(), 3u);

  m.reset();
  g.max_new_tokens = 0;
  EXPECT_TRUE(generate_cuda(m, nullptr, prompt, g).ids.empty());
  EXPECT_THROW(generate_cuda(m, nullptr, std::vector<int32_t>{}, g), Error);
}

// A pass of several tokens (forward_rows, the GEMV at up to 8 rows) gives the logits single
// steps give, and drafts checked on the device keep the tokens of a generation without them:
// greedy and sampled (one draw per token from the same stream), with a repetition penalty.
TEST_F(CudaGenerate, DraftsKeepTheTokensOfSingleSteps) {
  CudaOptions o;
  o.max_context = 96;
  CudaLlama m(*model_, o);
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35, 89, 79};
  const int64_t vocab = m.config().vocab_size;
  std::vector<float> single;  // rows 2..7, one decode step each
  m.forward_last(std::span<const int32_t>(prompt).first(2));
  for (size_t t = 2; t < prompt.size(); ++t) {
    const Tensor row = m.forward(std::span<const int32_t>(&prompt[t], 1));
    single.insert(single.end(), row.data<float>(), row.data<float>() + vocab);
  }
  m.reset();
  m.forward_last(std::span<const int32_t>(prompt).first(2));
  const Tensor rows = gpu::to_host(m.forward_rows(std::span<const int32_t>(prompt).subspan(2)), m.stream());
  ASSERT_EQ(rows.shape(), (std::vector<int64_t>{6, vocab}));
  double worst = 0.0, top = 0.0;
  for (int64_t i = 0; i < 6 * vocab; ++i) {
    worst = std::max(worst, std::abs(double(rows.data<float>()[i]) - single[static_cast<size_t>(i)]));
    top = std::max(top, std::abs(double(single[static_cast<size_t>(i)])));
  }
  EXPECT_LT(worst, 2e-3 * top);
  EXPECT_EQ(m.position(), 8);

  const SamplerConfig configs[] = {config(0.0f, 40, 0.95f, 0.05f, 1.0f, 1), config(0.9f, 0, 1.0f, 0.0f, 1.2f, 2)};
  for (const SamplerConfig& c : configs) {
    GenerateOptions g;
    g.max_new_tokens = 40;
    g.sampler = c;
    m.reset();
    const GenerateResult plain = generate_cuda(m, nullptr, prompt, g);
    const int64_t plain_position = m.position();
    // 7 guesses: passes of up to 8 tokens replay graphs; 12: longer passes run eagerly.
    for (const auto& [predicted, guesses] : {std::pair{false, 7}, std::pair{true, 7}, std::pair{true, 12}}) {
      GenerateOptions d = g;
      d.draft.max_tokens = guesses;
      d.draft.ngram_min = 1;
      if (predicted) d.prediction = plain.ids;
      m.reset();
      const GenerateResult r = generate_cuda(m, nullptr, prompt, d);
      EXPECT_EQ(r.ids, plain.ids) << "temperature " << c.temperature << " predicted " << predicted << " guesses "
                                  << guesses;
      EXPECT_EQ(m.position(), plain_position);
      EXPECT_EQ(r.decode_steps + r.accepted_draft_tokens, plain.decode_steps);
      if (predicted) {
        EXPECT_GE(r.accepted_draft_tokens, 20);
      }
    }
  }
  GenerateOptions bad;
  bad.draft.max_tokens = 65;
  EXPECT_THROW(generate_cuda(m, nullptr, prompt, bad), Error);
}

// Logprobs of the device loop (rows copied before the sampler, which applies a repetition
// penalty) equal the host loop's over the same GPU logits, drafts or not, and the CPU model's
// log-softmax within the GPU's rounding; the prompt's too.
TEST_F(CudaGenerate, LogprobsMatchTheHostLoopAndTheCpuModel) {
  CudaOptions o;
  o.max_context = 160;
  o.prefill_chunk = 32;  // the prompt's 89 scored rows come in 3 chunks
  CudaLlama m(*model_, o);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 90; ++i) prompt.push_back((i * 37 + 11) % static_cast<int>(m.config().vocab_size));
  GenerateOptions g;
  g.max_new_tokens = 24;
  g.sampler = config(0.9f, 0, 1.0f, 0.0f, 1.2f, 5);
  g.logprobs = 4;
  g.prompt_logprobs = true;
  const GenerateResult dev = generate_cuda(m, nullptr, prompt, g);
  ASSERT_EQ(dev.logprobs.size(), dev.ids.size());
  ASSERT_EQ(dev.prompt_logprobs.size(), prompt.size() - 1);
  m.reset();
  CudaStep step(m);
  const GenerateResult host = generate(step, nullptr, prompt, g);
  ASSERT_EQ(host.ids, dev.ids);
  for (size_t i = 0; i < dev.logprobs.size(); ++i) {
    EXPECT_NEAR(dev.logprobs[i].logprob, host.logprobs[i].logprob, 1e-5) << i;
    EXPECT_EQ(dev.logprobs[i].top.size(), 4u);
  }
  ASSERT_EQ(host.prompt_logprobs.size(), dev.prompt_logprobs.size());
  for (size_t i = 0; i < dev.prompt_logprobs.size(); ++i) {
    EXPECT_EQ(dev.prompt_logprobs[i].id, prompt[i + 1]);
    EXPECT_NEAR(dev.prompt_logprobs[i].logprob, host.prompt_logprobs[i].logprob, 1e-3) << i;
    ASSERT_EQ(dev.prompt_logprobs[i].top.size(), 4u);
    EXPECT_EQ(dev.prompt_logprobs[i].top[0].first, host.prompt_logprobs[i].top[0].first) << i;
  }
  GenerateOptions d = g;
  d.draft.max_tokens = 7;
  d.draft.ngram_min = 1;
  d.prediction = dev.ids;
  m.reset();
  const GenerateResult spec = generate_cuda(m, nullptr, prompt, d);
  ASSERT_EQ(spec.ids, dev.ids);
  EXPECT_GT(spec.accepted_draft_tokens, 10);
  for (size_t i = 0; i < dev.logprobs.size(); ++i) EXPECT_NEAR(spec.logprobs[i].logprob, dev.logprobs[i].logprob, 2e-3) << i;

  std::vector<int32_t> all = prompt;
  all.insert(all.end(), dev.ids.begin(), dev.ids.end());
  model::KvCache cache = model_->make_cache(static_cast<int64_t>(all.size()));
  const Tensor cpu = model_->forward(all, cache, true);
  const auto vocab = static_cast<size_t>(model_->config().vocab_size);
  double worst = 0.0, scale = 0.0;
  for (size_t t = 0; t + 1 < all.size(); ++t) {
    const std::span<const float> row = cpu.span<const float>().subspan(t * vocab, vocab);
    const TokenLogprob want = token_logprob(row, all[t + 1], 0);
    const TokenLogprob& got = t + 1 < prompt.size() ? dev.prompt_logprobs[t] : dev.logprobs[t + 1 - prompt.size()];
    worst = std::max(worst, std::fabs(static_cast<double>(got.logprob - want.logprob)));
    for (const float v : row) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  }
  EXPECT_LT(worst, 4e-3 * scale) << "scale " << scale;
}

// CudaSession's next turn keeps the prefix the GPU cache holds (prefill at a position past it)
// and gives what a fresh cache gives, greedy and with a repetition penalty.
TEST_F(CudaGenerate, SessionReusesThePromptPrefix) {
  const auto tok = tokenizer::Tokenizer::from_file(test::shared_dir() / "models" / "smollm2-135m-instruct" /
                                                   "tokenizer.json");
  CudaOptions co;
  co.max_context = 96;
  CudaLlama m(*model_, co);
  const std::vector<int32_t> p1 = {3, 14, 15, 92, 65, 35, 89, 79};
  for (const float penalty : {1.0f, 1.3f}) {
    CudaSession session(m, tok);
    GenerateOptions g;
    g.max_new_tokens = 10;
    g.sampler = config(0.0f, 40, 0.95f, 0.05f, penalty, 1);
    const GenerateResult r1 = session.generate(p1, g, true);
    ASSERT_EQ(r1.ids.size(), 10u);
    std::vector<int32_t> p2 = p1;
    p2.insert(p2.end(), r1.ids.begin(), r1.ids.end());
    for (int32_t t : {26, 53, 58, 97}) p2.push_back(t);
    const GenerateResult r2 = session.generate(p2, g, true);
    EXPECT_EQ(r2.cached_tokens, static_cast<int64_t>(p1.size() + r1.ids.size()) - 1);
    m.reset();
    const GenerateResult want = generate_cuda(m, nullptr, p2, g);
    EXPECT_EQ(r2.ids, want.ids) << "penalty " << penalty;
    // A context emptied elsewhere: the session keeps nothing.
    m.reset();
    const GenerateResult r3 = session.generate(p2, g, true);
    EXPECT_EQ(r3.cached_tokens, 0);
    EXPECT_EQ(r3.ids, want.ids);
  }
}

TEST_F(CudaGenerate, PerplexityMatchesCpu) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 3 * 20; ++i) ids.push_back((i * 7919 + 13) % 300);
  const auto windows = split_windows(ids, 20);
  const PerplexityResult want = perplexity(*model_, windows);
  CudaOptions o;
  o.max_context = 19;
  o.prefill_chunk = 8;
  CudaLlama m(*model_, o);
  int calls = 0;
  const PerplexityResult got = perplexity_cuda(m, windows, [&](int64_t, double) { ++calls; });
  std::printf("[tiny exl2] ppl cpu %.6f cuda %.6f\n", want.ppl, got.ppl);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(calls, 3);
  EXPECT_NEAR(got.ppl / want.ppl, 1.0, 2e-3);
  EXPECT_THROW(perplexity_cuda(m, split_windows(ids, 21)), Error);  // 20 positions > 19
}

// The tiny EXL2 model against a dense one of another seed, on both devices; and against itself.
TEST_F(CudaGenerate, KlDivergenceMatchesCpu) {
  test::TinySpec s;
  s.seed = 5;
  const fs::path dense_dir = test::write_tiny_llama(test::temp_dir("cuda_kl_dense"), s);
  model::LlamaModel dense = model::LlamaModel::load(dense_dir);
  std::vector<int32_t> ids;
  for (int i = 0; i < 3 * 20; ++i) ids.push_back((i * 7919 + 13) % 300);
  const auto windows = split_windows(ids, 20);
  const KlResult want = kl_divergence(dense, *model_, windows);
  CudaOptions o;
  o.max_context = 19;
  CudaLlama base(dense, o), test(*model_, o), test2(*model_, o);
  int calls = 0;
  const KlResult got = kl_divergence_cuda(base, test, windows, [&](int64_t, const KlResult&) { ++calls; });
  std::printf("[tiny] KL cpu %.6f cuda %.6f, same top %.4f / %.4f\n", want.kl_mean, got.kl_mean, want.same_top,
              got.same_top);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_GT(want.kl_mean, 1e-3);
  EXPECT_NEAR(got.kl_mean / want.kl_mean, 1.0, 1e-2);
  EXPECT_NEAR(got.base.ppl / want.base.ppl, 1.0, 2e-3);
  EXPECT_NEAR(got.test.ppl / want.test.ppl, 1.0, 2e-3);
  EXPECT_NEAR(got.same_top, want.same_top, 0.05);

  const KlResult self = kl_divergence_cuda(test, test2, windows);
  EXPECT_EQ(self.kl_max, 0.0);
  EXPECT_EQ(self.same_top, 1.0);
  fs::remove_all(dense_dir);
}

}  // namespace
}  // namespace exq::runtime::cuda
