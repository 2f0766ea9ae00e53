// The SmolLM2 tokenizer against Hugging Face's own outputs (fixtures/smollm2/tokenizer_cases.jsonl).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {
namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

std::filesystem::path model_dir() { return test::shared_dir() / "models" / "smollm2-135m-instruct"; }

const Tokenizer& smollm2() {
  static const Tokenizer tok = Tokenizer::from_file(model_dir() / "tokenizer.json");
  return tok;
}

std::vector<Case> load_cases() {
  std::ifstream f(test::shared_dir() / "fixtures" / "smollm2" / "tokenizer_cases.jsonl");
  std::vector<Case> cases;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>(),
                     j.at("decoded").get<std::string>()});
  }
  return cases;
}

TEST(SmolLM2Tokenizer, EncodesEveryFixtureCaseExactly) {
  const auto cases = load_cases();
  ASSERT_EQ(cases.size(), 21u);
  size_t tokens = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": " + cases[i].text.substr(0, 60));
    EXPECT_EQ(smollm2().encode(cases[i].text), cases[i].ids);
    tokens += cases[i].ids.size();
  }
  EXPECT_GT(tokens, 3000u);
}

TEST(SmolLM2Tokenizer, DecodesEveryFixtureCaseExactly) {
  for (const Case& c : load_cases()) {
    SCOPED_TRACE(c.text.substr(0, 60));
    EXPECT_EQ(smollm2().decode(c.ids), c.decoded);
  }
}

// A grammar follows text as the sum of its tokens' bytes: they must add up to decode() exactly,
// multi-byte characters split over byte tokens included.
TEST(SmolLM2Tokenizer, TokenBytesAddUpToTheDecodedText) {
  size_t split_characters = 0;
  for (const Case& c : load_cases()) {
    SCOPED_TRACE(c.text.substr(0, 60));
    std::string joined;
    for (int32_t id : c.ids) {
      const std::string b = smollm2().token_bytes(id);
      split_characters += !utf8_is_valid(b);
      joined += b;
    }
    EXPECT_EQ(joined, c.decoded);
  }
  EXPECT_GT(split_characters, 0u);  // the fixtures split some characters over tokens
  const int32_t hello = smollm2().encode(" hello").at(0);
  EXPECT_EQ(smollm2().token_bytes(hello), " hello");
  EXPECT_EQ(smollm2().token_bytes(smollm2().vocab_size() + 5), "");
}

TEST(SmolLM2Tokenizer, IncrementalDecodeMatchesDecodeAndYieldsOnlyValidUtf8) {
  for (const Case& c : load_cases()) {
    SCOPED_TRACE(c.text.substr(0, 60));
    IncrementalDecoder dec(smollm2());
    std::string joined;
    size_t empty_steps = 0;
    for (int32_t id : c.ids) {
      const std::string piece = dec.step(id);
      EXPECT_TRUE(utf8_is_valid(piece)) << "invalid UTF-8 piece after id " << id;
      empty_steps += piece.empty();
      joined += piece;
    }
    const std::string rest = dec.flush();
    EXPECT_TRUE(utf8_is_valid(rest));
    joined += rest;
    EXPECT_EQ(joined, smollm2().decode(c.ids));
    EXPECT_EQ(joined, c.decoded);
  }
}

TEST(SmolLM2Tokenizer, IncrementalDecodeHoldsBackSplitCharacters) {
  // "🙂" is byte-level BPE'd into several tokens; nothing may come out until it is whole.
  const auto ids = smollm2().encode("🙂");
  ASSERT_GT(ids.size(), 1u);
  IncrementalDecoder dec(smollm2());
  for (size_t i = 0; i + 1 < ids.size(); ++i) EXPECT_EQ(dec.step(ids[i]), "");
  EXPECT_EQ(dec.step(ids.back()), "🙂");
  EXPECT_EQ(dec.flush(), "");
  // A dangling partial character is flushed as U+FFFD, as decode() renders it.
  dec.step(ids[0]);
  EXPECT_EQ(dec.flush(), smollm2().decode(std::vector<int32_t>{ids[0]}));
}

TEST(SmolLM2Tokenizer, SpecialTokensAndVocab) {
  const Tokenizer& tok = smollm2();
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.token_to_id("<|im_start|>"), 1);
  EXPECT_EQ(tok.token_to_id("<|im_end|>"), 2);
  EXPECT_EQ(tok.token_to_id("Ġworld"), 905);
  EXPECT_FALSE(tok.token_to_id("not a token at all").has_value());
  EXPECT_EQ(tok.id_to_token(905), "Ġworld");
  EXPECT_EQ(tok.id_to_token(0), "<|endoftext|>");
  EXPECT_TRUE(tok.is_special(2));
  EXPECT_FALSE(tok.is_special(905));
  EXPECT_THROW(tok.id_to_token(49152), Error);
  EXPECT_THROW(tok.id_to_token(-1), Error);

  const std::vector<int32_t> chat = {1, 4093, 198, 6004, 2, 198};
  EXPECT_EQ(tok.decode(chat, /*skip_special_tokens=*/true), "user\nhi\n");
  // The ByteLevel post-processor adds nothing: no BOS for SmolLM2.
  EXPECT_EQ(tok.encode("Hello world", true), tok.encode("Hello world", false));
  // Out-of-vocabulary ids are skipped, as HF does.
  EXPECT_EQ(tok.decode(std::vector<int32_t>{19556, 60000, 905}), "Hello world");
}

TEST(SmolLM2Tokenizer, RejectsInvalidUtf8Input) {
  EXPECT_THROW(smollm2().encode(std::string("abc\xff", 4)), Error);
  EXPECT_TRUE(smollm2().encode("").empty());
}

TEST(SmolLM2Tokenizer, SharedAcrossThreadsGivesTheSameIds) {
  const auto cases = load_cases();
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t)
    threads.emplace_back([&, t] { got[t] = smollm2().encode(cases[15 + t].text); });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < got.size(); ++t) EXPECT_EQ(got[t], cases[15 + t].ids);
}

// Whole data files, checked against the token windows and counts of fixtures/smollm2/ppl*.
TEST(SmolLM2Tokenizer, WholeDataFilesMatchPerplexityFixtures) {
  const auto fixtures = test::shared_dir() / "fixtures" / "smollm2";
  const auto meta = nlohmann::json::parse(test::read_file(fixtures / "ppl.json"));
  const std::string st = test::read_file(fixtures / "ppl_ids.safetensors");
  ASSERT_GT(st.size(), 8u);
  uint64_t header_len = 0;
  std::memcpy(&header_len, st.data(), 8);
  ASSERT_LE(8 + header_len, st.size());
  const auto header = nlohmann::json::parse(st.substr(8, header_len));
  for (const auto& [file, name] : {std::pair{"wiki.utf8", "wiki"}, std::pair{"c4.utf8", "c4"}}) {
    SCOPED_TRACE(file);
    const auto ids = smollm2().encode(test::read_file(test::shared_dir() / "data" / file));
    EXPECT_EQ(ids.size(), meta["windows"][file]["tokens_in_file"].get<size_t>());
    const auto offsets = header[name]["data_offsets"];
    const size_t begin = 8 + header_len + offsets[0].get<size_t>(), end = 8 + header_len + offsets[1].get<size_t>();
    ASSERT_LE(end, st.size());
    std::vector<int32_t> expected((end - begin) / 4);
    std::memcpy(expected.data(), st.data() + begin, end - begin);
    ASSERT_LE(expected.size(), ids.size());
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), ids.begin()));
  }
}

TEST(SmolLM2TokenizerConfig, ReadsTemplateAndSpecialTokens) {
  const TokenizerConfig cfg = load_tokenizer_config(model_dir());
  EXPECT_NE(cfg.chat_template.find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(cfg.bos_token, "<|im_start|>");
  EXPECT_EQ(cfg.eos_token, "<|im_end|>");
  EXPECT_EQ(cfg.pad_token, "<|im_end|>");
  EXPECT_FALSE(cfg.add_bos);
  EXPECT_FALSE(cfg.add_eos);
}

}  // namespace
}  // namespace exq::tokenizer
