// relu: y = max(x, 0), element-wise; backward g·[y > 0]. Its node is the one the guided-backprop
// rule hooks (name "relu"): every ReLU use in a network is a separate "relu" node.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/functors.hpp"

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
/// g·[y > 0], element-wise (the ReLU's backward, given its output y); shared by relu and add_relu. g may
/// hold several replicas of y's shape stacked along dimension 0 (BackwardOptions::replicas).
template <class T>
Tensor<T> relu_grad(const Tensor<T>& grad_output, const Tensor<T>& output) {
  const Tensor<T> g = grad_output.contiguous();
  auto grad_input = Tensor<T>::empty(g.shape(), g.device());
  const Index per_replica = output.numel();
  const T* yp = output.data();
  dispatch(g.device(), "relu", [&] {
    for (Index r = 0; r < g.numel() / per_replica; ++r) {
      const T* gp = g.data() + r * per_replica;
      T* out = grad_input.data() + r * per_replica;
      parallel_for(0, per_replica, [&](Index i) { out[i] = kernels::ReluGrad{}(gp[i], yp[i]); });
    }
  }, [&] {
    backends::cuda::launch_on_device(backends::cuda::ReluBackward<T>{g.data(), yp, grad_input.data(), g.numel(), per_replica, false});
  });
  return grad_input;
}

template <class T>
class ReluNode final : public autograd::Node<T> {
 public:
  explicit ReluNode(Tensor<T> output) : output_(std::move(output)) {}
  const char* name() const override { return "relu"; }
  bool handles_replicas() const override { return true; }
  /// The forward output y (the rule's [x > 0] is [y > 0]); undefined after release.
  const Tensor<T>& saved_output() const { return output_; }

 protected:
  // grad_input = g·[y > 0]
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override { return {relu_grad(grad_output, output_)}; }
  void release() override { output_ = {}; }

 private:
  Tensor<T> output_;  // saved forward output, same shape as x
};
}  // namespace detail

/// y = max(x, 0)
template <class T>
Tensor<T> relu(const Tensor<T>& x) {
  const Tensor<T> xc = x.contiguous();
  auto y = Tensor<T>::empty(x.shape(), x.device());
  const T* xp = xc.data();
  T* yp = y.data();
  dispatch(x.device(), "relu", [&] { parallel_for(0, y.numel(), [&](Index i) { yp[i] = kernels::Relu{}(xp[i]); }); },
           [&] { backends::cuda::launch_on_device(backends::cuda::ReluForward<T>{xp, yp, y.numel()}); });
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<detail::ReluNode<T>>(y.detach()));
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_RELU(instance, T) \
  instance class detail::ReluNode<T>; \
  instance Tensor<T> relu<T>(const Tensor<T>&);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_RELU)
#undef QX_INSTANCES_OPS_RELU
