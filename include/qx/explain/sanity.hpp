// The model-randomisation sanity check of Adebayo et al. (2018), cascading from the top: the parameters
// of the named layers are re-drawn one layer after another (output side first) and, after each, every
// map is recomputed for the same targets and compared with the original map by Spearman's rank
// correlation of the per-pixel reduced values (docs/conventions.md reductions), averaged over samples.
// A map whose correlation stays near 1 does not depend on the model it claims to explain.
#pragma once
#include "qx/config.hpp"
#include "qx/explain/attribution.hpp"
#include "qx/explain/reduce.hpp"
#include "qx/nn/weight_cache.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace explain {

/// Spearman's ρ: the Pearson correlation of the ranks (ties get their average rank).
inline double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  check(a.size() == b.size() && a.size() > 1, "spearman: needs two equally long series of at least 2 values");
  auto ranks = [](const std::vector<double>& v) {
    std::vector<std::size_t> order(v.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) { return v[i] < v[j]; });
    std::vector<double> r(v.size());
    for (std::size_t i = 0; i < order.size();) {
      std::size_t j = i;
      while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
      const double average = (static_cast<double>(i) + static_cast<double>(j)) / 2.0;
      for (std::size_t k = i; k <= j; ++k) r[order[k]] = average;
      i = j + 1;
    }
    return r;
  };
  const auto ra = ranks(a), rb = ranks(b);
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / static_cast<double>(ra.size());
  const double mb = std::accumulate(rb.begin(), rb.end(), 0.0) / static_cast<double>(rb.size());
  double cov = 0, va = 0, vb = 0;
  for (std::size_t i = 0; i < ra.size(); ++i) {
    cov += (ra[i] - ma) * (rb[i] - mb);
    va += (ra[i] - ma) * (ra[i] - ma);
    vb += (rb[i] - mb) * (rb[i] - mb);
  }
  return va > 0 && vb > 0 ? cov / std::sqrt(va * vb) : 0.0;
}

struct SanityRow {
  std::string randomized_through;  ///< the last layer re-drawn (all layers above it are re-drawn too)
  Method method;
  double spearman;                 ///< mean over samples
};


/**
 * @brief Cascading randomisation: re-draws `layers` in order (give them output side first, e.g.
 * {"fc", "layer4", "layer3", "layer2", "layer1", "conv1"}) and reports each map's rank correlation
 * with the original. The model's parameters are restored afterwards.
 */
template <class T>
std::vector<SanityRow> cascading_randomization(nn::Module<T>& model, const Tensor<T>& x, const std::vector<std::string>& layers,
                                               ExplainOptions options = {}, std::uint64_t seed = 0) {
  options.methods.erase(Method::gradcam_raw);
  const nn::ScopedWeightCache<T> folded_once;  // each step changes one layer: only its pairs fold again
  const auto original = explain(model, x, options);
  options.targets = original.targets;  // explain the same classes throughout
  auto state = model.named_state();
  std::vector<Tensor<T>> saved;
  for (auto& e : state) saved.push_back(e.tensor->clone());
  Rng rng(seed);
  std::vector<SanityRow> rows;
  // The model's own parameters come back however this function ends (an error included).
  struct Restore {
    std::vector<nn::StateEntry<T>>& state;
    std::vector<Tensor<T>>& saved;
    ~Restore() {
      for (std::size_t i = 0; i < state.size(); ++i) state[i].tensor->copy_(saved[i]);
    }
  } restore{state, saved};
  for (const auto& layer : layers) {
    for (auto& [name, p] : model.submodule(layer).named_parameters()) {
      // Re-draw from a Gaussian with the tensor's own mean and spread (spread 0.1 if it had none).
      double mean = 0, var = 0;
      for (T v : p->span()) mean += v;
      mean /= static_cast<double>(p->numel());
      for (T v : p->span()) var += (v - mean) * (v - mean);
      const double sd = p->numel() > 1 && var > 0 ? std::sqrt(var / static_cast<double>(p->numel() - 1)) : 0.1;
      for (T& v : p->span()) v = static_cast<T>(rng.normal(mean, sd));
    }
    const auto randomized = explain(model, x, options);
    for (Method m : options.methods) {
      double total = 0;
      for (Index s = 0; s < x.size(0); ++s)
        total += spearman(reduced_map(original.map(m), m, s), reduced_map(randomized.map(m), m, s));
      rows.push_back({layer, m, total / static_cast<double>(x.size(0))});
    }
  }
  return rows;
}

}  // namespace explain
QX_NAMESPACE_END
