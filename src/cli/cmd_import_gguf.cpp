// exq import-gguf FILE.gguf OUTDIR: a llama, qwen2 or qwen3 GGUF to an fp16 Hugging Face folder.
#include <fmt/format.h>

#include <chrono>

#include "cli/commands.h"
#include "core/error.h"
#include "io/gguf_import.h"

namespace exq::cli {

void add_import_gguf(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "import-gguf",
      "Convert a llama, qwen2 or qwen3 GGUF (F32/F16/BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q2_K-Q6_K, "
      "IQ4_NL/IQ4_XS) to an fp16 Hugging Face folder");
  auto gguf = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("gguf", *gguf, "input .gguf file")->required();
  cmd->add_option("outdir", *out, "output folder (created if missing)")->required();
  cmd->callback([gguf, out] {
    const auto t0 = std::chrono::steady_clock::now();
    const auto files = io::import_gguf(*gguf, *out);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& f : files) fmt::print("wrote {}\n", f.string());
    fmt::print("imported {} in {:.2f} s\n", *gguf, secs);
  });
}

}  // namespace exq::cli
