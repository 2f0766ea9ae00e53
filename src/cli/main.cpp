// exq command line: one binary, subcommands registered by cli/commands.h.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <string_view>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"exq: convert Hugging Face models to EXL2 and run them"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "exq 0.1.0");
  // One line per usage error, like exq::Error below.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("error: {}\n", e.what());
  });
  exq::cli::register_commands(app);
  // llama.cpp's multi-letter short flag, which CLI11 cannot name: -np N is --parallel N (serve
  // and bench only, so that a prompt "-np" stays one).
  static char kParallel[] = "--parallel";
  if (argc > 1 && (std::string_view(argv[1]) == "serve" || std::string_view(argv[1]) == "bench"))
    for (int i = 2; i < argc; ++i)
      if (std::string_view(argv[i]) == "-np") argv[i] = kParallel;
  // -ctk / -ctv TYPE: --cache-type-k / -v, where a cache type's name follows (so that a prompt
  // "-ctk" stays one).
  static char kCacheK[] = "--cache-type-k", kCacheV[] = "--cache-type-v";
  const auto cache_type_name = [](std::string_view t) {
    for (const char* n : {"f16", "f32", "bf16", "q8", "q8_0", "q4", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"})
      if (t == n) return true;
    return false;
  };
  for (int i = 2; i + 1 < argc; ++i)
    if (cache_type_name(argv[i + 1])) {
      if (std::string_view(argv[i]) == "-ctk") argv[i] = kCacheK;
      if (std::string_view(argv[i]) == "-ctv") argv[i] = kCacheV;
    }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const exq::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  return exq::cli::exit_code();
}
