// Small hand-built tokenizer.json documents for the tokenizer tests: a Llama-2-style
// sentencepiece BPE (Prepend/Replace normalizer, byte_fallback, <unk>, TemplateProcessing) and a
// character-level BPE for added-token rules.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "tokenizer/tokenizer.h"

namespace exq::tokenizer::test_json {

using Json = nlohmann::json;

// Ids: 0 <unk>, 1 <s>, 2 </s>, 3 + b for <0xBB>, then the pieces below from 259.
inline Json llama_style() {
  Json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const char* pieces[] = {"▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "llo",
                          "▁hello", "▁w", "or", "▁wor", "ld", "▁world", "x", "y", "z", "xyz"};
  int id = 259;
  for (const char* p : pieces) vocab[p] = id++;
  const Json merges = {"▁ h", "l l", "▁h e", "ll o", "▁he llo", "▁ w", "o r", "▁w or", "l d", "▁wor ld"};
  auto added = [](int i, const char* content) {
    return Json{{"id", i},          {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false},  {"normalized", false}, {"special", true}};
  };
  return Json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", Json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merges}}}};
}

// The Mistral / newer Llama layout of the same vocab: no normalizer, a Metaspace pre-tokenizer.
inline Json metaspace_style(const std::string& prepend_scheme, bool split) {
  Json j = llama_style();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", split}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", split}};
  return j;
}

// Character-level BPE over " abcdefghijklmnopqrstuvwxyz!" (ids 10..37, no merges) for
// exercising added tokens.
inline const std::string kCharAlphabet = " abcdefghijklmnopqrstuvwxyz!";
inline int32_t char_id(char c) { return 10 + static_cast<int32_t>(kCharAlphabet.find(c)); }
inline Json char_level(const Json& added_tokens) {
  Json vocab = Json::object();
  for (char c : kCharAlphabet) vocab[std::string(1, c)] = char_id(c);
  return Json{{"added_tokens", added_tokens},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}}};
}

inline Tokenizer load(const Json& j) { return Tokenizer::from_json_string(j.dump(), "test.json"); }

}  // namespace exq::tokenizer::test_json
