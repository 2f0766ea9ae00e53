// `exq embed` and `exq serve --embeddings` on a tiny random model (SmolLM2's tokenizer): the
// vectors are the library's (LlamaModel::hidden_states pooled), unit length unless asked not,
// cut by --dimensions / `dimensions`; the server's equal the command's; user errors are one line.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cli_support.h"
#include "model/llama.h"
#include "runtime/embedding.h"
#include "tokenizer/tokenizer.h"

namespace exq::test {
namespace {

using nlohmann::json;

// The library's embedding of `text` (tokenized with its special tokens, as the command does).
std::vector<float> library_embedding(const std::filesystem::path& dir, const std::string& text,
                                     const runtime::EmbeddingOptions& o) {
  model::LlamaModel m = model::LlamaModel::load(dir);
  const auto tok = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
  const std::vector<int32_t> ids = tok.encode(text, true);
  model::KvCache cache = m.make_cache(static_cast<int64_t>(ids.size()));
  return runtime::pool_embedding(m.hidden_states(ids, cache), o);
}

double max_diff(const json& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double d = 0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) d = std::max(d, std::fabs(got[i].get<double>() - want[i]));
  return d;
}

double norm(const json& v) {
  double s = 0;
  for (const json& x : v) s += x.get<double>() * x.get<double>();
  return std::sqrt(s);
}

TEST(CliEmbed, VectorsAreTheLibrarysPooledStates) {
  const auto dir = tiny_model_dir("embed_ok");
  const RunResult r = run_exq({"embed", "-m", dir.string(), "-p", "The cat sat.", "-p", "The cat sat.", "-p",
                               "Quarterly revenue rose 4 %.", "--device", "cpu", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["pooling"], "last");  // no sentence-transformers files
  EXPECT_EQ(j["normalized"], true);
  EXPECT_EQ(j["dimensions"], 64);
  ASSERT_EQ(j["data"].size(), 3u);
  runtime::EmbeddingOptions o;
  EXPECT_LE(max_diff(j["data"][0]["embedding"], library_embedding(dir, "The cat sat.", o)), 1e-7);
  EXPECT_NEAR(norm(j["data"][2]["embedding"]), 1.0, 1e-6);
  EXPECT_NEAR(j["similarity"][0][1].get<double>(), 1.0, 1e-9);
  EXPECT_LT(j["similarity"][0][2].get<double>(), 0.999);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 6);

  // Mean pooling without normalizing; the first 8 dimensions, normalized.
  const RunResult m = run_exq({"embed", "-m", dir.string(), "-p", "The cat sat.", "--pooling", "mean",
                               "--no-normalize", "--device", "cpu", "--json"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  o.pooling = runtime::Pooling::kMean;
  o.normalize = false;
  EXPECT_LE(max_diff(json::parse(m.out)["data"][0]["embedding"], library_embedding(dir, "The cat sat.", o)), 1e-7);
  const RunResult d = run_exq({"embed", "-m", dir.string(), "-p", "The cat sat.", "--dimensions", "8", "--json"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  const json cut = json::parse(d.out)["data"][0]["embedding"];
  ASSERT_EQ(cut.size(), 8u);
  EXPECT_NEAR(norm(cut), 1.0, 1e-6);

  // A file: a text a line; plain output with the similarity matrix.
  const auto file = dir.parent_path() / "texts.txt";
  write_text(file, "first line\n\nsecond line\r\n");
  const RunResult f = run_exq({"embed", "-m", dir.string(), "-f", file.string(), "--device", "cpu"});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  const auto lines = lines_of(f.out);
  ASSERT_GE(lines.size(), 5u) << f.out;
  EXPECT_EQ(lines[0].rfind("embedding 0: ", 0), 0u);
  EXPECT_EQ(lines[1].rfind("embedding 1: ", 0), 0u);
  EXPECT_NE(f.out.find("cosine similarity:"), std::string::npos);
}

TEST(CliEmbed, UserErrors) {
  const auto dir = tiny_model_dir("embed_bad");
  expect_user_error(run_exq({"embed", "-m", dir.string()}), "embed needs texts");
  expect_user_error(run_exq({"embed", "-m", dir.string(), "-p", "x", "--dimensions", "65"}), "--dimensions 65");
  expect_user_error(run_exq({"embed", "-m", dir.string(), "-p", "x", "--pooling", "max"}), "unknown pooling 'max'");
  expect_user_error(run_exq({"embed", "-m", dir.string(), "-p", "a text longer than two tokens", "--ctx-size", "2"}),
                    "more than the context of 2 (--ctx-size)");
  expect_user_error(run_exq({"embed", "-m", dir.string(), "-p", "x", "--ctx-size", "0"}), "--ctx-size must be >= 1");
  expect_user_error(run_exq({"serve", "-m", dir.string(), "--pooling", "mean"}), "need --embeddings");
}

TEST(CliServe, EmbeddingsOverHttp) {
  const auto dir = tiny_model_dir("serve_embed");
  const auto err = dir.parent_path() / "serve.err";
  const Child child = start_serve(dir, err, {"--embeddings"});
  ASSERT_GT(child.port, 0) << read_file(err);
  httplib::Client c("127.0.0.1", child.port);
  auto res = c.Post("/v1/embeddings", R"({"input": ["The cat sat.", "Quarterly revenue rose 4 %."]})",
                    "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["index"], 1);
  EXPECT_LE(max_diff(j["data"][0]["embedding"], library_embedding(dir, "The cat sat.", {})), 1e-7);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 6);
  // base64 of the first 8 dimensions, normalized: little-endian float32.
  res = c.Post("/v1/embeddings", R"({"input": "The cat sat.", "dimensions": 8, "encoding_format": "base64"})",
               "application/json");
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no reply");
  const std::string b64 = json::parse(res->body)["data"][0]["embedding"].get<std::string>();
  ASSERT_EQ(b64.size(), 44u);  // 32 bytes
  const std::string digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes;
  for (size_t i = 0; i < b64.size(); i += 4) {
    uint32_t x = 0;
    for (size_t k = 0; k < 4; ++k) x = x << 6 | (b64[i + k] == '=' ? 0 : static_cast<uint32_t>(digits.find(b64[i + k])));
    bytes += static_cast<char>(x >> 16);
    bytes += static_cast<char>(x >> 8 & 255);
    bytes += static_cast<char>(x & 255);
  }
  std::vector<float> v(8);
  std::memcpy(v.data(), bytes.data(), 32);
  runtime::EmbeddingOptions o;
  o.dimensions = 8;
  EXPECT_LE(max_diff(json(v), library_embedding(dir, "The cat sat.", o)), 1e-7);
  // Token ids as input; refusals.
  res = c.Post("/v1/embeddings", R"({"input": [1, 2, 3]})", "application/json");
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no reply");
  res = c.Post("/v1/embeddings", R"({"input": []})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  res = c.Post("/v1/embeddings", R"({"input": "x", "dimensions": 65})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "dimensions");
  res = c.Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 501);
  EXPECT_EQ(stop_serve(child), 0);

  // A completion server answers /v1/embeddings with 501, naming the flag.
  const Child plain = start_serve(dir, err, {});
  ASSERT_GT(plain.port, 0) << read_file(err);
  httplib::Client c2("127.0.0.1", plain.port);
  res = c2.Post("/v1/embeddings", R"({"input": "x"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 501);
  EXPECT_NE(res->body.find("--embeddings"), std::string::npos);
  EXPECT_EQ(stop_serve(plain), 0);
}

}  // namespace
}  // namespace exq::test
