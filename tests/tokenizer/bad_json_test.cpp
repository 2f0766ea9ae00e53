// Malformed and unsupported tokenizer.json files: each throws exq::Error naming the file and the
// field. Then seeded random mutations (bytes and JSON values) of small hand-built files and of
// the real SmolLM2 file, which may only ever throw exq::Error.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_support.h"
#include "tiny_tokenizers.h"

namespace exq::tokenizer {
namespace {

using Json = nlohmann::json;

// The message of the exq::Error that loading `text` throws ("" if it loads).
std::string load_error(const std::string& text) {
  try {
    Tokenizer::from_json_string(text, "bad/tokenizer.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, "bad/tokenizer.json");
    return e.what();
  }
  return "";
}

std::string load_error_json(const Json& j) { return load_error(j.dump()); }

void expect_error(const Json& j, std::initializer_list<const char*> fragments) {
  const std::string msg = load_error_json(j);
  ASSERT_FALSE(msg.empty()) << "expected exq::Error for " << j.dump().substr(0, 200);
  for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
}

TEST(BadTokenizerJson, NotJsonOrMissingModel) {
  EXPECT_NE(load_error(std::string("{\"model\": ")).find("not valid JSON"), std::string::npos);
  EXPECT_NE(load_error(std::string()).find("bad/tokenizer.json"), std::string::npos);
  expect_error(Json::object(), {"field 'model'", "missing"});
  expect_error(Json::array(), {"expected object, got array"});
  try {
    Tokenizer::from_file("/nonexistent/dir/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.json"), std::string::npos);
  }
}

TEST(BadTokenizerJson, WrongTypesNameTheField) {
  auto j = test_json::llama_style();
  j["model"]["vocab"] = Json::array();
  expect_error(j, {"field 'model.vocab'", "expected object, got array"});
  j = test_json::llama_style();
  j["model"]["vocab"]["▁hello"] = "x";
  expect_error(j, {"field 'model.vocab.▁hello'", "expected integer, got string"});
  j = test_json::llama_style();
  j["model"]["vocab"]["▁hello"] = -5;
  expect_error(j, {"model.vocab.▁hello", "out of range"});
  j = test_json::llama_style();
  j["model"]["byte_fallback"] = "yes";
  expect_error(j, {"field 'model.byte_fallback'", "expected boolean"});
  j = test_json::llama_style();
  j["added_tokens"][1].erase("content");
  expect_error(j, {"field 'added_tokens[1].content'", "missing"});
  j = test_json::llama_style();
  j["decoder"]["decoders"][3]["content"] = "ab";
  expect_error(j, {"field 'decoder.decoders[3].content'", "exactly one character"});
}

TEST(BadTokenizerJson, UnsupportedComponentsNameTheirType) {
  auto j = test_json::llama_style();
  j["normalizer"]["normalizers"][1] = {{"type", "NFKD"}};
  expect_error(j, {"normalizer.normalizers[1].type", "normalizer type 'NFKD' is not supported"});
  j = test_json::llama_style();
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  expect_error(j, {"pre-tokenizer type 'BertPreTokenizer'"});
  j = test_json::llama_style();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, {"decoder type 'WordPiece'"});
  j = test_json::llama_style();
  j["post_processor"] = {{"type", "Nope"}};
  expect_error(j, {"post-processor type 'Nope'"});
  j = test_json::llama_style();
  j["model"]["type"] = "Unigram";
  expect_error(j, {"model.type", "'Unigram' is not supported"});
}

TEST(BadTokenizerJson, BadMergesAndPatterns) {
  auto j = test_json::llama_style();
  j["model"]["merges"].push_back("▁ q");
  expect_error(j, {"field 'model.merges[10]'", "\"q\" is not in the vocab"});
  j = test_json::llama_style();
  j["model"]["merges"][2] = "▁h e x";
  expect_error(j, {"model.merges[2]", "two tokens"});
  j = test_json::llama_style();
  j["model"]["merges"][0] = Json::array({"▁"});
  expect_error(j, {"model.merges[0]", "expected 2"});
  j = test_json::llama_style();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error(j, {"field 'pre_tokenizer.pattern.Regex'", "does not compile"});
  j = test_json::llama_style();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}};
  expect_error(j, {"pre_tokenizer.behavior", "Sideways"});
  j = test_json::llama_style();
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>";
  expect_error(j, {"post_processor.single[0]", "'<bos>'"});
}

// ---- seeded mutations ------------------------------------------------------------------------

const std::vector<std::string> kTexts = {"", "hello world", "<s>héé  xyz</s>", "It's 3.14 🙂 日本\n\t end",
                                         "<|im_start|>user\nhi<|im_end|>", "a-b--c <mask> hi"};

// Exercises a loaded tokenizer; only exq::Error may escape.
void exercise(const Tokenizer& tok, std::mt19937& rng) {
  for (const std::string& t : kTexts) {
    const auto ids = tok.encode(t);
    tok.encode(t, true);
    tok.decode(ids);
    IncrementalDecoder dec(tok);
    for (int32_t id : ids) dec.step(id);
    dec.flush();
  }
  std::vector<int32_t> random_ids;
  for (int i = 0; i < 16; ++i) random_ids.push_back(static_cast<int32_t>(rng() % 400) - 20);
  tok.decode(random_ids, true);
  tok.vocab_size();
  try {
    tok.id_to_token(random_ids[0]);
  } catch (const Error&) {
  }
}

std::string mutate_bytes(std::string s, std::mt19937& rng) {
  if (s.empty()) return s;
  const char kChars[] = "{}[]\",:0123456789-eE.truefalsnl\\ \xC3\xE2\x80\xBF";
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const size_t pos = rng() % s.size();
    switch (rng() % 6) {
      case 5:  // keeps the JSON valid most of the time: one letter or digit for another
        if (std::isalnum(static_cast<unsigned char>(s[pos]))) s[pos] = "abehlorw019"[rng() % 11];
        break;
      case 0: s[pos] = static_cast<char>(rng() & 0xFF); break;
      case 1: s[pos] = kChars[rng() % (sizeof(kChars) - 1)]; break;
      case 2: s.erase(pos, 1 + rng() % 16); break;
      case 3: s.resize(pos); break;
      default: s.insert(pos, s.substr(rng() % s.size(), 1 + rng() % 16)); break;
    }
  }
  return s;
}

Json random_value(std::mt19937& rng) {
  static const std::vector<Json> kValues = {
      nullptr, true, false, -1, 0, 1, 3, 258, 4194303, 2147483647, 1e300, -0.5, "", "x", "▁", "<s>",
      "(", "a b", Json::array(), Json::object(), Json::array({1, 2}), Json::array({"a", "b"}),
      Json{{"type", "Sequence"}}, Json{{"String", ""}}, Json{{"Regex", "(a+)+$"}}, Json{{"Regex", "\\p{L}*"}},
      Json{{"type", "Metaspace"}, {"replacement", "▁"}}, Json{{"type", "ByteFallback"}}};
  return kValues[rng() % kValues.size()];
}

// Replaces, removes or retypes one randomly chosen value anywhere in the document.
void mutate_json(Json& root, std::mt19937& rng) {
  std::vector<Json*> nodes;
  std::function<void(Json&)> walk = [&](Json& n) {
    nodes.push_back(&n);
    if (n.is_structured())
      for (auto& c : n) walk(c);
  };
  walk(root);
  Json& target = *nodes[rng() % nodes.size()];
  if (target.is_object() && !target.empty() && rng() % 3 == 0) {
    auto it = target.begin();
    std::advance(it, static_cast<long>(rng() % target.size()));
    target.erase(it.key());
  } else if (target.is_array() && !target.empty() && rng() % 3 == 0) {
    target.erase(target.begin() + static_cast<long>(rng() % target.size()));
  } else if (rng() % 2) {
    target = random_value(rng);
  } else if (target.is_boolean()) {  // same-type changes keep more files loadable
    target = !target.get<bool>();
  } else if (target.is_number_integer()) {
    target = static_cast<int>(rng() % 300);
  } else if (target.is_string()) {
    static const char* kStrings[] = {"▁", "h", "l l", "Isolated", "MergedWithNext", "first", "never", " ", "<s>"};
    target = kStrings[rng() % std::size(kStrings)];
  }
}

struct FuzzStats {
  int loaded = 0, rejected = 0;
};

void fuzz_one(const std::string& text, std::mt19937& rng, FuzzStats& stats, int iteration) {
  try {
    const Tokenizer tok = Tokenizer::from_json_string(text, "mutated.json");
    exercise(tok, rng);
    ++stats.loaded;
  } catch (const Error&) {
    ++stats.rejected;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "iteration " << iteration << ": non-exq exception: " << e.what();
  }
}

TEST(BadTokenizerJson, RandomMutationsOfSmallFilesOnlyThrowExqError) {
  std::mt19937 rng(1234);
  const std::vector<Json> bases = {
      test_json::llama_style(), test_json::metaspace_style("first", true),
      test_json::char_level({{{"id", 100}, {"content", "<mask>"}, {"lstrip", true}, {"single_word", true}}}),
      [] {
        auto j = test_json::llama_style();
        j["normalizer"] = nullptr;
        j["pre_tokenizer"] = {{"type", "Sequence"},
                              {"pretokenizers",
                               {{{"type", "Digits"}, {"individual_digits", true}},
                                {{"type", "Split"}, {"pattern", {{"Regex", "\\s+|\\p{L}+"}}}, {"behavior", "Contiguous"}},
                                {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}}}};
        j["decoder"] = {{"type", "ByteLevel"}};
        j["post_processor"] = {{"type", "RobertaProcessing"}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 1}}};
        return j;
      }()};
  FuzzStats stats;
  for (int i = 0; i < 1000; ++i) {
    const Json& base = bases[static_cast<size_t>(i) % bases.size()];
    std::string text;
    if (i % 2 == 0) {
      text = mutate_bytes(base.dump(), rng);
    } else {
      Json j = base;
      for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; ++k) mutate_json(j, rng);
      text = j.dump();
    }
    fuzz_one(text, rng, stats, i);
  }
  EXPECT_EQ(stats.loaded + stats.rejected, 1000);
  EXPECT_GT(stats.loaded, 100);
  EXPECT_GT(stats.rejected, 100);
}

TEST(BadTokenizerJson, RandomMutationsOfTheRealFileOnlyThrowExqError) {
  const auto path = test::shared_dir() / "models" / "smollm2-135m-instruct" / "tokenizer.json";
  const std::string original = test::read_file(path);
  Json parsed = Json::parse(original);
  // Mutate the small parts (everything but vocab and merges) as JSON, the rest as bytes.
  Json model = std::move(parsed["model"]);
  parsed.erase("model");
  std::mt19937 rng(99);
  FuzzStats stats;
  for (int i = 0; i < 50; ++i) {
    std::string text;
    if (i % 2 == 0) {
      text = mutate_bytes(original, rng);
    } else {
      Json j = parsed;
      mutate_json(j, rng);
      Json& m = j["model"] = model;
      // Occasionally break one vocab entry or merge too.
      if (rng() % 2) m["merges"][rng() % m["merges"].size()] = random_value(rng);
      text = j.dump();
    }
    fuzz_one(text, rng, stats, i);
  }
  EXPECT_EQ(stats.loaded + stats.rejected, 50);
  EXPECT_GT(stats.loaded, 0);
  EXPECT_GT(stats.rejected, 0);
}

}  // namespace
}  // namespace exq::tokenizer
