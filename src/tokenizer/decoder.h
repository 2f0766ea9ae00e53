// Decoders of a tokenizer.json (the "decoder" field): ByteLevel, Metaspace, ByteFallback, Fuse,
// Strip, Replace, BPEDecoder and Sequence. Like HF, each one maps the list of token strings
// to a new list; the decoded text is the concatenation of the final list.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_util.h"

namespace exq::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // The same without UTF-8 repair: byte tokens stay the bytes they name, even when they are
  // part of a character (what a grammar follows; Tokenizer::token_bytes).
  virtual void decode_chain_raw(std::vector<std::string>& tokens) const { decode_chain(tokens); }
};

// Builds the decoder described at `path`; an unknown "type" throws exq::Error naming it.
std::unique_ptr<Decoder> make_decoder(const detail::Json& v, const std::string& path, int depth = 0);

}  // namespace exq::tokenizer
