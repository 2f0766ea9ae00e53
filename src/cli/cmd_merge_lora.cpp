// exq merge-lora -m BASE --lora ADAPTER [--lora-scaled ADAPTER SCALE] -o OUTDIR: PEFT LoRA adapters
// merged into a dense Hugging Face folder (llama.cpp's export-lora, peft's merge_and_unload).
#include <fmt/format.h>

#include <chrono>

#include "cli/commands.h"
#include "cli/run_util.h"
#include "core/error.h"
#include "model/lora.h"

namespace exq::cli {

namespace {

struct MergeArgs {
  std::string model;
  LoraFlags lora;
  std::string out;
};

void run_merge(const MergeArgs& a) {
  require_model_dir(a.model);
  if (!a.lora.any()) throw Error("give at least one --lora ADAPTER or --lora-scaled ADAPTER S");
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<model::LoraAdapter> adapters = load_lora_flags(a.lora);
  size_t pairs = 0;
  for (const auto& ad : adapters) pairs += ad.pairs.size();
  const auto files = model::merge_lora_folder(a.model, adapters, a.out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& f : files) fmt::print("wrote {}\n", f.string());
  fmt::print("merged {} adapter(s), {} weight(s), into {} in {:.2f} s\n", adapters.size(), pairs, a.out, secs);
}

}  // namespace

void add_merge_lora(CLI::App& app) {
  auto a = std::make_shared<MergeArgs>();
  auto* cmd = app.add_subcommand(
      "merge-lora", "Merge PEFT LoRA adapters into a dense (fp16 / bf16 / fp32) model folder, for quantize or "
                    "any other command");
  cmd->add_option("-m,--model", a->model, "base model folder (Hugging Face, not quantized)")->required();
  add_lora_flags(*cmd, a->lora);
  cmd->add_option("-o,--output", a->out, "output folder (created if missing)")->required();
  cmd->callback([a] { run_merge(*a); });
}

}  // namespace exq::cli
