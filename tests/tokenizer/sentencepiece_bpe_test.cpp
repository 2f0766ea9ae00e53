// A hand-built Llama-2-style sentencepiece BPE (see tiny_tokenizers.h); expected ids are worked
// out by hand from the vocab and the merge ranks.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "tiny_tokenizers.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {
namespace {

using Ids = std::vector<int32_t>;
using test_json::Json;
using test_json::load;

// Piece ids (see llama_style()).
constexpr int32_t kSpace = 259, kH = 260, kE = 261, kLlo = 270, kHelloW = 271, kWorldW = 276, kHw = 267;
constexpr int32_t kX = 277, kY = 278, kZ = 279, kXyz = 280;
constexpr int32_t byte_id(int b) { return 3 + b; }

TEST(SentencePieceBpe, MergesByRankAcrossTheWholeNormalizedText) {
  const Tokenizer tok = load(test_json::llama_style());
  // "▁hello▁world": ▁h(0) ll(1) ▁he(2) llo(3) ▁hello(4) ▁w(5) or(6) ▁wor(7) ld(8) ▁world(9).
  EXPECT_EQ(tok.encode("hello world"), (Ids{kHelloW, kWorldW}));
  EXPECT_EQ(tok.decode(Ids{kHelloW, kWorldW}), "hello world");
  // Two spaces: the first ▁ has nothing to merge with; ▁w takes the second.
  EXPECT_EQ(tok.encode("hello  world"), (Ids{kHelloW, kSpace, kWorldW}));
  EXPECT_EQ(tok.decode(Ids{kHelloW, kSpace, kWorldW}), "hello  world");
  EXPECT_EQ(tok.vocab_size(), 281);
}

TEST(SentencePieceBpe, ByteFallbackForUnknownCharacters) {
  const Tokenizer tok = load(test_json::llama_style());
  // "▁hé": ▁h merges; é (C3 A9) is not in the vocab, so <0xC3> <0xA9>.
  const Ids ids{kHw, byte_id(0xC3), byte_id(0xA9)};
  EXPECT_EQ(tok.encode("hé"), ids);
  EXPECT_EQ(tok.decode(ids), "hé");
  EXPECT_EQ(tok.id_to_token(byte_id(0xC3)), "<0xC3>");
  // "€" = E2 82 AC; a lone continuation byte decodes to one U+FFFD per byte.
  EXPECT_EQ(tok.encode("€"), (Ids{kSpace, byte_id(0xE2), byte_id(0x82), byte_id(0xAC)}));
  EXPECT_EQ(tok.decode(Ids{kH, byte_id(0x82), byte_id(0xAC)}), "h\xEF\xBF\xBD\xEF\xBF\xBD");
}

// Mid-text bytes: the Strip decoder drops the space only at the start of a whole text, and
// a byte token is its raw byte.
TEST(SentencePieceBpe, TokenBytesKeepTheSpaceAndRawBytes) {
  const Tokenizer tok = load(test_json::llama_style());
  EXPECT_EQ(tok.decode(Ids{kHelloW}), "hello");
  EXPECT_EQ(tok.token_bytes(kHelloW), " hello");
  EXPECT_EQ(tok.token_bytes(kLlo), "llo");
  EXPECT_EQ(tok.token_bytes(byte_id(0xC3)), "\xC3");
  EXPECT_EQ(tok.token_bytes(byte_id('A')), "A");
  EXPECT_EQ(tok.token_bytes(1), "<s>");
  std::string joined;
  for (int32_t id : tok.encode("hello wé xyz")) joined += tok.token_bytes(id);
  EXPECT_EQ(joined, " hello wé xyz");
}

TEST(SentencePieceBpe, UnknownCharactersWithoutByteFallbackUseUnk) {
  auto j = test_json::llama_style();
  j["model"]["byte_fallback"] = false;
  // fuse_unk: consecutive unknown characters share one <unk>.
  EXPECT_EQ(load(j).encode("héé"), (Ids{kHw, 0}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(load(j).encode("héé"), (Ids{kHw, 0, 0}));
  // No unk_token: unknown characters are dropped.
  j["model"]["unk_token"] = nullptr;
  EXPECT_EQ(load(j).encode("héé"), (Ids{kHw}));
}

TEST(SentencePieceBpe, SpecialTokensSplitTheTextAndEachPieceIsNormalized) {
  const Tokenizer tok = load(test_json::llama_style());
  // Prepend applies to each piece between added tokens, as in HF.
  EXPECT_EQ(tok.encode("<s>hello</s>"), (Ids{1, kHelloW, 2}));
  EXPECT_EQ(tok.decode(Ids{1, kHelloW, 2}), "<s> hello</s>");
  EXPECT_EQ(tok.decode(Ids{1, kHelloW, 2}, /*skip_special_tokens=*/true), "hello");
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_FALSE(tok.is_special(kHelloW));
}

TEST(SentencePieceBpe, TemplateProcessingAddsBos) {
  const Tokenizer tok = load(test_json::llama_style());
  EXPECT_EQ(tok.encode("hello world", /*add_special_tokens=*/true), (Ids{1, kHelloW, kWorldW}));
  EXPECT_EQ(tok.encode("hello world"), (Ids{kHelloW, kWorldW}));
}

TEST(SentencePieceBpe, MergesInArrayFormAreEquivalent) {
  auto j = test_json::llama_style();
  Json arrays = Json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    arrays.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  j["model"]["merges"] = arrays;
  EXPECT_EQ(load(j).encode("hello  world"), (Ids{kHelloW, kSpace, kWorldW}));
}

TEST(SentencePieceBpe, IgnoreMergesTakesWholeWordsFromTheVocab) {
  auto j = test_json::metaspace_style("never", true);
  // "xyz" is in the vocab but no merge builds it.
  EXPECT_EQ(load(j).encode("xyz"), (Ids{kX, kY, kZ}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(load(j).encode("xyz"), (Ids{kXyz}));
}

TEST(SentencePieceBpe, MetaspacePrependSchemes) {
  const Tokenizer first = load(test_json::metaspace_style("first", false));
  EXPECT_EQ(first.encode("hello world"), (Ids{kHelloW, kWorldW}));
  // "first": only the piece at the start of the input gets ▁; after <s> the text does not.
  EXPECT_EQ(first.encode("<s>hello"), (Ids{1, kH, kE, kLlo}));
  EXPECT_EQ(first.decode(Ids{kHelloW, kWorldW}), "hello world");

  const Tokenizer always = load(test_json::metaspace_style("always", true));
  EXPECT_EQ(always.encode("<s>hello"), (Ids{1, kHelloW}));
  EXPECT_EQ(always.encode("hello world"), (Ids{kHelloW, kWorldW}));

  const Tokenizer never = load(test_json::metaspace_style("never", true));
  // "hello▁world" split before ▁: "hello" -> h e llo, "▁world".
  EXPECT_EQ(never.encode("hello world"), (Ids{kH, kE, kLlo, kWorldW}));
  EXPECT_EQ(never.decode(Ids{kH, kE, kLlo, kWorldW}), "hello world");
  // With prepend_scheme never the decoder keeps a leading ▁ as a space.
  EXPECT_EQ(never.decode(Ids{kWorldW}), " world");
}

TEST(SentencePieceBpe, IncrementalDecodeWaitsForByteFallbackCharacters) {
  const Tokenizer tok = load(test_json::llama_style());
  const Ids ids = tok.encode("hé world");
  ASSERT_EQ(ids, (Ids{kHw, byte_id(0xC3), byte_id(0xA9), kWorldW}));
  IncrementalDecoder dec(tok);
  EXPECT_EQ(dec.step(ids[0]), "h");
  EXPECT_EQ(dec.step(ids[1]), "");  // half of é
  EXPECT_EQ(dec.step(ids[2]), "é");
  EXPECT_EQ(dec.step(ids[3]), " world");
  EXPECT_EQ(dec.flush(), "");

  // Every prefix of a longer stream: the pieces are valid UTF-8 and add up to decode().
  const Ids stream = tok.encode("hello hé  world €€ xyz");
  std::string joined;
  for (int32_t id : stream) {
    const std::string piece = dec.step(id);
    EXPECT_TRUE(utf8_is_valid(piece));
    joined += piece;
  }
  joined += dec.flush();
  EXPECT_EQ(joined, tok.decode(stream));
  EXPECT_EQ(joined, "hello hé  world €€ xyz");
}

}  // namespace
}  // namespace exq::tokenizer
