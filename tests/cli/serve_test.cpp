// `exq serve`: the binary started on a tiny random model, asked over HTTP, stopped by SIGTERM;
// and one test per kind of user error (exit code 2, one line naming the problem).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cli_support.h"

namespace exq::test {
namespace {

using nlohmann::json;

std::filesystem::path tiny_model(const std::string& name) { return tiny_model_dir("serve_" + name); }

json post_json(httplib::Client& c, const json& body) {
  auto res = c.Post("/v1/completions", body.dump(), "application/json");
  if (!res || res->status != 200) return json();
  return json::parse(res->body);
}

TEST(CliServe, AnswersOverHttpAndStopsOnSigterm) {
  const auto dir = tiny_model("ok");
  const auto err = dir.parent_path() / "err";
  const Child child = start_serve(dir, err, {"--alias", "tiny", "--max-tokens", "5"});
  ASSERT_GT(child.port, 0) << read_file(err);
  httplib::Client c("127.0.0.1", child.port);
  c.set_read_timeout(60, 0);
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["data"][0]["id"], "tiny");
  const json req = {{"prompt", "Hello there, how are you"}, {"temperature", 0}};
  const json body = post_json(c, req);
  ASSERT_TRUE(body.is_object());
  // The server's --max-tokens default; a random model rarely stops early.
  EXPECT_LE(body["usage"]["completion_tokens"].get<int>(), 5);
  const int prompt_tokens = body["usage"]["prompt_tokens"].get<int>();
  EXPECT_GT(prompt_tokens, 1);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  // The same prompt again: all but its last token are still in the context.
  const json again = post_json(c, req);
  ASSERT_TRUE(again.is_object());
  EXPECT_EQ(again["usage"]["prompt_tokens_details"]["cached_tokens"], prompt_tokens - 1);
  EXPECT_EQ(again["choices"][0]["text"], body["choices"][0]["text"]);

  EXPECT_EQ(stop_serve(child), 0) << read_file(err);
  EXPECT_NE(read_file(err).find("exq serve: stopped"), std::string::npos);

  // --no-prompt-cache runs every prompt whole, with the same answer; so do drafts (--draft-max),
  // which a request's prediction feeds.
  const Child plain =
      start_serve(dir, err, {"--max-tokens", "5", "--no-prompt-cache", "--draft-max", "4", "--draft-ngram-min", "1"});
  ASSERT_GT(plain.port, 0) << read_file(err);
  httplib::Client c2("127.0.0.1", plain.port);
  c2.set_read_timeout(60, 0);
  post_json(c2, req);
  const json whole = post_json(c2, req);
  ASSERT_TRUE(whole.is_object());
  EXPECT_EQ(whole["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(whole["choices"][0]["text"], body["choices"][0]["text"]);
  json predicted = req;
  predicted["prediction"] = {{"type", "content"}, {"content", body["choices"][0]["text"]}};
  const json p = post_json(c2, predicted);
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(p["choices"][0]["text"], body["choices"][0]["text"]);
  const json& details = p["usage"]["completion_tokens_details"];
  EXPECT_GT(details["accepted_prediction_tokens"].get<int>() + details["rejected_prediction_tokens"].get<int>(), 0)
      << p;
  EXPECT_EQ(stop_serve(plain), 0) << read_file(err);

  // A draft model (the model itself): the same answer, its guesses counted as predictions.
  const Child drafted = start_serve(dir, err, {"--max-tokens", "5", "--draft-model", dir.string(), "--draft-p-min", "0"});
  ASSERT_GT(drafted.port, 0) << read_file(err);
  httplib::Client c3("127.0.0.1", drafted.port);
  c3.set_read_timeout(60, 0);
  const json d = post_json(c3, req);
  ASSERT_TRUE(d.is_object());
  EXPECT_EQ(d["choices"][0]["text"], body["choices"][0]["text"]);
  EXPECT_GT(d["usage"]["completion_tokens_details"]["accepted_prediction_tokens"].get<int>(), 0) << d;
  EXPECT_EQ(d["usage"]["completion_tokens_details"]["rejected_prediction_tokens"], 0) << d;
  EXPECT_EQ(stop_serve(drafted), 0) << read_file(err);

  // --parallel 2: two requests at once, the same answer as alone; /health reports the count.
  const Child par = start_serve(dir, err, {"--max-tokens", "5", "-np", "2", "--metrics"});
  ASSERT_GT(par.port, 0) << read_file(err);
  EXPECT_NE(read_file(err).find("x 2 parallel sequences"), std::string::npos) << read_file(err);
  json both[2];
  std::thread other([&] {
    httplib::Client c5("127.0.0.1", par.port);
    c5.set_read_timeout(60, 0);
    both[1] = post_json(c5, req);
  });
  httplib::Client c4("127.0.0.1", par.port);
  c4.set_read_timeout(60, 0);
  both[0] = post_json(c4, req);
  other.join();
  for (const json& b : both) {
    ASSERT_TRUE(b.is_object());
    EXPECT_EQ(b["choices"][0]["text"], body["choices"][0]["text"]);
  }
  auto health = c4.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(json::parse(health->body)["parallel"], 2);
  // --metrics: the two generations of 5 tokens counted; /props shows the two slots.
  auto metrics = c4.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("\nexq:tokens_predicted_total 10\n"), std::string::npos) << metrics->body;
  auto props = c4.Get("/props");
  ASSERT_TRUE(props);
  EXPECT_EQ(json::parse(props->body)["total_slots"], 2);
  EXPECT_EQ(stop_serve(par), 0) << read_file(err);
}

TEST(CliServe, ParallelErrors) {
  const auto dir = tiny_model("np");
  expect_user_error(run_exq({"serve", "-m", dir.string(), "-np", "0", "--device", "cpu"}),
                    "--parallel must be 1 to 64, got 0");
  expect_user_error(run_exq({"serve", "-m", dir.string(), "-np", "2", "--draft-model", dir.string(), "--device", "cpu"}),
                    "--draft-model runs with --parallel 1 only");
}

TEST(CliServe, MissingModelFlag) { expect_user_error(run_exq({"serve"}), "-m MODEL"); }

TEST(CliServe, BadPort) {
  const auto dir = tiny_model("port");
  expect_user_error(run_exq({"serve", "-m", dir.string(), "--port", "70000"}), "--port must be 0..65535");
}

TEST(CliServe, MissingFolder) {
  const auto dir = temp_dir("serve_missing") / "absent";
  expect_user_error(run_exq({"serve", "-m", dir.string()}), dir.string());
}

TEST(CliServe, AddressThatCannotBeBound) {
  const auto dir = tiny_model("addr");
  expect_user_error(run_exq({"serve", "-m", dir.string(), "--host", "203.0.113.7", "--device", "cpu"}),
                    "cannot listen on 203.0.113.7:8080");
}

}  // namespace
}  // namespace exq::test
