#include "cli/commands.h"

namespace exq::cli {
namespace {
int g_exit_code = 0;
}

int exit_code() { return g_exit_code; }
void set_exit_code(int code) { g_exit_code = code; }

void register_commands(CLI::App& app) {
  add_info(app);
  add_import_gguf(app);
  add_tokenize(app);
  add_generate(app);
  add_chat(app);
  add_ppl(app);
  add_quantize(app);
  add_serve(app);
  add_embed(app);
  add_bench(app);
  add_merge_lora(app);
}

}  // namespace exq::cli
