// `exq serve`: the binary started on a tiny random model, asked over HTTP, stopped by SIGTERM;
// and one test per kind of user error (exit code 2, one line naming the problem).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "cli_support.h"

namespace exq::test {
namespace {

using nlohmann::json;

std::filesystem::path tiny_model(const std::string& name) {
  const auto dir = temp_dir("serve_" + name) / "model";
  const json config = tiny_config();
  write_model_dir(dir, config, tiny_tensors(config));
  return dir;
}

TEST(CliServe, AnswersOverHttpAndStopsOnSigterm) {
  const auto dir = tiny_model("ok");
  const auto err = dir.parent_path() / "err";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string exq = std::string(EXQ_BINARY_DIR) + "/exq";
    FILE* f = std::freopen(err.c_str(), "w", stderr);
    if (f == nullptr) _exit(127);
    execl(exq.c_str(), exq.c_str(), "serve", "-m", dir.c_str(), "--port", "0", "--device", "cpu",
          "--alias", "tiny", "--max-tokens", "5", static_cast<char*>(nullptr));
    _exit(127);
  }
  // The port comes from the "listening on http://127.0.0.1:PORT" line.
  int port = 0;
  for (int i = 0; i < 600 && port == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::string text = read_file(err);
    const size_t at = text.find("http://127.0.0.1:");
    if (at != std::string::npos) port = std::atoi(text.c_str() + at + 17);
    if (waitpid(pid, nullptr, WNOHANG) == pid) FAIL() << "exq serve exited: " << text;
  }
  ASSERT_GT(port, 0) << read_file(err);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["data"][0]["id"], "tiny");
  res = c.Post("/v1/completions", json{{"prompt", "Hello"}, {"temperature", 0}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  // The server's --max-tokens default; a random model rarely stops early.
  EXPECT_LE(body["usage"]["completion_tokens"].get<int>(), 5);
  EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 0);

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << read_file(err);
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_file(err);
  EXPECT_NE(read_file(err).find("exq serve: stopped"), std::string::npos);
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
