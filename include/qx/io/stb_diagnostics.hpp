// The warnings stb's single-file implementations raise under qx's -Wall -Wextra -Wshadow -Wconversion,
// silenced around their #include only (io/png.hpp, io/image.hpp): stb is third-party code compiled
// inside qx's headers, and a consumer's own warnings must stay on for everything else.
#pragma once

#if defined(__GNUC__)
#define QX_STB_DIAGNOSTICS_PUSH                                 \
  _Pragma("GCC diagnostic push")                                \
  _Pragma("GCC diagnostic ignored \"-Wunused-function\"")       \
  _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"") \
  _Pragma("GCC diagnostic ignored \"-Wshadow\"")                \
  _Pragma("GCC diagnostic ignored \"-Wsign-compare\"")          \
  _Pragma("GCC diagnostic ignored \"-Wconversion\"")            \
  _Pragma("GCC diagnostic ignored \"-Wdouble-promotion\"")
#define QX_STB_DIAGNOSTICS_POP _Pragma("GCC diagnostic pop")
#else
#define QX_STB_DIAGNOSTICS_PUSH
#define QX_STB_DIAGNOSTICS_POP
#endif
