// CUDA kernels of log_softmax and the weighted cross-entropy (ops/softmax.hpp has the formulas), one
// row of logits per index (K, the number of classes, is small); the row arithmetic is
// kernels::log_softmax_row, the CPU's. The loss is summed by a single thread in sample order.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/kernels/functors.hpp"

#include <cmath>

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// y (N, K) = log_softmax(x) row by row.
template <class T>
struct LogSoftmaxForward {
  const T* x;
  T* y;
  Index n, k;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index r) const { kernels::log_softmax_row(x + r * k, y + r * k, k); }
};

/// grad_x = g − exp(y)·Σ_k g_k per row, y the saved log-probabilities.
template <class T>
struct LogSoftmaxBackward {
  const T* grad_y;
  const T* y;
  T* grad_x;
  Index n, k;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index r) const {
    T s = 0;
    for (Index c = 0; c < k; ++c) s += grad_y[r * k + c];
    for (Index c = 0; c < k; ++c) grad_x[r * k + c] = grad_y[r * k + c] - std::exp(y[r * k + c]) * s;
  }
};

/// loss[0] = Σ_n w_n·(−log_probs[n, t_n]) / Σ_n w_n with w_n = class_weight[t_n] (1 without weights);
/// sample_weight[n] = w_n / Σ w, kept for the backward. A single index: N is a batch, not a feature map.
template <class T>
struct CrossEntropyForward {
  const T* log_probs;
  const Index* targets;
  const T* class_weight;  // (K) or null
  T* sample_weight;       // (N)
  T* loss;                // (1)
  Index n, k;
  Index size() const { return 1; }
  QX_HOST_DEVICE void operator()(Index) const {
    double total_weight = 0, sum = 0;
    for (Index r = 0; r < n; ++r) {
      const T w = class_weight ? class_weight[targets[r]] : T(1);
      sample_weight[r] = w;
      total_weight += w;
      sum -= w * log_probs[r * k + targets[r]];
    }
    loss[0] = static_cast<T>(sum / total_weight);
    for (Index r = 0; r < n; ++r) sample_weight[r] = static_cast<T>(sample_weight[r] / total_weight);
  }
};

/// grad_x[n, k] = g · sample_weight[n] · (exp(log_probs[n, k]) − [k = t_n]), one element per index.
template <class T>
struct CrossEntropyBackward {
  const T* log_probs;
  const Index* targets;
  const T* sample_weight;
  T grad;
  T* grad_x;
  Index n, k;
  Index size() const { return n * k; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const Index r = i / k, c = i % k;
    grad_x[i] = grad * sample_weight[r] * (std::exp(log_probs[i]) - (c == targets[r] ? T(1) : T(0)));
  }
};

}  // namespace backends::cuda
QX_NAMESPACE_END
