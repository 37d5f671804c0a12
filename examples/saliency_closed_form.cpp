// Saliency of a small network in closed form, written with xtensor and xtensor-blas beside qx's.
//
//   x (1×1×2×3) → flatten → z = W x + b (4) → h = ReLU(z) → y = V h + d (3)
//
// While the ReLU pattern m = [z > 0] stays the same, the network is linear in x:
//   y = V diag(m) W x + V diag(m) b + d,   so the Jacobian is   J = ∂y/∂x = V diag(m) W   (3×6)
// and the saliency of class c is row c of J (Simonyan et al. 2014). qx gets the same numbers by walking
// the recorded graph backwards; this program computes J with xt::linalg::dot from qx's own parameters,
// checks that the two agree, and exits non-zero if they do not.
#include <qx/core/adapt.hpp>
#include <qx/explain/attribution.hpp>
#include <qx/nn/layers.hpp>

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xio.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>

#include "example_checks.hpp"

using qx::Tensor;

int main() {
  qx::Rng rng(0);  // initialises the layers; the weights are then overwritten by hand
  qx::nn::Sequential<double> model;
  model.push_back(std::make_shared<qx::nn::Flatten<double>>());
  auto first = model.push_back(std::make_shared<qx::nn::Linear<double>>(6, 4, rng));
  model.push_back(std::make_shared<qx::nn::ReLU<double>>());
  auto second = model.push_back(std::make_shared<qx::nn::Linear<double>>(4, 3, rng));
  // Small round weights, so every number below can be followed on paper.
  first->weight.copy_(Tensor<double>::from({4, 6}, {1, 0, -1, 0, 1, 0,       //
                                                   0, 1, 0, -1, 0, 1,       //
                                                   -1, -1, 1, 1, 0, 0,      //
                                                   0.5, 0, 0, 0, -0.5, 1}));
  first->bias.copy_(Tensor<double>::from({4}, {0, -1, 0.5, 0}));
  second->weight.copy_(Tensor<double>::from({3, 4}, {1, -1, 2, 0,  //
                                                     0, 1, 1, -1,  //
                                                     -1, 0.5, 3, 1}));
  second->bias.copy_(Tensor<double>::from({3}, {0, 0.1, -0.1}));
  auto x = Tensor<double>::from({1, 1, 2, 3}, {0.5, 2, -1, 1, 1.5, 3});

  // ---- the closed form, with xtensor ------------------------------------------------------------------
  // qx::as_xtensor views qx's parameters without copying; xtensor-blas wants containers of known rank
  // and row-major layout, so the views are copied into xt::xtensor once.
  const xt::xtensor<double, 2> W = qx::as_xtensor(first->weight);   // (4, 6)
  const xt::xtensor<double, 1> b = qx::as_xtensor(first->bias);     // (4)
  const xt::xtensor<double, 2> V = qx::as_xtensor(second->weight);  // (3, 4)
  const xt::xtensor<double, 1> d = qx::as_xtensor(second->bias);    // (3)
  const xt::xtensor<double, 1> x_flat = xt::flatten(qx::as_xtensor(x));  // (6)

  const xt::xtensor<double, 1> z = xt::linalg::dot(W, x_flat) + b;
  const xt::xtensor<double, 1> m = xt::cast<double>(z > 0.0);  // which ReLUs let the signal through
  const xt::xtensor<double, 1> y = xt::linalg::dot(V, xt::maximum(z, 0.0)) + d;
  // V * m scales column k of V by m_k, which is V diag(m).
  const xt::xtensor<double, 2> J = xt::linalg::dot(V * m, W);
  const auto c = static_cast<std::size_t>(xt::argmax(y)());
  const xt::xtensor<double, 1> saliency = xt::row(J, static_cast<std::ptrdiff_t>(c));

  std::cout << "x (flattened)        = " << x_flat << "\n"
            << "z = W x + b          = " << z << "\n"
            << "m = [z > 0]          = " << m << "   (unit 2 is off: V's column 2 cannot matter)\n"
            << "y = V ReLU(z) + d    = " << y << "   → target c = " << c << "\n"
            << "J = V diag(m) W      =\n" << J << "\n"
            << "saliency = J[c]      = " << saliency << "\n";

  // ---- qx: one forward, one backward seeded with the one-hot of c ----------------------------------
  const auto maps = qx::explain::explain(model, x, {{qx::explain::Method::saliency}});
  Tensor<double> qx_saliency = maps.saliency;  // a handle on the same storage, (1, 1, 2, 3)
  std::cout << "qx saliency          = " << xt::flatten(qx::as_xtensor(qx_saliency)) << "\n\n";

  example::expect(maps.targets[0] == static_cast<qx::Index>(c), "qx explains the same class c = argmax y");
  example::expect(example::max_abs_diff(maps.logits.data(), y.data(), 3) < 1e-12, "qx's logits equal V ReLU(W x + b) + d");
  example::expect(example::max_abs_diff(maps.saliency.data(), saliency.data(), 6) < 1e-12,
                  "qx's saliency equals row c of V diag(m) W");

  // The saliency is exact to first order: a step δ small enough to keep m moves y_c by J[c]·δ.
  auto moved = x.clone();
  const xt::xtensor<double, 1> delta = {1e-3, -2e-3, 1e-3, 3e-3, -1e-3, 2e-3};
  for (std::size_t i = 0; i < 6; ++i) moved.data()[i] += delta[i];
  const double predicted = xt::linalg::dot(saliency, delta)();
  const double actual = model(moved).at({0, static_cast<qx::Index>(c)}) - y[c];
  std::printf("a step δ changes y_c by %.6f; saliency · δ predicts %.6f\n", actual, predicted);
  example::expect(std::abs(actual - predicted) < 1e-12, "y_c(x + δ) − y_c(x) = saliency · δ while m is unchanged");
  return example::finish();
}
