// `exq chat`: turns read from stdin on a tiny random model (greedy, --json): the prompt cache
// keeps what the context holds and changes no answer, /reset starts over, long conversations
// drop their oldest turns; and the user errors (exit code 2, one line).
#include <gtest/gtest.h>

#include "cli_support.h"

namespace exq::test {
namespace {

using nlohmann::json;

std::filesystem::path tiny_model(const std::string& name) { return tiny_model_dir("chat_" + name); }

std::vector<json> answers(const RunResult& r) {
  std::vector<json> out;
  for (const std::string& line : lines_of(r.out)) out.push_back(json::parse(line));
  return out;
}

std::vector<std::string> chat_args(const std::filesystem::path& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"chat", "-m", dir.string(), "--system", "Be brief.", "--temperature", "0",
                                "--max-tokens", "6", "--json", "--threads", "1", "--device", "cpu"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

TEST(CliChat, TurnsReuseTheContextAndGiveTheSameAnswers) {
  const auto dir = tiny_model("turns");
  // The second message goes on over two lines (a trailing backslash).
  const std::string input = "Hi there\nTell me more \\\nplease\n\n/reset\nHi there\n";
  const RunResult r = run_exq(chat_args(dir), "", input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<json> t = answers(r);
  ASSERT_EQ(t.size(), 3u) << r.out;
  const int64_t p1 = t[0]["prompt_tokens"];
  EXPECT_EQ(t[0]["cached_tokens"], 0);
  // Turn 2 re-sends turn 1 (prompt and answer): at least turn 1's prompt stays in the cache.
  EXPECT_GE(t[1]["cached_tokens"].get<int64_t>(), p1);
  EXPECT_GT(t[1]["prompt_tokens"].get<int64_t>(), t[1]["cached_tokens"].get<int64_t>());
  // After /reset the same message is turn 1 again: the same answer, all but one token cached.
  EXPECT_EQ(t[2]["prompt_tokens"], p1);
  EXPECT_EQ(t[2]["cached_tokens"], p1 - 1);
  EXPECT_EQ(t[2]["text"], t[0]["text"]);
  EXPECT_NE(r.err.find("(new conversation)"), std::string::npos) << r.err;

  // The first answer is generate --chat's.
  const RunResult g = run_exq({"generate", "-m", dir.string(), "--chat", "Hi there", "--system", "Be brief.",
                               "--temperature", "0", "--max-tokens", "6", "--json", "--threads", "1"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(json::parse(g.out)["text"], t[0]["text"]);
  EXPECT_EQ(json::parse(g.out)["prompt_tokens"], p1);

  // Without the prompt cache every turn runs whole, with the same answers.
  const RunResult n = run_exq(chat_args(dir, {"--no-prompt-cache"}), "", input);
  ASSERT_EQ(n.exit_code, 0) << n.err;
  const std::vector<json> u = answers(n);
  ASSERT_EQ(u.size(), 3u) << n.out;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(u[i]["cached_tokens"], 0);
    EXPECT_EQ(u[i]["text"], t[i]["text"]) << "turn " << i;
    EXPECT_EQ(u[i]["prompt_tokens"], t[i]["prompt_tokens"]);
  }

  // With drafts (unigram lookup, so a tiny model's answers give some), the same answers.
  const RunResult d = run_exq(chat_args(dir, {"--draft-max", "4", "--draft-ngram-min", "1"}), "", input);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  const std::vector<json> w = answers(d);
  ASSERT_EQ(w.size(), 3u) << d.out;
  int64_t drafted = 0;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(w[i]["text"], t[i]["text"]) << "turn " << i;
    drafted += w[i]["draft_tokens"].get<int64_t>();
  }
  EXPECT_GT(drafted, 0);

  // With the model as its own draft model: the same answers, every guess kept, over turns whose
  // context the draft model follows.
  const RunResult dm = run_exq(chat_args(dir, {"--draft-model", dir.string(), "--draft-p-min", "0"}), "", input);
  ASSERT_EQ(dm.exit_code, 0) << dm.err;
  const std::vector<json> x = answers(dm);
  ASSERT_EQ(x.size(), 3u) << dm.out;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(x[i]["text"], t[i]["text"]) << "turn " << i;
    EXPECT_EQ(x[i]["accepted_draft_tokens"], x[i]["draft_tokens"]) << "turn " << i;
  }
  EXPECT_GT(x[2]["draft_tokens"].get<int64_t>(), 0);
}

TEST(CliChat, ALongConversationDropsItsOldestTurns) {
  const auto dir = tiny_model("drop");
  const std::string long_msg = "Tell me about the rivers, the mountains and the old towns of this region";
  std::string input;
  for (int i = 0; i < 4; ++i) input += long_msg + "\n";
  const int ctx = 80;
  const RunResult r = run_exq(chat_args(dir, {"--ctx-size", std::to_string(ctx)}), "", input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<json> t = answers(r);
  ASSERT_EQ(t.size(), 4u) << r.out << r.err;
  int dropped = 0;
  for (const json& a : t) {
    EXPECT_LE(a["prompt_tokens"].get<int64_t>() + 6, ctx) << a;
    dropped += a["dropped_turns"].get<int>();
  }
  EXPECT_GE(dropped, 1);
  EXPECT_NE(r.err.find("dropped the oldest"), std::string::npos) << r.err;

  // A message that cannot fit even alone is refused, and the chat goes on.
  std::string huge;
  for (int i = 0; i < 12; ++i) huge += long_msg + " ";
  const RunResult h = run_exq(chat_args(dir, {"--ctx-size", std::to_string(ctx)}), "", huge + "\nHi\n");
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(answers(h).size(), 1u) << h.out;
  EXPECT_NE(h.err.find("the context holds 80: not sent"), std::string::npos) << h.err;
}

TEST(CliChat, UserErrors) {
  expect_user_error(run_exq({"chat"}), "-m MODEL");
  const auto dir = tiny_model("errors");
  expect_user_error(run_exq({"chat", "-m", dir.string(), "--max-tokens", "0"}), "--max-tokens must be >= 1");
  // A model without a chat template.
  json tc = json::parse(read_file(dir / "tokenizer_config.json"));
  tc.erase("chat_template");
  write_text(dir / "tokenizer_config.json", tc.dump());
  expect_user_error(run_exq({"chat", "-m", dir.string(), "--device", "cpu"}, "", "Hi\n"), "no chat template");
}

}  // namespace
}  // namespace exq::test
