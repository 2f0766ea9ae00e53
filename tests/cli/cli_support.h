// Helpers for CLI tests (header-only: the test glob compiles only *_test.cpp): run the built
// `exq` binary and capture its exit code and output, and write small model folders
// (SmolLM2's config shrunk to two layers, random fp16 weights, SmolLM2's tokenizer files)
// that tests then break in one specific way.
#pragma once

#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/half.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::test {

struct RunResult {
  int exit_code = -1;  // -1 when the process died from a signal
  int signal = 0;
  std::string out;
  std::string err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// Runs EXQ_BINARY_DIR/exq with the arguments (each shell-quoted) and `env` prefix
// assignments, `input` on stdin (else /dev/null); stdout and stderr are captured separately.
inline RunResult run_exq(const std::vector<std::string>& args, const std::string& env = "",
                         const std::optional<std::string>& input = std::nullopt) {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("exq_cli_run_{}_{}", ::getpid(), counter++);
  std::filesystem::create_directories(dir);
  // Built with fmt and append(): GCC 12 warns (-Wrestrict, falsely) on `" " + std::string`.
  std::string cmd = fmt::format("{} {}", env, shell_quote(std::string(EXQ_BINARY_DIR) + "/exq"));
  for (const auto& a : args) cmd.append(" ").append(shell_quote(a));
  if (input) write_text(dir / "in", *input);
  cmd.append(fmt::format(" >{} 2>{} <{}", shell_quote((dir / "out").string()),
                         shell_quote((dir / "err").string()),
                         input ? shell_quote((dir / "in").string()) : std::string("/dev/null")));
  const int status = std::system(cmd.c_str());
  RunResult r;
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
    if (r.exit_code > 128) r.signal = r.exit_code - 128;  // the shell reports a killed child so
  } else if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
  }
  r.out = read_file(dir / "out");
  r.err = read_file(dir / "err");
  std::filesystem::remove_all(dir);
  return r;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

inline std::filesystem::path smollm2_dir() { return shared_dir() / "models" / "smollm2-135m-instruct"; }

// SmolLM2's config.json with the sizes shrunk; vocab stays so the real tokenizer fits.
inline nlohmann::json tiny_config() {
  auto c = nlohmann::json::parse(read_file(smollm2_dir() / "config.json"));
  c["hidden_size"] = 64;
  c["intermediate_size"] = 96;
  c["num_hidden_layers"] = 2;
  c["num_attention_heads"] = 4;
  c["num_key_value_heads"] = 2;
  c["head_dim"] = 16;
  c["max_position_embeddings"] = 256;
  return c;
}

// Every tensor the config implies (tied head, no biases), random fp16 in [-0.1, 0.1];
// norm weights are 1.
inline std::map<std::string, Tensor> tiny_tensors(const nlohmann::json& c, uint64_t seed = 1) {
  const int64_t h = c["hidden_size"], inter = c["intermediate_size"], vocab = c["vocab_size"];
  const int64_t q = int64_t{c["num_attention_heads"]} * int64_t{c["head_dim"]};
  const int64_t kv = int64_t{c["num_key_value_heads"]} * int64_t{c["head_dim"]};
  std::map<std::string, Shape> shapes = {{"model.embed_tokens.weight", {vocab, h}}, {"model.norm.weight", {h}}};
  for (int l = 0; l < int{c["num_hidden_layers"]}; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    shapes[p + "input_layernorm.weight"] = {h};
    shapes[p + "post_attention_layernorm.weight"] = {h};
    shapes[p + "self_attn.q_proj.weight"] = {q, h};
    shapes[p + "self_attn.k_proj.weight"] = {kv, h};
    shapes[p + "self_attn.v_proj.weight"] = {kv, h};
    shapes[p + "self_attn.o_proj.weight"] = {h, q};
    shapes[p + "mlp.gate_proj.weight"] = {inter, h};
    shapes[p + "mlp.up_proj.weight"] = {inter, h};
    shapes[p + "mlp.down_proj.weight"] = {h, inter};
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-0.1f, 0.1f);
  std::map<std::string, Tensor> out;
  for (const auto& [name, shape] : shapes) {
    Tensor t(DType::F16, shape);
    const bool norm = name.find("norm") != std::string::npos;
    for (auto& v : t.span<uint16_t>()) v = float_to_half(norm ? 1.0f : dist(rng));
    out.emplace(name, std::move(t));
  }
  return out;
}

// Writes config.json, model.safetensors and SmolLM2's tokenizer / generation files into dir.
inline void write_model_dir(const std::filesystem::path& dir, const nlohmann::json& config,
                            const std::map<std::string, Tensor>& tensors) {
  std::filesystem::create_directories(dir);
  write_text(dir / "config.json", config.dump(2));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    write_text(dir / f, read_file(smollm2_dir() / f));  // a copy would keep the read-only mode
  }
  std::vector<io::NamedTensor> named;
  for (const auto& [name, t] : tensors) named.push_back({name, t.view()});
  io::write_safetensors(dir / "model.safetensors", named);
}

// A fresh tiny random model folder (tiny_config, tiny_tensors) under a temp dir named `name`.
inline std::filesystem::path tiny_model_dir(const std::string& name) {
  const auto dir = temp_dir(name) / "model";
  const nlohmann::json config = tiny_config();
  write_model_dir(dir, config, tiny_tensors(config));
  return dir;
}

// The shape of every user-error exit: code 2, exactly one "error: ..." line naming `what`.
inline void expect_user_error(const RunResult& r, const std::string& what) {
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.err;
  const auto lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_EQ(lines[0].rfind("error: ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find(what), std::string::npos) << "'" << what << "' not in: " << lines[0];
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos);
}

// `exq serve -m dir --port 0 --device cpu ARGS...` in a child process whose stderr goes to
// `err`; the port comes from its "listening on http://127.0.0.1:PORT" line (0 on failure).
struct Child {
  pid_t pid = -1;
  int port = 0;
};

inline Child start_serve(const std::filesystem::path& dir, const std::filesystem::path& err,
                  std::vector<std::string> args) {
  Child c;
  c.pid = fork();
  if (c.pid < 0) return c;
  if (c.pid == 0) {
    const std::string exq = std::string(EXQ_BINARY_DIR) + "/exq";
    FILE* f = std::freopen(err.c_str(), "w", stderr);
    if (f == nullptr) _exit(127);
    std::vector<std::string> all = {exq, "serve", "-m", dir.string(), "--port", "0", "--device", "cpu"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exq.c_str(), argv.data());
    _exit(127);
  }
  for (int i = 0; i < 600 && c.port == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::string text = read_file(err);
    const size_t at = text.find("http://127.0.0.1:");
    if (at != std::string::npos) c.port = std::atoi(text.c_str() + at + 17);
    if (waitpid(c.pid, nullptr, WNOHANG) == c.pid) break;
  }
  return c;
}

// SIGTERM, then the exit status (-1 when it did not exit normally).
inline int stop_serve(const Child& c) {
  if (kill(c.pid, SIGTERM) != 0) return -1;
  int status = 0;
  if (waitpid(c.pid, &status, 0) != c.pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

}  // namespace exq::test
