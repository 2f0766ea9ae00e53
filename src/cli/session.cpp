#include "cli/session.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"

#include "runtime/batch.h"
#include "runtime/draft_model.h"
#include "runtime/model_step.h"
#if EXQ_HAVE_CUDA
#include "runtime/cuda/cuda_draft.h"
#include "runtime/cuda/cuda_generate.h"
#include "runtime/cuda/cuda_sequences.h"
#endif

namespace exq::cli {

void SamplingFlags::add(CLI::App& cmd) {
  temperature_opt_ = cmd.add_option("--temperature", temperature_, "0 = greedy (default 0.8)");
  top_k_opt_ = cmd.add_option("--top-k", top_k_, "keep the k most likely tokens, 0 = off (default 40)");
  top_p_opt_ = cmd.add_option("--top-p", top_p_, "nucleus sampling, 1 = off (default 0.95)");
  min_p_opt_ = cmd.add_option("--min-p", min_p_, "drop tokens below min-p x the top probability (default 0.05)");
  penalty_opt_ = cmd.add_option("--repetition-penalty", penalty_, "HF repetition penalty, 1 = off");
  presence_opt_ = cmd.add_option("--presence-penalty", presence_,
                                 "OpenAI's: subtracted from the logit of every token generated before (-2..2, 0 = off)");
  frequency_opt_ = cmd.add_option("--frequency-penalty", frequency_,
                                  "OpenAI's: subtracted once per time a token was generated (-2..2, 0 = off)");
  cmd.add_option("--logit-bias", logit_bias_, "ID+BIAS or ID-BIAS added to token ID's logit (repeatable; -100 bans)");
  typical_opt_ = cmd.add_option("--typical-p,--typical", typical_,
                                "locally typical sampling: keep the tokens nearest the entropy up to this mass, 1 = off");
  sigma_opt_ = cmd.add_option("--top-n-sigma,--top-nsigma", sigma_,
                              "keep tokens whose logit is within N standard deviations of the top, 0 = off");
  xtc_p_opt_ = cmd.add_option("--xtc-probability", xtc_p_,
                              "XTC: chance per token of removing all likely tokens but the least likely, 0 = off");
  xtc_t_opt_ = cmd.add_option("--xtc-threshold", xtc_t_, "XTC: the probability a token needs to count as likely (0.1)");
  dry_mult_opt_ = cmd.add_option("--dry-multiplier", dry_mult_,
                                  "DRY: penalty on tokens that would repeat a sequence of the context, 0 = off");
  dry_base_opt_ = cmd.add_option("--dry-base", dry_base_, "DRY: the penalty's growth per extra repeated token (1.75)");
  dry_len_opt_ = cmd.add_option("--dry-allowed-length", dry_len_, "DRY: repeats this long go unpenalized (2)");
  dry_range_opt_ = cmd.add_option("--dry-penalty-last-n", dry_range_, "DRY: the last N tokens searched (0 = all)");
  cmd.add_option("--dry-sequence-breaker", dry_breakers_,
                 "DRY: text that ends a repeated sequence (repeatable; replaces the defaults \\n : \" *; 'none' = no breakers)");
  seed_opt_ = cmd.add_option("--seed", seed_, "random seed (default: random)");
}

runtime::SamplerConfig SamplingFlags::settings(const runtime::GenerationConfig& gen,
                                               const tokenizer::Tokenizer& tok) const {
  runtime::SamplerConfig s = runtime::sampler_defaults(gen);
  if (temperature_opt_->count() > 0) s.temperature = temperature_;
  if (top_k_opt_->count() > 0) s.top_k = top_k_;
  if (top_p_opt_->count() > 0) s.top_p = top_p_;
  if (min_p_opt_->count() > 0) s.min_p = min_p_;
  if (penalty_opt_->count() > 0) s.repetition_penalty = penalty_;
  if (presence_opt_->count() > 0) s.presence_penalty = presence_;
  if (frequency_opt_->count() > 0) s.frequency_penalty = frequency_;
  if (typical_opt_->count() > 0) s.typical_p = typical_;
  if (sigma_opt_->count() > 0) s.top_n_sigma = sigma_;
  if (xtc_p_opt_->count() > 0) s.xtc_probability = xtc_p_;
  if (xtc_t_opt_->count() > 0) s.xtc_threshold = xtc_t_;
  if (dry_mult_opt_->count() > 0) s.dry_multiplier = dry_mult_;
  if (dry_base_opt_->count() > 0) s.dry_base = dry_base_;
  if (dry_len_opt_->count() > 0) s.dry_allowed_length = dry_len_;
  if (dry_range_opt_->count() > 0) s.dry_range = dry_range_;
  const std::vector<std::string> none;  // --dry-sequence-breaker none
  const bool no_breakers = dry_breakers_.size() == 1 && dry_breakers_[0] == "none";
  runtime::set_dry_breakers(s, tok, no_breakers ? &none : dry_breakers_.empty() ? nullptr : &dry_breakers_);
  for (const std::string& b : logit_bias_) s.logit_bias.push_back(parse_logit_bias(b));
  if (seed_opt_->count() > 0) s.seed = seed_;
  s.validate();
  return s;
}

runtime::LogitBias parse_logit_bias(const std::string& text) {
  const size_t sign = text.find_first_of("+-", 1);
  runtime::LogitBias b;
  bool ok = sign != std::string::npos && sign > 0;
  try {
    size_t used = 0;
    if (ok) {
      const long long id = std::stoll(text.substr(0, sign), &used);
      ok = used == sign && id >= 0 && id <= INT32_MAX;
      b.id = static_cast<int32_t>(id);
    }
    if (ok) {
      const std::string value = text.substr(sign);
      b.bias = std::stof(value, &used);
      ok = used == value.size() && std::isfinite(b.bias);
    }
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok) throw Error(fmt::format("--logit-bias '{}': expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043-5", text));
  return b;
}

void GrammarFlags::add(CLI::App& cmd) {
  cmd.add_option("--grammar", grammar_, "GBNF grammar (llama.cpp's notation) the answer must follow");
  cmd.add_option("--grammar-file", grammar_file_, "file holding a GBNF grammar");
  cmd.add_option("--json-schema", schema_, "JSON schema the answer must be valid JSON under ('{}': any JSON)");
  cmd.add_option("--json-schema-file", schema_file_, "file holding a JSON schema");
}

void GrammarFlags::apply(runtime::GenerateOptions& options, const tokenizer::Tokenizer& tok, int64_t vocab) const {
  const int given = !grammar_.empty() + !grammar_file_.empty() + !schema_.empty() + !schema_file_.empty();
  if (given == 0) return;
  if (given > 1) throw Error("give one of --grammar, --grammar-file, --json-schema, --json-schema-file");
  const bool schema = !schema_.empty() || !schema_file_.empty();
  const std::string where = !grammar_file_.empty()  ? grammar_file_
                            : !schema_file_.empty() ? schema_file_
                            : schema                ? std::string("--json-schema")
                                                    : std::string("--grammar");
  try {
    const bool inline_text = grammar_file_.empty() && schema_file_.empty();
    std::string text = inline_text ? (schema ? schema_ : grammar_) : read_text_file(where);
    // ordered_json: properties are generated in the schema's order.
    if (schema) text = grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(text));
    options.grammar = grammar::Grammar::parse(text);
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", where, e.what()));
  } catch (const Error& e) {
    throw e.with_file(where);
  }
  options.grammar_vocab = runtime::TokenVocab::from_tokenizer(tok, vocab);
}

void DraftFlags::add(CLI::App& cmd) {
  max_opt_ = cmd.add_option("--draft-max", options_.max_tokens,
                            "speculative decoding: up to N tokens guessed (from earlier text, or by --draft-model) "
                            "and checked in one pass; the tokens do not change (0 = off; 7 with --draft-model)")
                 ->capture_default_str();
  cmd.add_option("--draft-model,--model-draft", model_dir_,
                 "a smaller model with the same tokenizer that guesses the next tokens (speculative decoding)");
  cmd.add_option("--draft-p-min", options_.p_min,
                 "with --draft-model: stop guessing at a token the draft model gives less than this probability")
      ->capture_default_str();
  cmd.add_option("--draft-ngram-min", options_.ngram_min, "shortest n-gram the guesses are looked up by")
      ->capture_default_str();
  cmd.add_option("--draft-ngram-max", options_.ngram_max, "longest n-gram the guesses are looked up by")
      ->capture_default_str();
}

runtime::DraftOptions DraftFlags::settings() const {
  runtime::DraftOptions o = options_;
  if (!model_dir_.empty() && max_opt_ && max_opt_->count() == 0) o.max_tokens = runtime::kDefaultDraftTokens;
  if (!model_dir_.empty() && o.max_tokens == 0) throw Error("--draft-model needs drafts: --draft-max must be >= 1");
  o.validate();
  return o;
}

struct DraftModelHolder::Impl {
  std::unique_ptr<model::LlamaModel> weights;
  std::unique_ptr<runtime::LlamaStep> step;
#if EXQ_HAVE_CUDA
  std::unique_ptr<runtime::cuda::CudaLlama> gpu;
#endif
  std::unique_ptr<runtime::DraftModel> draft;
};

DraftModelHolder::DraftModelHolder(const std::filesystem::path& dir, const tokenizer::Tokenizer& model_tok,
                                   int64_t model_vocab, Device device, int64_t max_context)
    : impl_(std::make_unique<Impl>()) {
  GenerationModel gm = load_generation_model(dir);
  runtime::check_draft_tokenizer(model_tok, gm.tok, dir.string());
  Impl& m = *impl_;
  const int64_t ctx = std::min<int64_t>(max_context, gm.model.config().context_length());
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = ctx;
    m.gpu = std::make_unique<runtime::cuda::CudaLlama>(gm.model, co);
    m.draft = std::make_unique<runtime::cuda::CudaDraftModel>(*m.gpu, model_vocab);
    return;
  }
#endif
  (void)device;
  m.weights = std::make_unique<model::LlamaModel>(std::move(gm.model));
  m.step = std::make_unique<runtime::LlamaStep>(*m.weights, ctx);
  m.draft = std::make_unique<runtime::StepDraftModel>(*m.step, model_vocab);
}

DraftModelHolder::~DraftModelHolder() = default;

runtime::DraftModel& DraftModelHolder::model() { return *impl_->draft; }

std::unique_ptr<DraftModelHolder> load_draft_model(const DraftFlags& flags, runtime::DraftOptions& options,
                                                   const tokenizer::Tokenizer& model_tok, int64_t model_vocab,
                                                   Device device, int64_t max_context) {
  if (flags.model_dir().empty()) return nullptr;
  auto holder = std::make_unique<DraftModelHolder>(flags.model_dir(), model_tok, model_vocab, device, max_context);
  options.model = &holder->model();
  return holder;
}

std::string draft_summary(const runtime::GenerateResult& r) {
  if (r.draft_tokens == 0) return {};
  return fmt::format(", drafts: {} of {} kept in {} passes", r.accepted_draft_tokens, r.draft_tokens, r.decode_steps);
}

runtime::TextCallback stdout_stream(bool on) {
  if (!on) return {};
  return [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  };
}

struct ModelSession::Impl {
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<runtime::LlamaSession> cpu;
  // parallel > 1: the caches as one SequenceModel, and the pool of generations over them.
  std::unique_ptr<runtime::SequenceModel> sequences;
  std::unique_ptr<runtime::SequencePool> pool;
#if EXQ_HAVE_CUDA
  std::unique_ptr<runtime::cuda::CudaLlama> gpu;
  std::unique_ptr<runtime::cuda::CudaSession> gpu_session;
#endif
};

ModelSession::ModelSession(model::LlamaModel model, const tokenizer::Tokenizer& tok, Device device,
                           int64_t max_context, const DraftFlags* flags, runtime::DraftOptions* draft, int parallel)
    : impl_(std::make_unique<Impl>()), device_name_("cpu"), parallel_(parallel) {
  Impl& m = *impl_;
  EXQ_CHECK(parallel >= 1 && parallel <= kMaxParallel, "--parallel must be 1 to {}, got {}", kMaxParallel, parallel);
  if (parallel > 1 && flags && !flags->model_dir().empty())
    throw Error(fmt::format("--draft-model runs with --parallel 1 only (its one context cannot follow {} "
                            "generations at once)",
                            parallel));
  m.model = std::make_unique<model::LlamaModel>(std::move(model));
  max_context_ = std::min<int64_t>(max_context, m.model->config().context_length());
  const int64_t vocab = m.model->config().vocab_size;
  // After the model: its weights come first on the device.
  auto load_draft = [&] {
    if (flags && draft) draft_ = load_draft_model(*flags, *draft, tok, vocab, device, max_context_);
  };
#if EXQ_HAVE_CUDA
  if (device == Device::Cuda) {
    runtime::cuda::CudaOptions co;
    co.max_context = max_context_;
    co.sequences = parallel;
    m.gpu = std::make_unique<runtime::cuda::CudaLlama>(*m.model, co);
    if (m.model->cpu_moe_layers() == 0) m.model.reset();  // the weights live on the GPU now
    if (parallel > 1) {
      m.sequences = std::make_unique<runtime::cuda::CudaSequences>(*m.gpu);
      m.pool = std::make_unique<runtime::SequencePool>(*m.sequences, tok);
    } else {
      m.gpu_session = std::make_unique<runtime::cuda::CudaSession>(*m.gpu, tok);
    }
    device_name_ = fmt::format("cuda:{} ({})", co.device, m.gpu->device().name);
    load_draft();
    return;
  }
#endif
  if (parallel > 1) {
    m.sequences = std::make_unique<runtime::LlamaSequences>(*m.model, parallel, max_context_);
    m.pool = std::make_unique<runtime::SequencePool>(*m.sequences, tok);
  } else {
    m.cpu = std::make_unique<runtime::LlamaSession>(*m.model, tok, max_context_);
  }
  load_draft();
}

ModelSession::~ModelSession() = default;

runtime::GenerateResult ModelSession::generate(std::span<const int32_t> prompt,
                                               const runtime::GenerateOptions& options, bool reuse,
                                               const runtime::TextCallback& on_text) {
  if (impl_->pool) return impl_->pool->generate(prompt, options, reuse, on_text);
#if EXQ_HAVE_CUDA
  if (impl_->gpu_session) return impl_->gpu_session->generate(prompt, options, reuse, on_text);
#endif
  return impl_->cpu->generate(prompt, options, reuse, on_text);
}

}  // namespace exq::cli
