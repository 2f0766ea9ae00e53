#include "test_support.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace exq::test {
namespace fs = std::filesystem;

fs::path shared_dir() {
  if (const char* env = std::getenv("EXQ_SHARED")) return env;
  return fs::path(EXQ_SOURCE_DIR).parent_path() / "shared";
}

static fs::path env_path(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v || !fs::exists(v)) return {};
  return v;
}

fs::path test_gguf() { return env_path("EXQ_TEST_GGUF"); }
fs::path test_model() { return env_path("EXQ_TEST_MODEL"); }

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("exq_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace exq::test
