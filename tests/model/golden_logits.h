// Logits of a model against a transformers golden (golden.json: prompt_ids, logits), as the
// scripts/*_golden.py scripts write them into tests/model/data/.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <vector>

#include "model/llama.h"
#include "test_support.h"

namespace exq::test {

inline std::filesystem::path model_data_dir(const char* name) {
  return std::filesystem::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / name;
}

// Max abs difference of the model's logits for the golden's prompt, fed in `chunks` through a
// cache of the prompt's length; *max_abs: the largest golden logit.
inline double golden_logit_error(model::LlamaModel& m, const nlohmann::json& g, const std::vector<size_t>& chunks,
                                 double* max_abs = nullptr) {
  const auto ids = g["prompt_ids"].get<std::vector<int32_t>>();
  const int64_t vocab = m.config().vocab_size;
  model::KvCache cache = m.make_cache(static_cast<int64_t>(ids.size()));
  double err = 0, top = 0;
  size_t t = 0;
  for (size_t n : chunks) {
    const Tensor p = m.forward(std::span(ids).subspan(t, n), cache, true);
    for (int64_t r = 0; r < p.dim(0); ++r, ++t)
      for (int64_t i = 0; i < vocab; ++i) {
        const double w = g["logits"][t][static_cast<size_t>(i)].get<double>();
        err = std::max(err, std::fabs(p.data<float>()[r * vocab + i] - w));
        top = std::max(top, std::fabs(w));
      }
  }
  EXPECT_EQ(t, ids.size());
  if (max_abs) *max_abs = top;
  return err;
}

// The same for tests/model/data/NAME (its model and golden.json).
inline double golden_logit_error(const char* name, const std::vector<size_t>& chunks) {
  model::LlamaModel m = model::LlamaModel::load(model_data_dir(name));
  return golden_logit_error(m, nlohmann::json::parse(read_file(model_data_dir(name) / "golden.json")), chunks);
}

// The golden of each model in `names` fed in one pass, as 6 + 1 + 1 + 1 + 5 and one token at a
// time (the 14-token prompts of the scripts): each max abs error at most `bound`.
inline void expect_goldens(std::initializer_list<const char*> names, double bound) {
  for (const char* name : names)
    for (const auto& chunks :
         {std::vector<size_t>{14}, std::vector<size_t>{6, 1, 1, 1, 5}, std::vector<size_t>(14, 1)}) {
      const double err = golden_logit_error(name, chunks);
      std::printf("  %s in %zu chunk(s): max abs logit error %.3g\n", name, chunks.size(), err);
      EXPECT_LE(err, bound) << name;
    }
}

// Max abs difference between one token of each of two sequences run in one pass (forward_batch,
// as exq serve -np runs them) and the same tokens run alone, over 7 steps.
inline double batch_rows_error(model::LlamaModel& m) {
  const std::vector<int32_t> a = {5, 9, 17, 33, 2, 71, 8}, b = {250, 3, 3, 12, 99, 4, 61};
  const int64_t vocab = m.config().vocab_size;
  model::KvCache ca = m.make_cache(16), cb = m.make_cache(16), sa = m.make_cache(16), sb = m.make_cache(16);
  double err = 0;
  for (size_t t = 0; t < a.size(); ++t) {
    model::KvCache* caches[] = {&ca, &cb};
    const int32_t both[] = {a[t], b[t]};
    const Tensor batch = m.forward_batch(both, caches);
    const Tensor la = m.forward(std::span(a).subspan(t, 1), sa, true);
    const Tensor lb = m.forward(std::span(b).subspan(t, 1), sb, true);
    for (int64_t i = 0; i < vocab; ++i) {
      err = std::max(err, std::fabs(static_cast<double>(batch.data<float>()[i] - la.data<float>()[i])));
      err = std::max(err, std::fabs(static_cast<double>(batch.data<float>()[vocab + i] - lb.data<float>()[i])));
    }
  }
  return err;
}

}  // namespace exq::test
