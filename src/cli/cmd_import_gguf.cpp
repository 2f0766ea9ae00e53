// TEMPORARY placeholder until the import_gguf command lands.
#include "cli/commands.h"
#include "core/error.h"

namespace exq::cli {
void add_import_gguf(CLI::App& app) {
  auto* cmd = app.add_subcommand("import-gguf", "(not implemented yet)");
  cmd->callback([] { throw Error("import-gguf is not implemented yet"); });
}
}  // namespace exq::cli
