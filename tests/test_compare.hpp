// Comparing results computed two ways (thread counts, runs) in the tests.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace qx_test {
/// max over tensors t of max_i |a_t[i] − b_t[i]| / max_i |a_t[i]|: 0 when every value is bit-identical.
/// The lists must pair up tensor by tensor with equal sizes (required here, so that nothing goes uncompared).
inline double worst_relative_difference(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t t = 0; t < a.size(); ++t) {
    REQUIRE(a[t].size() == b[t].size());
    double diff = 0, scale = 1e-30;
    for (std::size_t i = 0; i < a[t].size(); ++i) {
      diff = std::max(diff, std::abs(static_cast<double>(a[t][i]) - b[t][i]));
      scale = std::max(scale, std::abs(static_cast<double>(a[t][i])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}
}  // namespace qx_test
