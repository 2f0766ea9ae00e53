// Post-processors of a tokenizer.json (the "post_processor" field), used only by
// encode(add_special_tokens=true) on a single sequence: TemplateProcessing ("single" template),
// RobertaProcessing / BertProcessing (cls + ids + sep), ByteLevel (adds nothing) and Sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_util.h"

namespace exq::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Returns the ids with the special tokens the processor adds around a single sequence.
  virtual std::vector<int32_t> process(std::vector<int32_t> ids) const = 0;
};

// Builds the post-processor described at `path`; an unknown "type" throws exq::Error naming it.
std::unique_ptr<PostProcessor> make_post_processor(const detail::Json& v, const std::string& path,
                                                   int depth = 0);

}  // namespace exq::tokenizer
