// "The X of this thread": an object made current on the calling thread for the lifetime of a scope.
// Scopes nest — the previous current object comes back when a scope ends — and threads do not share them
// (an OpenMP worker sees none unless it opens its own).
#pragma once
#include "qx/config.hpp"

QX_NAMESPACE_BEGIN
namespace detail {

template <class Owner>
class ActiveScope {
 public:
  explicit ActiveScope(Owner& owner) : previous_(slot()) { slot() = &owner; }
  ~ActiveScope() { slot() = previous_; }
  ActiveScope(const ActiveScope&) = delete;
  ActiveScope& operator=(const ActiveScope&) = delete;
  /// The calling thread's current Owner, or null.
  static Owner* active() { return slot(); }

 private:
  static Owner*& slot() {
    thread_local Owner* current = nullptr;
    return current;
  }
  Owner* previous_;
};

}  // namespace detail
QX_NAMESPACE_END
