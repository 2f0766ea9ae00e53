// TEMPORARY placeholder until the ppl command lands.
#include "cli/commands.h"
#include "core/error.h"

namespace exq::cli {
void add_ppl(CLI::App& app) {
  auto* cmd = app.add_subcommand("ppl", "(not implemented yet)");
  cmd->callback([] { throw Error("ppl is not implemented yet"); });
}
}  // namespace exq::cli
