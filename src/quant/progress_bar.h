// Progress of one long step of `exq quantize` that has no module lines of its own (tokenizing
// or sampling calibration rows, embedding them). Text mode: a bar redrawn in place on stderr
// when stderr is a terminal, otherwise a plain line at every tenth of the way (so logs stay
// short). JSON mode: {"event": "progress", "stage": ..., "done": n, "total": N, ...} lines on
// stdout, like quant::Progress's other events, at every twentieth of the way and at the end.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace exq::quant {

// Callback form the calibration code reports through: done of total units (tokens, bytes,
// rows; the unit is the caller's).
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

class ProgressBar {
 public:
  enum class Style { kAuto, kTerminal, kLines, kJson };

  // stage: short machine name ("tokenize", "sample", "embed"); label: the text shown; unit:
  // what done/total count ("tokens", "rows", "bytes"); fields are copied into every JSON event.
  // kAuto: kJson when json, else kTerminal when `text` is a terminal, else kLines.
  ProgressBar(std::string stage, std::string label, std::string unit, bool json,
              nlohmann::ordered_json fields = nlohmann::ordered_json::object(),
              Style style = Style::kAuto, std::FILE* text = stderr, std::FILE* json_out = stdout);
  ~ProgressBar();  // ends an unfinished terminal line
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Reports done of total (total may change between calls; total <= 0 counts as unknown).
  // Output is throttled; done >= total always prints.
  void update(int64_t done, int64_t total);
  // The final report (done = total) if update() has not printed it yet.
  void finish();
  // A ProgressFn that forwards to update(); valid while this object lives.
  ProgressFn callback() {
    return [this](int64_t done, int64_t total) { update(done, total); };
  }

  Style style() const { return style_; }

 private:
  void print(int64_t done, int64_t total, bool final);

  std::string stage_, label_, unit_;
  nlohmann::ordered_json fields_;
  Style style_;
  std::FILE* text_;
  std::FILE* json_out_;
  std::chrono::steady_clock::time_point start_, last_;
  int64_t last_step_ = -1;  // last printed twentieth / tenth
  bool started_ = false, finished_ = false, open_line_ = false;
  int64_t done_ = 0, total_ = 0;
};

}  // namespace exq::quant
