// TEMPORARY placeholder until the tokenize command lands.
#include "cli/commands.h"
#include "core/error.h"

namespace exq::cli {
void add_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "(not implemented yet)");
  cmd->callback([] { throw Error("tokenize is not implemented yet"); });
}
}  // namespace exq::cli
