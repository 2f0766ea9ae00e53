// Calibration rows for `exq quantize` (quant/calibration.h holds exllamav2's standard mix for
// tests and benches): rows cut from user files (-c), or, without files, rows the model writes
// itself from a few fixed seed prompts plus rows of random tokens, so a conversion needs no
// download.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/llama.h"
#include "quant/calibration.h"
#include "quant/progress_bar.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {

// Each file is read whole and tokenized without special tokens, then cut into consecutive,
// non-overlapping rows of `length` tokens (a short tail is dropped). Plain text files are used
// as they are; *.jsonl files contribute the "text" field of every line, joined by blank lines.
// Several files are mixed by rows round-robin: row i comes from file i % n (its next unused
// row); a file that has run out is skipped. Throws exq::Error naming the file for unreadable
// or malformed input, and when all files together give fewer than `rows` rows.
// progress (optional): bytes of the files tokenized so far, of their total size, after each file.
CalibrationRows rows_from_files(const tokenizer::Tokenizer& tok,
                                const std::vector<std::filesystem::path>& files, int64_t rows,
                                int64_t length, const ProgressFn& progress = {});

// Built-in offline fallback: a small pool of texts sampled from the model (fixed seed prompts,
// fixed RNG seed, temperature 0.8; at most 4 pool texts of min(length, 256) tokens, so it stays
// cheap) laid end to end into rows (row r starts at pool text r % pool and cycles on), plus 2
// rows of uniform random token ids like exllamav2 (when rows >= 4). Deterministic.
// progress (optional): pool tokens written so far (prompt and sampled), of the pool's total.
CalibrationRows self_sampled_rows(model::LlamaModel& model, const tokenizer::Tokenizer& tok,
                                  int64_t rows, int64_t length, uint64_t seed = 0x5eed,
                                  const ProgressFn& progress = {});

// embed_rows (quant/module_forward.h) one row at a time: F32 [rows, length, hidden], the same
// values (times `scale`: gemma's model::embedding_scale); progress (optional) gets the rows
// embedded so far.
Tensor embed_calibration_rows(const TensorView& embed_table, std::span<const int32_t> ids,
                              int64_t rows, int64_t length, const ProgressFn& progress = {},
                              float scale = 1.0f);

// Describes the calibration source for config.json: file names joined by ", ", or
// "(self-sampled)".
std::string calibration_dataset_name(const std::vector<std::string>& files);

}  // namespace exq::quant
