// exq's CPU measurement against exllamav2's on SmolLM2 (fixtures/exl2/smollm2_measurement.json):
// per measured module, the mean error over the option table (ours / exllamav2's) and the
// Spearman correlation of the per-row errors. Prints one JSON object.
//
//   measure_quality_bench [--model DIR] [--data DIR] [--fixture FILE] [--rows 16] [--length 2048]
//                         [--layers 0,15,29] [--mix cycle|exllamav2|exllamav2-16] [--noncausal]
//                         [--out measurement.json]
// --mix cycle: rows cycle through wiki, c4, code, multilingual, technical, tiny, random
// (calibration_rows); exllamav2: exllamav2's 19-row measurement layout (--rows ignored);
// exllamav2-16: that layout without the last wiki, code and multilingual row (16 rows, the
// issue's count, with every source of exllamav2's mix).
// --noncausal: MeasureOptions::causal = false, the forward exllamav2 0.3.2 recorded the fixture
// with (attention without the mask, docs/quality.md); carried layers run it too.
// Defaults: --model $EXQ_TEST_MODEL, --data and --fixture under ../shared of the checkout.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/hf_config.h"
#include "quant/calibration.h"
#include "quant/measure_layers.h"
#include "quant/measurement.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using exq::quant::ModuleResult;

struct Args {
  fs::path model, data, fixture, out;
  int64_t rows = 16, length = 2048;
  std::vector<int64_t> layers = {0, 15, 29};
  std::string mix = "cycle";
  bool causal = true;
};

Args parse_args(int argc, char** argv) {
  Args a;
  const fs::path shared = fs::path(EXQ_SOURCE_DIR).parent_path() / "shared";
  if (const char* m = std::getenv("EXQ_TEST_MODEL")) a.model = m;
  a.data = shared / "data";
  a.fixture = shared / "fixtures" / "exl2" / "smollm2_measurement.json";
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--noncausal") {
      a.causal = false;
      continue;
    }
    if (i + 1 >= argc) throw exq::Error(fmt::format("missing value for {}", k));
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--data") a.data = v;
    else if (k == "--fixture") a.fixture = v;
    else if (k == "--out") a.out = v;
    else if (k == "--mix") a.mix = v;
    else if (k == "--rows") a.rows = std::stoll(v);
    else if (k == "--length") a.length = std::stoll(v);
    else if (k == "--layers") {
      a.layers.clear();
      std::stringstream ss(v);
      for (std::string item; std::getline(ss, item, ',');) a.layers.push_back(std::stoll(item));
    } else {
      throw exq::Error(fmt::format("unknown option {}", k));
    }
  }
  if (a.model.empty()) throw exq::Error("no model: pass --model or set EXQ_TEST_MODEL");
  if (a.mix != "cycle" && a.mix != "exllamav2" && a.mix != "exllamav2-16")
    throw exq::Error("--mix: cycle, exllamav2 or exllamav2-16");
  return a;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    const double t_start = now_s();
    const auto tok = exq::tokenizer::Tokenizer::from_file(args.model / "tokenizer.json");
    const auto config = exq::io::load_model_config(args.model);
    const int32_t vocab = static_cast<int32_t>(config.vocab_size);
    auto cal =
        args.mix == "cycle"
            ? exq::quant::calibration_rows(tok, args.data, args.rows, args.length, vocab)
            : exq::quant::exllamav2_measurement_rows(tok, args.data, args.length, vocab,
                                                     config.bos_token_id.value_or(1),
                                                     config.eos_token_ids.empty() ? 2 : config.eos_token_ids[0]);
    if (args.mix == "exllamav2-16") {
      for (const char* source : {"wiki", "code", "multilingual"}) {
        int64_t last = -1;
        for (int64_t r = 0; r < cal.rows; ++r)
          if (cal.sources[static_cast<size_t>(r)].starts_with(source)) last = r;
        if (last < 0) throw exq::Error(fmt::format("exllamav2-16: no {} row", source));
        cal.sources.erase(cal.sources.begin() + last);
        cal.ids.erase(cal.ids.begin() + last * cal.length, cal.ids.begin() + (last + 1) * cal.length);
        --cal.rows;
      }
    }
    const double t_tok = now_s() - t_start;
    exq::quant::MeasureOptions options;
    options.causal = args.causal;
    const auto result = exq::quant::measure_layers(
        args.model, cal, args.layers, options, [&](const ModuleResult& r) {
          std::fprintf(stderr, "%s: mean error %.5f (%.0f s)\n", r.measurement.key.c_str(),
                       [&] {
                         double s = 0;
                         for (double e : r.errors) s += e;
                         return s / static_cast<double>(r.errors.size());
                       }(),
                       now_s() - t_start);
        });
    const auto ref = exq::quant::read_measurement(args.fixture);

    nlohmann::ordered_json j;
    j["model"] = args.model.string();
    j["threads"] = exq::num_threads();
    j["calibration"] = {{"rows", cal.rows}, {"length", args.length}, {"mix", args.mix},
                        {"sources", cal.describe()},
                        {"data", args.data.string()}};
    j["causal"] = args.causal;
    j["modules"] = nlohmann::ordered_json::array();
    bool pass = true;
    for (const ModuleResult& r : result.modules) {
      const auto* theirs = ref.find(r.measurement.key);
      if (!theirs) throw exq::Error(fmt::format("{} not in {}", r.measurement.key, args.fixture.string()));
      const auto c = exq::quant::compare_measurements(r.measurement, *theirs);
      std::vector<double> ref_errors;
      for (const auto& row : *theirs->rows) ref_errors.push_back(1.0 - row.accuracy);
      const bool ok = c.ratio <= 1.10 && c.spearman >= 0.9;
      pass = pass && ok;
      const auto& t = r.timing;
      j["modules"].push_back(
          {{"key", r.measurement.key}, {"mean_error", c.mean_error},
           {"exllamav2_mean_error", c.ref_mean_error}, {"ratio", c.ratio},
           {"spearman", c.spearman}, {"pass", ok}, {"errors", r.errors},
           {"exllamav2_errors", ref_errors},
           {"timing_s",
            {{"reference", t.reference_s}, {"hessian", t.hessian_s}, {"prepare", t.prepare_s},
             {"gptq", t.gptq_s}, {"gptq_runs", t.gptq_runs}, {"test", t.test_s}}}});
    }
    j["pass"] = pass;
    j["timing_s"] = {{"tokenize", t_tok}, {"carry_layers", result.carry_s},
                     {"total", now_s() - t_start}};
    if (!args.out.empty()) exq::quant::write_measurement(args.out, result.measurement());
    std::printf("%s\n", j.dump(2).c_str());
    return pass ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "measure_quality_bench: %s\n", e.what());
    return 2;
  }
}
