// Element-wise arithmetic shared by the CPU loops and the CUDA kernels (QX_HOST_DEVICE), so the CPU
// tests cover the very bodies a GPU build runs. Semantics follow PyTorch (docs/conventions.md).
#pragma once
#include "qx/config.hpp"

#include <array>

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
 * Σ_{k<n} term(k) for Sums sums at once (term returns std::array<T, Sums>), each accumulated in 16
 * independent lanes of T and summed in double at the end: the lanes let the compiler vectorise a float
 * reduction without reassociating (no -ffast-math), and each lane sums only n/16 terms, so a plane of a
 * feature map keeps nearly double's accuracy. Several sums share one pass over memory.
 */
template <class T, int Sums, class Term>
QX_HOST_DEVICE std::array<double, Sums> lane_sums(long n, Term term) {
  constexpr int lanes = 16;
  T acc[Sums][lanes] = {};
  long k = 0;
  for (; k + lanes <= n; k += lanes)
    for (int l = 0; l < lanes; ++l) {
      const std::array<T, Sums> v = term(k + l);
      for (int q = 0; q < Sums; ++q) acc[q][l] += v[q];
    }
  std::array<double, Sums> total{};
  for (; k < n; ++k) {
    const std::array<T, Sums> v = term(k);
    for (int q = 0; q < Sums; ++q) total[q] += static_cast<double>(v[q]);
  }
  for (int q = 0; q < Sums; ++q)
    for (int l = 0; l < lanes; ++l) total[q] += static_cast<double>(acc[q][l]);
  return total;
}

/// Σ_{k<n} term(k) (term returns T), as lane_sums.
template <class T, class Term>
QX_HOST_DEVICE double lane_sum(long n, Term term) {
  return lane_sums<T, 1>(n, [&](long k) { return std::array<T, 1>{static_cast<T>(term(k))}; })[0];
}

}  // namespace kernels
QX_NAMESPACE_END
