// Normalizers of a tokenizer.json (the "normalizer" field): Sequence, Prepend, Replace, Strip and
// NFC (exact on text that is already NFC-stable; other text throws exq::Error). Applied to each
// text piece between added tokens, as HF does.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/json_util.h"

namespace exq::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // s is valid UTF-8; the result is too.
  virtual std::string normalize(std::string s) const = 0;
};

// Builds the normalizer described at `path`; an unknown "type" throws exq::Error naming it.
std::unique_ptr<Normalizer> make_normalizer(const detail::Json& v, const std::string& path,
                                            int depth = 0);

}  // namespace exq::tokenizer
