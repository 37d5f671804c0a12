// qx's exception type and the helpers that build its messages. Every misuse the library detects
// (shapes, devices, freed graphs, malformed files) throws qx::Error with a one-line message that
// names the operation and the values involved.
#pragma once
#include "qx/config.hpp"

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

QX_NAMESPACE_BEGIN

/// @brief The one exception type qx throws for bad input or misuse.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

/// Throws qx::Error whose message is the concatenation of `parts` (streamed with operator<<).
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

/// Throws qx::Error built from `parts` unless `condition` holds.
template <class... Parts>
void check(bool condition, Parts&&... parts) {
  if (!condition) fail(std::forward<Parts>(parts)...);
}

QX_NAMESPACE_END
