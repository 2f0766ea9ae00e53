// Paths to shared test data and the real test model, resolved the same way in every test.
#pragma once

#include <filesystem>
#include <string>

namespace exq::test {

// ../shared next to the checkout (or $EXQ_SHARED).
std::filesystem::path shared_dir();
// The SmolLM2 GGUF ($EXQ_TEST_GGUF) and its fp16 HF import ($EXQ_TEST_MODEL), both set by
// scripts/test.sh. Empty when unset: call require_* which skips locally and fails under CI.
std::filesystem::path test_gguf();
std::filesystem::path test_model();
// A fresh empty temporary folder for one test.
std::filesystem::path temp_dir(const std::string& name);
std::string read_file(const std::filesystem::path& path);

}  // namespace exq::test

// Skips the test when the model is not available, except under CI (CI=true), where it fails.
#define EXQ_REQUIRE_PATH(path_expr, what)                                                   \
  do {                                                                                      \
    if ((path_expr).empty()) {                                                              \
      if (std::getenv("CI")) FAIL() << what << " is missing (run scripts/test.sh)";         \
      GTEST_SKIP() << what << " not available: run scripts/test.sh";                         \
    }                                                                                       \
  } while (0)
#define EXQ_REQUIRE_MODEL() EXQ_REQUIRE_PATH(::exq::test::test_model(), "test model (EXQ_TEST_MODEL)")
#define EXQ_REQUIRE_GGUF() EXQ_REQUIRE_PATH(::exq::test::test_gguf(), "test GGUF (EXQ_TEST_GGUF)")
