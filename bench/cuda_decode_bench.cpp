// End-to-end CUDA runtime benchmark on a random Llama-3-8B-shaped EXL2 model built in memory
// (32 layers, hidden 4096, intermediate 14336, 32 / 8 heads of 128, vocab 128256 or --vocab;
// every linear 4-bit in groups of 128 with random codes, about 4.04 bits per weight with the
// scales; fp16 embedding and head, f16 KV cache):
//   - batch-1 decode ms/token near context 128 and 2048: graph replays timed with CUDA events
//     (one pair per step, 8 warm-up steps, median of --iters), beside the bandwidth floor
//     (weight bytes + KV bytes read per token) / 3.0e12 B/s; plus tokens/s of the real loop
//     (GPU sampler, the id read back every step); and a per-op breakdown of eager steps with
//     events between the op groups (CudaLlama::profile_decode_step: no overlap between groups,
//     so its total exceeds the graph's time);
//   - the decode attention alone (32 / 8 heads of 128, the --kv cache) at several lengths: 20
//     launches per CUDA graph, microseconds per launch and GB/s of K + V read;
//   - prefill of 2048 tokens (one chunk) in tokens/s, and 2047 tokens through 4 layers of that
//     shape (vocab 256, so head and embedding cost nothing), exllamav2's bar being 11.8 ms.
// With --tables A,M the linears take exllamav2's options of attention table row A and MLP table
// row M instead (quant/options.h; most rows mix two or three bit widths in one layer, as real
// conversions do), e.g. --tables 10,9: 0.1:5b_128g/0.9:4b_128g for q, k, v, o, about 4.3 bits.
// --decode-only skips the attention and prefill timings, --attention-only all but the attention's
// (--splits N: the splits it asks for; the kernel takes at most one wave of blocks);
// --shape smollm2 builds SmolLM2-135M's shape (30 layers, hidden 576, vocab 49152) instead of Llama-3-8B's; --shape mixtral a
// Mixtral-8x7B-shaped mixture of experts (Llama-3-8B's attention, 8 experts of 14336 rows, top
// 2, vocab 32000; every expert its own device copy of one packed layer, so the decode graph's
// device-side routing reads a different expert's weights per token), 8 layers unless --layers;
// --shape qwen3moe a Qwen3-30B-A3B-shaped one (hidden 2048, 32 / 4 heads of 128, 128 experts of
// 768 rows, top 8, vocab 32000, no q / k norm), 4 layers unless --layers.
// --layers N: the synthetic model's layer count.
// With --model DIR: a real (EXL2) folder instead, decode tokens/s after a 32-token prompt.
// --kv q8_0 / q4: the q8 or q4 KV cache instead of f16; --contexts N,N,...: the decode positions timed
// (default 128,2048).
// --settle-ms N: a pause of N ms after each prompt's prefill, before the decode steps (so that
// the clocks after a long prefill do not carry into the decode timing).
// --passes: also what one pass of T = 1..8 tokens costs after 128 tokens of context (the check
// of T - 1 speculative drafts, CudaLlama::forward_rows; T = 1 is the decode graph's step),
// timed with events, median of --iters.
// --batch: also decode_batch of 1..8 sequences at 128 and 2048 tokens each (exq serve
// --parallel), ms per step and tokens/s of all of them.
// --logprobs: also the generation loop's ms per token after 128 tokens with each sampled token's
// logprobs computed on the device (CudaSampler with 0, 1, 5, 20 alternatives) against without,
// the settings alternating over 3 rounds, median of the rounds.
// Usage: cuda_decode_bench [--json FILE] [--iters N] [--vocab N] [--model DIR] [--tables A,M]
//                          [--decode-only] [--passes] [--batch] [--logprobs] [--shape llama3-8b|smollm2]
//                          [--settle-ms N] [--kv f16|q8_0|q4] [--contexts N,N,...]
//                          [--shape mixtral|qwen3moe] [--layers N]
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/stream.h"
#include "core/error.h"
#include "cuda_decode_model.h"
#include "exl2_bench_util.h"
#include "model/llama.h"
#include "quant/options.h"
#include "runtime/cuda/cuda_generate.h"
#include "runtime/cuda/cuda_llama.h"

namespace exq {
namespace {

namespace gpu = exq::cuda;
namespace rt = exq::runtime::cuda;
using nlohmann::json;
using decode_bench::make_model;

constexpr double kPeakBytesPerSecond = 3.0e12;  // H100 HBM3, device-to-device copy
constexpr int kWarmup = 8;

struct Args {
  std::string json_path, model;
  int attn_row = -1, mlp_row = -1;  // exllamav2 option table rows (--tables), -1: 4-bit
  bool decode_only = false;
  bool batch = false;  // --batch: decode_batch of 1..8 sequences
  bool passes = false;
  bool logprobs = false;
  bool smol = false;  // --shape smollm2
  bool mixtral = false;  // --shape mixtral
  bool qwen3moe = false;  // --shape qwen3moe
  int64_t layers = 0;    // --layers, 0: the shape's
  int iters = 64;
  int settle_ms = 0;
  int64_t vocab = 128256;
  std::string kv = "f16";                    // --kv q8_0 / q4: a quantized cache
  bool attention_only = false;               // --attention-only: the attention timings alone
  int splits = 0;                            // --splits N: KV splits asked of the attention alone
  std::vector<int64_t> contexts{128, 2048};  // --contexts: decode positions timed
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::vector<int32_t> prompt_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 1) % vocab);
  return ids;
}

// Decode steps after a prompt of `context` tokens: per-step GPU time (events) and the real
// loop's tokens/s (greedy GPU sampler, id read back each step).
json time_decode(rt::CudaLlama& m, int64_t context, int iters, int settle_ms) {
  const cudaStream_t s = m.stream();
  m.reset();
  m.forward_last(prompt_ids(context, m.config().vocab_size));
  if (settle_ms > 0) {
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
  }
  std::vector<gpu::Event> start(static_cast<size_t>(iters)), stop(static_cast<size_t>(iters));
  for (int i = 0; i < kWarmup; ++i) m.decode_slot();
  for (int i = 0; i < iters; ++i) {
    start[static_cast<size_t>(i)].record(s);
    m.decode_slot();
    stop[static_cast<size_t>(i)].record(s);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) ms.push_back(gpu::Event::elapsed_ms(start[static_cast<size_t>(i)], stop[static_cast<size_t>(i)]));
  const int64_t mid = context + kWarmup + iters / 2;
  const rt::CudaLlama::Stats st = m.stats();
  const double kv_bytes = static_cast<double>(st.kv_bytes_per_token) * static_cast<double>(mid);
  const double floor_ms = (static_cast<double>(st.weight_bytes) + kv_bytes) / kPeakBytesPerSecond * 1e3;

  // The generation loop: sample on the device, read the id back, next step.
  runtime::SamplerConfig greedy;
  greedy.temperature = 0.0f;
  rt::CudaSampler sampler(greedy, m.config().vocab_size, m.allocator(), s);
  m.reset();
  gpu::DeviceView logits = m.forward_last(prompt_ids(context, m.config().vocab_size));
  sampler.sample(logits, m.token_slot());
  for (int i = 0; i < kWarmup; ++i) sampler.sample(m.decode_slot(), m.token_slot());
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) sampler.sample(m.decode_slot(), m.token_slot());
  const double loop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Per-op breakdown: mean over a few eager steps with events between the op groups.
  constexpr int kProfileSteps = 4;
  std::vector<rt::CudaLlama::OpTime> ops;
  for (int i = 0; i < kProfileSteps; ++i) {
    const auto step = m.profile_decode_step();
    for (const auto& t : step) {
      auto it = std::find_if(ops.begin(), ops.end(), [&](const auto& o) { return o.op == t.op; });
      if (it == ops.end()) ops.push_back({t.op, 0.0, t.count});
      it = std::find_if(ops.begin(), ops.end(), [&](const auto& o) { return o.op == t.op; });
      it->ms += t.ms / kProfileSteps;
    }
  }
  json breakdown = json::array();
  double eager_ms = 0.0;
  for (const auto& o : ops) {
    breakdown.push_back({{"op", o.op}, {"ms", o.ms}, {"per_step", o.count}, {"us_each", 1e3 * o.ms / o.count}});
    eager_ms += o.ms;
    fmt::print("  {:12s} {:7.3f} ms ({:3d} x {:6.1f} us)\n", o.op, o.ms, o.count, 1e3 * o.ms / o.count);
  }
  json r = {{"context", context},
            {"context_range", {context + kWarmup, context + kWarmup + iters}},
            {"ms_per_token", median(ms)},
            {"ms_min", *std::min_element(ms.begin(), ms.end())},
            {"weight_bytes", st.weight_bytes},
            {"kv_bytes", kv_bytes},
            {"floor_ms", floor_ms},
            {"fraction_of_floor", floor_ms / median(ms)},
            {"loop_tokens_per_s", iters / loop_s},
            {"graph_replays", st.graph_replays},
            {"o_staged_layers", st.o_staged_layers},
            {"moe_device_layers", st.moe_device_layers},
            {"pdl", gpu::decode_pdl_enabled()},
            {"breakdown_eager", breakdown},
            {"breakdown_eager_total_ms", eager_ms}};
  fmt::print("decode @ {:5d}: {:.3f} ms/token (floor {:.3f} ms, {:.0f} %), loop {:.1f} tok/s\n", context,
             median(ms), floor_ms, 100.0 * floor_ms / median(ms), iters / loop_s);
  return r;
}

// decode_batch of R = 1..8 sequences, each after `context` tokens of its own (exq serve
// --parallel): events around each step (the same positions every time: each sequence is
// truncated back after it), median of iters; tokens/s of all rows.
json time_batch(rt::CudaLlama& m, int64_t context, int iters) {
  const cudaStream_t s = m.stream();
  const int n = std::min(m.sequences(), rt::CudaLlama::kMaxBatchRows);
  for (int q = 0; q < n; ++q) {
    const std::vector<int32_t> ids = prompt_ids(context, m.config().vocab_size - q);
    m.select_sequence(q);
    m.reset();
    m.forward_last(ids);
  }
  json rows = json::array();
  double single = 0.0;
  for (int R = 1; R <= n; ++R) {
    std::vector<int> seqs;
    std::vector<int32_t> toks;
    for (int q = 0; q < R; ++q) {
      seqs.push_back(q);
      toks.push_back(static_cast<int32_t>((17 * q + 5) % m.config().vocab_size));
    }
    std::vector<double> ms;
    for (int i = 0; i < iters + kWarmup; ++i) {
      gpu::Event a, b;
      a.record(s);
      m.decode_batch(seqs, toks);
      b.record(s);
      b.synchronize();
      if (i >= kWarmup) ms.push_back(gpu::Event::elapsed_ms(a, b));
      for (int q = 0; q < R; ++q) {
        m.select_sequence(q);
        m.truncate(context);
      }
    }
    const double t = median(ms);
    if (R == 1) single = t;
    fmt::print("{} sequences @ {}: {:.3f} ms a step ({:.2f}x one), {:.1f} tokens/s\n", R, context, t, t / single,
               R / t * 1e3);
    rows.push_back({{"sequences", R}, {"ms", t}, {"x_one_sequence", t / single}, {"tokens_per_s", R / t * 1e3}});
  }
  return rows;
}

// A pass of T = 1..8 tokens after `context` tokens: the decode graph's step for T = 1,
// forward_rows (a speculative draft's check) beyond. Events around each pass; median of iters.
json time_passes(rt::CudaLlama& m, int64_t context, int iters) {
  const cudaStream_t s = m.stream();
  const std::vector<int32_t> ids = prompt_ids(context + 8, m.config().vocab_size);
  m.reset();
  m.forward_last(std::span<const int32_t>(ids).first(static_cast<size_t>(context)));
  json rows = json::array();
  double single = 0.0;
  for (int T = 1; T <= 8; ++T) {
    const std::span<const int32_t> toks = std::span<const int32_t>(ids).subspan(static_cast<size_t>(context), T);
    std::vector<double> ms;
    for (int i = 0; i < iters + kWarmup; ++i) {
      m.truncate(context);
      gpu::Event a, b;
      a.record(s);
      if (T == 1)
        m.forward_last(toks);
      else
        m.forward_rows(toks);
      b.record(s);
      b.synchronize();
      if (i >= kWarmup) ms.push_back(gpu::Event::elapsed_ms(a, b));
    }
    const double t = median(ms);
    if (T == 1) single = t;
    fmt::print("pass of {} tokens @ {}: {:.3f} ms ({:.2f}x the single step)\n", T, context, t, t / single);
    rows.push_back({{"tokens", T}, {"ms", t}, {"x_single_step", t / single}});
  }
  return rows;
}

// The greedy generation loop's ms per token after `context` tokens, without logprobs (top_n
// -1) and with them for 0, 1, 5 and 20 alternatives: settings alternate over 3 rounds of
// `iters` steps each (wall clock: the loop waits for every id); median of the rounds.
json time_logprobs(rt::CudaLlama& m, int64_t context, int iters) {
  const cudaStream_t s = m.stream();
  runtime::SamplerConfig greedy;
  greedy.temperature = 0.0f;
  rt::CudaSampler sampler(greedy, m.config().vocab_size, m.allocator(), s);
  const std::vector<int32_t> ids = prompt_ids(context, m.config().vocab_size);
  const std::vector<int> tops = {-1, 0, 1, 5, 20};
  std::vector<std::vector<double>> ms(tops.size());
  runtime::TokenLogprob lp;
  for (int round = 0; round < 3; ++round) {
    for (size_t k = 0; k < tops.size(); ++k) {
      auto step = [&](const gpu::DeviceView& logits) {
        return tops[k] < 0 ? sampler.sample(logits, m.token_slot()) : sampler.sample(logits, m.token_slot(), tops[k], &lp);
      };
      m.reset();
      step(m.forward_last(ids));
      for (int i = 0; i < kWarmup; ++i) step(m.decode_slot());
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) step(m.decode_slot());
      ms[k].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters);
    }
  }
  json rows = json::array();
  const double off = median(ms[0]);
  for (size_t k = 0; k < tops.size(); ++k) {
    const double t = median(ms[k]);
    fmt::print("loop with logprobs {:>3}: {:.3f} ms/token (+{:.3f} ms)\n", tops[k] < 0 ? std::string("off") : std::to_string(tops[k]), t,
               t - off);
    rows.push_back({{"top_logprobs", tops[k]}, {"ms_per_token", t}, {"extra_ms", t - off}, {"rounds_ms", ms[k]}});
  }
  return rows;
}

// Prefill of `tokens` tokens in one chunk, timed with events; median of `runs`.
json time_prefill(rt::CudaLlama& m, int64_t tokens, int runs) {
  const cudaStream_t s = m.stream();
  const std::vector<int32_t> ids = prompt_ids(tokens, m.config().vocab_size);
  std::vector<double> ms;
  for (int i = 0; i < runs + 2; ++i) {
    m.reset();
    gpu::Event a, b;
    a.record(s);
    m.forward_last(ids);
    b.record(s);
    b.synchronize();
    if (i >= 2) ms.push_back(gpu::Event::elapsed_ms(a, b));
  }
  const double t = median(ms);
  fmt::print("prefill {} tokens, {} layers: {:.2f} ms, {:.0f} tokens/s\n", tokens, m.config().num_hidden_layers, t,
             static_cast<double>(tokens) / t * 1e3);
  return {{"tokens", tokens}, {"layers", m.config().num_hidden_layers}, {"ms", t},
          {"tokens_per_s", static_cast<double>(tokens) / t * 1e3}};
}

// The decode attention alone at Llama-3-8B's heads over an f16, q8_0 or q4 cache (zeros): 20
// launches per graph, replayed.
template <typename C>
json time_attention(int64_t kv_len, int iters, const std::string& kv, int splits_asked) {
  constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kPerGraph = 20;
  gpu::Stream stream;
  gpu::CachingAllocator alloc;
  const cudaStream_t s = stream.get();
  const bool q4 = std::is_same_v<C, uint8_t>, q8 = std::is_same_v<C, int8_t>;
  const DType dt = q4 ? DType::U8 : q8 ? DType::I8 : DType::F16;
  const int64_t row = q4 ? kHeadDim / 2 : kHeadDim, scales = q4 ? kHeadDim / 16 : kHeadDim / 32;
  gpu::DeviceTensor q(DType::F32, {kHeads * kHeadDim}, alloc, s), out(DType::F32, {kHeads * kHeadDim}, alloc, s);
  gpu::DeviceTensor k(dt, {kKvHeads, kv_len, row}, alloc, s), v(dt, {kKvHeads, kv_len, row}, alloc, s);
  gpu::DeviceTensor ks(DType::F16, {kKvHeads, kv_len, scales}, alloc, s), vs(DType::F16, {kKvHeads, kv_len, scales}, alloc, s);
  gpu::DeviceTensor ws(DType::F32, {static_cast<int64_t>(gpu::attention_decode_workspace_floats(kHeads, kHeadDim))}, alloc, s);
  gpu::DeviceTensor pos(DType::I32, {1}, alloc, s);
  for (const gpu::DeviceTensor* t : {&q, &k, &v, &ks, &vs}) CUDA_CHECK(cudaMemsetAsync(t->raw(), 0, t->nbytes(), s));
  const int32_t p = static_cast<int32_t>(kv_len - 1);
  CUDA_CHECK(cudaMemcpyAsync(pos.raw(), &p, sizeof(p), cudaMemcpyHostToDevice, s));
  gpu::attention_decode_reset_cuda(ws.view().data<float>(), kHeads, kHeadDim, s);
  gpu::DecodeAttention<C> a;
  a.q = q.view().data<float>();
  a.k_cache = static_cast<C*>(k.raw());
  a.v_cache = static_cast<C*>(v.raw());
  if (q4 || q8) {
    a.k_scale = static_cast<__half*>(ks.raw());
    a.v_scale = static_cast<__half*>(vs.raw());
  }
  a.out = out.view().data<float>();
  a.workspace = ws.view().data<float>();
  a.heads = kHeads;
  a.kv_heads = kKvHeads;
  a.head_dim = kHeadDim;
  a.capacity = static_cast<int>(kv_len);
  a.position_ptr = pos.view().data<int32_t>();
  a.max_keys = static_cast<int>(kv_len);
  a.scale = 0.0884f;
  a.splits = splits_asked;
  a.pdl = gpu::decode_pdl_enabled();
  gpu::attention_decode_cuda(a, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  const double t = gpu::bench::graph_us(kPerGraph, iters, s, [&](int) { gpu::attention_decode_cuda(a, s); });
  // Bytes of K + V read (codes and scales for the quantized caches).
  const auto bytes = static_cast<double>(k.nbytes() + v.nbytes() + (q4 || q8 ? ks.nbytes() + vs.nbytes() : 0));
  const int splits = gpu::attention_decode_splits(kHeads, kKvHeads, static_cast<int>(kv_len), splits_asked);
  fmt::print("attention decode 32/8 x 128 {}, {:6d} keys: {:6.2f} us, {:6.0f} GB/s of K+V ({} splits)\n", kv, kv_len, t,
             bytes / (t * 1e-6) / 1e9, splits);
  return {{"kv_len", kv_len}, {"kv", kv}, {"us", t}, {"kv_bytes", bytes}, {"gb_per_s", bytes / (t * 1e-6) / 1e9},
          {"fraction_of_peak", bytes / (t * 1e-6) / kPeakBytesPerSecond}, {"splits", splits}};
}

json run_synthetic(const Args& a) {
  json out;
  if (!a.decode_only) {
    json att = json::array();
    for (int64_t len : {128, 512, 2048, 8192, 32768})
      att.push_back(a.kv == "q4"     ? time_attention<uint8_t>(len, a.iters, a.kv, a.splits)
                    : a.kv == "q8_0" ? time_attention<int8_t>(len, a.iters, a.kv, a.splits)
                                     : time_attention<__half>(len, a.iters, a.kv, a.splits));
    out["attention_decode"] = att;
    if (a.attention_only) return out;
  }
  {
    const int64_t layers = a.layers > 0 ? a.layers : a.smol ? 30 : a.mixtral ? 8 : a.qwen3moe ? 4 : 32;
    auto host = make_model(layers, a.vocab, a.attn_row, a.mlp_row, a.smol, a.mixtral, a.qwen3moe);
    const std::vector<std::string> options = host->options;
    const io::ModelConfig cfg = host->config;
    rt::CudaOptions o;
    o.max_context = std::max<int64_t>(2048, *std::max_element(a.contexts.begin(), a.contexts.end())) + kWarmup +
                    a.iters + 8;
    o.prefill_chunk = 2048;
    if (a.kv == "q8_0") o.kv_cache = DType::I8;
    if (a.kv == "q4") o.kv_cache = DType::U8;
    if (a.batch) o.sequences = rt::CudaLlama::kMaxBatchRows;
    rt::CudaLlama m(host->config, host->weights, o);
    host.reset();  // the device holds everything now
    out["device"] = m.device().name;
    out["model"] = {{"layers", cfg.num_hidden_layers}, {"hidden", cfg.hidden_size},
                    {"intermediate", cfg.intermediate_size}, {"heads", cfg.num_attention_heads},
                    {"kv_heads", cfg.num_key_value_heads}, {"head_dim", cfg.head_dim},
                    {"experts", cfg.num_experts}, {"experts_per_token", cfg.experts_per_token},
                    {"vocab", cfg.vocab_size}, {"options", options}, {"kv_cache", a.kv}};
    out["decode"] = json::array();
    for (int64_t c : a.contexts) out["decode"].push_back(time_decode(m, c, a.iters, a.settle_ms));
    if (a.passes) out["passes_128"] = time_passes(m, 128, a.iters);
    if (a.batch) {
      out["batch_128"] = time_batch(m, 128, a.iters);
      out["batch_2048"] = time_batch(m, 2048, a.iters);
      m.select_sequence(0);
    }
    if (a.logprobs) out["logprobs_128"] = time_logprobs(m, 128, a.iters);
    if (!a.decode_only) out["prefill_2048"] = time_prefill(m, 2048, 5);
    out["vram"] = m.allocator().stats();
  }
  if (a.decode_only) return out;
  auto host = make_model(4, 256);
  rt::CudaOptions o;
  o.max_context = 2048;
  o.prefill_chunk = 2048;
  rt::CudaLlama m4(host->config, host->weights, o);
  json p4 = time_prefill(m4, 2047, 5);
  p4["exllamav2_ms"] = 11.8;
  out["prefill_4_layers"] = p4;
  return out;
}

json run_model(const Args& a) {
  model::LlamaModel cpu = model::LlamaModel::load(a.model);
  rt::CudaOptions o;
  o.max_context = 32 + kWarmup + a.iters + 8;
  rt::CudaLlama m(cpu, o);
  json r = time_decode(m, 32, a.iters, a.settle_ms);
  return {{"device", m.device().name}, {"model", a.model}, {"decode", r},
          {"decode_tokens_per_s", 1e3 / r["ms_per_token"].get<double>()}};
}

int run(int argc, char** argv) {
  Args a;
  bool vocab_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(fmt::format("{} needs a value", arg));
      return argv[++i];
    };
    if (arg == "--json") a.json_path = value();
    else if (arg == "--iters") a.iters = std::stoi(value());
    else if (arg == "--vocab") {
      a.vocab = std::stoll(value());
      vocab_given = true;
    }
    else if (arg == "--model") a.model = value();
    else if (arg == "--decode-only") a.decode_only = true;
    else if (arg == "--layers") a.layers = std::stoll(value());
    else if (arg == "--passes") a.passes = true;
    else if (arg == "--batch") a.batch = true;
    else if (arg == "--attention-only") a.attention_only = true;
    else if (arg == "--splits") a.splits = std::stoi(value());
    else if (arg == "--logprobs") a.logprobs = true;
    else if (arg == "--settle-ms") a.settle_ms = std::stoi(value());
    else if (arg == "--kv") {
      const std::string v = value();
      EXQ_CHECK(v == "f16" || v == "q8_0" || v == "q4", "--kv is f16, q8_0 or q4, got {}", v);
      a.kv = v;
    } else if (arg == "--contexts") {
      a.contexts.clear();
      std::string v = value();
      for (size_t at = 0; at <= v.size();) {
        const size_t comma = std::min(v.find(',', at), v.size());
        a.contexts.push_back(std::stoll(v.substr(at, comma - at)));
        at = comma + 1;
      }
      for (int64_t c : a.contexts) EXQ_CHECK(c >= 1, "--contexts: positions must be >= 1, got {}", c);
    }
    else if (arg == "--shape") {
      const std::string v = value();
      EXQ_CHECK(v == "llama3-8b" || v == "smollm2" || v == "mixtral" || v == "qwen3moe",
                "--shape is llama3-8b, smollm2, mixtral or qwen3moe, got {}", v);
      a.smol = v == "smollm2";
      a.mixtral = v == "mixtral";
      a.qwen3moe = v == "qwen3moe";
      if (a.smol && !vocab_given) a.vocab = 49152;
      if ((a.mixtral || a.qwen3moe) && !vocab_given) a.vocab = 32000;
    }
    else if (arg == "--tables") {
      const std::string v = value();
      const size_t comma = v.find(',');
      EXQ_CHECK(comma != std::string::npos, "--tables needs A,M (attention and MLP table rows), got {}", v);
      a.attn_row = std::stoi(v.substr(0, comma));
      a.mlp_row = std::stoi(v.substr(comma + 1));
      EXQ_CHECK(a.attn_row >= 0 && a.attn_row < static_cast<int>(quant::attn_option_table().size()) &&
                    a.mlp_row >= 0 && a.mlp_row < static_cast<int>(quant::mlp_option_table().size()),
                "--tables {}: rows are 0..{} (attention) and 0..{} (MLP)", v,
                quant::attn_option_table().size() - 1, quant::mlp_option_table().size() - 1);
    } else throw Error(fmt::format("unknown argument {} (usage: cuda_decode_bench [--json FILE] [--iters N] "
                                 "[--vocab N] [--model DIR] [--tables A,M] [--decode-only] [--passes] [--logprobs] "
                                 "[--shape S])", arg));
  }
  EXQ_CHECK(a.iters >= 1 && a.vocab >= 2, "--iters and --vocab must be positive");
  const json out = a.model.empty() ? run_synthetic(a) : run_model(a);
  fmt::print("{}\n", out.dump(1));
  if (!a.json_path.empty()) std::ofstream(a.json_path) << out.dump(1) << "\n";
  return 0;
}

}  // namespace
}  // namespace exq

int main(int argc, char** argv) {
  try {
    return exq::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
