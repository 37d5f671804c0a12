// What convolution kernels derive from weights that stay constant between calls — Winograd's transformed
// filters U = G g Gᵀ (four times the weights' size), the im2col products' packed weights — kept for the
// next call instead of derived again by every call. A weight qualifies only while its owner has declared it constant (`declare`,
// until `forget`), and only on a thread where the registry is active (`ConstantWeights::Scope`):
// nn::WeightCache (nn/weight_cache.hpp) is that owner for the batch-norm-folded weights it holds, which
// nothing else can write. Any other weight — a parameter the caller may change — is never kept.
#pragma once
#include "qx/config.hpp"
#include "qx/core/active_scope.hpp"
#include "qx/kernels/conv2d_shape.hpp"

#include <array>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>

QX_NAMESPACE_BEGIN
namespace kernels {

/// What a convolution derives from its weights: the kinds ConstantWeights keeps apart.
enum class Derived {
  winograd_filters, winograd_filters_transposed,  // U_ξ, U_ξᵀ
  packed_weight, packed_weight_transposed,        // op(W) as a product's A (W, Wᵀ)
  weight_panels, weight_panels_transposed         // op(W)ᵀ as B panels of a product computed transposed
};

class ConstantWeights {
 public:
  ConstantWeights() = default;
  ConstantWeights(const ConstantWeights&) = delete;
  ConstantWeights& operator=(const ConstantWeights&) = delete;

  /// Makes a registry the calling thread's active one until the scope ends (scopes nest).
  using Scope = qx::detail::ActiveScope<ConstantWeights>;
  /// The calling thread's active registry, or null.
  static ConstantWeights* active() { return Scope::active(); }

  /// The values at `weight` will not change until forget(weight).
  void declare(const void* weight) {
    const std::lock_guard lock(mutex_);
    declared_.insert(weight);
  }
  /// Drops `weight` and everything derived from it (call before its memory is freed or written).
  void forget(const void* weight) {
    const std::lock_guard lock(mutex_);
    declared_.erase(weight);
    for (auto it = derived_.lower_bound(Key{weight, {}, Derived{}}); it != derived_.end() && std::get<0>(it->first) == weight;) {
      bytes_ -= it->second.bytes;
      it = derived_.erase(it);
    }
  }

  /// What convolution `s` derives from `weight` as `kind`: made by make() (a std::shared_ptr<Value>, Value
  /// having bytes()) on the first request and kept; null, with make() not called, when `weight` is not
  /// declared — the caller then derives it itself.
  template <class Value, class Make>
  std::shared_ptr<const Value> derived(const void* weight, const Conv2dShape& s, Derived kind, Make&& make) {
    const Key key{weight, {s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw, s.stride_h, s.stride_w, s.pad_h, s.pad_w}, kind};
    {
      const std::lock_guard lock(mutex_);
      if (!declared_.count(weight)) return nullptr;
      if (const auto it = derived_.find(key); it != derived_.end()) {
        ++reuses_;
        return std::static_pointer_cast<const Value>(it->second.value);
      }
    }
    // Made outside the lock: the transform is parallel and long; two threads may race to make the same
    // value, and the second keeps the first's.
    std::shared_ptr<const Value> value = make();
    const std::lock_guard lock(mutex_);
    if (!declared_.count(weight)) return value;  // forgotten meanwhile: used once, not kept
    const auto [it, inserted] = derived_.emplace(key, Entry{value, value->bytes()});
    if (inserted) {
      bytes_ += it->second.bytes;
      ++made_;
    }
    return std::static_pointer_cast<const Value>(it->second.value);
  }

  struct Stats {
    std::size_t bytes = 0;   ///< held by derived values
    std::size_t values = 0;  ///< derived values held
    std::size_t made = 0;    ///< derived values made and kept, ever
    std::size_t reuses = 0;  ///< requests served from what was kept
  };
  Stats stats() const {
    const std::lock_guard lock(mutex_);
    return {bytes_, derived_.size(), made_, reuses_};
  }
  /// Forgets every weight and drops every derived value.
  void clear() {
    const std::lock_guard lock(mutex_);
    declared_.clear();
    derived_.clear();
    bytes_ = 0;
  }

 private:
  using Key = std::tuple<const void*, std::array<Index, 11>, Derived>;
  struct Entry {
    std::shared_ptr<const void> value;
    std::size_t bytes;
  };
  mutable std::mutex mutex_;
  std::set<const void*> declared_;
  std::map<Key, Entry> derived_;
  std::size_t bytes_ = 0, made_ = 0, reuses_ = 0;
};

}  // namespace kernels
QX_NAMESPACE_END
