// What generate, chat and serve share: the sampling flags (generation_config.json's defaults,
// overridden by the flags given), and a loaded model on the CPU or a CUDA GPU whose KV cache
// stays between generations (runtime::LlamaSession / cuda::CudaSession, with the prompt cache).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cli/run_util.h"
#include "model/llama.h"
#include "runtime/draft.h"
#include "runtime/generation_config.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace exq::cli {

// --temperature, --top-k, --top-p, --min-p, --repetition-penalty, --presence-penalty,
// --frequency-penalty, --logit-bias, --typical-p, --top-n-sigma, --xtc-probability,
// --xtc-threshold, --dry-multiplier, --dry-base, --dry-allowed-length, --dry-penalty-last-n,
// --dry-sequence-breaker, --seed.
class SamplingFlags {
 public:
  void add(CLI::App& cmd);
  // The model's defaults with the given flags over them; throws exq::Error for bad values.
  // `tok` turns DRY's sequence breakers into token ids.
  runtime::SamplerConfig settings(const runtime::GenerationConfig& gen, const tokenizer::Tokenizer& tok) const;

 private:
  float temperature_ = 0.0f, top_p_ = 1.0f, min_p_ = 0.0f, penalty_ = 1.0f, presence_ = 0.0f, frequency_ = 0.0f;
  float typical_ = 1.0f, sigma_ = 0.0f, xtc_p_ = 0.0f, xtc_t_ = 0.1f, dry_mult_ = 0.0f, dry_base_ = 1.75f;
  int dry_len_ = 2, dry_range_ = 0;
  std::vector<std::string> dry_breakers_;
  int top_k_ = 0;
  uint64_t seed_ = 0;
  std::vector<std::string> logit_bias_;
  CLI::Option *temperature_opt_ = nullptr, *top_k_opt_ = nullptr, *top_p_opt_ = nullptr,
              *min_p_opt_ = nullptr, *penalty_opt_ = nullptr, *seed_opt_ = nullptr, *presence_opt_ = nullptr,
              *frequency_opt_ = nullptr, *typical_opt_ = nullptr, *sigma_opt_ = nullptr, *xtc_p_opt_ = nullptr,
              *xtc_t_opt_ = nullptr, *dry_mult_opt_ = nullptr, *dry_base_opt_ = nullptr, *dry_len_opt_ = nullptr,
              *dry_range_opt_ = nullptr;
};

// "ID+BIAS" / "ID-BIAS" (llama.cpp's --logit-bias); throws exq::Error naming the text.
runtime::LogitBias parse_logit_bias(const std::string& text);

// --grammar, --grammar-file, --json-schema, --json-schema-file: the answer must follow a GBNF
// grammar or be JSON valid under a schema (at most one of them).
class GrammarFlags {
 public:
  void add(CLI::App& cmd);
  // Sets options.grammar and its vocabulary (vocab: the model's logits per token); throws
  // exq::Error for a bad grammar, schema or file.
  void apply(runtime::GenerateOptions& options, const tokenizer::Tokenizer& tok, int64_t vocab) const;

 private:
  std::string grammar_, grammar_file_, schema_, schema_file_;
};

// --draft-max, --draft-ngram-min, --draft-ngram-max: speculative decoding by prompt lookup;
// --draft-model, --draft-p-min: with a draft model (draft-max then defaults to
// runtime::kDefaultDraftTokens).
class DraftFlags {
 public:
  void add(CLI::App& cmd);
  // Throws exq::Error for bad values. The draft model is not loaded here (options.model stays
  // null): see DraftModelHolder.
  runtime::DraftOptions settings() const;
  const std::string& model_dir() const { return model_dir_; }

 private:
  runtime::DraftOptions options_;
  std::string model_dir_;
  CLI::Option* max_opt_ = nullptr;
};

// A draft model (--draft-model) loaded beside the model on the same device, with a context of
// max_context positions (capped at its context_length()). Throws exq::Error for a folder
// that does not load or whose tokenizer is not the model's.
class DraftModelHolder {
 public:
  DraftModelHolder(const std::filesystem::path& dir, const tokenizer::Tokenizer& model_tok, int64_t model_vocab,
                   Device device, int64_t max_context);
  ~DraftModelHolder();
  DraftModelHolder(const DraftModelHolder&) = delete;
  DraftModelHolder& operator=(const DraftModelHolder&) = delete;
  runtime::DraftModel& model();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Loads flags.model_dir() when given and points options.model at it; null otherwise.
std::unique_ptr<DraftModelHolder> load_draft_model(const DraftFlags& flags, runtime::DraftOptions& options,
                                                   const tokenizer::Tokenizer& model_tok, int64_t model_vocab,
                                                   Device device, int64_t max_context);

// ", drafts: K of N kept in P passes" for a stderr summary; empty when no draft was checked.
std::string draft_summary(const runtime::GenerateResult& r);

// on_text for streaming answers: writes each piece to stdout and flushes; empty when !on.
runtime::TextCallback stdout_stream(bool on);

// --parallel at most (each sequence holds a KV cache of the whole context).
inline constexpr int kMaxParallel = 64;

// A model kept loaded for many generations over one KV cache of max_context positions, or with
// `parallel` > 1 over that many caches, whose generations may run at once from several threads
// (runtime::SequencePool: their single tokens step together).
class ModelSession {
 public:
  // Takes the weights (uploaded and then dropped on the GPU); `tok` must outlive the session.
  // With flags.model_dir() a draft model is loaded beside it and `draft` points at it (only with
  // parallel 1: exq::Error otherwise).
  ModelSession(model::LlamaModel model, const tokenizer::Tokenizer& tok, Device device, int64_t max_context,
               const DraftFlags* flags = nullptr, runtime::DraftOptions* draft = nullptr, int parallel = 1);
  ~ModelSession();
  ModelSession(const ModelSession&) = delete;
  ModelSession& operator=(const ModelSession&) = delete;

  // One generation; with `reuse` the part of the cache that the prompt begins with is kept.
  // Thread-safe when parallel() > 1 (a call waits while every cache is in use), else not.
  runtime::GenerateResult generate(std::span<const int32_t> prompt, const runtime::GenerateOptions& options,
                                   bool reuse, const runtime::TextCallback& on_text = {});
  const std::string& device_name() const { return device_name_; }
  int64_t max_context() const { return max_context_; }
  int parallel() const { return parallel_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<DraftModelHolder> draft_;
  std::string device_name_;
  int64_t max_context_;
  int parallel_ = 1;
};

}  // namespace exq::cli
