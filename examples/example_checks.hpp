// What the teaching examples share: a check that prints "ok" or "FAILED" beside what it checks and
// counts failures, the largest difference between two arrays, and a printer for small planes.
// Only the programs in examples/ include it; it is not part of the library.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>

namespace example {

inline int failures = 0;

inline void expect(bool ok, const char* what) {
  // Pad to a column by characters, not bytes: the descriptions hold UTF-8 (α, Σ, ∂).
  int characters = 0;
  for (const char* p = what; *p; ++p) characters += (static_cast<unsigned char>(*p) & 0xC0) != 0x80;
  std::printf("  check: %s%*s %s\n", what, std::max(0, 62 - characters), "", ok ? "ok" : "FAILED");
  failures += ok ? 0 : 1;
}

/// max_i |a_i − b_i|
template <class A, class B>
double max_abs_diff(const A* a, const B* b, std::size_t n) {
  double worst = 0;
  for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return worst;
}

template <class T>
void print_plane(const char* name, const T* values, std::ptrdiff_t height, std::ptrdiff_t width) {
  std::printf("%s\n", name);
  for (std::ptrdiff_t i = 0; i < height; ++i) {
    std::printf("   ");
    for (std::ptrdiff_t j = 0; j < width; ++j) std::printf(" %8.4f", static_cast<double>(values[i * width + j]));
    std::printf("\n");
  }
}

/// The last line of every example, and its exit code.
inline int finish() {
  std::printf("%s\n", failures ? "SOME CHECKS FAILED" : "all checks passed");
  return failures ? 1 : 0;
}

}  // namespace example
