// Subcommand registration. Each cli/cmd_*.cpp adds one subcommand whose callback runs the
// work; errors propagate as exq::Error to main(), which prints one line and exits 2.
#pragma once

#include <CLI/CLI.hpp>

namespace exq::cli {

void register_commands(CLI::App& app);
int exit_code();           // set by a command that finishes with a non-error failure
void set_exit_code(int code);

void add_info(CLI::App& app);
void add_import_gguf(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_generate(CLI::App& app);
void add_chat(CLI::App& app);
void add_ppl(CLI::App& app);
void add_quantize(CLI::App& app);
void add_serve(CLI::App& app);
void add_embed(CLI::App& app);
void add_bench(CLI::App& app);
void add_merge_lora(CLI::App& app);

}  // namespace exq::cli
