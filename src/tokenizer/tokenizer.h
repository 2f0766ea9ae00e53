// exq::tokenizer::Tokenizer: a Hugging Face tokenizer.json (BPE model) that encodes and decodes
// exactly as the `tokenizers` library does: added tokens first, then normalizer, pre-tokenizer
// and BPE on the text between them; decoding through the file's decoder chain.
// IncrementalDecoder turns a stream of generated ids into complete UTF-8 text.
// A Tokenizer is immutable once loaded, cheap to copy (shared state) and safe to use from
// several threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_config.h"

namespace exq::tokenizer {

class Tokenizer {
 public:
  // Throws exq::Error naming the file and the offending field for unreadable, malformed or
  // unsupported files.
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  // The same from JSON text; `source` names it in error messages.
  static Tokenizer from_json_string(std::string_view json, const std::string& source);

  // Special tokens written in the text are recognized. add_special_tokens applies the file's
  // post-processor (e.g. a BOS from TemplateProcessing). Text must be valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Ids outside the vocabulary are skipped, as HF does. Invalid byte sequences become U+FFFD.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::string id_to_token(int32_t id) const;  // raw vocab piece; throws for an unknown id
  // The bytes `id` adds to text it follows (a leading space a decoder drops at the start of
  // text is kept; no UTF-8 repair: a byte token gives its byte). Empty for an unknown id.
  std::string token_bytes(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  int32_t vocab_size() const;  // one past the largest id (model vocab and added tokens)
  bool is_special(int32_t id) const;

  struct Impl;  // opaque: defined in tokenizer.cpp

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Feeds ids one at a time and returns only text that can no longer change: never half a UTF-8
// character, and (for the decoders of real tokenizers) the returned pieces plus flush() equal
// decode() of all ids. Keeps a short window of ids for context, like HF's DecodeStream.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(Tokenizer tokenizer, bool skip_special_tokens = false);

  // The new complete text after `id` (often empty mid-character).
  std::string step(int32_t id);
  // Whatever decode() of all ids has beyond the returned text (e.g. U+FFFD for a trailing
  // incomplete character), then starts over.
  std::string flush();
  void reset();

 private:
  Tokenizer tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> window_;
  size_t prefix_ids_ = 0;    // window_[0, prefix_ids_) produced prefix_text_
  std::string prefix_text_;  // decode(window_[0, prefix_ids_)), already returned
};

}  // namespace exq::tokenizer
