// libFuzzer target: arbitrary bytes as a tokenizer.json. Loading may only throw exq::Error;
// a tokenizer that loads must encode, decode and stream-decode sample texts without crashing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::string> kTexts = {
      "", "hello world", "<s>héé  xyz</s> 12345", "It's 3.14 🙂 日本\n\t end  ", "<|im_start|>user\nhi<|im_end|>"};
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = exq::tokenizer::Tokenizer::from_json_string(json, "fuzz/tokenizer.json");
    for (const std::string& text : kTexts) {
      const auto ids = tok.encode(text);
      tok.encode(text, true);
      tok.decode(ids);
      tok.decode(ids, true);
      exq::tokenizer::IncrementalDecoder dec(tok);
      for (int32_t id : ids) dec.step(id);
      dec.flush();
    }
    const std::vector<int32_t> odd = {-1, 0, 1, 2, 3, 255, 256, tok.vocab_size(), tok.vocab_size() - 1};
    tok.decode(odd);
  } catch (const exq::Error&) {
    // Expected for malformed input.
  }
  return 0;
}
