// libFuzzer target: GGUF parsing, dequantization, the summary and the HF import builders on
// arbitrary bytes must only ever succeed or throw exq::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace exq::io;
  try {
    const GgufFile g = GgufFile::parse(
        MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf"));
    for (const auto& [key, value] : g.metadata()) (void)value.describe();
    for (const auto& t : g.tensors()) {
      try {
        (void)g.dequantize_f16(t);
      } catch (const exq::Error&) {
      }
    }
    for (auto fn : {hf_config_from_gguf, hf_generation_config_from_gguf, hf_tokenizer_from_gguf,
                    hf_tokenizer_config_from_gguf, hf_special_tokens_map_from_gguf}) {
      try {
        (void)fn(g).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
      } catch (const exq::Error&) {
      }
    }
    try {
      (void)gguf_summary(g).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    } catch (const exq::Error&) {
    }
    try {
      (void)gguf_to_hf_tensors(g);
    } catch (const exq::Error&) {
    }
  } catch (const exq::Error&) {
  }
  return 0;
}
