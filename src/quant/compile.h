// Compile (docs exl2.md section 2, step 6): the EXL2 model folder from the packed modules of
// the quantization pass. output.safetensors, or output-0000N-of-0000M.safetensors (+ index)
// when the tensors exceed the shard cap; every tensor that is not a quantized linear
// (embedding, norms) is copied as FP16; config.json gains quantization_config; tokenizer and
// generation files are copied. Every file is written atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace exq::quant {

struct CompileInput {
  std::filesystem::path model_dir;  // the original Hugging Face folder
  std::filesystem::path out_dir;
  std::vector<std::filesystem::path> module_files;  // packed tensors, in module order
  double bits = 4.0;
  int head_bits = 6;
  int64_t cal_rows = 0, cal_length = 0;
  std::string dataset;
  int64_t shard_bytes = 0;  // cap per shard; one file when everything fits
};

struct CompileResult {
  std::vector<std::filesystem::path> files;  // safetensors (and index) written
  int64_t tensor_bytes = 0;
};

CompileResult compile_model(const CompileInput& in);

// The version string written to quantization_config.
inline constexpr const char* kExqQuantVersion = "exq-0.1";

}  // namespace exq::quant
