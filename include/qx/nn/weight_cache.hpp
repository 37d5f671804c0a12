// Batch norm folded into each convolution, kept from one call to the next.
//
// With parameters frozen (qx::explain, or NoGradGuard) nn::conv_bn runs conv(x, w') + b' with
//   s = γ / √(σ²_run + ε),  w' = w·s (per output channel),  b' = β + (b − μ_run)·s,
// and the kernels derive more from w' — Winograd's transformed filters, four times its size. Without a
// cache every call folds and transforms again: for resnet18's five maps at batch 16 about a seventh of the
// time. While a WeightCache::Scope is active on the calling thread, conv_bn takes w' and b' from the cache
// and the kernels keep what they derive from w' (kernels::ConstantWeights): the second call of the same
// model computes neither.
//
// The cache cannot go stale: every use compares the convolution's and the batch norm's parameters, value
// by value, with the copy the fold was made from (one read of the weights, a fraction of folding them),
// and folds again when anything changed — an optimiser step, a loaded state, a write through data(). What
// it costs is memory: the copy, w' and the transformed filters (about 6× the convolutions' weights), held
// until clear() or the cache's end. docs/explain.md, "Many batches: the weight cache".
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/core/active_scope.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/constant_weights.hpp"
#include "qx/nn/layers.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

QX_NAMESPACE_BEGIN
namespace nn {

namespace detail {
/// The folded convolution's weight (C_out, C_in, k, k) and bias (C_out), constants (no autograd).
template <class T>
std::pair<Tensor<T>, Tensor<T>> fold_batch_norm(const Conv2d<T>& conv, const BatchNorm2d<T>& bn) {
  NoGradGuard no_grad;
  const Index c_out = conv.weight.size(0), per_channel = conv.weight.numel() / c_out;
  auto weight = Tensor<T>::empty(conv.weight.shape());
  auto bias = Tensor<T>::empty({c_out});
  // Folded on the host (C_out·K values); a model on a GPU gets the result back there.
  const Device device = conv.weight.device();
  auto host = [](const Tensor<T>& t) { return t.to(Device::cpu).contiguous(); };
  const Tensor<T> w = host(conv.weight), gamma = host(bn.weight), beta = host(bn.bias);
  const Tensor<T> mean = host(bn.running_mean), var = host(bn.running_var);
  const Tensor<T> conv_bias = conv.bias.defined() ? host(conv.bias) : Tensor<T>();
  parallel_for(0, c_out, [&](Index o) {
    const double scale = static_cast<double>(gamma.data()[o]) / std::sqrt(static_cast<double>(var.data()[o]) + bn.eps());
    const double shift = conv_bias.defined() ? static_cast<double>(conv_bias.data()[o]) : 0.0;
    const T* src = w.data() + o * per_channel;
    T* dst = weight.data() + o * per_channel;
    for (Index i = 0; i < per_channel; ++i) dst[i] = static_cast<T>(static_cast<double>(src[i]) * scale);
    bias.data()[o] = static_cast<T>(static_cast<double>(beta.data()[o]) + (shift - static_cast<double>(mean.data()[o])) * scale);
  }, per_channel);
  return {weight.to(device), bias.to(device)};
}

/// Whether two host tensors hold the same shape and the same bits (both undefined counts as the same).
template <class T>
bool same_values(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.shape() != b.shape()) return false;
  const Tensor<T> x = a.contiguous(), y = b.contiguous();
  constexpr Index chunk = Index{1} << 16;
  const Index n = x.numel(), chunks = (n + chunk - 1) / chunk;
  std::atomic<bool> differ{false};
  parallel_for(0, chunks, [&](Index k) {
    if (differ.load(std::memory_order_relaxed)) return;
    const Index first = k * chunk, count = std::min(chunk, n - first);
    if (std::memcmp(x.data() + first, y.data() + first, static_cast<std::size_t>(count) * sizeof(T)) != 0)
      differ.store(true, std::memory_order_relaxed);
  }, chunk);
  return !differ.load();
}
}  // namespace detail

template <class T>
class WeightCache {
 public:
  WeightCache() = default;
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  /// Makes `cache` the calling thread's cache (for conv_bn, and for the kernels what they derive from its
  /// folded weights) until the scope ends; scopes nest.
  class Scope {
   public:
    explicit Scope(WeightCache& cache) : cache_(cache), kernels_(cache.derived_) {}

   private:
    qx::detail::ActiveScope<WeightCache> cache_;
    kernels::ConstantWeights::Scope kernels_;
  };
  /// The calling thread's active cache, or null.
  static WeightCache* active() { return qx::detail::ActiveScope<WeightCache>::active(); }

  /// fold_batch_norm(conv, bn), from the cache when conv's and bn's parameters are what it was made from.
  /// Parameters on a GPU are folded every time (comparing them would copy them to the host).
  std::pair<Tensor<T>, Tensor<T>> folded(const Conv2d<T>& conv, const BatchNorm2d<T>& bn) {
    if (conv.weight.device() != Device::cpu) return detail::fold_batch_norm(conv, bn);
    const std::lock_guard lock(mutex_);
    Fold& fold = folds_[{&conv, &bn}];
    if (fold.weight.defined() && fold.eps == bn.eps() && detail::same_values(fold.source_weight, conv.weight) &&
        detail::same_values(fold.source_bias, conv.bias) && detail::same_values(fold.gamma, bn.weight) &&
        detail::same_values(fold.beta, bn.bias) && detail::same_values(fold.mean, bn.running_mean) &&
        detail::same_values(fold.var, bn.running_var)) {
      ++reuses_;
      return {fold.weight, fold.bias};
    }
    if (fold.weight.defined()) derived_.forget(fold.weight.data());  // before the old weight's memory goes
    NoGradGuard no_grad;
    auto copy = [](const Tensor<T>& t) { return t.defined() ? t.detach().contiguous().clone() : Tensor<T>(); };
    std::tie(fold.weight, fold.bias) = detail::fold_batch_norm(conv, bn);
    fold.source_weight = copy(conv.weight), fold.source_bias = copy(conv.bias);
    fold.gamma = copy(bn.weight), fold.beta = copy(bn.bias), fold.mean = copy(bn.running_mean), fold.var = copy(bn.running_var);
    fold.eps = bn.eps();
    derived_.declare(fold.weight.data());
    ++folds_made_;
    return {fold.weight, fold.bias};
  }

  struct Stats {
    std::size_t bytes = 0;     ///< held: the parameters' copies, the folded weights and what kernels derived
    std::size_t folds = 0;     ///< (convolution, batch norm) pairs held
    std::size_t folded = 0;    ///< folds made, ever (the first use of a pair, and after its parameters changed)
    std::size_t reused = 0;    ///< folds served from the cache
    kernels::ConstantWeights::Stats derived;  ///< what the kernels derived from the folded weights
  };
  Stats stats() const {
    const std::lock_guard lock(mutex_);
    Stats s;
    s.derived = derived_.stats();
    s.bytes = s.derived.bytes;
    auto bytes = [](const Tensor<T>& t) { return t.defined() ? static_cast<std::size_t>(t.numel()) * sizeof(T) : 0; };
    for (const auto& [key, f] : folds_)
      s.bytes += bytes(f.weight) + bytes(f.bias) + bytes(f.source_weight) + bytes(f.source_bias) + bytes(f.gamma) +
                 bytes(f.beta) + bytes(f.mean) + bytes(f.var);
    s.folds = folds_.size();
    s.folded = folds_made_;
    s.reused = reuses_;
    return s;
  }
  /// Returns all memory the cache holds (the counters stay).
  void clear() {
    const std::lock_guard lock(mutex_);
    derived_.clear();
    folds_.clear();
  }

 private:
  struct Fold {
    Tensor<T> weight, bias;                                          // w', b'
    Tensor<T> source_weight, source_bias, gamma, beta, mean, var;  // what they were folded from
    double eps = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<const void*, const void*>, Fold> folds_;
  kernels::ConstantWeights derived_;
  std::size_t folds_made_ = 0, reuses_ = 0;
};

/// For a run of passes over the same frozen model (predictions over a dataset, the steps of integrated
/// gradients): the calling thread's active cache when there is one, else a cache of its own, active and
/// holding memory only while this object lives.
template <class T>
class ScopedWeightCache {
 public:
  ScopedWeightCache() {
    if (!WeightCache<T>::active()) scope_.emplace(own_.emplace());
  }

 private:
  std::optional<WeightCache<T>> own_;
  std::optional<typename WeightCache<T>::Scope> scope_;
};

}  // namespace nn
QX_NAMESPACE_END
