#include "quant/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace exq::quant {
namespace {

std::string read_text(const std::filesystem::path& path) { return io::read_file(path, "calibration text"); }

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

namespace {

// Documents (articles, stories) each as bos + tokens + eos, concatenated until a row of
// length + 1 is covered; rows in the first half drop the leading bos, as exllamav2 does.
void document_rows(const tokenizer::Tokenizer& tok, const std::vector<std::string>& docs,
                   int64_t count, int64_t length, int32_t bos, int32_t eos,
                   const std::string& source, CalibrationRows& out) {
  size_t idx = 0;
  for (int64_t r = 0; r < count; ++r) {
    std::vector<int32_t> row;
    while (static_cast<int64_t>(row.size()) < length + 1) {
      EXQ_CHECK(idx < docs.size(), "calibration: {} ran out of documents", source);
      row.push_back(bos);
      const std::vector<int32_t> ids = tok.encode(docs[idx++]);
      row.insert(row.end(), ids.begin(), ids.end());
      row.push_back(eos);
    }
    const size_t skip = r < count / 2 ? 1 : 0;
    out.ids.insert(out.ids.end(), row.begin() + skip, row.begin() + skip + length);
    out.sources.push_back(source);
  }
}

void window_rows(const std::vector<int32_t>& ids, int64_t count, int64_t length,
                 const std::string& source, CalibrationRows& out) {
  EXQ_CHECK(static_cast<int64_t>(ids.size()) >= count * length,
            "calibration: {} has {} tokens, {} rows of {} needed", source, ids.size(), count,
            length);
  out.ids.insert(out.ids.end(), ids.begin(), ids.begin() + count * length);
  for (int64_t r = 0; r < count; ++r) out.sources.push_back(source);
}

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

CalibrationRows exllamav2_measurement_rows(const tokenizer::Tokenizer& tok,
                                           const std::filesystem::path& data_dir,
                                           int64_t length, int32_t random_vocab, int32_t bos,
                                           int32_t eos) {
  EXQ_CHECK(length > 0 && random_vocab > 0, "calibration: bad length {} or vocab {}", length,
            random_vocab);
  CalibrationRows out;
  out.length = length;
  {  // c4: lines joined by blank lines
    const std::string text = read_text(data_dir / "c4.utf8");
    std::string joined;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      end = end == std::string::npos ? text.size() : end + 1;
      if (pos > 0) joined += "\n\n";
      joined.append(text, pos, end - pos);
      pos = end;
    }
    window_rows(tokenize_prefix(tok, joined, 2 * length), 2, length, "c4", out);
  }
  {  // wiki: articles without their <doc ...> line
    const std::string text = read_text(data_dir / "wiki.utf8");
    std::vector<std::string> docs;
    size_t pos = 0;
    while (pos < text.size() && docs.size() < 4096) {
      size_t end = text.find("</doc>\n", pos);
      const size_t stop = end == std::string::npos ? text.size() : end;
      const std::string_view a(text.data() + pos, stop - pos);
      const size_t nl = a.find('\n');
      docs.emplace_back(nl == std::string_view::npos ? std::string_view() : a.substr(nl + 1));
      pos = end == std::string::npos ? text.size() : end + 7;
    }
    document_rows(tok, docs, 4, length, bos, eos, "wiki", out);
  }
  window_rows(tokenize_prefix(tok, read_text(data_dir / "code.utf8"), 3 * length), 3, length,
              "code", out);
  {  // tiny: stories split on <|endoftext|>, stripped
    const std::string text = read_text(data_dir / "tiny.utf8");
    std::vector<std::string> docs;
    const std::string sep = "<|endoftext|>";
    size_t pos = 0;
    for (;;) {
      const size_t end = text.find(sep, pos);
      docs.emplace_back(trim(std::string_view(text).substr(pos, end == std::string::npos ? std::string::npos : end - pos)));
      if (end == std::string::npos) break;
      pos = end + sep.size();
    }
    document_rows(tok, docs, 2, length, bos, eos, "tiny", out);
  }
  {  // multilingual: 3 windows + 1 row of random 128-token pieces of the whole file
    const std::vector<int32_t> ids = tok.encode(read_text(data_dir / "multilingual.utf8"));
    window_rows(ids, 3, length, "multilingual", out);
    const int64_t piece = 128, pieces = static_cast<int64_t>(ids.size()) / length * length / piece;
    EXQ_CHECK(pieces > 0, "calibration: multilingual.utf8 is too short");
    std::mt19937_64 rng(69420);
    for (int64_t j = 0; j < (length + piece - 1) / piece; ++j) {
      const int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(pieces));
      const int64_t n = std::min(piece, length - j * piece);
      out.ids.insert(out.ids.end(), ids.begin() + k * piece, ids.begin() + k * piece + n);
    }
    out.sources.push_back("multilingual");
  }
  for (int64_t r = 0; r < 2; ++r) {
    std::mt19937_64 rng(0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(r));
    for (int64_t t = 0; t < length; ++t)
      out.ids.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(random_vocab)));
    out.sources.push_back("random");
  }
  window_rows(tokenize_prefix(tok, read_text(data_dir / "technical.utf8"), 2 * length), 2,
              length, "technical", out);
  out.rows = static_cast<int64_t>(out.sources.size());
  return out;
}

}  // namespace exq::quant
