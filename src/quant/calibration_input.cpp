#include "quant/calibration_input.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "quant/module_forward.h"

namespace exq::quant {
namespace fs = std::filesystem;

namespace {

std::string jsonl_text(const std::string& raw, const fs::path& path) {
  std::string out;
  std::istringstream in(raw);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("calibration: line {} is not JSON: {}", lineno, e.what()),
                  ErrorContext{.file = path.string()});
    }
    if (!j.is_object() || !j.contains("text") || !j.at("text").is_string())
      throw Error(fmt::format("calibration: line {} has no string field \"text\"", lineno),
                  ErrorContext{.file = path.string()});
    if (!out.empty()) out += "\n\n";
    out += j.at("text").get<std::string>();
  }
  return out;
}

// Uniform double in [0, 1) from 53 bits: the same on every standard library.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

int32_t sample_token(const float* logits, int64_t vocab, double temperature, std::mt19937_64& rng) {
  const float mx = *std::max_element(logits, logits + vocab);
  std::vector<double> p(static_cast<size_t>(vocab));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += p[i] = std::exp((logits[i] - mx) / temperature);
  double u = uniform01(rng) * sum;
  for (int64_t i = 0; i < vocab; ++i) {
    u -= p[i];
    if (u < 0) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(vocab - 1);
}

constexpr const char* kSeedPrompts[] = {
    "The history of the city begins in the early medieval period, when",
    "def parse_config(path):\n    \"\"\"Read a configuration file and",
    "Once upon a time, in a small village by the sea, there lived",
    "In this paper we study the convergence of iterative methods for",
};

}  // namespace

CalibrationRows rows_from_files(const tokenizer::Tokenizer& tok, const std::vector<fs::path>& files,
                                int64_t rows, int64_t length, const ProgressFn& progress) {
  EXQ_CHECK(!files.empty(), "calibration: no files given");
  EXQ_CHECK(rows > 0 && length > 0, "calibration: bad request of {} rows x {} tokens", rows, length);
  std::vector<std::vector<int32_t>> ids(files.size());
  std::vector<int64_t> next(files.size(), 0), available(files.size(), 0);
  int64_t total = 0, bytes_done = 0, bytes_total = 0;
  for (const fs::path& f : files) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (!ec) bytes_total += static_cast<int64_t>(size);
  }
  if (progress) progress(0, bytes_total);
  for (size_t f = 0; f < files.size(); ++f) {
    std::string text = io::read_file(files[f], "calibration text");
    bytes_done += static_cast<int64_t>(text.size());
    if (files[f].extension() == ".jsonl") text = jsonl_text(text, files[f]);
    try {
      ids[f] = tok.encode(text, /*add_special_tokens=*/false);
    } catch (const Error& e) {
      throw e.with_file(files[f].string());
    }
    available[f] = static_cast<int64_t>(ids[f].size()) / length;
    total += available[f];
    if (progress) progress(bytes_done, std::max(bytes_done, bytes_total));
  }
  if (total < rows) {
    std::string detail;
    for (size_t f = 0; f < files.size(); ++f)
      detail += fmt::format("{}{}: {} tokens", detail.empty() ? "" : ", ", files[f].string(),
                            ids[f].size());
    throw Error(fmt::format("calibration: the files give {} rows of {} tokens, {} needed ({})",
                            total, length, rows, detail));
  }
  CalibrationRows out;
  out.rows = rows;
  out.length = length;
  out.ids.reserve(static_cast<size_t>(rows * length));
  size_t f = 0;
  for (int64_t r = 0; r < rows; ++r) {
    while (next[f] >= available[f]) f = (f + 1) % files.size();
    const int32_t* src = ids[f].data() + next[f] * length;
    out.ids.insert(out.ids.end(), src, src + length);
    out.sources.push_back(files[f].filename().string());
    ++next[f];
    f = (f + 1) % files.size();
  }
  return out;
}

CalibrationRows self_sampled_rows(model::LlamaModel& model, const tokenizer::Tokenizer& tok,
                                  int64_t rows, int64_t length, uint64_t seed,
                                  const ProgressFn& progress) {
  EXQ_CHECK(rows > 0 && length > 0, "calibration: bad request of {} rows x {} tokens", rows, length);
  const int64_t vocab = model.config().vocab_size;
  const int64_t n_random = rows >= 4 ? 2 : 0;
  const int64_t n_text = rows - n_random;
  const int64_t pool_size = std::min<int64_t>(n_text, 4);
  const int64_t text_len = std::min<int64_t>(length, 256);
  std::mt19937_64 rng(seed);

  std::vector<std::vector<int32_t>> pool;
  const int64_t pool_tokens = pool_size * text_len;
  if (progress) progress(0, pool_tokens);
  for (int64_t p = 0; p < pool_size; ++p) {
    std::vector<int32_t> seq;
    if (model.config().bos_token_id) seq.push_back(*model.config().bos_token_id);
    for (int32_t id : tok.encode(kSeedPrompts[p % std::size(kSeedPrompts)], false)) seq.push_back(id);
    if (static_cast<int64_t>(seq.size()) > text_len) seq.resize(static_cast<size_t>(text_len));
    model::KvCache cache = model.make_cache(text_len);
    Tensor logits = model.forward(seq, cache);
    while (static_cast<int64_t>(seq.size()) < text_len) {
      const int32_t next = sample_token(logits.data<float>(), vocab, 0.8, rng);
      seq.push_back(next);
      if (progress) progress(p * text_len + static_cast<int64_t>(seq.size()), pool_tokens);
      if (static_cast<int64_t>(seq.size()) == text_len) break;
      const int32_t one[1] = {next};
      logits = model.forward(one, cache);
    }
    pool.push_back(std::move(seq));
    if (progress) progress((p + 1) * text_len, pool_tokens);
  }

  CalibrationRows out;
  out.rows = rows;
  out.length = length;
  for (int64_t r = 0; r < n_text; ++r) {
    int64_t filled = 0;
    for (int64_t p = r % pool_size; filled < length; p = (p + 1) % pool_size) {
      const auto& seq = pool[static_cast<size_t>(p)];
      const int64_t take = std::min<int64_t>(length - filled, static_cast<int64_t>(seq.size()));
      out.ids.insert(out.ids.end(), seq.begin(), seq.begin() + take);
      filled += take;
    }
    out.sources.push_back("sampled");
  }
  for (int64_t r = 0; r < n_random; ++r) {
    for (int64_t t = 0; t < length; ++t)
      out.ids.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
    out.sources.push_back("random");
  }
  return out;
}

Tensor embed_calibration_rows(const TensorView& embed_table, std::span<const int32_t> ids,
                              int64_t rows, int64_t length, const ProgressFn& progress,
                              float scale) {
  EXQ_CHECK(embed_table.rank() == 2 && rows > 0 && length > 0 &&
                static_cast<int64_t>(ids.size()) == rows * length,
            "calibration: {} ids for {} rows x {} tokens", ids.size(), rows, length);
  const int64_t hidden = embed_table.dim(1);
  Tensor out(DType::F32, {rows, length, hidden});
  if (progress) progress(0, rows);
  for (int64_t r = 0; r < rows; ++r) {
    const Tensor row = embed_rows(embed_table, ids.subspan(static_cast<size_t>(r * length),
                                                           static_cast<size_t>(length)),
                                  1, length, scale);
    std::copy(row.data<float>(), row.data<float>() + length * hidden,
              out.data<float>() + r * length * hidden);
    if (progress) progress(r + 1, rows);
  }
  return out;
}

std::string calibration_dataset_name(const std::vector<std::string>& files) {
  if (files.empty()) return "(self-sampled)";
  std::string out;
  for (const std::string& f : files) out += (out.empty() ? "" : ", ") + fs::path(f).filename().string();
  return out;
}

}  // namespace exq::quant
