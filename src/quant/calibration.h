// Calibration token rows for measurement and quantization, cut from text files in the layout
// of exllamav2's standard set (wiki, c4, code, multilingual, technical, tiny .utf8) plus rows
// of random tokens, as exllamav2 mixes them. exq ships no text: the caller names the folder.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace exq::quant {

// Row i takes source kCalibrationMix[i % 7]; the j-th row of a source is its j-th window of
// `length` tokens (after first_window), so rows never overlap and a later first_window gives
// held-out text. "random" rows are uniform token ids from a fixed seed per window.
inline constexpr std::array<std::string_view, 7> kCalibrationMix = {
    "wiki", "c4", "code", "multilingual", "technical", "tiny", "random"};

struct CalibrationRows {
  int64_t rows = 0;
  int64_t length = 0;
  std::vector<int32_t> ids;          // [rows * length]
  std::vector<std::string> sources;  // per row: the mix entry it came from

  // "wiki:3 c4:2 ..." for logs and docs.
  std::string describe() const;
};

// Reads <data_dir>/<source>.utf8 (wiki: <doc> tag lines dropped); tokenizes only as much of each
// file as the rows need. random_vocab bounds the random ids (the model's vocabulary). Throws
// exq::Error naming the file when it is missing or too short for the rows asked.
CalibrationRows calibration_rows(const tokenizer::Tokenizer& tok,
                                 const std::filesystem::path& data_dir, int64_t rows,
                                 int64_t length, int32_t random_vocab, int64_t first_window = 0);

// exllamav2's standard measurement set, row for row (conversion/tokenize.py, measure=True):
// c4 2, wiki 4, code 3, tiny 2, multilingual 3 + 1 of shuffled 128-token pieces, random 2,
// technical 2 = 19 rows of `length`. Wiki articles and tiny stories are each wrapped in
// bos/eos ids and concatenated (the first half of their rows drop the leading bos); c4 lines
// are joined by blank lines. The random parts use exq's generator, not Python's.
CalibrationRows exllamav2_measurement_rows(const tokenizer::Tokenizer& tok,
                                           const std::filesystem::path& data_dir,
                                           int64_t length, int32_t random_vocab, int32_t bos,
                                           int32_t eos);

}  // namespace exq::quant
