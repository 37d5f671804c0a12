// Integrated gradients (Sundararajan et al. 2017) and its completeness error, shrinking with the steps.
//
//   IG_i(x) = (x_i − b_i) · ∫₀¹ ∂y_c/∂x_i (b + α(x − b)) dα          (b: the baseline, here black)
//   completeness: Σ_i IG_i(x) = y_c(x) − y_c(b)                       (the gradient theorem, exactly)
//
// qx approximates the integral with the midpoint rule over m steps, α_k = (k − ½)/m, so Σ_i IG_i misses
// y_c(x) − y_c(b) by a completeness error that goes to 0 as m grows — at a speed set by the network:
//   smooth (linear → log-softmax)   the midpoint rule's error ≈ (f′(1) − f′(0)) / 24m²: doubling m
//                                   divides it by 4
//   ReLU network                    the path gradient is piecewise constant and jumps at kinks; only
//                                   the steps that straddle a kink err, so the error falls like 1/m
//                                   at best and erratically (it can even change sign)
// The program prints both tables and checks qx's sum against one done here by hand.
#include <qx/explain/methods.hpp>
#include <qx/nn/layers.hpp>

#include "example_checks.hpp"

#include <cmath>

using qx::Index;
using qx::Tensor;

struct LogSoftmax final : qx::nn::Module<double> {
  Tensor<double> forward(const Tensor<double>& x) override { return qx::ops::log_softmax(x); }
};

/// Prints the completeness error of IG for m = 1, 2, 4, …, 256 and returns the errors.
std::vector<double> completeness_table(qx::nn::Module<double>& model, const Tensor<double>& x) {
  std::printf("  steps m    Σ IG          y_c(x) − y_c(b)   completeness error   error(m/2) / error(m)\n");
  std::vector<double> errors;
  for (Index m = 1; m <= 256; m *= 2) {
    const auto ig = qx::explain::integrated_gradients(model, x, m);  // baseline: zeros
    double sum = 0;
    for (double v : ig.attribution.span()) sum += v;
    const double error = ig.completeness_error[0];
    std::printf("  %7lld    %+.8f   %+.8f       %+.3e", static_cast<long long>(m), sum, sum - error, error);
    if (!errors.empty()) std::printf("            %+8.2f", errors.back() / error);
    std::printf("\n");
    errors.push_back(error);
  }
  return errors;
}

int main() {
  qx::Rng rng(11);
  const auto x = Tensor<double>::uniform({1, 1, 6, 6}, rng, 0.0, 1.0);

  qx::nn::Sequential<double> smooth;
  smooth.push_back(std::make_shared<qx::nn::Flatten<double>>());
  smooth.push_back(std::make_shared<qx::nn::Linear<double>>(36, 3, rng));
  smooth.push_back(std::make_shared<LogSoftmax>());
  std::printf("smooth network: flatten → linear 36→3 → log-softmax\n");
  const auto smooth_errors = completeness_table(smooth, x);

  qx::nn::Sequential<double> relu_net;
  relu_net.push_back(std::make_shared<qx::nn::Conv2d<double>>(1, 4, 3, 1, 1, true, rng));
  relu_net.push_back(std::make_shared<qx::nn::ReLU<double>>());
  relu_net.push_back(std::make_shared<qx::nn::Conv2d<double>>(4, 4, 3, 1, 1, true, rng));
  relu_net.push_back(std::make_shared<qx::nn::ReLU<double>>());
  relu_net.push_back(std::make_shared<qx::nn::AdaptiveAvgPool2d<double>>(1, 1));
  relu_net.push_back(std::make_shared<qx::nn::Flatten<double>>());
  relu_net.push_back(std::make_shared<qx::nn::Linear<double>>(4, 3, rng));
  std::printf("\nReLU network: conv 3×3 → ReLU → conv 3×3 → ReLU → global average → linear 4→3\n");
  const auto relu_errors = completeness_table(relu_net, x);

  // The midpoint rule for m = 4, by hand from input gradients: IG = (x − b) ⊙ (1/m) Σ_k ∂y_c/∂x(b + α_k(x − b)).
  const Index m = 4, c = qx::explain::input_gradient(relu_net, x).targets[0];
  auto by_hand = Tensor<double>::zeros(x.shape());
  for (Index k = 1; k <= m; ++k) {
    const double alpha = (static_cast<double>(k) - 0.5) / static_cast<double>(m);
    auto point = x.clone();
    for (double& v : point.span()) v *= alpha;  // b + α(x − b) with b = 0
    const auto g = qx::explain::input_gradient(relu_net, point, {c});
    for (Index i = 0; i < x.numel(); ++i) by_hand.data()[i] += x.data()[i] * g.grad.data()[i] / static_cast<double>(m);
  }
  const auto ig4 = qx::explain::integrated_gradients(relu_net, x, m);
  std::printf("\n");
  example::expect(example::max_abs_diff(ig4.attribution.data(), by_hand.data(), 36) < 1e-12,
                  "qx's IG for m = 4 equals the midpoint sum done by hand");
  bool quartered = true;
  for (std::size_t i = 4; i < smooth_errors.size(); ++i) quartered &= std::abs(smooth_errors[i - 1] / smooth_errors[i] - 4) < 0.1;
  example::expect(quartered, "smooth network: from m = 16 on, doubling m quarters the error");
  example::expect(std::abs(relu_errors.back()) < std::abs(relu_errors.front()) / 100, "ReLU network: the error at m = 256 is 100× smaller than at m = 1");
  example::expect(std::abs(relu_errors.back()) < 1e-4, "ReLU network: at m = 256, Σ IG = y_c(x) − y_c(b) to 1e-4");
  return example::finish();
}
