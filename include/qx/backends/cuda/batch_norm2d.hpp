// CUDA kernels of batch_norm2d (ops/batch_norm2d.hpp has the formulas). The per-channel reductions are
// two-pass: one thread per (channel, image) sums that image's plane with kernels::lane_sums — the very
// sum the CPU op computes — and one thread per channel adds the N partial sums in image order, so the
// statistics are the CPU's bit for bit, and no pass needs shared memory or __syncthreads.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/gemm.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/core/cuda.hpp"
#include "qx/kernels/functors.hpp"

#include <array>
#include <cmath>

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// Pass 1 of the statistics: partial[ch·N + b] = Σ_k x[b, ch, k], or Σ_k (x − mean[ch])² when mean is set.
template <class T>
struct BatchNormPartialSums {
  const T* x;
  const T* mean;  // null: sums of x
  double* partial;  // (C, N)
  Index n, c, plane;
  Index size() const { return n * c; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const Index ch = i / n, b = i % n;
    const T* xs = x + (b * c + ch) * plane;
    if (!mean) {
      partial[i] = kernels::lane_sum<T>(plane, [&](Index k) { return xs[k]; });
      return;
    }
    const T mu = mean[ch];
    partial[i] = kernels::lane_sum<T>(plane, [&](Index k) { return (xs[k] - mu) * (xs[k] - mu); });
  }
};

/// Pass 2, per channel. Stage mean: mean = Σ/M. Stage variance: var = Σ/M, inv_std = 1/√(var + eps), and the
/// running statistics move by `momentum` (unbiased variance). Eval (partial null): the running ones.
template <class T>
struct BatchNormStatistics {
  const double* partial;  // (C, N), or null in eval
  T* mean;
  T* inv_std;
  T* running_mean;
  T* running_var;
  Index n, c, plane;
  double momentum, eps;
  bool variance_stage;
  Index size() const { return c; }
  QX_HOST_DEVICE void operator()(Index ch) const {
    const double m = static_cast<double>(n * plane);
    if (!partial) {
      mean[ch] = running_mean[ch];
      inv_std[ch] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
      return;
    }
    double s = 0;
    for (Index b = 0; b < n; ++b) s += partial[ch * n + b];
    if (!variance_stage) {
      mean[ch] = static_cast<T>(s / m);
      // The CPU keeps μ in double for the running mean: recompute it the same way here.
      running_mean[ch] = static_cast<T>((1 - momentum) * running_mean[ch] + momentum * (s / m));
      return;
    }
    const double var = s / m;
    running_var[ch] = static_cast<T>((1 - momentum) * running_var[ch] + momentum * var * m / (m - 1));
    inv_std[ch] = static_cast<T>(1.0 / std::sqrt(var + eps));
  }
};

/// What the element-wise passes share: the input x (N, C, H·W), the per-channel statistics and affine
/// parameters, and whether a ReLU is fused after the normalisation.
template <class T>
struct BatchNormTerms {
  const T* x;
  const T* mean;
  const T* inv_std;
  const T* gamma;
  const T* beta;
  Index n, c, plane;
  bool relu;
  QX_HOST_DEVICE T normalized(Index i, Index ch) const {
    return kernels::BatchNormNormalize{}(x[i], mean[ch], inv_std[ch], gamma[ch], beta[ch]);
  }
  /// The gradient reaching the batch norm at element i: g, or g·[y > 0] behind the fused ReLU (y
  /// recomputed by the same functor, so the mask is the forward's).
  QX_HOST_DEVICE T grad_at(const T* g, Index i, Index ch) const {
    return relu ? kernels::ReluGrad{}(g[i], normalized(i, ch)) : g[i];
  }
};

/// y = γ·(x − μ)·inv_std + β, then max(·, 0) when `relu`; one element per index.
template <class T>
struct BatchNormForward {
  BatchNormTerms<T> bn;
  T* y;
  Index size() const { return bn.n * bn.c * bn.plane; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const T v = bn.normalized(i, (i / bn.plane) % bn.c);
    y[i] = bn.relu ? kernels::Relu{}(v) : v;
  }
};

/// Backward pass 1: partial[(ch·N + b)·2 + {0, 1}] = Σ_k ĝ and Σ_k ĝ·x̂ over image b's plane of channel ch.
template <class T>
struct BatchNormBackwardPartialSums {
  BatchNormTerms<T> bn;
  const T* grad_y;
  double* partial;  // (C, N, 2)
  Index size() const { return bn.n * bn.c; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const Index ch = i / bn.n, b = i % bn.n;
    const Index base = (b * bn.c + ch) * bn.plane;
    const T mu = bn.mean[ch], is = bn.inv_std[ch];
    const auto sums = kernels::lane_sums<T, 2>(bn.plane, [&](Index k) {
      const T gk = bn.grad_at(grad_y, base + k, ch);
      return std::array<T, 2>{gk, gk * (bn.x[base + k] - mu) * is};
    });
    partial[2 * i] = sums[0];
    partial[2 * i + 1] = sums[1];
  }
};

/// Backward pass 2, per channel: ∂β = Σ ĝ, ∂γ = Σ ĝ·x̂ (either pointer may be null), and the two means
/// the input gradient needs, means[2·ch + {0, 1}] = (Σ ĝ / M, Σ ĝ·x̂ / M) in training, 0 in eval.
template <class T>
struct BatchNormBackwardReduce {
  const double* partial;
  T* grad_gamma;
  T* grad_beta;
  T* means;  // (C, 2)
  Index n, c, plane;
  bool training;
  Index size() const { return c; }
  QX_HOST_DEVICE void operator()(Index ch) const {
    double sum_g = 0, sum_gx = 0;
    for (Index b = 0; b < n; ++b) {
      sum_g += partial[2 * (ch * n + b)];
      sum_gx += partial[2 * (ch * n + b) + 1];
    }
    if (grad_gamma) grad_gamma[ch] = static_cast<T>(sum_gx);
    if (grad_beta) grad_beta[ch] = static_cast<T>(sum_g);
    const double m = static_cast<double>(n * plane);
    means[2 * ch] = training ? static_cast<T>(sum_g / m) : T(0);
    means[2 * ch + 1] = training ? static_cast<T>(sum_gx / m) : T(0);
  }
};

/// ∂x = γ·inv_std·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), one element per index.
template <class T>
struct BatchNormBackwardInput {
  BatchNormTerms<T> bn;
  const T* grad_y;
  const T* means;  // (C, 2), from BatchNormBackwardReduce
  T* grad_x;
  Index size() const { return bn.n * bn.c * bn.plane; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const Index ch = (i / bn.plane) % bn.c;
    const T mu = bn.mean[ch], is = bn.inv_std[ch];
    const T g = bn.grad_at(grad_y, i, ch);
    grad_x[i] = bn.gamma[ch] * is * (g - means[2 * ch] - (bn.x[i] - mu) * is * means[2 * ch + 1]);
  }
};

// batch_norm2d on device memory: the passes above in order, on qx's stream. Host code; `Exec` is
// GpuExecutor (gemm.hpp) except in the CPU tests.

/// y from bn.x; fills mean and inv_std (arrays of C, written here; bn reads them) and, in training, moves
/// the running statistics.
template <class T, class Exec = GpuExecutor>
void batch_norm2d_forward(const BatchNormTerms<T>& bn, T* mean, T* inv_std, T* running_mean, T* running_var, bool training,
                          double momentum, double eps, T* y) {
  const Index n = bn.n, c = bn.c, plane = bn.plane;
  if (training) {
    typename Exec::template Buffer<double> partial(static_cast<std::size_t>(n * c));
    Exec::launch(BatchNormPartialSums<T>{bn.x, nullptr, partial.data(), n, c, plane});
    Exec::launch(BatchNormStatistics<T>{partial.data(), mean, inv_std, running_mean, running_var, n, c, plane, momentum, eps, false});
    Exec::launch(BatchNormPartialSums<T>{bn.x, mean, partial.data(), n, c, plane});
    Exec::launch(BatchNormStatistics<T>{partial.data(), mean, inv_std, running_mean, running_var, n, c, plane, momentum, eps, true});
  } else {
    Exec::launch(BatchNormStatistics<T>{nullptr, mean, inv_std, running_mean, running_var, n, c, plane, momentum, eps, false});
  }
  Exec::launch(BatchNormForward<T>{bn, y});
}

/// ∂x (nullable), ∂γ and ∂β (nullable) from grad_y, with the forward's statistics in bn.
template <class T, class Exec = GpuExecutor>
void batch_norm2d_backward(const BatchNormTerms<T>& bn, const T* grad_y, bool training, T* grad_x, T* grad_gamma, T* grad_beta) {
  typename Exec::template Buffer<double> partial(static_cast<std::size_t>(2 * bn.n * bn.c));
  typename Exec::template Buffer<T> means(static_cast<std::size_t>(2 * bn.c));
  Exec::launch(BatchNormBackwardPartialSums<T>{bn, grad_y, partial.data()});
  Exec::launch(BatchNormBackwardReduce<T>{partial.data(), grad_gamma, grad_beta, means.data(), bn.n, bn.c, bn.plane, training});
  if (grad_x) Exec::launch(BatchNormBackwardInput<T>{bn, grad_y, means.data(), grad_x});
}

}  // namespace backends::cuda
QX_NAMESPACE_END
