// Ctrl-C during training without losing work: while an InterruptGuard lives, the first SIGINT or SIGTERM
// only raises a flag, which the training loop reads at the next batch boundary — there it saves its
// state and ends with train::Interrupted. A second signal ends the process at once, as the default action
// would, so a loop that never polls can still be stopped. A signal handler may do nothing but set a flag
// of type sig_atomic_t (C++ [support.signal]), hence the polling.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"

#include <signal.h>

#include <csignal>
#include <string>

QX_NAMESPACE_BEGIN
namespace train {

/// Training stopped at a batch boundary on SIGINT/SIGTERM; the message says where the state was saved.
class Interrupted : public Error {
 public:
  using Error::Error;
};

/// Throws Interrupted (without exceptions: the error handler gets the message, as for every qx error).
[[noreturn]] inline void raise_interrupted(const std::string& message) {
#if QX_EXCEPTIONS
  throw Interrupted(message);
#else
  raise_error(message);
#endif
}

namespace detail {
inline volatile std::sig_atomic_t& caught_signal() {
  static volatile std::sig_atomic_t signal_number = 0;
  return signal_number;
}

inline void on_stop_signal(int signal_number) {
  if (caught_signal() != 0) {  // the second signal: the default action (the process ends)
    std::signal(signal_number, SIG_DFL);
    std::raise(signal_number);
    return;
  }
  caught_signal() = signal_number;
}
}  // namespace detail

/// Catches SIGINT and SIGTERM for its lifetime (one guard at a time), restoring the previous handlers after.
class InterruptGuard {
 public:
  InterruptGuard() {
    detail::caught_signal() = 0;
    struct sigaction action {};
    action.sa_handler = &detail::on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous_int_);
    sigaction(SIGTERM, &action, &previous_term_);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &previous_int_, nullptr);
    sigaction(SIGTERM, &previous_term_, nullptr);
    detail::caught_signal() = 0;
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  /// The signal caught since construction (SIGINT or SIGTERM), or 0.
  int caught() const noexcept { return detail::caught_signal(); }

 private:
  struct sigaction previous_int_ {}, previous_term_ {};
};

}  // namespace train
QX_NAMESPACE_END
