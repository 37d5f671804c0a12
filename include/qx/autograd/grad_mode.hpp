// Grad mode: whether ops record the autograd graph. Thread-local, like PyTorch's, so inference on one
// thread does not switch recording off for another.
#pragma once
#include "qx/config.hpp"

QX_NAMESPACE_BEGIN

namespace detail {
inline bool& grad_mode_flag() {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

/// True when ops record the graph (outside every NoGradGuard).
inline bool grad_enabled() { return detail::grad_mode_flag(); }

/**
 * @brief Scope in which no op records the autograd graph (inference; optimiser updates).
 * @code
 * { qx::NoGradGuard no_grad; auto logits = model(x); }
 * @endcode
 */
class NoGradGuard {
 public:
  NoGradGuard() : previous_(detail::grad_mode_flag()) { detail::grad_mode_flag() = false; }
  ~NoGradGuard() { detail::grad_mode_flag() = previous_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

QX_NAMESPACE_END
