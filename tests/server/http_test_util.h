// HTTP helpers of the server tests: a server on a free local port run from a thread, a POST
// with its JSON reply, and the payloads of an event stream.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <string>
#include <thread>
#include <vector>

#include "server/server.h"

namespace exq::server::http_test {

using json = nlohmann::json;

// A server on a free port of 127.0.0.1, serving from a thread until destroyed.
class Running {
 public:
  explicit Running(ServerModel m) : server_(std::move(m)) {
    port_ = server_.bind("127.0.0.1", 0);
    thread_ = std::thread([this] { server_.run(); });
  }
  ~Running() {
    server_.stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120, 0);
    return c;
  }

 private:
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

struct Reply {
  int status = 0;
  json body;
  std::string raw;
};

inline Reply post(const Running& s, const std::string& path, const std::string& body) {
  auto res = s.client().Post(path, body, "application/json");
  Reply r;
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  if (res->get_header_value("Content-Type").rfind("application/json", 0) == 0) r.body = json::parse(res->body);
  return r;
}

// The JSON payloads of an event stream ("[DONE]" as a string).
inline std::vector<json> events(const std::string& raw) {
  std::vector<json> out;
  size_t at = 0;
  while (at < raw.size()) {
    const size_t end = raw.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "unterminated event in: " << raw;
    if (end == std::string::npos) break;
    const std::string ev = raw.substr(at, end - at);
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    const std::string data = ev.substr(6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
    at = end + 2;
  }
  return out;
}

}  // namespace exq::server::http_test
