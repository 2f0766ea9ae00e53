#include "quant/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "core/error.h"

namespace exq::quant {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(fmt::format("calibration: cannot read {}", path.string()));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Wikipedia dumps wrap articles in <doc ...> ... </doc> lines; keep only the article text.
std::string strip_doc_tags(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string_view line(text.data() + pos, end - pos);
    if (line.starts_with("<doc ") || line.starts_with("</doc>")) {
      if (line.starts_with("</doc>")) out += '\n';
    } else {
      out.append(line);
    }
    pos = end;
  }
  return out;
}

// Tokens of a prefix of `text` (cut at a line end, so UTF-8 stays whole) with at least `needed`
// tokens, or of the whole text when it has fewer.
std::vector<int32_t> tokenize_prefix(const tokenizer::Tokenizer& tok, const std::string& text,
                                     int64_t needed) {
  size_t budget = static_cast<size_t>(needed) * 4 + 4096;
  for (;;) {
    size_t cut = text.size();
    if (budget < text.size()) {
      const size_t nl = text.rfind('\n', budget);
      cut = nl == std::string::npos || nl == 0 ? budget : nl + 1;
      while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
    }
    std::vector<int32_t> ids = tok.encode(std::string_view(text.data(), cut));
    if (static_cast<int64_t>(ids.size()) >= needed || cut == text.size()) return ids;
    budget *= 2;
  }
}

}  // namespace

std::string CalibrationRows::describe() const {
  std::map<std::string, int> count;
  for (const std::string& s : sources) ++count[s];
  std::string out;
  for (std::string_view s : kCalibrationMix) {
    const auto it = count.find(std::string(s));
    if (it == count.end()) continue;
    out += fmt::format("{}{}:{}", out.empty() ? "" : " ", s, it->second);
  }
  return out;
}

CalibrationRows calibration_rows(const tokenizer::Tokenizer& tok,
                                 const std::filesystem::path& data_dir, int64_t rows,
                                 int64_t length, int32_t random_vocab, int64_t first_window) {
  EXQ_CHECK(rows > 0 && length > 0 && first_window >= 0 && random_vocab > 0,
            "calibration: bad request of {} rows x {} tokens (window {}, vocab {})", rows, length,
            first_window, random_vocab);
  const int64_t mix = static_cast<int64_t>(kCalibrationMix.size());
  CalibrationRows out;
  out.rows = rows;
  out.length = length;
  out.ids.resize(static_cast<size_t>(rows * length));
  std::map<std::string, std::vector<int32_t>> tokens;  // per text source, tokenized once
  for (int64_t i = 0; i < rows; ++i) {
    const std::string source(kCalibrationMix[static_cast<size_t>(i % mix)]);
    const int64_t window = first_window + i / mix;
    int32_t* dst = out.ids.data() + i * length;
    out.sources.push_back(source);
    if (source == "random") {
      std::mt19937_64 rng(0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(window));
      for (int64_t t = 0; t < length; ++t)
        dst[t] = static_cast<int32_t>(rng() % static_cast<uint64_t>(random_vocab));
      continue;
    }
    const std::filesystem::path path = data_dir / (source + ".utf8");
    auto it = tokens.find(source);
    if (it == tokens.end()) {
      const int64_t last_window = first_window + (rows - 1 - i) / mix + i / mix;
      std::string text = read_text(path);
      if (source == "wiki") text = strip_doc_tags(text);
      it = tokens.emplace(source, tokenize_prefix(tok, text, (last_window + 1) * length)).first;
    }
    const std::vector<int32_t>& ids = it->second;
    EXQ_CHECK(static_cast<int64_t>(ids.size()) >= (window + 1) * length,
              "calibration: {} has {} tokens, row {} needs window {} of {} tokens", path.string(),
              ids.size(), i, window, length);
    std::copy_n(ids.begin() + window * length, length, dst);
  }
  return out;
}

}  // namespace exq::quant
