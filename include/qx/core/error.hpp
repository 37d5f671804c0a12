// qx's exception type and the helpers that build its messages. Every misuse the library detects
// (shapes, devices, freed graphs, malformed files) throws qx::Error with a one-line message that
// names the operation and the values involved. Without exceptions (-fno-exceptions or
// QX_NO_EXCEPTIONS, config.hpp) the same message goes to an error handler and the program ends.
#pragma once
#include "qx/config.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
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

/// Receives the message of an error when qx is built without exceptions. It must not return (log, then
/// abort, exit or longjmp); if it does, qx aborts.
using ErrorHandler = void (*)(const char* message);

namespace detail {
/// The default handler: the message on one line of standard error, then abort.
inline void print_and_abort(const char* message) {
  std::fprintf(stderr, "qx: %s\n", message);
  std::fflush(stderr);
  std::abort();
}
inline std::atomic<ErrorHandler>& error_handler() {
  static std::atomic<ErrorHandler> handler{&print_and_abort};
  return handler;
}
}  // namespace detail

/// Sets the handler of a build without exceptions (ignored where exceptions exist); returns the old one.
inline ErrorHandler set_error_handler(ErrorHandler handler) {
  return detail::error_handler().exchange(handler ? handler : &detail::print_and_abort);
}

/// Raises the error whose message is `message`: throws qx::Error, or without exceptions calls the handler.
[[noreturn]] inline void raise_error(const std::string& message) {
#if QX_EXCEPTIONS
  throw Error(message);
#else
  detail::error_handler().load()(message.c_str());
  std::abort();  // a handler that returns cannot resume the failed operation
#endif
}

/// Throws qx::Error whose message is the concatenation of `parts` (streamed with operator<<).
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  raise_error(detail::concat(std::forward<Parts>(parts)...));
}

/// Throws qx::Error built from `parts` unless `condition` holds.
template <class... Parts>
void check(bool condition, Parts&&... parts) {
  if (!condition) fail(std::forward<Parts>(parts)...);
}

QX_NAMESPACE_END
