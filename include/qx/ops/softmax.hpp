// log_softmax over the class dimension of (N, K) logits, and the class-weighted cross-entropy.
//   log_softmax(x)_k = x_k − log Σ_j exp(x_j)            (computed with the row maximum subtracted)
//   ∂: g − softmax(x)·Σ_k g_k
//   cross_entropy = Σ_n w_{t_n}·(−log_softmax(x_n)_{t_n}) / Σ_n w_{t_n}   (PyTorch's weighted mean)
//   ∂x_{n,k} = g · w_{t_n}/Σw · (softmax(x_n)_k − [k = t_n])
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/functors.hpp"

#include <cmath>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
template <class T>
void log_softmax_rows(const T* x, T* y, Index n, Index k) {
  for (Index r = 0; r < n; ++r) kernels::log_softmax_row(x + r * k, y + r * k, k);
}

template <class T>
class LogSoftmaxNode final : public autograd::Node<T> {
 public:
  explicit LogSoftmaxNode(Tensor<T> output) : output_(std::move(output)) {}
  const char* name() const override { return "log_softmax"; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();
    const Index n = g.size(0), k = g.size(1);
    auto gx = Tensor<T>::empty(g.shape());
    for (Index r = 0; r < n; ++r) {
      T s = 0;
      for (Index c = 0; c < k; ++c) s += g.data()[r * k + c];
      for (Index c = 0; c < k; ++c) gx.data()[r * k + c] = g.data()[r * k + c] - std::exp(output_.data()[r * k + c]) * s;
    }
    return {gx};
  }
  void release() override { output_ = {}; }

 private:
  Tensor<T> output_;  // (N, K) log-probabilities
};

template <class T>
class CrossEntropyNode final : public autograd::Node<T> {
 public:
  CrossEntropyNode(Tensor<T> log_probs, std::vector<Index> targets, std::vector<T> sample_weight)
      : log_probs_(std::move(log_probs)), targets_(std::move(targets)), sample_weight_(std::move(sample_weight)) {}
  const char* name() const override { return "cross_entropy"; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const T g = grad_output.item();
    const Index n = log_probs_.size(0), k = log_probs_.size(1);
    auto gx = Tensor<T>::empty(log_probs_.shape());
    for (Index r = 0; r < n; ++r)
      for (Index c = 0; c < k; ++c)
        gx.data()[r * k + c] = g * sample_weight_[r] * (std::exp(log_probs_.data()[r * k + c]) - (c == targets_[r] ? T(1) : T(0)));
    return {gx};
  }
  void release() override { log_probs_ = {}; }

 private:
  Tensor<T> log_probs_;
  std::vector<Index> targets_;
  std::vector<T> sample_weight_;  // w_{t_n} / Σ w
};

template <class T>
void check_logits(const char* op, const Tensor<T>& x) {
  check(x.dim() == 2 && x.size(1) > 0, op, ": expected logits (N, K) with K > 0, got ", shape_str(x.shape()));
}
}  // namespace detail

/// log_softmax over dimension 1 of (N, K).
template <class T>
Tensor<T> log_softmax(const Tensor<T>& x) {
  detail::check_logits("log_softmax", x);
  const Tensor<T> xc = x.contiguous();
  auto y = Tensor<T>::empty(x.shape());
  detail::log_softmax_rows(xc.data(), y.data(), x.size(0), x.size(1));
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<detail::LogSoftmaxNode<T>>(y.detach()));
}

/// softmax over dimension 1 of (N, K) (no autograd: for reporting probabilities).
template <class T>
Tensor<T> softmax(const Tensor<T>& x) {
  detail::check_logits("softmax", x);
  const Tensor<T> xc = x.contiguous();
  auto y = Tensor<T>::empty(x.shape());
  detail::log_softmax_rows(xc.data(), y.data(), x.size(0), x.size(1));
  for (T& v : y.span()) v = std::exp(v);
  return y;
}

/// Weighted cross-entropy of logits (N, K) against class indices; class_weights (K) or undefined.
template <class T>
Tensor<T> cross_entropy(const Tensor<T>& logits, const std::vector<Index>& targets, const Tensor<T>& class_weights = {}) {
  detail::check_logits("cross_entropy", logits);
  const Index n = logits.size(0), k = logits.size(1);
  check(static_cast<Index>(targets.size()) == n, "cross_entropy: ", targets.size(), " targets for logits ",
        shape_str(logits.shape()));
  check(!class_weights.defined() || (class_weights.dim() == 1 && class_weights.size(0) == k),
        "cross_entropy: class weights ", shape_str(class_weights.shape()), " do not fit logits ", shape_str(logits.shape()));
  auto log_probs = Tensor<T>::empty(logits.shape());
  const Tensor<T> xc = logits.contiguous();
  detail::log_softmax_rows(xc.data(), log_probs.data(), n, k);
  std::vector<T> weight(static_cast<std::size_t>(n));
  double total_weight = 0, loss = 0;
  for (Index r = 0; r < n; ++r) {
    check(targets[r] >= 0 && targets[r] < k, "cross_entropy: target ", targets[r], " of sample ", r,
          " is outside [0, ", k, ")");
    weight[r] = class_weights.defined() ? class_weights.contiguous().data()[targets[r]] : T(1);
    total_weight += weight[r];
    loss -= weight[r] * log_probs.data()[r * k + targets[r]];
  }
  check(total_weight > 0, "cross_entropy: the class weights of the batch's targets sum to ", total_weight);
  auto y = Tensor<T>::full({}, static_cast<T>(loss / total_weight));
  if (!autograd::any_requires_grad<T>({&logits})) return y;
  for (T& w : weight) w = static_cast<T>(w / total_weight);
  return autograd::make_result(y, {&logits},
                               std::make_shared<detail::CrossEntropyNode<T>>(log_probs, targets, std::move(weight)));
}

}  // namespace ops
QX_NAMESPACE_END
