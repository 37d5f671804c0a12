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

}  // namespace kernels
QX_NAMESPACE_END
