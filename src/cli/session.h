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
// --frequency-penalty, --logit-bias, --seed.
class SamplingFlags {
 public:
  void add(CLI::App& cmd);
  // The model's defaults with the given flags over them; throws exq::Error for bad values.
  runtime::SamplerConfig settings(const runtime::GenerationConfig& gen) const;

 private:
  float temperature_ = 0.0f, top_p_ = 1.0f, min_p_ = 0.0f, penalty_ = 1.0f, presence_ = 0.0f, frequency_ = 0.0f;
  int top_k_ = 0;
  uint64_t seed_ = 0;
  std::vector<std::string> logit_bias_;
  CLI::Option *temperature_opt_ = nullptr, *top_k_opt_ = nullptr, *top_p_opt_ = nullptr,
              *min_p_opt_ = nullptr, *penalty_opt_ = nullptr, *seed_opt_ = nullptr, *presence_opt_ = nullptr,
              *frequency_opt_ = nullptr;
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

// --draft-max, --draft-ngram-min, --draft-ngram-max: speculative decoding by prompt lookup.
class DraftFlags {
 public:
  void add(CLI::App& cmd);
  // Throws exq::Error for bad values.
  runtime::DraftOptions settings() const;

 private:
  runtime::DraftOptions options_;
};

// ", drafts: K of N kept in P passes" for a stderr summary; empty when no draft was checked.
std::string draft_summary(const runtime::GenerateResult& r);

// on_text for streaming answers: writes each piece to stdout and flushes; empty when !on.
runtime::TextCallback stdout_stream(bool on);

// A model kept loaded for many generations over one KV cache of max_context positions.
class ModelSession {
 public:
  // Takes the weights (uploaded and then dropped on the GPU); `tok` must outlive the session.
  ModelSession(model::LlamaModel model, const tokenizer::Tokenizer& tok, Device device, int64_t max_context);
  ~ModelSession();
  ModelSession(const ModelSession&) = delete;
  ModelSession& operator=(const ModelSession&) = delete;

  // One generation; with `reuse` the part of the cache that the prompt begins with is kept.
  runtime::GenerateResult generate(std::span<const int32_t> prompt, const runtime::GenerateOptions& options,
                                   bool reuse, const runtime::TextCallback& on_text = {});
  const std::string& device_name() const { return device_name_; }
  int64_t max_context() const { return max_context_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string device_name_;
  int64_t max_context_;
};

}  // namespace exq::cli
