// log_softmax over the class dimension of (N, K) logits, and the class-weighted cross-entropy.
//   log_softmax(x)_k = x_k − log Σ_j exp(x_j)            (computed with the row maximum subtracted)
//   ∂: g − softmax(x)·Σ_k g_k
//   cross_entropy = Σ_n w_{t_n}·(−log_softmax(x_n)_{t_n}) / Σ_n w_{t_n}   (PyTorch's weighted mean)
//   ∂x_{n,k} = g · w_{t_n}/Σw · (softmax(x_n)_k − [k = t_n])
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/softmax.hpp"
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
    auto gx = Tensor<T>::empty(g.shape(), g.device());
    // One row per index, the same body on either device.
    const backends::cuda::LogSoftmaxBackward<T> rows{g.data(), output_.data(), gx.data(), n, k};
    dispatch(g.device(), "log_softmax", [&] { backends::cuda::launch_on_host(rows, {1, 1}); },
             [&] { backends::cuda::launch_on_device(rows); });
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
    const Device device = log_probs_.device();
    auto gx = Tensor<T>::empty(log_probs_.shape(), device);
    // The targets and per-sample weights live on the host; a GPU gets copies (N values each).
    const auto targets = Tensor<Index>::from({n}, targets_).to(device);
    const auto weights = Tensor<T>::from({n}, sample_weight_).to(device);
    const backends::cuda::CrossEntropyBackward<T> elements{log_probs_.data(), targets.data(), weights.data(), g, gx.data(), n, k};
    dispatch(device, "cross_entropy", [&] { backends::cuda::launch_on_host(elements, {1, 1}); },
             [&] { backends::cuda::launch_on_device(elements); });
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
  auto y = Tensor<T>::empty(x.shape(), x.device());
  dispatch(x.device(), "log_softmax", [&] { detail::log_softmax_rows(xc.data(), y.data(), x.size(0), x.size(1)); },
           [&] { backends::cuda::launch_on_device(backends::cuda::LogSoftmaxForward<T>{xc.data(), y.data(), x.size(0), x.size(1)}); });
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<detail::LogSoftmaxNode<T>>(y.detach()));
}

/// softmax over dimension 1 of (N, K) (no autograd: for reporting probabilities).
template <class T>
Tensor<T> softmax(const Tensor<T>& x) {
  detail::check_logits("softmax", x);
  if (x.device() != Device::cpu) return softmax(x.to(Device::cpu)).to(x.device());  // for reporting: N·K values
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
  const Device device = logits.device();
  check(!class_weights.defined() || class_weights.device() == device, "cross_entropy: logits on ", device,
        ", class weights on ", class_weights.defined() ? to_string(class_weights.device()) : "");
  // Targets and weights are checked and weighed on the host (N values); the class weights are K values.
  const Tensor<T> host_class_weights = class_weights.defined() ? class_weights.to(Device::cpu).contiguous() : Tensor<T>();
  std::vector<T> weight(static_cast<std::size_t>(n));
  double total_weight = 0;
  for (Index r = 0; r < n; ++r) {
    check(targets[r] >= 0 && targets[r] < k, "cross_entropy: target ", targets[r], " of sample ", r,
          " is outside [0, ", k, ")");
    weight[r] = class_weights.defined() ? host_class_weights.data()[targets[r]] : T(1);
    total_weight += weight[r];
  }
  check(total_weight > 0, "cross_entropy: the class weights of the batch's targets sum to ", total_weight);
  auto log_probs = Tensor<T>::empty(logits.shape(), device);
  const Tensor<T> xc = logits.contiguous();
  Tensor<T> y;
  dispatch(device, "cross_entropy", [&] {
    detail::log_softmax_rows(xc.data(), log_probs.data(), n, k);
    double loss = 0;
    for (Index r = 0; r < n; ++r) loss -= weight[r] * log_probs.data()[r * k + targets[r]];
    y = Tensor<T>::full({}, static_cast<T>(loss / total_weight));
  }, [&] {
    backends::cuda::launch_on_device(backends::cuda::LogSoftmaxForward<T>{xc.data(), log_probs.data(), n, k});
    const auto device_targets = Tensor<Index>::from({n}, targets).to(device);
    auto sample_weight = Tensor<T>::empty({n}, device);
    y = Tensor<T>::empty({}, device);
    backends::cuda::launch_on_device(backends::cuda::CrossEntropyForward<T>{
        log_probs.data(), device_targets.data(), class_weights.defined() ? class_weights.contiguous().data() : nullptr,
        sample_weight.data(), y.data(), n, k});
  });
  if (!autograd::any_requires_grad<T>({&logits})) return y;
  for (T& w : weight) w = static_cast<T>(w / total_weight);
  return autograd::make_result(y, {&logits},
                               std::make_shared<detail::CrossEntropyNode<T>>(log_probs, targets, std::move(weight)));
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_SOFTMAX(instance, T) \
  instance class detail::LogSoftmaxNode<T>; \
  instance class detail::CrossEntropyNode<T>; \
  instance Tensor<T> log_softmax<T>(const Tensor<T>&); \
  instance Tensor<T> softmax<T>(const Tensor<T>&); \
  instance Tensor<T> cross_entropy<T>(const Tensor<T>&, const std::vector<Index>&, const Tensor<T>&);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_SOFTMAX)
#undef QX_INSTANCES_OPS_SOFTMAX
