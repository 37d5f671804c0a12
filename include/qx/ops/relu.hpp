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
/**
 * The ReLU's backward given its output y, on every replica of g (BackwardOptions::replicas: g holds
 * several gradients of y's shape stacked along dimension 0):
 *   replica r < last, or every replica unless `guided_last`:  g_r·[y > 0]
 *   the last replica when `guided_last`:                       g_r·[y > 0]·[g_r > 0]  (guided backprop)
 * Shared by relu and add_relu. With `reuse`, a g that no other tensor sees (the engine's own summed
 * gradient) is overwritten instead of a new tensor being written: the pass then reads g and y and
 * writes lines already in cache, where a fresh result would also stream a tensor of new memory.
 */
template <class T>
Tensor<T> relu_grad(const Tensor<T>& grad_output, const Tensor<T>& output, bool guided_last = false, bool reuse = false) {
  const bool overwrite = reuse && grad_output.is_sole_owner() && grad_output.is_contiguous();
  const Tensor<T> g = grad_output.contiguous();  // grad_output itself when it is to be overwritten
  Tensor<T> grad_input = overwrite ? grad_output : Tensor<T>::empty(g.shape(), g.device());
  const Index per_replica = output.numel(), replicas = g.numel() / per_replica, plain = replicas - (guided_last ? 1 : 0);
  const T* yp = output.data();
  const T* gp = g.data();
  T* out = grad_input.data();
  dispatch(g.device(), "relu", [&] {
    // One simple loop per replica: GCC vectorises it (a loop over replicas inside the element loop it
    // left scalar, and the maps ran 20 % slower).
    for (Index r = 0; r < replicas; ++r) {
      const T* gr = gp + r * per_replica;
      T* outr = out + r * per_replica;
      if (guided_last && r == plain) {
        parallel_for(0, per_replica, [&](Index i) { outr[i] = kernels::GuidedReluGrad{}(gr[i], yp[i]); });
      } else {
        parallel_for(0, per_replica, [&](Index i) { outr[i] = kernels::ReluGrad{}(gr[i], yp[i]); });
      }
    }
  }, [&] {
    using backends::cuda::ReluBackward;
    if (plain > 0) backends::cuda::launch_on_device(ReluBackward<T>{gp, yp, out, plain * per_replica, per_replica, false});
    if (guided_last) {
      const Index at = plain * per_replica;
      backends::cuda::launch_on_device(ReluBackward<T>{gp + at, yp, out + at, per_replica, per_replica, true});
    }
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
  /// Apply the guided-backprop rule to the last replica of the gradient in this node's own pass (what a
  /// backward hook rewriting it would do, one pass over memory fewer); see ops::use_guided_rule.
  void set_guided_last(bool on) noexcept { guided_last_ = on; }

 protected:
  // grad_input = g·[y > 0] (guided on the last replica: g·[y > 0]·[g > 0]). Overwriting g is safe only
  // when no hook will read it after this rule ran.
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    return {relu_grad(grad_output, output_, guided_last_, !this->has_backward_hooks())};
  }
  void release() override { output_ = {}; }

 private:
  Tensor<T> output_;  // saved forward output, same shape as x
  bool guided_last_ = false;
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

/**
 * Switches `node` to the guided-backprop rule on the last replica of its gradient,
 *   g·[y > 0]·[g > 0]  (Springenberg et al. 2015),
 * when it is a ReLU node (ops::relu, or the ReLU a convolution's epilogue records); returns whether it
 * was. Equivalent to a backward hook that rewrites that replica after the ReLU's own rule, in the same
 * pass. qx::explain uses it, and hooks any other node named "relu".
 */
template <class T>
bool use_guided_rule(autograd::Node<T>& node) {
  auto* relu = dynamic_cast<detail::ReluNode<T>*>(&node);
  if (relu) relu->set_guided_last(true);
  return relu != nullptr;
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_RELU(instance, T) \
  instance class detail::ReluNode<T>; \
  instance Tensor<T> relu<T>(const Tensor<T>&); \
  instance bool use_guided_rule<T>(autograd::Node<T>&);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_RELU)
#undef QX_INSTANCES_OPS_RELU
