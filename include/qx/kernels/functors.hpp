// Element-wise arithmetic shared by the CPU loops and the CUDA kernels (QX_HOST_DEVICE), so the CPU
// tests cover the very bodies a GPU build runs. Semantics follow PyTorch (docs/conventions.md).
#pragma once
#include "qx/config.hpp"

QX_NAMESPACE_BEGIN
namespace kernels {

/// relu(x) = max(x, 0); NaN propagates, as in PyTorch (so a diverged network is noticed).
struct Relu {
  template <class T>
  QX_HOST_DEVICE T operator()(T x) const {
    return x < T(0) ? T(0) : x;
  }
};

/// ∂relu: g·[y > 0], with y the ReLU's output (y > 0 ⇔ x > 0).
struct ReluGrad {
  template <class T>
  QX_HOST_DEVICE T operator()(T g, T y) const {
    return y > T(0) ? g : T(0);
  }
};

/// Guided-backprop ReLU rule (Springenberg et al. 2015): g·[x > 0]·[g > 0].
struct GuidedReluGrad {
  template <class T>
  QX_HOST_DEVICE T operator()(T g, T y) const {
    return (y > T(0) && g > T(0)) ? g : T(0);
  }
};

/// Batch-norm affine normalisation: y = γ·(x − μ)·σ⁻¹ + β, with inv_std = 1/√(var + eps).
struct BatchNormNormalize {
  template <class T>
  QX_HOST_DEVICE T operator()(T x, T mean, T inv_std, T gamma, T beta) const {
    return gamma * (x - mean) * inv_std + beta;
  }
};

/**
 * Σ_{k<n} term(k), accumulated in 16 independent lanes of T and summed in double at the end: the lanes
 * let the compiler vectorise a float reduction without reassociating (no -ffast-math), and each lane
 * sums only n/16 terms, so a plane of a feature map keeps nearly double's accuracy.
 */
template <class T, class Term>
QX_HOST_DEVICE double lane_sum(long n, Term term) {
  constexpr int lanes = 16;
  T acc[lanes] = {};
  long k = 0;
  for (; k + lanes <= n; k += lanes)
    for (int l = 0; l < lanes; ++l) acc[l] += term(k + l);
  double total = 0;
  for (; k < n; ++k) total += static_cast<double>(term(k));
  for (int l = 0; l < lanes; ++l) total += static_cast<double>(acc[l]);
  return total;
}

}  // namespace kernels
QX_NAMESPACE_END
