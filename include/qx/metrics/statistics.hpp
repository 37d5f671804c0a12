// Statistics of the reproduction report (docs/reproduction.md): a percentile bootstrap over clusters
// (test records — windows of one patient are not independent) and the Wilcoxon signed-rank test.
//   bootstrap:  draw K of the K clusters with replacement, pool their samples, recompute the statistic;
//               B times; the interval is the (1 − level)/2 and (1 + level)/2 quantiles of the B values
//               (linear interpolation between order statistics, numpy's default percentile).
//   Wilcoxon:   d_i = x_i − y_i; zero differences dropped (Wilcoxon's rule, scipy's zero_method="wilcox");
//               ranks of |d_i|, ties averaged; W+ = Σ_{d_i > 0} rank_i. Two-sided p exact from the null
//               distribution of W+ when n ≤ 50 and no ties; otherwise the normal approximation
//               z = (W+ − n(n+1)/4 − ½·sign) / sqrt(n(n+1)(2n+1)/24 − Σ_ties (t³ − t)/48), p = erfc(|z|/√2).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/random.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

QX_NAMESPACE_BEGIN
namespace metrics {

/// The q-quantile (0 ≤ q ≤ 1) of sorted values: v[⌊h⌋] + (h − ⌊h⌋)(v[⌊h⌋+1] − v[⌊h⌋]), h = q(n − 1).
inline double quantile_sorted(const std::vector<double>& sorted, double q) {
  check(!sorted.empty() && q >= 0 && q <= 1, "quantile: needs values and q in [0, 1], got ", sorted.size(), " values, q = ", q);
  const double h = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

/// A statistic on all samples and its bootstrap interval.
struct Interval {
  double estimate = 0, lo = 0, hi = 0;
  Index clusters = 0, resamples = 0;
};

/**
 * @brief Percentile bootstrap over clusters: `cluster_of[i]` names sample i's cluster (e.g. its record);
 * `statistic(indices)` computes the figure on the pooled samples `indices`. Fixed `seed`: reproducible.
 */
template <class Statistic>
Interval bootstrap_clusters(const std::vector<Index>& cluster_of, Statistic statistic, Index resamples = 1000,
                            std::uint64_t seed = 0, double level = 0.95) {
  check(!cluster_of.empty() && resamples > 0 && level > 0 && level < 1, "bootstrap: needs samples, resamples > 0 and a level in "
        "(0, 1), got ", cluster_of.size(), " samples, ", resamples, " resamples, level ", level);
  std::map<Index, std::vector<Index>> members;
  for (std::size_t i = 0; i < cluster_of.size(); ++i) members[cluster_of[i]].push_back(static_cast<Index>(i));
  std::vector<const std::vector<Index>*> clusters;
  for (const auto& [id, m] : members) clusters.push_back(&m);
  std::vector<Index> all(cluster_of.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<Index>(i);
  Interval out;
  out.estimate = statistic(all);
  out.clusters = static_cast<Index>(clusters.size());
  out.resamples = resamples;
  Rng rng(seed);
  std::vector<double> values;
  std::vector<Index> pooled;
  for (Index b = 0; b < resamples; ++b) {
    pooled.clear();
    for (std::size_t k = 0; k < clusters.size(); ++k) {
      const auto* c = clusters[rng.below(clusters.size())];
      pooled.insert(pooled.end(), c->begin(), c->end());
    }
    values.push_back(statistic(pooled));
  }
  std::sort(values.begin(), values.end());
  out.lo = quantile_sorted(values, (1 - level) / 2);
  out.hi = quantile_sorted(values, (1 + level) / 2);
  return out;
}

struct WilcoxonResult {
  Index n = 0;                 ///< pairs with a non-zero difference
  double w_plus = 0, w_minus = 0;
  double z = 0;                ///< the normal approximation's z (also reported when p is exact)
  double p = 1;                ///< two-sided
  bool exact = false;
};

/// Wilcoxon signed-rank test of paired samples x, y (see the file's comment for the rules).
inline WilcoxonResult wilcoxon_signed_rank(const std::vector<double>& x, const std::vector<double>& y) {
  check(x.size() == y.size(), "wilcoxon_signed_rank: ", x.size(), " values paired with ", y.size());
  std::vector<double> d;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (x[i] != y[i]) d.push_back(x[i] - y[i]);
  WilcoxonResult r;
  r.n = static_cast<Index>(d.size());
  if (d.empty()) return r;
  std::vector<std::size_t> order(d.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return std::abs(d[a]) < std::abs(d[b]); });
  double tie_term = 0;  // Σ (t³ − t)
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && std::abs(d[order[j + 1]]) == std::abs(d[order[i]])) ++j;
    const double rank = (static_cast<double>(i) + static_cast<double>(j)) / 2 + 1, t = static_cast<double>(j - i + 1);
    tie_term += t * t * t - t;
    for (std::size_t k = i; k <= j; ++k) (d[order[k]] > 0 ? r.w_plus : r.w_minus) += rank;
    i = j + 1;
  }
  const double n = static_cast<double>(r.n), mean = n * (n + 1) / 4;
  const double variance = n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48;
  const double diff = r.w_plus - mean;
  r.z = variance > 0 ? (diff - (diff > 0 ? 0.5 : diff < 0 ? -0.5 : 0.0)) / std::sqrt(variance) : 0.0;
  r.p = std::min(1.0, std::erfc(std::abs(r.z) / std::sqrt(2.0)));
  if (r.n <= 50 && tie_term == 0) {
    // Null distribution of W+: each rank 1…n enters the sum with probability ½ (counts of subset sums).
    const auto max_sum = static_cast<std::size_t>(r.n * (r.n + 1) / 2);
    std::vector<double> ways(max_sum + 1, 0.0);
    ways[0] = 1;
    for (std::size_t k = 1; k <= static_cast<std::size_t>(r.n); ++k)
      for (std::size_t s = max_sum; s >= k; --s) ways[s] += ways[s - k];
    const auto w = static_cast<std::size_t>(std::lround(r.w_plus));
    double below = 0, above = 0;
    for (std::size_t s = 0; s <= max_sum; ++s) (s <= w ? below : above) += ways[s];
    above += ways[w];  // P(W+ ≥ w) includes w itself
    const double total = std::ldexp(1.0, static_cast<int>(r.n));
    r.p = std::min(1.0, 2 * std::min(below, above) / total);
    r.exact = true;
  }
  return r;
}

}  // namespace metrics
QX_NAMESPACE_END
