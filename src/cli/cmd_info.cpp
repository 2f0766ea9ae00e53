// TEMPORARY placeholder until the info command lands.
#include "cli/commands.h"
#include "core/error.h"

namespace exq::cli {
void add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "(not implemented yet)");
  cmd->callback([] { throw Error("info is not implemented yet"); });
}
}  // namespace exq::cli
