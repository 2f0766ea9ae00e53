// Grammar speed as generation sees it: the allowed-token mask of a JSON grammar's state
// (runtime::TokenConstraint, a walk of the vocabulary's byte trie) for SmolLM2's vocabulary and
// a synthetic 150k-token one; plus plain sequential matching of a JSON document.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "runtime/token_constraint.h"
#include "tokenizer/tokenizer.h"

namespace {

using exq::grammar::Grammar;
using exq::grammar::GrammarMatcher;

// The product's JSON mode grammar (response_format json_object).
const std::string& json_gbnf() {
  static const std::string g = exq::grammar::json_object_gbnf();
  return g;
}

// The product's token masks (runtime::TokenConstraint::allowed: a walk of the vocabulary's byte
// trie from the grammar's state). Vocabularies: SmolLM2's 49k tokens (from ../shared) and a
// synthetic 150k-token one shaped like a BPE vocabulary.
std::shared_ptr<const exq::runtime::TokenVocab> synthetic_vocab() {
  static const auto vocab = [] {
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
    const std::vector<std::string> utf8 = {"\xC3\xA9",         "\xC3\xBC",     "\xC3\x9F",
                                           "\xD0\xB8",         "\xE4\xB8\xAD", "\xE6\x96\x87",
                                           "\xF0\x9F\x98\x80", "\xE2\x80\x99"};
    const std::string punct = "{}[],:\".-_/\\!?'()0123456789\n\t ";
    std::mt19937 rng(7);
    while (bytes.size() < 150000) {
      std::string tok;
      const uint32_t kind = rng() % 10;
      if (kind < 7) {
        if (rng() % 2) tok += ' ';
        const uint32_t len = 1 + rng() % 9;
        for (uint32_t k = 0; k < len; ++k) tok += static_cast<char>('a' + rng() % 26);
      } else if (kind < 8) {
        const uint32_t len = 1 + rng() % 4;
        for (uint32_t k = 0; k < len; ++k) tok += punct[rng() % punct.size()];
      } else {
        const uint32_t len = 1 + rng() % 3;
        for (uint32_t k = 0; k < len; ++k) tok += utf8[rng() % utf8.size()];
      }
      bytes.push_back(tok);
    }
    std::vector<uint8_t> special(bytes.size(), 0);
    return std::make_shared<const exq::runtime::TokenVocab>(std::move(bytes), std::move(special));
  }();
  return vocab;
}

std::shared_ptr<const exq::runtime::TokenVocab> smollm2_vocab() {
  static const auto vocab = []() -> std::shared_ptr<const exq::runtime::TokenVocab> {
    const auto path = std::filesystem::path(EXQ_SOURCE_DIR).parent_path() / "shared/models/smollm2-135m-instruct/tokenizer.json";
    if (!std::filesystem::exists(path)) return nullptr;
    const auto tok = exq::tokenizer::Tokenizer::from_file(path);
    return exq::runtime::TokenVocab::from_tokenizer(tok, tok.vocab_size());
  }();
  return vocab;
}

// Each iteration starts a constraint, feeds `prefix` as single-byte tokens and makes the mask
// (a fresh constraint: no mask to reuse).
void run_mask(benchmark::State& state, const std::shared_ptr<const exq::runtime::TokenVocab>& vocab,
              const char* prefix) {
  if (!vocab) return state.SkipWithError("no vocabulary (../shared missing)");
  std::vector<int32_t> byte_id(256, -1);
  for (int32_t id = 0; id < vocab->size(); ++id)
    if (vocab->bytes(id).size() == 1 && !vocab->special(id))
      byte_id[static_cast<uint8_t>(vocab->bytes(id)[0])] = id;
  const auto grammar = Grammar::parse(json_gbnf());
  int64_t allowed = 0;
  for (auto _ : state) {
    exq::runtime::TokenConstraint c(grammar, vocab, {});
    for (const char* p = prefix; *p; ++p) c.accept(byte_id[static_cast<uint8_t>(*p)]);
    const std::vector<uint8_t>& mask = c.allowed();
    allowed = std::count(mask.begin(), mask.end(), uint8_t{1});
    benchmark::DoNotOptimize(allowed);
  }
  state.counters["vocab"] = static_cast<double>(vocab->size());
  state.counters["allowed_tokens"] = static_cast<double>(allowed);
}

constexpr const char* kInString = R"({"name": "hello wor)";
constexpr const char* kAfterNumber = R"({"a": [{"b": 12)";
constexpr const char* kObjectStart = R"({"a": {)";

void BM_MaskInString150k(benchmark::State& state) { run_mask(state, synthetic_vocab(), kInString); }
BENCHMARK(BM_MaskInString150k)->Unit(benchmark::kMillisecond);
void BM_MaskAfterNumber150k(benchmark::State& state) { run_mask(state, synthetic_vocab(), kAfterNumber); }
BENCHMARK(BM_MaskAfterNumber150k)->Unit(benchmark::kMillisecond);
void BM_MaskObjectStart150k(benchmark::State& state) { run_mask(state, synthetic_vocab(), kObjectStart); }
BENCHMARK(BM_MaskObjectStart150k)->Unit(benchmark::kMillisecond);
void BM_MaskInStringSmolLM2(benchmark::State& state) { run_mask(state, smollm2_vocab(), kInString); }
BENCHMARK(BM_MaskInStringSmolLM2)->Unit(benchmark::kMillisecond);
void BM_MaskAfterNumberSmolLM2(benchmark::State& state) { run_mask(state, smollm2_vocab(), kAfterNumber); }
BENCHMARK(BM_MaskAfterNumberSmolLM2)->Unit(benchmark::kMillisecond);

// Sequential matching: every character steps from the state the last one left.
void BM_SequentialJson(benchmark::State& state) {
  const auto grammar = Grammar::parse(json_gbnf());
  std::string doc = "{";
  for (int i = 0; i < 500; ++i) {
    doc += "\"key" + std::to_string(i) + "\": [" + std::to_string(i * 37) +
           ", true, {\"s\": \"text caf\xC3\xA9\"}], ";
  }
  doc += "\"end\": null}";
  for (auto _ : state) {
    GrammarMatcher m(grammar);
    if (!m.accept(doc) || !m.complete()) return state.SkipWithError("document refused");
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(doc.size()));
}
BENCHMARK(BM_SequentialJson)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
