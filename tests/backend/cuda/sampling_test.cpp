// Greedy argmax on the GPU against std::max_element semantics (first maximum, NaN ignored), and
// the full sampler against runtime::Sampler: for the same logits, settings and uniform number
// the same token, over many random rows (ties, -inf, penalties, every filter alone and together).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sampling.h"
#include "cuda_test_util.h"
#include "runtime/logprobs.h"
#include "runtime/sampler.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

std::vector<int32_t> argmax_ref(const Tensor& logits) {
  const int64_t vocab = logits.dim(-1), rows = logits.numel() / vocab;
  std::vector<int32_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    int32_t best = 0;
    float best_v = -INFINITY;
    bool found = false;
    for (int64_t i = 0; i < vocab; ++i) {
      const float v = logits.data<float>()[r * vocab + i];
      if (std::isnan(v)) continue;
      if (!found || v > best_v) {
        best = static_cast<int32_t>(i);
        best_v = v;
        found = true;
      }
    }
    out.push_back(best);
  }
  return out;
}

class Argmax : public CudaTest {
 protected:
  std::vector<int32_t> run(const Tensor& logits) {
    const int64_t rows = logits.shape().size() == 2 ? logits.dim(0) : 1;
    DeviceTensor dl = upload(logits), dout = empty(DType::I32, {rows});
    argmax(dl, dout, stream());
    const Tensor out = download(dout);
    return {out.data<int32_t>(), out.data<int32_t>() + rows};
  }
};

TEST_F(Argmax, MatchesCpuOnRandomLogits) {
  uint32_t seed = 101;
  for (Shape shape : {Shape{49152}, Shape{3, 49152}, Shape{5, 1001}, Shape{2, 1}, Shape{1, 32000}}) {
    const Tensor logits = test::random_f32(shape, seed++, -30.0f, 30.0f);
    EXPECT_EQ(run(logits), argmax_ref(logits)) << shape_str(shape);
  }
}

TEST_F(Argmax, TiesPickTheFirstAndNaNIsIgnored) {
  Tensor logits = Tensor::zeros(DType::F32, {4, 5000});
  float* p = logits.data<float>();
  p[0 * 5000 + 4000] = 7.0f;  // row 0: ties at 4000 and 4999 -> 4000
  p[0 * 5000 + 4999] = 7.0f;
  p[1 * 5000 + 10] = std::numeric_limits<float>::quiet_NaN();  // row 1: NaN beside a max
  p[1 * 5000 + 11] = 3.0f;
  for (int i = 0; i < 5000; ++i) p[2 * 5000 + i] = -INFINITY;  // row 2: all -inf -> 0
  for (int i = 0; i < 5000; ++i) p[3 * 5000 + i] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<int32_t> got = run(logits);
  EXPECT_EQ(got, (std::vector<int32_t>{4000, 11, 0, 0}));
  EXPECT_EQ(got, argmax_ref(logits));
}

class TokenLogprobKernel : public CudaTest {
 protected:
  LogprobOut run(const Tensor& logits, int32_t id, int top_n) {
    Tensor tok(DType::I32, {1});
    tok.data<int32_t>()[0] = id;
    DeviceTensor dl = upload(logits), dt = upload(tok);
    DeviceTensor out = empty(DType::U8, {static_cast<int64_t>(sizeof(LogprobOut))});
    token_logprob(dl, dt, top_n, static_cast<LogprobOut*>(out.raw()), stream());
    LogprobOut r;
    CUDA_CHECK(cudaMemcpyAsync(&r, out.raw(), sizeof(r), cudaMemcpyDeviceToHost, stream()));
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    return r;
  }
};

// runtime::token_logprob's values: the log-softmax within the double sums' order, the same
// alternatives in the same order (ties by lower id, -inf ones last).
TEST_F(TokenLogprobKernel, MatchesTheCpu) {
  uint32_t seed = 7;
  for (const int64_t vocab : {int64_t{49152}, int64_t{128256}, int64_t{1001}, int64_t{5}}) {
    Tensor logits = test::random_f32({vocab}, seed++, -20.0f, 20.0f);
    float* p = logits.data<float>();
    p[vocab / 2] = p[vocab / 3] = 25.0f;  // a tie at the top
    p[vocab - 1] = -INFINITY;
    const std::span<const float> row(p, static_cast<size_t>(vocab));
    for (const int top_n : {0, 1, 5, 20}) {
      const auto id = static_cast<int32_t>((vocab * 7) / 11);
      const runtime::TokenLogprob want = runtime::token_logprob(row, id, top_n);
      const LogprobOut got = run(logits, id, top_n);
      EXPECT_NEAR(got.logprob, want.logprob, 1e-5) << vocab;
      for (int j = 0; j < top_n; ++j) {
        if (j >= static_cast<int>(want.top.size())) {
          EXPECT_EQ(got.top_ids[j], -1) << vocab << " " << j;  // fewer tokens than asked
          continue;
        }
        EXPECT_EQ(got.top_ids[j], want.top[static_cast<size_t>(j)].first) << vocab << " " << j;
        const float w = want.top[static_cast<size_t>(j)].second;
        if (std::isinf(w)) {
          EXPECT_EQ(got.top_logprobs[j], w);
        } else {
          EXPECT_NEAR(got.top_logprobs[j], w, 1e-5);
        }
      }
    }
  }
}

TEST(ArgmaxArgs, RejectBadShapes) {
  using test::fake_view;
  test::expect_error([] { argmax(fake_view(DType::F32, {2, 100}), fake_view(DType::I32, {3}), nullptr); },
                     "out must have shape [2], got [3]");
  test::expect_error([] { argmax(fake_view(DType::F16, {100}), fake_view(DType::I32, {1}), nullptr); },
                     "logits must be F32, got F16");
  test::expect_error([] { argmax(fake_view(DType::F32, {2, 0}), fake_view(DType::I32, {2}), nullptr); },
                     "empty vocabulary");
}

// ---- the full sampler ----------------------------------------------------------------------

struct SamplerCase {
  float temperature, top_p, min_p, penalty;
  int top_k;
};

runtime::SamplerConfig cpu_config(const SamplerCase& c) {
  runtime::SamplerConfig s;
  s.temperature = c.temperature;
  s.top_k = c.top_k;
  s.top_p = c.top_p;
  s.min_p = c.min_p;
  s.repetition_penalty = c.penalty;
  return s;
}

// runtime::Sampler::sample with the random number given: penalty, then argmax or the draw.
int32_t cpu_pick(std::vector<float> row, const std::vector<int32_t>& seen, const runtime::SamplerConfig& c,
                 const std::vector<double>& uniforms, std::vector<int32_t>* picks) {
  runtime::apply_repetition_penalty(row, seen, c.repetition_penalty);
  if (c.greedy()) return runtime::argmax(row);
  const std::vector<float> probs = runtime::sampling_probs(row, c);
  for (double u : uniforms) {
    double cum = 0.0;
    int32_t last = -1, pick = -1;
    for (size_t i = 0; i < probs.size() && pick < 0; ++i) {
      if (probs[i] <= 0.0f) continue;
      cum += probs[i];
      last = static_cast<int32_t>(i);
      if (u < cum) pick = last;
    }
    picks->push_back(pick >= 0 ? pick : last);
  }
  return 0;
}

class Sample : public CudaTest {
 protected:
  // The device's picks for each uniform number (or its argmax when greedy).
  std::vector<int32_t> run(const std::vector<float>& logits, const std::vector<int32_t>& seen,
                           const SamplerCase& c, const std::vector<double>& uniforms) {
    const auto vocab = static_cast<int64_t>(logits.size());
    Tensor host(DType::F32, {vocab});
    std::copy(logits.begin(), logits.end(), host.data<float>());
    DeviceTensor dl = upload(host), out = empty(DType::I32, {1});
    DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(sample_workspace_bytes(vocab))});
    DeviceTensor flags;
    if (!seen.empty()) {
      Tensor ids(DType::I32, {static_cast<int64_t>(seen.size())});
      std::copy(seen.begin(), seen.end(), ids.data<int32_t>());
      flags = empty(DType::U8, {vocab});
      CUDA_CHECK(cudaMemsetAsync(flags.raw(), 0, flags.nbytes(), stream()));
      DeviceTensor dids = upload(ids);
      mark_seen(dids, flags, stream());
    }
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.repetition_penalty = c.penalty;
    std::vector<int32_t> picks;
    for (double u : uniforms) {
      sample(dl, p, u, flags.empty() ? DeviceView() : flags.view(), ws, out, stream());
      picks.push_back(sampled_token(download(out).data<int32_t>()[0]));
      if (p.greedy()) break;
    }
    return picks;
  }
};

TEST_F(Sample, MatchesCpuSamplerOnRandomLogits) {
  const SamplerCase cases[] = {
      {0.8f, 0.95f, 0.05f, 1.0f, 40},  // runtime defaults
      {1.0f, 1.0f, 0.0f, 1.0f, 0},     // plain softmax
      {0.7f, 0.9f, 0.0f, 1.0f, 0},     // top-p over the whole vocabulary
      {1.3f, 1.0f, 0.1f, 1.0f, 0},     // min-p alone
      {0.5f, 1.0f, 0.0f, 1.0f, 7},     // top-k alone
      {1.1f, 0.3f, 0.0f, 1.2f, 0},     // small top-p, penalty
      {0.9f, 0.6f, 0.2f, 0.7f, 100},   // all filters, penalty < 1
      {1.0f, 1e-6f, 0.0f, 1.0f, 0},    // top-p keeps a single token
      {0.0f, 0.95f, 0.05f, 1.4f, 40},  // greedy with a penalty
      {2.0f, 0.95f, 1.0f, 1.0f, 0},    // min-p 1 keeps only the ties of the maximum
  };
  std::mt19937 rng(2024);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  int rows = 0, draws = 0, mismatches = 0;
  for (int64_t vocab : {2, 50, 1000, 49152, 128256}) {
    for (int r = 0; r < 6; ++r) {
      // Row kinds: wide normal, narrow normal (flat), quantized (ties), with -inf holes.
      const float scale = r % 3 == 0 ? 4.0f : r % 3 == 1 ? 0.3f : 2.0f;
      std::vector<float> logits(static_cast<size_t>(vocab));
      for (float& v : logits) v = nd(rng) * scale;
      if (r == 2 || r == 5)
        for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
      if (r >= 3)
        for (size_t i = 0; i < logits.size(); i += 3) logits[i] = -INFINITY;
      logits[static_cast<size_t>(rng() % vocab)] = 1.0f;  // at least one finite value
      std::vector<int32_t> seen;
      for (int i = 0; i < 20; ++i) seen.push_back(static_cast<int32_t>(rng() % vocab));
      std::vector<double> uniforms = {0.0, 0.5, 0.999999};
      for (int i = 0; i < 5; ++i) uniforms.push_back(ud(rng));
      for (const SamplerCase& c : cases) {
        const runtime::SamplerConfig cc = cpu_config(c);
        std::vector<int32_t> want;
        const int32_t greedy = cpu_pick(logits, seen, cc, uniforms, &want);
        if (cc.greedy()) want = {greedy};
        const std::vector<int32_t> got = run(logits, seen, c, uniforms);
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < got.size(); ++i) {
          ++draws;
          if (got[i] != want[i]) {
            ++mismatches;
            ADD_FAILURE() << "vocab " << vocab << " row " << r << " temperature " << c.temperature << " top-k "
                          << c.top_k << " top-p " << c.top_p << " min-p " << c.min_p << " penalty " << c.penalty
                          << " u " << uniforms[i] << ": got " << got[i] << ", CPU " << want[i];
          }
        }
      }
      ++rows;
    }
  }
  std::printf("[sample] %d rows, %d draws, %d differ from the CPU sampler\n", rows, draws, mismatches);
}

TEST_F(Sample, BadRowsGiveTheCpuErrors) {
  const SamplerCase c = {0.8f, 0.95f, 0.05f, 1.0f, 40};
  std::vector<float> nan_row(100, 0.0f), inf_row(100, 0.0f), masked(100, -INFINITY);
  nan_row[3] = std::numeric_limits<float>::quiet_NaN();
  inf_row[99] = INFINITY;
  test::expect_error([&] { run(nan_row, {}, c, {0.5}); }, "NaN or +Inf");
  test::expect_error([&] { run(inf_row, {}, c, {0.5}); }, "NaN or +Inf");
  test::expect_error([&] { run(masked, {}, c, {0.5}); }, "every logit is -inf");
  // A penalty that overflows a finite logit to +inf is caught like the CPU's check.
  std::vector<float> big(100, 1.0f);
  big[5] = 3e38f;
  test::expect_error([&] { run(big, {5}, {0.8f, 0.95f, 0.05f, 0.001f, 40}, {0.5}); }, "NaN or +Inf");
}

// ---- logit adjustments (bias, presence / frequency counts, a grammar's mask) --------------

class AdjustLogits : public CudaTest {};

// Bit for bit runtime::Sampler's arithmetic: apply_logit_adjustments, then the mask.
TEST_F(AdjustLogits, MatchesTheCpuBitForBit) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int64_t vocab : {7, 1000, 49152}) {
    std::vector<float> logits(static_cast<size_t>(vocab));
    for (float& v : logits) v = nd(rng);
    logits[1] = -INFINITY;
    runtime::SamplerConfig c;
    c.presence_penalty = 0.37f;
    c.frequency_penalty = -0.61f;
    std::vector<float> bias(static_cast<size_t>(vocab), 0.0f);
    for (int i = 0; i < 9; ++i) {
      const auto id = static_cast<int32_t>(rng() % vocab);
      const float b = nd(rng) * 10.0f;
      c.logit_bias.push_back({id, b});
      bias[static_cast<size_t>(id)] += b;
    }
    std::vector<int32_t> generated;
    Tensor counts(DType::I32, {vocab});
    std::fill(counts.data<int32_t>(), counts.data<int32_t>() + vocab, 0);
    for (int i = 0; i < 40; ++i) {
      const auto id = static_cast<int32_t>(rng() % std::min<int64_t>(vocab, 20));
      generated.push_back(id);
      ++counts.data<int32_t>()[id];
    }
    Tensor allowed(DType::U8, {vocab});
    for (int64_t i = 0; i < vocab; ++i) allowed.data<uint8_t>()[i] = rng() % 3 != 0;

    std::vector<float> want(logits);
    runtime::apply_logit_adjustments(want, generated, c);
    Tensor host(DType::F32, {vocab}), hbias(DType::F32, {vocab});
    std::copy(logits.begin(), logits.end(), host.data<float>());
    std::copy(bias.begin(), bias.end(), hbias.data<float>());
    DeviceTensor dl = upload(host), db = upload(hbias), dc = upload(counts), da = upload(allowed);
    DeviceTensor out = empty(DType::F32, {vocab});
    LogitAdjust a;
    a.bias = db;
    a.counts = dc;
    a.presence = c.presence_penalty;
    a.frequency = c.frequency_penalty;
    adjust_logits(dl, a, out, stream());
    Tensor got = download(out);
    for (int64_t i = 0; i < vocab; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(got.data<float>()[i]), std::bit_cast<uint32_t>(want[static_cast<size_t>(i)]))
          << "vocab " << vocab << " id " << i;
    a.allowed = da;
    adjust_logits(dl, a, out, stream());
    got = download(out);
    for (int64_t i = 0; i < vocab; ++i) {
      const float w = allowed.data<uint8_t>()[i] ? want[static_cast<size_t>(i)] : -INFINITY;
      ASSERT_EQ(std::bit_cast<uint32_t>(got.data<float>()[i]), std::bit_cast<uint32_t>(w)) << "masked id " << i;
    }
  }
}

TEST_F(AdjustLogits, CountTokenAddsOneInsideTheVocabulary) {
  Tensor zero(DType::I32, {5});
  std::fill(zero.data<int32_t>(), zero.data<int32_t>() + 5, 0);
  DeviceTensor counts = upload(zero);
  for (int32_t id : {3, 3, 0, 7, -1}) {
    Tensor t(DType::I32, {1});
    t.data<int32_t>()[0] = id;
    DeviceTensor dt = upload(t);
    count_token(dt, counts, stream());
    download(counts);  // before dt goes back to the allocator
  }
  const Tensor got = download(counts);
  EXPECT_EQ(std::vector<int32_t>(got.data<int32_t>(), got.data<int32_t>() + 5), (std::vector<int32_t>{1, 0, 0, 2, 0}));
}

TEST(AdjustLogitsArgs, RejectBadArguments) {
  using test::fake_view;
  test::expect_error([] { adjust_logits(fake_view(DType::F32, {10}), {}, fake_view(DType::F32, {9}), nullptr); },
                     "out has 9 values");
  LogitAdjust bad;
  bad.bias = fake_view(DType::F32, {11});
  test::expect_error([&] { adjust_logits(fake_view(DType::F32, {10}), bad, fake_view(DType::F32, {10}), nullptr); },
                     "bias must have shape [10]");
  test::expect_error([&] { adjust_logits(fake_view(DType::F32, {10}), {}, fake_view(DType::F32, {10}), nullptr); },
                     "must not alias");
  test::expect_error([&] { count_token(fake_view(DType::I32, {2}), fake_view(DType::I32, {10}), nullptr); },
                     "token must have shape [1]");
}

TEST(SampleArgs, RejectBadArguments) {
  using test::fake_view;
  const SamplingParams p;
  const DeviceView ws = fake_view(DType::U8, {static_cast<int64_t>(sample_workspace_bytes(100))});
  test::expect_error([&] { sample(fake_view(DType::F32, {2, 100}), p, 0.5, {}, ws, fake_view(DType::I32, {1}), nullptr); },
                     "logits must be [vocab] or [1, vocab]");
  test::expect_error([&] { sample(fake_view(DType::F32, {100}), p, 0.5, {}, fake_view(DType::U8, {16}),
                                  fake_view(DType::I32, {1}), nullptr); },
                     "workspace has 16 bytes");
  test::expect_error([&] { sample(fake_view(DType::F32, {100}), p, 0.5, fake_view(DType::U8, {99}), ws,
                                  fake_view(DType::I32, {1}), nullptr); },
                     "seen must have shape [100]");
  test::expect_error([&] { sample(fake_view(DType::F32, {100}), p, 1.0, {}, ws, fake_view(DType::I32, {1}), nullptr); },
                     "uniform 1 is not in [0, 1)");
  EXPECT_EQ(sampled_token(17), 17);
  test::expect_error([] { sampled_token(kSampleNonFinite); }, "NaN or +Inf");
  test::expect_error([] { sampled_token(kSampleNothing); }, "every logit is -inf");
}

}  // namespace
}  // namespace exq::cuda
