// A terminal progress bar for long work: done/total, percent, rate, elapsed time and ETA, plus a free
// text (loss, accuracy). On a terminal it redraws one line in place at most ten times a second; when
// the stream is not a terminal (CI logs, files) it prints a plain line at every 10 % instead.
#pragma once
#include "qx/config.hpp"
#include "qx/core/shape.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

QX_NAMESPACE_BEGIN
namespace io {

namespace detail {
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  const long s = static_cast<long>(seconds + 0.5);
  char buffer[32];
  if (s >= 3600) std::snprintf(buffer, sizeof buffer, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buffer, sizeof buffer, "%02ld:%02ld", s / 60, s % 60);
  return buffer;
}
}  // namespace detail

class ProgressBar {
 public:
  /// `interactive`: redraw in place; by default when `out` is std::cerr/std::cout attached to a terminal.
  ProgressBar(std::string label, Index total, std::ostream& out = std::cerr, int interactive = -1)
      : label_(std::move(label)), total_(total > 0 ? total : 1), out_(out), start_(clock::now()), last_draw_(start_) {
    if (interactive < 0) {
      const int fd = (&out == &std::cerr) ? 2 : (&out == &std::cout) ? 1 : -1;
      interactive_ = fd >= 0 && ::isatty(fd);
    } else {
      interactive_ = interactive != 0;
    }
  }

  /// Reports `done` items finished; `extra` is shown after the figures (e.g. "loss 0.412").
  void update(Index done, std::string_view extra = {}) {
    done_ = done;
    const auto now = clock::now();
    const int decile = static_cast<int>(10 * done_ / total_);
    if (interactive_) {
      if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
      out_ << '\r' << line(extra) << "\033[K" << std::flush;
    } else {
      if (decile <= last_decile_ && done_ < total_) return;
      out_ << line(extra) << '\n' << std::flush;
      last_decile_ = decile;
    }
    last_draw_ = now;
  }

  /// Draws the final state and ends the line.
  void finish(std::string_view extra = {}) {
    if (finished_) return;
    finished_ = true;
    if (interactive_) out_ << '\r' << line(extra) << "\033[K\n" << std::flush;
    else if (last_decile_ < 10 || !extra.empty()) out_ << line(extra) << '\n' << std::flush;
  }

  double elapsed_seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

  /// "label  [#####.....]  512/1000  51.2%  830.1/s  00:01 < 00:01  extra"
  std::string line(std::string_view extra = {}) const {
    const double elapsed = elapsed_seconds();
    const double fraction = static_cast<double>(done_) / static_cast<double>(total_);
    const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0;
    const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1;
    constexpr int width = 24;
    const int filled = static_cast<int>(fraction * width + 0.5);
    char figures[160];
    std::snprintf(figures, sizeof figures, "%lld/%lld %5.1f%% %8.1f/s  %s < %s", static_cast<long long>(done_),
                  static_cast<long long>(total_), 100.0 * fraction, rate, detail::format_duration(elapsed).c_str(),
                  detail::format_duration(eta).c_str());
    std::string bar = label_ + " [" + std::string(static_cast<std::size_t>(filled), '#') +
                      std::string(static_cast<std::size_t>(width - filled), '.') + "] " + figures;
    if (!extra.empty()) bar += "  " + std::string(extra);
    return bar;
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  Index total_, done_ = 0;
  std::ostream& out_;
  clock::time_point start_, last_draw_;
  bool interactive_ = false, finished_ = false;
  int last_decile_ = -1;
};

}  // namespace io
QX_NAMESPACE_END
