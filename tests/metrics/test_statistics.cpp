// The report's statistics against values worked out by hand: Wilcoxon's exact p on the textbook pairs of
// R's wilcox.test example (Hollander & Wolfe), the normal approximation with ties and zeros against a
// plain-Python computation of the same formulas (below), and the cluster bootstrap against cases whose
// interval is known in closed form.
#include <doctest/doctest.h>

#include "qx/metrics/statistics.hpp"

#include <cmath>
#include <numeric>

using namespace qx::metrics;

TEST_CASE("Wilcoxon signed-rank: exact p of the textbook pairs") {
  // x, y: R's ?wilcox.test depression example. Differences ranked by |d|: 0.01 (1), −0.08 (2), −0.147 (3),
  // 0.43, 0.49, 0.59, 0.62, 0.952, 1.022 (4…9): W− = 5, W+ = 40. Subsets of {1…9} with sum ≤ 5: 10 of 512,
  // so the two-sided exact p = 2·10/512 = 0.0390625 (R: one-sided 0.01953).
  const std::vector<double> x{1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30};
  const std::vector<double> y{0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29};
  const auto r = wilcoxon_signed_rank(x, y);
  CHECK(r.n == 9);
  CHECK(r.w_plus == doctest::Approx(40));
  CHECK(r.w_minus == doctest::Approx(5));
  CHECK(r.exact);
  CHECK(r.p == doctest::Approx(0.0390625));
  const auto swapped = wilcoxon_signed_rank(y, x);  // symmetric
  CHECK(swapped.p == doctest::Approx(r.p));
  CHECK(wilcoxon_signed_rank({1, 2}, {1, 2}).p == 1.0);  // all differences zero: nothing to test
  CHECK_THROWS_AS(wilcoxon_signed_rank({1}, {1, 2}), qx::Error);
}

TEST_CASE("Wilcoxon signed-rank: normal approximation with zeros dropped, tie and continuity correction") {
  // d_i = (7i mod 11) − 4, i = 1…60: 5 zeros dropped, n = 55, many ties. Plain Python, independent of qx:
  //   ranks averaged over ties; W+ = 1056.5; var = n(n+1)(2n+1)/24 − Σ(t³−t)/48;
  //   z = (W+ − n(n+1)/4 − 0.5)/sqrt(var) = 2.406273029590287; p = erfc(|z|/√2) = 0.016116214982541205.
  std::vector<double> x, y;
  for (int i = 1; i <= 60; ++i) {
    x.push_back(((i * 7) % 11) - 4);
    y.push_back(0);
  }
  const auto r = wilcoxon_signed_rank(x, y);
  CHECK(r.n == 55);
  CHECK_FALSE(r.exact);
  CHECK(r.w_plus == doctest::Approx(1056.5));
  CHECK(r.z == doctest::Approx(2.406273029590287).epsilon(1e-9));
  CHECK(r.p == doctest::Approx(0.016116214982541205).epsilon(1e-9));
}

TEST_CASE("cluster bootstrap: percentile intervals of known cases") {
  // Two clusters of three samples, values 0 and 1: a resample pools (0,0), (0,1) or (1,1), so the mean is
  // 0, ½ or 1 with probabilities ¼, ½, ¼ and the 95 % interval is [0, 1].
  const std::vector<qx::Index> two{7, 7, 7, 9, 9, 9};
  const std::vector<double> value{0, 0, 0, 1, 1, 1};
  auto mean = [&](const std::vector<qx::Index>& idx) {
    double s = 0;
    for (auto i : idx) s += value[static_cast<std::size_t>(i)];
    return s / static_cast<double>(idx.size());
  };
  const auto a = bootstrap_clusters(two, mean, 2000, 1);
  CHECK(a.estimate == doctest::Approx(0.5));
  CHECK(a.clusters == 2);
  CHECK(a.lo == 0.0);
  CHECK(a.hi == 1.0);
  // 400 clusters of one sample each, values 0…399: the bootstrap standard error of the mean is
  // σ/√n = sqrt((n² − 1)/12)/√n = 5.773; the 95 % interval is about ±1.96 of it.
  std::vector<qx::Index> ids(400);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<double> ramp(400);
  std::iota(ramp.begin(), ramp.end(), 0.0);
  auto ramp_mean = [&](const std::vector<qx::Index>& idx) {
    double s = 0;
    for (auto i : idx) s += ramp[static_cast<std::size_t>(i)];
    return s / static_cast<double>(idx.size());
  };
  const auto b = bootstrap_clusters(ids, ramp_mean, 2000, 3);
  const double se = std::sqrt((400.0 * 400.0 - 1) / 12) / std::sqrt(400.0);
  CHECK(b.estimate == doctest::Approx(199.5));
  CHECK((b.hi - b.lo) / (2 * 1.96 * se) == doctest::Approx(1.0).epsilon(0.1));
  CHECK(b.lo < 199.5);
  CHECK(b.hi > 199.5);
  const auto again = bootstrap_clusters(ids, ramp_mean, 2000, 3);  // a fixed seed reproduces the interval
  CHECK(again.lo == b.lo);
  CHECK(quantile_sorted({1, 2, 3, 4}, 0.5) == doctest::Approx(2.5));
  CHECK_THROWS_AS(bootstrap_clusters({}, ramp_mean), qx::Error);
}
