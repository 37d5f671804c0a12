// A user-defined op with its backward, registered with qx's autograd and proven with qx::gradcheck in a
// doctest suite: the file to copy when starting an op and its gradient tests of your own.
//
//   softplus_β(x) = log(1 + e^{βx}) / β          element-wise; β is a learnable one-element tensor
//   ∂y/∂x = σ(βx)                                 σ(t) = 1 / (1 + e^{−t})
//   ∂y/∂β = (x·σ(βx) − y) / β                     summed over all elements, since β is shared
//
// The recipe (docs/adding-an-op.md says the same for ops inside qx): a Node subclass that saves what the
// backward needs and returns one gradient per input in the order the inputs are registered; a function
// that checks its arguments, computes the forward, and records the node only when an input needs grad.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <qx/autograd/gradcheck.hpp>
#include <qx/autograd/node.hpp>

#include <cmath>

namespace my_ops {
using qx::Index;
using qx::Tensor;

/// log(1 + e^t), without overflow for large |t|.
inline double softplus_unit(double t) { return std::max(t, 0.0) + std::log1p(std::exp(-std::abs(t))); }
inline double sigmoid(double t) { return 1.0 / (1.0 + std::exp(-t)); }

template <class T>
class SoftplusNode final : public qx::autograd::Node<T> {
 public:
  SoftplusNode(Tensor<T> x, Tensor<T> y, T beta) : x_(std::move(x)), y_(std::move(y)), beta_(beta) {}
  const char* name() const override { return "softplus"; }  // the name hooks and error messages see

 protected:
  // One gradient per input, in the order given to make_result: {∂/∂x, ∂/∂β}. Skip what is not needed.
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();
    Tensor<T> grad_x, grad_beta;
    if (this->needs_input_grad(0)) {
      grad_x = Tensor<T>::empty(g.shape());
      for (Index i = 0; i < g.numel(); ++i) grad_x.data()[i] = g.data()[i] * static_cast<T>(sigmoid(beta_ * x_.data()[i]));
    }
    if (this->needs_input_grad(1)) {
      double sum = 0;
      for (Index i = 0; i < g.numel(); ++i)
        sum += g.data()[i] * (x_.data()[i] * sigmoid(beta_ * x_.data()[i]) - y_.data()[i]) / beta_;
      grad_beta = Tensor<T>::from({1}, {static_cast<T>(sum)});
    }
    return {grad_x, grad_beta};
  }
  void release() override { x_ = y_ = {}; }  // called after a backward without retain_graph

 private:
  Tensor<T> x_, y_;  // saved input and output, contiguous, same shape
  T beta_;
};

/// y = log(1 + e^{βx}) / β element-wise; beta has one element, positive.
template <class T>
Tensor<T> softplus(const Tensor<T>& x, const Tensor<T>& beta) {
  qx::check(beta.numel() == 1 && beta.flat(0) > T(0), "softplus: beta must be one positive element, got shape ",
            qx::shape_str(beta.shape()));
  const Tensor<T> xc = x.contiguous();
  const T b = beta.flat(0);
  auto y = Tensor<T>::empty(x.shape());
  for (Index i = 0; i < y.numel(); ++i) y.data()[i] = static_cast<T>(softplus_unit(b * xc.data()[i]) / b);
  if (!qx::autograd::any_requires_grad<T>({&x, &beta})) return y;  // nothing to record (or grad mode off)
  return qx::autograd::make_result(y, {&x, &beta}, std::make_shared<SoftplusNode<T>>(xc.detach(), y.detach(), b));
}
}  // namespace my_ops

using qx::Tensor;

// Test points away from 0 would matter for a kink (ReLU); softplus is smooth, so any points will do.
TEST_CASE("softplus: forward values") {
  const auto y = my_ops::softplus(Tensor<double>::from({3}, {0.0, 1.0, -50.0}), Tensor<double>::from({1}, {2.0}));
  CHECK(y.flat(0) == doctest::Approx(std::log(2.0) / 2));
  CHECK(y.flat(1) == doctest::Approx(std::log1p(std::exp(2.0)) / 2));
  CHECK(y.flat(2) == doctest::Approx(std::exp(-100.0) / 2));  // no overflow, no cancellation
}

TEST_CASE("softplus: gradcheck with respect to x and β") {
  qx::Rng rng(7);
  for (double beta : {0.5, 1.0, 3.0}) {
    CAPTURE(beta);
    const auto x = Tensor<double>::randn({2, 3, 4}, rng).requires_grad_();
    const auto b = Tensor<double>::from({1}, {beta}).requires_grad_();
    // gradcheck perturbs each element of every input that requires grad, and compares with backward.
    const auto result = qx::gradcheck([](auto& in) { return my_ops::softplus(in[0], in[1]); }, {x, b});
    CHECK_MESSAGE(result.ok, result.message);
    MESSAGE(result.message);  // the worst element: input, index, analytic and numeric values
  }
}

TEST_CASE("softplus: only the inputs that require grad get a gradient") {
  auto x = Tensor<double>::from({2}, {0.3, -1.2}).requires_grad_();
  auto beta = Tensor<double>::from({1}, {1.5});  // a constant here
  qx::autograd::backward(my_ops::softplus(x, beta), Tensor<double>::ones({2}));
  CHECK(x.grad().flat(0) == doctest::Approx(my_ops::sigmoid(1.5 * 0.3)));
  CHECK_FALSE(beta.has_grad());
}

TEST_CASE("gradcheck rejects a wrong backward") {
  // A test that cannot fail proves nothing: spoil ∂y/∂x by 1% through a backward hook and watch
  // gradcheck name the element. (Under gradcheck's no-grad re-evaluations there is no node to hook.)
  qx::Rng rng(1);
  const auto x = Tensor<double>::randn({5}, rng).requires_grad_();
  const auto result = qx::gradcheck(
      [](auto& in) {
        auto y = my_ops::softplus(in[0], Tensor<double>::from({1}, {1.0}));
        if (y.grad_fn())
          y.grad_fn()->add_backward_hook([](const auto&, const auto&, auto& grads) {
            for (double& v : grads[0].span()) v *= 1.01;
          });
        return y;
      },
      {x});
  CHECK_FALSE(result.ok);
  MESSAGE(result.message);
}

TEST_CASE("softplus: a bad β is a qx::Error naming the shape") {
  CHECK_THROWS_WITH_AS(my_ops::softplus(Tensor<double>::zeros({2}), Tensor<double>::ones({2})),
                       doctest::Contains("beta must be one positive element, got shape (2,)"), qx::Error);
}
