// TEMPORARY placeholder until the generate command lands.
#include "cli/commands.h"
#include "core/error.h"

namespace exq::cli {
void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "(not implemented yet)");
  cmd->callback([] { throw Error("generate is not implemented yet"); });
}
}  // namespace exq::cli
