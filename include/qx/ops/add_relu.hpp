// add_relu: z = max(a + b, 0) for tensors of equal shape, the end of every residual block, as one op.
// Backward: ∂z/∂a = ∂z/∂b = g·[z > 0] — one masked tensor handed to both branches (the residual fan-out).
// Against add followed by relu it writes one tensor instead of two forward and reads one pass fewer
// backward. The node is named "add_relu": attribution (guided backprop hooks "relu" nodes) uses the
// two separate ops, and the ResNets use this one in training only.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/ops/relu.hpp"

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
template <class T>
class AddReluNode final : public autograd::Node<T> {
 public:
  explicit AddReluNode(Tensor<T> output) : output_(std::move(output)) {}
  const char* name() const override { return "add_relu"; }
  bool handles_replicas() const override { return true; }

 protected:
  // grad_a = grad_b = g·[z > 0]
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    auto masked = relu_grad(grad_output, output_, false, !this->has_backward_hooks());
    return {masked, masked};
  }
  void release() override { output_ = {}; }

 private:
  Tensor<T> output_;  // z, saved for the mask
};
}  // namespace detail

/// z = max(a + b, 0) (same shape)
template <class T>
Tensor<T> add_relu(const Tensor<T>& a, const Tensor<T>& b) {
  check(a.shape() == b.shape(), "add_relu: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()), " differ");
  check(a.device() == b.device(), "add_relu: tensors on devices ", a.device(), " and ", b.device());
  const Tensor<T> ac = a.contiguous(), bc = b.contiguous();
  auto z = Tensor<T>::empty(a.shape(), a.device());
  const T *ap = ac.data(), *bp = bc.data();
  T* zp = z.data();
  dispatch(a.device(), "add_relu", [&] { parallel_for(0, z.numel(), [&](Index i) { zp[i] = kernels::Relu{}(ap[i] + bp[i]); }); },
           [&] { backends::cuda::launch_on_device(backends::cuda::AddForward<T>{ap, bp, zp, z.numel(), false, true}); });
  if (!autograd::any_requires_grad<T>({&a, &b})) return z;
  return autograd::make_result(z, {&a, &b}, std::make_shared<detail::AddReluNode<T>>(z.detach()));
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_ADD_RELU(instance, T) \
  instance class detail::AddReluNode<T>; \
  instance Tensor<T> add_relu<T>(const Tensor<T>&, const Tensor<T>&);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_ADD_RELU)
#undef QX_INSTANCES_OPS_ADD_RELU
