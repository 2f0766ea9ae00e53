// Tokenizer throughput: encode MB/s of the SmolLM2 tokenizer on ../shared/data/wiki.utf8
// (or $EXQ_SHARED/data/wiki.utf8), cold (fresh word cache) and warm, plus decode.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;

fs::path shared_dir() {
  if (const char* env = std::getenv("EXQ_SHARED")) return env;
  return fs::path(EXQ_SOURCE_DIR).parent_path() / "shared";
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const std::string& wiki() {
  static const std::string text = read_file(shared_dir() / "data" / "wiki.utf8");
  return text;
}

fs::path tokenizer_json() { return shared_dir() / "models" / "smollm2-135m-instruct" / "tokenizer.json"; }

// Each iteration loads a fresh tokenizer (timer paused), so the BPE word cache starts empty.
void BM_EncodeWikiCold(benchmark::State& state) {
  const std::string& text = wiki();
  if (text.empty()) return state.SkipWithError("wiki.utf8 not found");
  for (auto _ : state) {
    state.PauseTiming();
    auto tok = exq::tokenizer::Tokenizer::from_file(tokenizer_json());
    state.ResumeTiming();
    benchmark::DoNotOptimize(tok.encode(text));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeWikiCold)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_EncodeWikiWarm(benchmark::State& state) {
  const std::string& text = wiki();
  if (text.empty()) return state.SkipWithError("wiki.utf8 not found");
  auto tok = exq::tokenizer::Tokenizer::from_file(tokenizer_json());
  tok.encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok.encode(text));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeWikiWarm)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_DecodeWiki(benchmark::State& state) {
  const std::string& text = wiki();
  if (text.empty()) return state.SkipWithError("wiki.utf8 not found");
  auto tok = exq::tokenizer::Tokenizer::from_file(tokenizer_json());
  const auto ids = tok.encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(ids.size());
}
BENCHMARK(BM_DecodeWiki)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_LoadTokenizer(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(exq::tokenizer::Tokenizer::from_file(tokenizer_json()));
}
BENCHMARK(BM_LoadTokenizer)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
