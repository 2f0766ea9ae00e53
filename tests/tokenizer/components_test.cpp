// Pre-tokenizers, normalizers, decoders and added-token rules in isolation, with expected
// outputs taken from the semantics of HF tokenizers.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/error.h"
#include "tiny_tokenizers.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {
namespace {

using Json = nlohmann::json;
using Pieces = std::vector<std::string>;
using Ids = std::vector<int32_t>;

Pieces pre_tokenize(const Json& spec, std::string_view text, std::vector<bool>* at_start = nullptr) {
  auto pre = make_pre_tokenizer(spec, "pre_tokenizer");
  Pieces out;
  pre->split(text, true, [&](std::string_view p, bool a) {
    out.emplace_back(p);
    if (at_start) at_start->push_back(a);
  });
  return out;
}

Json split_spec(const std::string& literal, const std::string& behavior, bool invert = false) {
  return {{"type", "Split"}, {"pattern", {{"String", literal}}}, {"behavior", behavior}, {"invert", invert}};
}

TEST(PreTokenizer, SplitBehaviors) {
  EXPECT_EQ(pre_tokenize(split_spec("-", "Removed"), "a-b--c"), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(pre_tokenize(split_spec("-", "Isolated"), "a-b--c"), (Pieces{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(pre_tokenize(split_spec("-", "MergedWithPrevious"), "a-b--c"), (Pieces{"a-", "b-", "-", "c"}));
  EXPECT_EQ(pre_tokenize(split_spec("-", "MergedWithNext"), "a-b--c"), (Pieces{"a", "-b", "-", "-c"}));
  EXPECT_EQ(pre_tokenize(split_spec("-", "Contiguous"), "a-b--c"), (Pieces{"a", "-", "b", "--", "c"}));
  const Json inverted = {{"type", "Split"}, {"pattern", {{"Regex", "\\d+"}}}, {"behavior", "Removed"}, {"invert", true}};
  EXPECT_EQ(pre_tokenize(inverted, "ab12cd3"), (Pieces{"12", "3"}));
}

TEST(PreTokenizer, Llama3StyleRegexSplit) {
  const Json spec = {{"type", "Split"},
                     {"pattern",
                      {{"Regex",
                        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                        "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                     {"behavior", "Isolated"},
                     {"invert", false}};
  EXPECT_EQ(pre_tokenize(spec, "I'M 12345 naïve!\n\nok"),
            (Pieces{"I", "'M", " ", "123", "45", " naïve", "!\n\n", "ok"}));
}

TEST(PreTokenizer, DigitsAndByteLevel) {
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "a123b"), (Pieces{"a", "1", "2", "3", "b"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "a123b"), (Pieces{"a", "123", "b"}));
  const Json bl = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_tokenize(bl, "Hello world's\n"), (Pieces{"ĠHello", "Ġworld", "'s", "Ċ"}));
  const Json no_regex = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  EXPECT_EQ(pre_tokenize(no_regex, "a b é"), (Pieces{"aĠbĠÃ©"}));
}

TEST(PreTokenizer, MetaspaceSplitsBeforeEachReplacement) {
  const Json spec = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_EQ(pre_tokenize(spec, "Hey   friend!"), (Pieces{"▁Hey", "▁", "▁", "▁friend!"}));
  std::vector<bool> at_start;
  const Json seq = {{"type", "Sequence"},
                    {"pretokenizers",
                     {split_spec("|", "Removed"),
                      {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}}}}};
  EXPECT_EQ(pre_tokenize(seq, "a b|c"), (Pieces{"▁a▁b", "c"}));
  // A piece after a removed delimiter does not start the input.
  EXPECT_EQ(pre_tokenize(seq, "|c", &at_start), (Pieces{"c"}));
  EXPECT_EQ(at_start, (std::vector<bool>{false}));
}

TEST(Normalizer, ReplacePrependStripAndNfc) {
  const Json seq = {{"type", "Sequence"},
                    {"normalizers",
                     {{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                      {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "_"}},
                      {{"type", "Prepend"}, {"prepend", ">"}}}}};
  EXPECT_EQ(make_normalizer(seq, "normalizer")->normalize("\u3000 a  b \n"), ">a_b");
  const auto nfc = make_normalizer({{"type", "NFC"}}, "normalizer");
  EXPECT_EQ(nfc->normalize("café 日本 🙂"), "café 日本 🙂");
  // e + combining acute would compose: not supported, so it must fail loudly.
  EXPECT_THROW(nfc->normalize("cafe\xCC\x81"), Error);
  try {
    make_normalizer({{"type", "Lowercase"}}, "normalizer");
    FAIL() << "expected exq::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Lowercase"), std::string::npos) << e.what();
  }
}

std::string decode_chain(const Json& spec, Pieces tokens) {
  make_decoder(spec, "decoder")->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

TEST(Decoder, EachComponent) {
  EXPECT_EQ(decode_chain({{"type", "ByteLevel"}}, {"ĠHello", "Ċ", "<|im_end|>", "Ã"}), " Hello\n<|im_end|>\xEF\xBF\xBD");
  EXPECT_EQ(decode_chain({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}},
                         {"▁Hey", "▁friend!"}),
            "Hey friend!");
  EXPECT_EQ(decode_chain({{"type", "ByteFallback"}}, {"a", "<0xE2>", "<0x82>", "<0xAC>", "c"}), "a€c");
  // An invalid run becomes one U+FFFD per byte token.
  EXPECT_EQ(decode_chain({{"type", "ByteFallback"}}, {"a", "<0xE2>", "<0x82>", "<0xAC>", "<0xE2>", "b"}),
            "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b");
  EXPECT_EQ(decode_chain({{"type", "Strip"}, {"content", "x"}, {"start", 2}, {"stop", 1}}, {"xxxaxx", "ax"}), "xaxa");
  EXPECT_EQ(decode_chain({{"type", "Replace"}, {"pattern", {{"Regex", "[0-9]"}}}, {"content", "#"}}, {"a1", "22"}), "a###");
  EXPECT_EQ(decode_chain({{"type", "Fuse"}}, {"a", "b"}), "ab");
}

TEST(Unicode, LossyDecodingReplacesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("a\xE3\x81" "b"), "a\xEF\xBF\xBD" "b");        // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(utf8_lossy("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");     // two stray continuations
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(utf8_lossy("ok é"), "ok é");
  EXPECT_EQ(unicode_to_byte(U'Ġ'), ' ');
  EXPECT_EQ(byte_to_unicode()['\n'], U'Ċ');
}

Json added(int id, const std::string& content, bool single_word, bool lstrip, bool rstrip) {
  return {{"id", id},         {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"normalized", false}, {"special", true}};
}

Ids chars(const std::string& s) {
  Ids ids;
  for (char c : s) ids.push_back(test_json::char_id(c));
  return ids;
}

Ids cat(Ids a, const Ids& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(AddedTokens, LstripRstripAndSingleWord) {
  const Tokenizer tok = test_json::load(test_json::char_level(
      {added(100, "<mask>", false, true, false), added(101, "hi", true, false, false),
       added(102, "<r>", false, false, true), added(103, "<m", false, false, false)}));
  EXPECT_EQ(tok.encode("a  <mask>b"), cat(chars("a"), cat({100}, chars("b"))));  // lstrip eats "  "
  EXPECT_EQ(tok.encode("<r>  b"), cat({102}, chars("b")));                        // rstrip eats "  "
  EXPECT_EQ(tok.encode("hi there!"), cat({101}, chars(" there!")));
  EXPECT_EQ(tok.encode("this"), chars("this"));  // "hi" inside a word is not single_word
  EXPECT_EQ(tok.encode("ohi!"), chars("ohi!"));
  EXPECT_EQ(tok.encode("oh hi!"), cat(chars("oh "), cat({101}, chars("!"))));
  // Longest match first: "<mask>" beats its prefix "<m".
  EXPECT_EQ(tok.encode("<mask><m"), (Ids{100, 103}));
  EXPECT_EQ(tok.token_to_id("<mask>"), 100);
  EXPECT_EQ(tok.vocab_size(), 104);
}

}  // namespace
}  // namespace exq::tokenizer
