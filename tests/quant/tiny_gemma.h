// The transformers-checked tiny gemma models (tests/model/data/gemma*_tiny) for conversion
// tests: copied with a byte-level tokenizer, converted by the exq binary at a given bpw and
// device, and the logits of two models compared. Header-only: the test glob compiles only
// *_test.cpp.
#pragma once

#include <sys/wait.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../tokenizer/tiny_tokenizers.h"
#include "model/llama.h"
#include "quant/measure.h"
#include "test_support.h"

namespace exq::quant::tiny_gemma {
namespace fs = std::filesystem;

inline fs::path data_dir(const std::string& name) {
  return fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / name;
}

// dir/model: the tiny gemma with a byte-level tokenizer (ids 3..258 of its 320); dir/cal.txt:
// 60,000 bytes of wiki text.
inline void copy_model(const std::string& name, const fs::path& dir) {
  const fs::path model = dir / "model";
  fs::create_directories(model);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(data_dir(name) / f, model / f);
  std::ofstream(model / "tokenizer.json") << tokenizer::test_json::llama_style().dump();
  std::ofstream(dir / "cal.txt") << test::read_file(test::shared_dir() / "data" / "wiki.utf8").substr(0, 60000);
}

// Converts dir/model at `bits` on `device` (4 rows of 64 tokens for both passes); the output
// folder, or an empty path after a failure.
inline fs::path convert(const fs::path& dir, double bits, const std::string& device = "cpu") {
  const fs::path exq = fs::path(EXQ_BINARY_DIR) / "exq";
  const fs::path work = dir / fmt::format("work_{}_{}", device, bits), log = work.string() + ".log";
  const std::string cmd = fmt::format(
      "{} quantize -i {} -o {} -b {} -c {} -mr 4 -ml 64 -r 4 -l 64 --threads 2 --device {} > {} 2>&1",
      exq.string(), (dir / "model").string(), work.string(), bits, (dir / "cal.txt").string(), device,
      log.string());
  const int status = std::system(cmd.c_str());
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  EXPECT_TRUE(ok) << test::read_file(log);
  return ok ? work / "out" : fs::path();
}

// Relative error of b's logits against a's over 40 tokens, windows as the models have them.
inline double logits_error(model::LlamaModel& a, model::LlamaModel& b) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 7919 + 17) % 320);
  model::KvCache ca = a.make_cache(40), cb = b.make_cache(40);
  const Tensor x = a.forward(ids, ca, true), y = b.forward(ids, cb, true);
  return relative_error(y, x);
}

// The logits error against the original of tests/model/data/NAME converted at each (bits,
// device) of `runs`, in order; `check` (optional) sees each output folder first. The work folder
// is removed after.
struct ConversionRun {
  double bits;
  std::string device = "cpu";
};
inline std::vector<double> conversion_errors(const std::string& name, const std::vector<ConversionRun>& runs,
                                             const std::function<void(const fs::path& model, const fs::path& out,
                                                                      const io::ModelConfig& c)>& check = {}) {
  const fs::path dir = test::temp_dir(std::string("quantize_") + name);
  copy_model(name, dir);
  model::LlamaModel original = model::LlamaModel::load(dir / "model");
  std::vector<double> err;
  for (const ConversionRun& r : runs) {
    const fs::path out = convert(dir, r.bits, r.device);
    if (out.empty()) {
      ADD_FAILURE() << name << " " << r.bits << " bpw on " << r.device << ": conversion failed";
      err.push_back(1e9);
      continue;
    }
    if (check) check(dir / "model", out, original.config());
    model::LlamaModel converted = model::LlamaModel::load(out);
    err.push_back(logits_error(original, converted));
    std::printf("  %s %.1f bpw on %s: logits relative error %.4f\n", name.c_str(), r.bits, r.device.c_str(),
                err.back());
  }
  fs::remove_all(dir);
  return err;
}

}  // namespace exq::quant::tiny_gemma
