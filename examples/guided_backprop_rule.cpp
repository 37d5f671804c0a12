// Why guided backprop's rule differs from the plain ReLU gradient, on numbers (Springenberg et al. 2015).
//
//   x (4) → z = W x → h = ReLU(z) → y = V h        (two classes; the target is c = 0)
//
// At a ReLU the gradient g = ∂y_c/∂h arrives from above and the rule decides what passes to z:
//   plain ReLU gradient     g·[z > 0]            the true derivative: saliency
//   guided backprop         g·[z > 0]·[g > 0]    also stops negative gradient: not the derivative of anything
// The three hidden units are chosen to show every case: unit 0 has z > 0, g > 0 (both rules pass it);
// unit 1 has z > 0, g < 0 (only the plain rule passes it); unit 2 has z < 0 (neither does).
// qx computes guided backprop as the plain walk plus a backward hook on every "relu" node; this program
// installs that hook itself, prints what it sees, and compares with qx::explain::explain.
#include <qx/autograd/engine.hpp>
#include <qx/explain/attribution.hpp>
#include <qx/nn/layers.hpp>

#include "example_checks.hpp"

using qx::Index;
using qx::Tensor;

int main() {
  qx::Rng rng(0);
  qx::nn::Sequential<double> model;
  model.push_back(std::make_shared<qx::nn::Flatten<double>>());
  auto first = model.push_back(std::make_shared<qx::nn::Linear<double>>(4, 3, rng));
  model.push_back(std::make_shared<qx::nn::ReLU<double>>());
  auto second = model.push_back(std::make_shared<qx::nn::Linear<double>>(3, 2, rng));
  first->weight.copy_(Tensor<double>::from({3, 4}, {1, 0, 0, 1,  //
                                                   0, 1, 1, 0,  //
                                                   -1, 0, 1, 0}));
  second->weight.copy_(Tensor<double>::from({2, 3}, {2, -1, 1.5,  //
                                                    -1, 0.5, 0.5}));
  first->bias.fill_(0);
  second->bias.fill_(0);
  const auto x = Tensor<double>::from({1, 1, 1, 4}, {1, 2, -1, 0.5});

  // ---- record the graph once, walk it twice ------------------------------------------------------------
  auto input = x.clone().requires_grad_();
  const Tensor<double> y = model(input);
  std::printf("y = (%.2f, %.2f): the target is class 0\n", y.at({0, 0}), y.at({0, 1}));
  const auto seed = Tensor<double>::from({1, 2}, {1, 0});
  qx::autograd::BackwardOptions<double> keep;
  keep.retain_graph = true;  // the guided walk goes over the same graph again
  keep.inputs = {input};
  qx::autograd::backward(y, seed, keep);
  const Tensor<double> saliency = input.grad().clone();
  input.zero_grad();

  // The guided rule as a backward hook: it runs after the ReLU's own rule, sees g (grad_output) and the
  // plain result g·[z > 0] (grad_inputs[0]), and keeps the positive part of the latter.
  qx::autograd::for_each_node(y, [](qx::autograd::Node<double>& node) {
    if (std::string(node.name()) != "relu") return;
    node.add_backward_hook([](const auto&, const Tensor<double>& g, std::vector<Tensor<double>>& grads) {
      std::printf("at the ReLU    g = ∂y_c/∂h      plain g·[z>0]    guided g·[z>0]·[g>0]\n");
      for (Index k = 0; k < 3; ++k) {
        const double plain = grads[0].data()[k], guided = plain > 0 ? plain : 0.0;
        std::printf("  unit %lld      %+6.2f           %+6.2f           %+6.2f\n", static_cast<long long>(k), g.data()[k], plain, guided);
      }
      for (double& v : grads[0].span()) v = v > 0 ? v : 0.0;
    });
  });
  qx::autograd::backward(y, seed, {false, {input}});
  const Tensor<double> guided = input.grad().clone();

  // ---- the input maps: Wᵀ times what passed the ReLU ---------------------------------------------------
  // saliency = 2·W[0] − 1·W[1] = (2, −1, −1, 2);   guided = 2·W[0] = (2, 0, 0, 2)
  const double expected_saliency[4] = {2, -1, -1, 2}, expected_guided[4] = {2, 0, 0, 2};
  std::printf("\n               x_0     x_1     x_2     x_3\n  saliency  ");
  for (Index i = 0; i < 4; ++i) std::printf(" %+6.2f ", saliency.data()[i]);
  std::printf("\n  guided    ");
  for (Index i = 0; i < 4; ++i) std::printf(" %+6.2f ", guided.data()[i]);

  // Central differences of y_c: the derivative the plain rule computes and the guided rule does not.
  double numeric[4];
  std::printf("\n  (y_c(x+εe_i) − y_c(x−εe_i))/2ε");
  for (Index i = 0; i < 4; ++i) {
    auto plus = x.clone(), minus = x.clone();
    plus.data()[i] += 1e-6;
    minus.data()[i] -= 1e-6;
    qx::NoGradGuard no_grad;
    numeric[i] = (model(plus).at({0, 0}) - model(minus).at({0, 0})) / 2e-6;
  }
  std::printf("\n            ");
  for (double v : numeric) std::printf(" %+6.2f ", v);
  std::printf("\n\n");

  const auto maps = qx::explain::explain(model, x, {{qx::explain::Method::saliency, qx::explain::Method::guided_backprop}});
  example::expect(example::max_abs_diff(saliency.data(), expected_saliency, 4) < 1e-12, "saliency = Wᵀ(g·[z > 0]) = (2, −1, −1, 2)");
  example::expect(example::max_abs_diff(guided.data(), expected_guided, 4) < 1e-12, "guided = Wᵀ(g·[z > 0]·[g > 0]) = (2, 0, 0, 2)");
  example::expect(example::max_abs_diff(saliency.data(), numeric, 4) < 1e-6, "saliency is the derivative (finite differences agree)");
  example::expect(example::max_abs_diff(guided.data(), numeric, 4) > 0.5, "guided backprop is not (x_1, x_2 differ)");
  example::expect(example::max_abs_diff(maps.saliency.data(), saliency.data(), 4) < 1e-12, "qx::explain's saliency is the plain walk");
  example::expect(example::max_abs_diff(maps.guided_backprop.data(), guided.data(), 4) < 1e-12,
                  "qx::explain's guided backprop is the hooked walk");
  return example::finish();
}
