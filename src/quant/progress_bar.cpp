#include "quant/progress_bar.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace exq::quant {
namespace {

constexpr int kBarWidth = 30;
constexpr double kRedrawSeconds = 0.1;  // terminal: at most ten redraws a second
constexpr double kQuietSeconds = 5.0;   // plain lines with an unknown total: one per 5 s

}  // namespace

ProgressBar::ProgressBar(std::string stage, std::string label, std::string unit, bool json,
                         nlohmann::ordered_json fields, Style style, std::FILE* text,
                         std::FILE* json_out)
    : stage_(std::move(stage)),
      label_(std::move(label)),
      unit_(std::move(unit)),
      fields_(std::move(fields)),
      style_(style),
      text_(text),
      json_out_(json_out),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {
  if (style_ == Style::kAuto) {
    if (json) style_ = Style::kJson;
    else style_ = isatty(fileno(text_)) ? Style::kTerminal : Style::kLines;
  }
}

ProgressBar::~ProgressBar() {
  if (open_line_) {
    std::fputc('\n', text_);
    std::fflush(text_);
  }
}

void ProgressBar::update(int64_t done, int64_t total) {
  done = std::max<int64_t>(done, 0);
  const bool final = total > 0 && done >= total;
  if (finished_ && final) return;
  const bool first = !started_;
  started_ = true;
  done_ = done;
  total_ = total;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  bool show = first || final;
  if (!show) {
    switch (style_) {
      case Style::kTerminal:
        show = since >= kRedrawSeconds;
        break;
      case Style::kLines:
      case Style::kJson: {
        const int64_t parts = style_ == Style::kJson ? 20 : 10;
        if (total > 0) {
          const int64_t step = done * parts / total;
          show = step > last_step_;
        } else {
          show = since >= kQuietSeconds;
        }
        break;
      }
      case Style::kAuto:
        break;
    }
  }
  if (!show) return;
  if (total > 0) last_step_ = done * (style_ == Style::kJson ? 20 : 10) / total;
  last_ = now;
  print(done, total, final);
  if (final) finished_ = true;
}

void ProgressBar::finish() {
  if (finished_) return;
  const int64_t total = total_ > 0 ? total_ : done_;
  if (total <= 0) {
    // Nothing was counted: still close the stage so readers see it end.
    print(0, 0, true);
    finished_ = true;
    return;
  }
  update(total, total);
}

void ProgressBar::print(int64_t done, int64_t total, bool final) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total))
                                    : (final ? 1.0 : 0.0);
  const std::string counts = total > 0 ? fmt::format("{}/{} {}", done, total, unit_)
                                       : fmt::format("{} {}", done, unit_);
  switch (style_) {
    case Style::kJson: {
      nlohmann::ordered_json j{{"event", "progress"}, {"stage", stage_}, {"message", label_},
                               {"done", done},        {"total", total},  {"unit", unit_},
                               {"fraction", std::round(fraction * 1000) / 1000},
                               {"seconds", std::round(seconds * 100) / 100}, {"final", final}};
      for (const auto& [k, v] : fields_.items()) j[k] = v;
      std::fprintf(json_out_, "%s\n", j.dump().c_str());
      std::fflush(json_out_);
      return;
    }
    case Style::kTerminal: {
      const int filled = static_cast<int>(std::lround(fraction * kBarWidth));
      const std::string bar = std::string(static_cast<size_t>(filled), '#') +
                              std::string(static_cast<size_t>(kBarWidth - filled), '.');
      // \r and a cleared line end: the bar is redrawn in place.
      std::fprintf(text_, "\r -- %s [%s] %3.0f%%  %s  %.1f s\x1b[K%s", label_.c_str(), bar.c_str(),
                   fraction * 100, counts.c_str(), seconds, final ? "\n" : "");
      open_line_ = !final;
      break;
    }
    case Style::kLines:
    case Style::kAuto:
      std::fprintf(text_, " -- %s: %s (%.0f%%), %.1f s\n", label_.c_str(), counts.c_str(),
                   fraction * 100, seconds);
      break;
  }
  std::fflush(text_);
}

}  // namespace exq::quant
