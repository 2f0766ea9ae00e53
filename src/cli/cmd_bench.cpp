// `exq bench -m MODEL [-p 512] [-n 128] [-d 0] [-r 5]`: llama-bench's two measurements on exq's
// own generation loop, on the CPU or a CUDA GPU. ppP: prompt tokens per second of a prefill of P
// tokens after D tokens already in the KV cache (-d); tgN: tokens per second of N greedy
// single-token steps after D tokens (the loop `exq generate` runs: on the GPU the sampler runs
// there and each id comes to the host). Token ids are random (fixed seed), so no text is needed;
// each test runs once untimed (graph capture, allocator), then -r times: mean and standard
// deviation. A markdown table, or with --json one object per test (llama-bench's field names).
// -np N (exq serve --parallel): tgN runs N generations at once, each on its own KV cache, their
// single tokens stepping together (runtime::Batcher); t/s counts the tokens of all of them.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <thread>
#include <memory>
#include <random>

#include "cli/commands.h"
#include "cli/run_util.h"
#include "cli/session.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "runtime/batch.h"
#include "runtime/generator.h"
#include "runtime/model_step.h"
#if EXQ_HAVE_CUDA
#include "backend/cuda/cuda_check.h"
#include "runtime/cuda/cuda_generate.h"
#include "runtime/cuda/cuda_sequences.h"
#endif

namespace exq::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct BenchArgs {
  std::string model;
  std::vector<int64_t> prompt{512}, gen{128}, depth{0}, parallel{1};
  int reps = 5;
  int threads = 0;
  std::string device = "auto";
  CacheTypeFlags cache_type;
  RopeFlags rope;
  CpuMoeFlags cpu_moe;
  LoraFlags lora;
  bool json = false;
};

struct Test {
  int64_t prompt = 0, gen = 0, depth = 0;  // one of prompt, gen is 0
  int64_t parallel = 1;                    // generations at once (tg only)
  std::string name() const {
    std::string base = prompt > 0 ? fmt::format("pp{}", prompt) : fmt::format("tg{}", gen);
    if (parallel > 1) base += fmt::format(" x{}", parallel);
    return depth > 0 ? fmt::format("{} @ d{}", base, depth) : base;
  }
  int64_t context() const { return depth + std::max<int64_t>(prompt, 1) + gen; }
};

// The generation loop on either device over one KV cache.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual void reset() = 0;
  virtual void fill(std::span<const int32_t> tokens) = 0;  // untimed: the depth
  virtual runtime::GenerateResult generate(std::span<const int32_t> prompt, const runtime::GenerateOptions& o) = 0;
};

class CpuRunner final : public Runner {
 public:
  CpuRunner(model::LlamaModel& m, int64_t ctx) : step_(m, ctx) {}
  void reset() override { step_.reset(); }
  void fill(std::span<const int32_t> tokens) override { step_.forward(tokens); }
  runtime::GenerateResult generate(std::span<const int32_t> p, const runtime::GenerateOptions& o) override {
    return runtime::generate(step_, nullptr, p, o);
  }

 private:
  runtime::LlamaStep step_;
};

#if EXQ_HAVE_CUDA
class CudaRunner final : public Runner {
 public:
  CudaRunner(const model::LlamaModel& m, int64_t ctx, int sequences) : gpu_(m, options(ctx, sequences)) {}
  void reset() override {
    gpu_.select_sequence(0);
    gpu_.reset();
  }
  // Waits for the device: the timed run that follows must not include the fill's kernels.
  void fill(std::span<const int32_t> tokens) override {
    gpu_.forward_last(tokens);
    CUDA_CHECK(cudaStreamSynchronize(gpu_.stream()));
  }
  runtime::GenerateResult generate(std::span<const int32_t> p, const runtime::GenerateOptions& o) override {
    return runtime::cuda::generate_cuda(gpu_, nullptr, p, o);
  }
  std::string name() const { return gpu_.device().name; }
  runtime::cuda::CudaLlama& model() { return gpu_; }

 private:
  static runtime::cuda::CudaOptions options(int64_t ctx, int sequences) {
    runtime::cuda::CudaOptions co;
    co.max_context = ctx;
    co.sequences = sequences;
    return co;
  }
  runtime::cuda::CudaLlama gpu_;
};
#endif

// Tokens per second of t.parallel generations at once through a Batcher (sequences 0..N-1 of
// `model`): each fills t.depth tokens, then runs one more as its prompt and t.gen steps; the
// clock covers the single-token passes of all of them.
double run_parallel(runtime::SequenceModel& model, const Test& t, std::span<const int32_t> ids) {
  runtime::Batcher batcher(model);
  const auto n = static_cast<int>(t.parallel);
  std::vector<std::unique_ptr<runtime::StepFunction>> steps;
  for (int s = 0; s < n; ++s) {
    steps.push_back(batcher.step(s));
    if (t.depth > 0) steps.back()->forward(ids.first(static_cast<size_t>(t.depth)));
  }
  runtime::GenerateOptions o;
  o.sampler.temperature = 0.0f;
  o.cached_prompt_tokens = t.depth;
  o.max_new_tokens = t.gen + 1;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < n; ++s)
    threads.emplace_back([&, s] {
      batcher.enter();
      try {
        runtime::generate(*steps[static_cast<size_t>(s)], nullptr, ids.first(static_cast<size_t>(t.depth + 1)), o);
      } catch (...) {
        errors[static_cast<size_t>(s)] = std::current_exception();
      }
      batcher.leave();
    });
  for (std::thread& th : threads) th.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return static_cast<double>(n * (t.gen + 1)) / seconds;
}

// Tokens per second of one timed run of `t`.
double run_once(Runner& r, const Test& t, std::span<const int32_t> ids) {
  r.reset();
  if (t.depth > 0) r.fill(ids.first(static_cast<size_t>(t.depth)));
  runtime::GenerateOptions o;
  o.sampler.temperature = 0.0f;  // greedy, no eos ids: never stops early
  o.cached_prompt_tokens = t.depth;
  if (t.prompt > 0) {
    o.max_new_tokens = 1;
    const runtime::GenerateResult res = r.generate(ids.first(static_cast<size_t>(t.depth + t.prompt)), o);
    return res.prefill_tokens_per_s();
  }
  o.max_new_tokens = t.gen + 1;  // the first token comes from the prefill, then gen timed steps
  const runtime::GenerateResult res = r.generate(ids.first(static_cast<size_t>(t.depth + 1)), o);
  return res.decode_tokens_per_s();
}

void check_counts(const std::vector<int64_t>& v, const char* flag) {
  for (const int64_t x : v)
    if (x < 0) throw Error(fmt::format("{} values must be >= 0, got {}", flag, x));
}

void run_bench(const BenchArgs& a) {
  if (a.model.empty()) throw Error("bench needs a model folder: -m MODEL");
  if (a.reps < 1) throw Error(fmt::format("-r must be >= 1, got {}", a.reps));
  check_counts(a.prompt, "-p");
  check_counts(a.gen, "-n");
  check_counts(a.depth, "-d");
  int64_t max_parallel = 1;
  for (const int64_t np : a.parallel) {
    if (np < 1 || np > kMaxParallel) throw Error(fmt::format("-np values must be 1 to {}, got {}", kMaxParallel, np));
    max_parallel = std::max(max_parallel, np);
  }
  std::vector<Test> tests;
  for (const int64_t d : a.depth) {
    for (const int64_t p : a.prompt)
      if (p > 0) tests.push_back({p, 0, d});
    for (const int64_t n : a.gen)
      for (const int64_t np : a.parallel)
        if (n > 0) tests.push_back({0, n, d, np});
  }
  if (tests.empty()) throw Error("nothing to measure: give -p or -n values above 0");
  apply_threads(a.threads);
  const Device device = resolve_device(a.device);

  const fs::path dir = a.model;
  require_model_dir(dir);
  model::LlamaModel model = model::LlamaModel::load(dir);
  apply_cache_type(model, a.cache_type);
  apply_rope_flags(model, a.rope);
  apply_cpu_moe_flags(model, a.cpu_moe);
  apply_lora_flags(model, a.lora);
  const bool q8 = model.kv_quant() != model::KvQuant::kNone;  // a quantized cache: its type shown
  const std::string cache(model::kv_quant_name(model.kv_quant()));
  const int64_t limit = model.config().context_length(), vocab = model.config().vocab_size;
  int64_t ctx = 1;
  for (const Test& t : tests) {
    if (t.context() > limit)
      throw Error(fmt::format("{} needs a context of {} tokens, more than the model's {} (its context length)",
                              t.name(), t.context(), limit));
    ctx = std::max(ctx, t.context());
  }
  int64_t bytes = 0;
  {
    const io::SafetensorsModel st = io::SafetensorsModel::open(dir);
    for (const auto& name : st.names()) bytes += static_cast<int64_t>(st.get(name).nbytes());
  }
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(ctx));
  for (int32_t& id : ids) id = pick(rng);

  std::unique_ptr<Runner> runner;
  std::unique_ptr<runtime::SequenceModel> sequences;  // -np above 1
  std::string backend = "cpu";
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    auto gpu = std::make_unique<CudaRunner>(model, ctx, static_cast<int>(max_parallel));
    backend = fmt::format("cuda ({})", gpu->name());
    if (max_parallel > 1) sequences = std::make_unique<runtime::cuda::CudaSequences>(gpu->model());
    runner = std::move(gpu);
  }
#endif
  if (!runner) {
    runner = std::make_unique<CpuRunner>(model, ctx);
    if (max_parallel > 1)
      sequences = std::make_unique<runtime::LlamaSequences>(model, static_cast<int>(max_parallel), ctx);
  }
  auto measure = [&](const Test& t) {
    return t.parallel > 1 ? run_parallel(*sequences, t, ids) : run_once(*runner, t, ids);
  };
  const std::string name = fs::absolute(dir).lexically_normal().filename().string();
  const std::string size = fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
  const int threads = device == Device::Cpu ? num_threads() : 0;

  json rows = json::array();
  if (!a.json) {
    // The cache's type as llama-bench shows it: a column only when it is not f16.
    if (q8)
      fmt::print("| model | size | backend | threads | type_k | type_v | test | t/s |\n"
                 "| --- | ---: | --- | ---: | --- | --- | --- | ---: |\n");
    else
      fmt::print("| model | size | backend | threads | test | t/s |\n| --- | ---: | --- | ---: | --- | ---: |\n");
    std::fflush(stdout);
  }
  for (const Test& t : tests) {
    measure(t);  // warm-up
    std::vector<double> ts;
    for (int r = 0; r < a.reps; ++r) ts.push_back(measure(t));
    double mean = 0.0, var = 0.0;
    for (const double v : ts) mean += v / static_cast<double>(ts.size());
    for (const double v : ts) var += (v - mean) * (v - mean);
    const double stddev = ts.size() > 1 ? std::sqrt(var / static_cast<double>(ts.size() - 1)) : 0.0;
    if (a.json) {
      rows.push_back({{"model", name},
                      {"model_path", dir.string()},
                      {"size_bytes", bytes},
                      {"backend", backend},
                      {"threads", threads},
                      {"test", t.name()},
                      {"n_prompt", t.prompt},
                      {"n_gen", t.gen},
                      {"n_depth", t.depth},
                      {"n_parallel", t.parallel},
                      {"type_k", cache},
                      {"type_v", cache},
                      {"avg_ts", mean},
                      {"stddev_ts", stddev},
                      {"samples_ts", ts}});
    } else {
      fmt::print("| {} | {} | {} | {} | {}{} | {:.2f} ± {:.2f} |\n", name, size, backend,
                 threads > 0 ? std::to_string(threads) : "-", q8 ? fmt::format("{0} | {0} | ", cache) : "", t.name(),
                 mean, stddev);
      std::fflush(stdout);
    }
  }
  if (a.json) fmt::print("{}\n", rows.dump(2));
}

}  // namespace

void add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Measure prompt and generation speed (llama-bench's pp and tg tests)");
  cmd->add_option("-m,--model", a->model, "model folder (required)");
  cmd->add_option("-p,--n-prompt", a->prompt, "prompt lengths to prefill, comma-separated (0: none)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", a->gen, "tokens to generate one at a time, comma-separated (0: none)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("-d,--n-depth", a->depth, "tokens already in the KV cache before each test, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--parallel", a->parallel,
                  "generations at once for the tg tests, comma-separated (also -np; as exq serve --parallel)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", a->reps, "timed runs of each test (after one untimed)")->capture_default_str();
  cmd->add_option("--threads", a->threads, "worker threads for the CPU (default: all cores)");
  add_cache_type_flags(*cmd, a->cache_type);
  add_rope_flags(*cmd, a->rope);
  add_cpu_moe_flags(*cmd, a->cpu_moe);
  add_lora_flags(*cmd, a->lora);
  cmd->add_option("--device", a->device, "cpu, cuda, or auto: CUDA when a usable GPU is present")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print a JSON array, one object per test");
  cmd->callback([a] { run_bench(*a); });
}

}  // namespace exq::cli
