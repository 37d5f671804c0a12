// add: y = a + b for tensors of equal shape (the residual connection). Backward fans the gradient out
// unchanged to both inputs: ∂y/∂a = ∂y/∂b = I.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
/// y = fn(a, b) element-wise: a + b, or a·b when `multiply` (fn is the CPU's body, the flag the GPU's).
template <class T, class Fn>
Tensor<T> elementwise(const char* op, const Tensor<T>& a, const Tensor<T>& b, bool multiply, Fn fn) {
  check(a.shape() == b.shape(), op, ": shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()), " differ");
  check(a.device() == b.device(), op, ": tensors on devices ", a.device(), " and ", b.device());
  const Tensor<T> ac = a.contiguous(), bc = b.contiguous();
  auto y = Tensor<T>::empty(a.shape(), a.device());
  const T *ap = ac.data(), *bp = bc.data();
  T* yp = y.data();
  dispatch(a.device(), op, [&] { parallel_for(0, y.numel(), [&](Index i) { yp[i] = fn(ap[i], bp[i]); }); },
           [&] { backends::cuda::launch_on_device(backends::cuda::AddForward<T>{ap, bp, yp, y.numel(), multiply}); });
  return y;
}

template <class T>
class AddNode final : public autograd::Node<T> {
 public:
  const char* name() const override { return "add"; }
  bool handles_replicas() const override { return true; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override { return {grad_output, grad_output}; }
};

template <class T>
class MulNode final : public autograd::Node<T> {
 public:
  MulNode(Tensor<T> a, Tensor<T> b) : a_(std::move(a)), b_(std::move(b)) {}
  const char* name() const override { return "mul"; }

 protected:
  // ∂(a⊙b)/∂a = g⊙b, ∂(a⊙b)/∂b = g⊙a
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();
    Tensor<T> ga, gb;
    if (this->needs_input_grad(0)) ga = product(g, b_);
    if (this->needs_input_grad(1)) gb = product(g, a_);
    return {ga, gb};
  }
  void release() override { a_ = b_ = {}; }

 private:
  static Tensor<T> product(const Tensor<T>& x, const Tensor<T>& y) {
    return elementwise("mul", x, y, true, [](T u, T v) { return u * v; });
  }
  Tensor<T> a_, b_;
};

}  // namespace detail

/// y = a + b (same shape)
template <class T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  auto y = detail::elementwise("add", a, b, false, [](T u, T v) { return u + v; });
  if (!autograd::any_requires_grad<T>({&a, &b})) return y;
  return autograd::make_result(y, {&a, &b}, std::make_shared<detail::AddNode<T>>());
}

/// y = a ⊙ b (same shape)
template <class T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  auto y = detail::elementwise("mul", a, b, true, [](T u, T v) { return u * v; });
  if (!autograd::any_requires_grad<T>({&a, &b})) return y;
  return autograd::make_result(y, {&a, &b}, std::make_shared<detail::MulNode<T>>(a.contiguous().detach(), b.contiguous().detach()));
}

}  // namespace ops
QX_NAMESPACE_END
