// Speculative decoding by prompt lookup (runtime/draft.h) on a real model, on the CPU or a GPU:
//   - three chat prompts (rename a function in code, copy a paragraph, an open question, which
//     repeats little), each generated greedily with drafts off and with --draft-max 4 and 7:
//     decode tokens/s (wall clock, as exq generate reports it), passes, drafts checked and kept,
//     and whether the tokens equal those of the generation without drafts; the code prompt also
//     with the code itself as the prediction (--prediction-file, OpenAI's predicted outputs);
//   - with --draft-model DIR: the same prompts with a draft model's guesses (--draft-max 7, for
//     each --p-min value), also the draft model's own cost: milliseconds per token it ran;
//   - what one pass of T = 1..8 tokens costs after a 256-token context, as a multiple of a
//     single-token step (median of --reps; on the GPU timed with CUDA events, the single step
//     replaying the decode graph and passes of T > 1 running eagerly).
// Usage: speculative_bench --model DIR [--device cpu|cuda] [--max-tokens N] [--reps N]
//          [--draft-model DIR [--p-min P,P,...]] [--json FILE]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chat/template.h"
#include "core/error.h"
#include "model/llama.h"
#include "runtime/draft_model.h"
#include "runtime/generation_config.h"
#include "runtime/model_step.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"
#if EXQ_HAVE_CUDA
#include "backend/cuda/stream.h"
#include "runtime/cuda/cuda_draft.h"
#include "runtime/cuda/cuda_generate.h"
#endif

namespace exq {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const char* kCode = R"(def load_config(path):
    with open(path) as f:
        data = json.load(f)
    if "model_type" not in data:
        raise ValueError("missing model_type in " + path)
    return data


def count_parameters(config):
    hidden = config["hidden_size"]
    layers = config["num_hidden_layers"]
    inter = config["intermediate_size"]
    return layers * (4 * hidden * hidden + 3 * hidden * inter)
)";

const char* kParagraph =
    "Romania elected its members of the European Parliament for the first time on 25 November 2007; the "
    "election was initially scheduled for 13 May, but the prime minister postponed it for domestic political "
    "reasons. A referendum on a new voting system for national parliamentary elections was held on the same day.";

struct Case {
  std::string name, message, prediction;
};

std::vector<Case> cases() {
  return {{"code_rename",
           std::string("Rewrite this Python code with the function load_config renamed to read_config. Output only "
                       "the code.\n\n") +
               kCode,
           ""},
          {"code_rename_predicted",
           std::string("Rewrite this Python code with the function load_config renamed to read_config. Output only "
                       "the code.\n\n") +
               kCode,
           kCode},
          {"copy_paragraph", std::string("Repeat this paragraph exactly:\n\n") + kParagraph, ""},
          {"open_question", "Write a short story about a lighthouse keeper who finds a message in a bottle.", ""}};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct Backend {
  model::LlamaModel& model;
  const tokenizer::Tokenizer& tok;
  bool cuda = false;
#if EXQ_HAVE_CUDA
  std::unique_ptr<runtime::cuda::CudaLlama> gpu, draft_gpu;
#endif
  std::unique_ptr<model::LlamaModel> draft_weights;
  std::unique_ptr<runtime::LlamaStep> draft_step;
  std::unique_ptr<runtime::DraftModel> draft;

  void load_draft(const std::string& dir, int64_t ctx) {
    draft_weights = std::make_unique<model::LlamaModel>(model::LlamaModel::load(dir));
    runtime::check_draft_tokenizer(tok, tokenizer::Tokenizer::from_file(std::filesystem::path(dir) / "tokenizer.json"),
                                   dir);
#if EXQ_HAVE_CUDA
    if (cuda) {
      runtime::cuda::CudaOptions co;
      co.max_context = ctx;
      draft_gpu = std::make_unique<runtime::cuda::CudaLlama>(*draft_weights, co);
      draft = std::make_unique<runtime::cuda::CudaDraftModel>(*draft_gpu, model.config().vocab_size);
      return;
    }
#endif
    draft_step = std::make_unique<runtime::LlamaStep>(*draft_weights, ctx);
    draft = std::make_unique<runtime::StepDraftModel>(*draft_step, model.config().vocab_size);
  }

  runtime::GenerateResult generate(std::span<const int32_t> prompt, const runtime::GenerateOptions& o) {
#if EXQ_HAVE_CUDA
    if (cuda) return runtime::cuda::generate_text_cuda(*gpu, tok, prompt, o);
#endif
    return runtime::generate_text(model, tok, prompt, o);
  }

  // Milliseconds of one pass of T tokens after `ctx` tokens of context: median of reps.
  std::vector<double> pass_ms(std::span<const int32_t> ctx, int max_t, int reps) {
    std::vector<double> out;
#if EXQ_HAVE_CUDA
    if (cuda) {
      runtime::cuda::CudaLlama& g = *gpu;
      g.reset();
      g.forward_last(ctx);
      cuda::Event a, b;
      for (int T = 1; T <= max_t; ++T) {
        std::vector<double> ms;
        for (int r = 0; r < reps + 3; ++r) {
          g.truncate(static_cast<int64_t>(ctx.size()));
          const std::span<const int32_t> toks = ctx.first(static_cast<size_t>(T));
          a.record(g.stream());
          if (T == 1)
            g.forward_last(toks);
          else
            g.forward_rows(toks);
          b.record(g.stream());
          b.synchronize();
          if (r >= 3) ms.push_back(cuda::Event::elapsed_ms(a, b));
        }
        out.push_back(median(ms));
      }
      return out;
    }
#endif
    runtime::LlamaStep step(model, static_cast<int64_t>(ctx.size()) + max_t);
    step.forward(ctx);
    for (int T = 1; T <= max_t; ++T) {
      std::vector<double> ms;
      for (int r = 0; r < reps + 1; ++r) {
        step.truncate(static_cast<int64_t>(ctx.size()));
        const std::span<const int32_t> toks = ctx.first(static_cast<size_t>(T));
        const auto t0 = Clock::now();
        if (T == 1)
          step.forward(toks);
        else
          step.forward_all(toks);
        if (r >= 1) ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      out.push_back(median(ms));
    }
    return out;
  }
};

int run(int argc, char** argv) {
  std::string dir, device = "cpu", json_path, draft_dir;
  std::vector<float> p_mins{0.75f};
  int64_t max_tokens = 160;
  int reps = 9;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      EXQ_CHECK(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--model") dir = next();
    else if (a == "--device") device = next();
    else if (a == "--max-tokens") max_tokens = std::stoll(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--json") json_path = next();
    else if (a == "--draft-model") draft_dir = next();
    else if (a == "--p-min") {
      p_mins.clear();
      std::string list = next();
      for (size_t at = 0; at != std::string::npos;) {
        const size_t comma = list.find(',', at);
        p_mins.push_back(std::stof(list.substr(at, comma == std::string::npos ? comma : comma - at)));
        at = comma == std::string::npos ? comma : comma + 1;
      }
    }
    else throw Error(fmt::format("unknown argument {}", a));
  }
  EXQ_CHECK(!dir.empty(), "--model DIR is required");
  EXQ_CHECK(device == "cpu" || device == "cuda", "--device is cpu or cuda");
  model::LlamaModel model = model::LlamaModel::load(dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(std::filesystem::path(dir) / "tokenizer.json");
  const tokenizer::TokenizerConfig tc = tokenizer::load_tokenizer_config(dir);
  const runtime::GenerationConfig gen = runtime::load_generation_config(dir);
  const chat::Template tmpl(tc.chat_template);
  Backend be{model, tok};
  json out = {{"model", dir}, {"device", device}, {"max_tokens", max_tokens}};
  if (device == "cuda") {
#if EXQ_HAVE_CUDA
    be.cuda = true;
    runtime::cuda::CudaOptions co;
    co.max_context = 2048;
    be.gpu = std::make_unique<runtime::cuda::CudaLlama>(model, co);
    out["gpu"] = be.gpu->device().name;
#else
    throw Error("this build has no CUDA");
#endif
  }
  if (!draft_dir.empty()) {
    be.load_draft(draft_dir, 2048);
    out["draft_model"] = draft_dir;
  }

  json rows = json::array();
  for (const Case& c : cases()) {
    const json messages = json::array({{{"role", "user"}, {"content", c.message}}});
    const std::vector<int32_t> prompt =
        tok.encode(chat::render_chat(tmpl, messages, true, tc.bos_token, tc.eos_token), false);
    runtime::GenerateOptions o;
    o.max_new_tokens = max_tokens;
    o.sampler.temperature = 0.0f;
    o.eos_token_ids = runtime::stop_token_ids(gen, model.config(), tok, tc.eos_token);
    be.generate(prompt, o);  // warm-up
    std::vector<int32_t> base_ids;
    // Lookup drafts of 0, 4, 7 guesses, then the draft model's (7 guesses) for each p_min.
    std::vector<std::pair<int, float>> settings{{0, -1.0f}, {4, -1.0f}, {7, -1.0f}};
    if (be.draft)
      for (const float pm : p_mins) settings.emplace_back(7, pm);
    for (const auto& [draft, p_min] : settings) {
      if (draft == 0 && !c.prediction.empty()) continue;
      o.draft.max_tokens = draft;
      o.draft.model = p_min >= 0.0f ? be.draft.get() : nullptr;
      o.draft.p_min = std::max(p_min, 0.0f);
      const int64_t draft_ran = be.draft ? be.draft->tokens_run() : 0;
      const double draft_s0 = be.draft ? be.draft->seconds() : 0.0;
      double decode_s = 0.0;
      if (!c.prediction.empty()) o.prediction = tok.encode(c.prediction, false);
      std::vector<double> tps;
      runtime::GenerateResult r;
      for (int rep = 0; rep < 3; ++rep) {
        r = be.generate(prompt, o);
        tps.push_back(r.decode_tokens_per_s());
        decode_s += r.decode_seconds;
      }
      // Tokens the draft model ran over the three generations (its catch-ups and guesses).
      const int64_t draft_tokens_run = be.draft ? be.draft->tokens_run() - draft_ran : 0;
      if (draft == 0) base_ids = r.ids;
      if (base_ids.empty()) {  // the predicted case: its baseline is the case before
        runtime::GenerateOptions p = o;
        p.draft.max_tokens = 0;
        p.prediction.clear();
        base_ids = be.generate(prompt, p).ids;
      }
      json row = {{"case", c.name},
                        {"draft_source", p_min >= 0.0f ? "model" : (draft > 0 ? "lookup" : "none")},
                        {"draft_max", draft},
                        {"prompt_tokens", r.prompt_tokens},
                        {"generated_tokens", r.generated_tokens},
                        {"decode_tokens_per_s", median(tps)},
                        {"passes", r.decode_steps},
                        {"draft_tokens", r.draft_tokens},
                        {"accepted_draft_tokens", r.accepted_draft_tokens},
                        {"same_tokens_as_without_drafts", r.ids == base_ids}};
      if (p_min >= 0.0f) {
        const double drafting = be.draft->seconds() - draft_s0;
        row["p_min"] = p_min;
        row["draft_model_tokens_run"] = draft_tokens_run / 3;
        row["draft_model_ms_per_token"] = draft_tokens_run > 0 ? 1e3 * drafting / draft_tokens_run : 0.0;
        row["drafting_share_of_decode"] = decode_s > 0.0 ? drafting / decode_s : 0.0;
      }
      std::printf("%-22s %s draft %d%s: %6.1f tok/s, %3ld tokens in %3ld passes, drafts %ld of %ld kept, same tokens: %s\n",
                  c.name.c_str(), p_min >= 0.0f ? "model " : "lookup", draft,
                  p_min >= 0.0f ? fmt::format(" p_min {:.2f}", p_min).c_str() : "", median(tps),
                  static_cast<long>(r.generated_tokens),
                  static_cast<long>(r.decode_steps), static_cast<long>(r.accepted_draft_tokens),
                  static_cast<long>(r.draft_tokens), r.ids == base_ids ? "yes" : "NO");
      rows.push_back(row);
    }
  }
  out["generations"] = rows;

  // Any 256 ids of real text serve as the context.
  std::string text;
  for (int i = 0; i < 8; ++i) text += kParagraph;
  std::vector<int32_t> ctx = tok.encode(text, false);
  ctx.resize(std::min<size_t>(ctx.size(), 256));
  const std::vector<double> ms = be.pass_ms(ctx, 8, reps);
  json passes = json::array();
  for (size_t t = 0; t < ms.size(); ++t) {
    std::printf("pass of %zu tokens: %.3f ms (%.2fx a single step)\n", t + 1, ms[t], ms[t] / ms[0]);
    passes.push_back({{"tokens", t + 1}, {"ms", ms[t]}, {"x_single_step", ms[t] / ms[0]}});
  }
  out["passes"] = passes;
  out["context_tokens"] = ctx.size();
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
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
