// flatten: merges dimensions start_dim..end into one, as a view of a contiguous input (no copy).
// Backward reshapes the gradient back to the input's shape.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/core/tensor.hpp"

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
template <class T>
class ReshapeNode final : public autograd::Node<T> {
 public:
  explicit ReshapeNode(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  const char* name() const override { return "reshape"; }
  bool handles_replicas() const override { return true; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    return {grad_output.contiguous().view(this->replicated(input_shape_))};
  }

 private:
  Shape input_shape_;
};
}  // namespace detail

/// A view of x with shape `shape` (one entry may be -1), recorded for autograd.
template <class T>
Tensor<T> reshape(const Tensor<T>& x, const Shape& shape) {
  Tensor<T> y = x.contiguous().view(shape);
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<detail::ReshapeNode<T>>(x.shape()));
}

/// (d0, …, d_{s−1}, d_s, …, d_{r−1}) → (d0, …, d_{s−1}, Π d_s…d_{r−1})
template <class T>
Tensor<T> flatten(const Tensor<T>& x, Index start_dim = 1) {
  check(start_dim >= 0 && start_dim < x.dim(), "flatten: start_dim ", start_dim, " out of range for shape ",
        shape_str(x.shape()));
  Shape shape(x.shape().begin(), x.shape().begin() + start_dim);
  shape.push_back(-1);
  if (x.numel() == 0) shape.back() = 0;
  return reshape(x, shape);
}

}  // namespace ops
QX_NAMESPACE_END
