// Reductions to a scalar: sum(x) = Σ x, mean(x) = Σ x / numel. Backward broadcasts g (or g/numel).
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/core/tensor.hpp"

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
template <class T>
class SumNode final : public autograd::Node<T> {
 public:
  SumNode(Shape input_shape, T scale) : input_shape_(std::move(input_shape)), scale_(scale) {}
  const char* name() const override { return "sum"; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    return {Tensor<T>::full(input_shape_, grad_output.item() * scale_).to(grad_output.device())};
  }

 private:
  Shape input_shape_;
  T scale_;
};

/// On a GPU the values are summed on the host (a copy): these reductions serve losses and tests, not
/// the training or attribution hot paths.
template <class T>
Tensor<T> scaled_sum(const Tensor<T>& x, T scale) {
  const Tensor<T> values = x.to(Device::cpu);
  double s = 0;
  for (Index i = 0; i < values.numel(); ++i) s += values.flat(i);
  auto y = Tensor<T>::full({}, static_cast<T>(s * scale)).to(x.device());
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<SumNode<T>>(x.shape(), scale));
}
}  // namespace detail

/// Σ x over all elements (a 0-d tensor).
template <class T>
Tensor<T> sum(const Tensor<T>& x) {
  return detail::scaled_sum(x, T(1));
}

/// Σ x / numel(x).
template <class T>
Tensor<T> mean(const Tensor<T>& x) {
  check(x.numel() > 0, "mean: empty tensor of shape ", shape_str(x.shape()));
  return detail::scaled_sum(x, T(1) / static_cast<T>(x.numel()));
}

}  // namespace ops
QX_NAMESPACE_END
