// Grad-CAM step by step (Selvaraju et al. 2017) on a network small enough to print, each step compared
// with what qx::explain::explain returns:
//
//   x (1×1×8×8) → "0" conv 3×3, stride 2, pad 1, 3 filters → "1" ReLU → A (3×4×4)
//               → "2" global average → "3" flatten → "4" linear 3→2 → y
//
//   1. activations   A_k = the output of the chosen layer ("1"), captured by a forward hook
//   2. gradients     G_k = ∂y_c/∂A_k, from one backward seeded with the one-hot of the target c
//   3. weights       α_k = mean_ij G_k[i,j]
//   4. ReLU          gradcam_raw = ReLU(Σ_k α_k A_k)                         (4×4)
//   5. resize        gradcam = bilinear resize of gradcam_raw to 8×8, align_corners = False (PyTorch):
//                    source row s = max((i + ½)·4/8 − ½, 0), i0 = ⌊s⌋, i1 = min(i0 + 1, 3), λ = s − i0
#include <qx/autograd/engine.hpp>
#include <qx/explain/attribution.hpp>
#include <qx/nn/layers.hpp>

#include "example_checks.hpp"

#include <algorithm>
#include <cmath>

using qx::Index;
using qx::Tensor;

int main() {
  qx::Rng rng(3);  // initialises the layers; the weights are then set by hand
  qx::nn::Sequential<double> model;
  auto conv = model.push_back(std::make_shared<qx::nn::Conv2d<double>>(1, 3, 3, 2, 1, true, rng));
  model.push_back(std::make_shared<qx::nn::ReLU<double>>());
  model.push_back(std::make_shared<qx::nn::AdaptiveAvgPool2d<double>>(1, 1));
  model.push_back(std::make_shared<qx::nn::Flatten<double>>());
  auto head = model.push_back(std::make_shared<qx::nn::Linear<double>>(3, 2, rng));
  // Three readable filters: brightness above 0.2, darkness, and a left-to-right rising edge.
  conv->weight.copy_(Tensor<double>::from({3, 1, 3, 3}, {1. / 9, 1. / 9, 1. / 9, 1. / 9, 1. / 9, 1. / 9, 1. / 9, 1. / 9, 1. / 9,
                                                        -1. / 9, -1. / 9, -1. / 9, -1. / 9, -1. / 9, -1. / 9, -1. / 9, -1. / 9, -1. / 9,
                                                        -1. / 3, 0, 1. / 3, -1. / 3, 0, 1. / 3, -1. / 3, 0, 1. / 3}));
  conv->bias.copy_(Tensor<double>::from({3}, {-0.2, 0.2, 0}));
  // Class 0 "there is a bright object" leans on filter 0; class 1 "background only" on filter 1.
  head->weight.copy_(Tensor<double>::from({2, 3}, {6, -1, 0.5, -1, 4, 0}));
  head->bias.fill_(0);
  // A bright square (rows and columns 1 to 3) on a dim background.
  auto x = Tensor<double>::full({1, 1, 8, 8}, 0.1);
  for (Index i = 1; i < 4; ++i)
    for (Index j = 1; j < 4; ++j) x.at({0, 0, i, j}) = 1.0;
  example::print_plane("input x (8×8)", x.data(), 8, 8);

  // ---- 1. activations: a forward hook on layer "1" keeps its output and asks autograd for its gradient
  Tensor<double> A;
  const int hook = model.submodule("1").add_forward_hook([&](auto&, const auto&, Tensor<double>& out) {
    out.retain_grad();  // A is not a leaf: without this the engine would not keep ∂y/∂A
    A = out;
  });
  auto input = x.clone().requires_grad_();
  const Tensor<double> y = model(input);
  model.submodule("1").remove_forward_hook(hook);
  const Index c = y.at({0, 1}) > y.at({0, 0}) ? 1 : 0;
  std::printf("logits y = (%.4f, %.4f) → target c = %lld\n", y.at({0, 0}), y.at({0, 1}), static_cast<long long>(c));
  for (Index k = 0; k < 3; ++k) {
    const std::string name = "A_" + std::to_string(k) + " (4×4)";
    example::print_plane(name.c_str(), A.data() + k * 16, 4, 4);
  }

  // ---- 2. gradients: backward from y seeded with the one-hot of c -------------------------------------
  auto seed = Tensor<double>::zeros({1, 2});
  seed.at({0, c}) = 1.0;
  qx::autograd::backward(y, seed);
  const Tensor<double>& G = A.grad();
  // Behind a global average and a linear layer, ∂y_c/∂A_k[i,j] = V[c,k] / 16 at every pixel: here α is
  // the class weight itself (up to 1/16), and Grad-CAM is the CAM of Zhou et al. (2016).

  // ---- 3. α_k and 4. ReLU(Σ_k α_k A_k) -----------------------------------------------------------------
  double alpha[3] = {0, 0, 0}, cam[16] = {};
  for (Index k = 0; k < 3; ++k) {
    for (Index p = 0; p < 16; ++p) alpha[k] += G.data()[k * 16 + p] / 16;
    std::printf("α_%lld = mean ∂y_c/∂A_%lld = %+.5f   (V[c,%lld]/16 = %+.5f)\n", static_cast<long long>(k),
                static_cast<long long>(k), alpha[k], static_cast<long long>(k), head->weight.at({c, k}) / 16);
  }
  for (Index p = 0; p < 16; ++p) {
    for (Index k = 0; k < 3; ++k) cam[p] += alpha[k] * A.data()[k * 16 + p];
    cam[p] = std::max(cam[p], 0.0);  // keep only what speaks for class c
  }
  example::print_plane("gradcam_raw = ReLU(Σ α_k A_k) (4×4)", cam, 4, 4);

  // ---- 5. bilinear resize to 8×8 -----------------------------------------------------------------------
  struct Tap {
    Index i0, i1;
    double lambda;
  };
  Tap taps[8];
  for (Index i = 0; i < 8; ++i) {
    const double s = std::max((static_cast<double>(i) + 0.5) * 4.0 / 8.0 - 0.5, 0.0);
    const auto i0 = static_cast<Index>(s);
    taps[i] = {i0, std::min<Index>(i0 + 1, 3), s - static_cast<double>(i0)};
    std::printf("output row/column %lld reads source %lld and %lld with λ = %.2f\n", static_cast<long long>(i),
                static_cast<long long>(taps[i].i0), static_cast<long long>(taps[i].i1), taps[i].lambda);
  }
  double resized[64];
  for (Index i = 0; i < 8; ++i)
    for (Index j = 0; j < 8; ++j) {
      const Tap r = taps[i], s = taps[j];
      resized[i * 8 + j] = (1 - r.lambda) * (1 - s.lambda) * cam[r.i0 * 4 + s.i0] + (1 - r.lambda) * s.lambda * cam[r.i0 * 4 + s.i1] +
                           r.lambda * (1 - s.lambda) * cam[r.i1 * 4 + s.i0] + r.lambda * s.lambda * cam[r.i1 * 4 + s.i1];
    }
  example::print_plane("gradcam = resized to 8×8: it should sit on the bright square", resized, 8, 8);

  // ---- the library does all of this in one call ----------------------------------------------------------
  const auto maps = qx::explain::explain(model, x, {{qx::explain::Method::gradcam_raw, qx::explain::Method::gradcam}, "1"});
  std::printf("\n");
  example::expect(maps.targets[0] == c, "explain picks the same target class");
  example::expect(example::max_abs_diff(maps.activation.data(), A.data(), 48) < 1e-12, "step 1: explain's activation equals A");
  example::expect(example::max_abs_diff(maps.activation_grad.data(), G.data(), 48) < 1e-12, "step 2: explain's ∂y_c/∂A equals G");
  bool alpha_is_class_weight = true;
  for (Index k = 0; k < 3; ++k) alpha_is_class_weight &= std::abs(alpha[k] - head->weight.at({c, k}) / 16) < 1e-12;
  example::expect(alpha_is_class_weight, "step 3: α_k = V[c,k] / 16 behind a global average");
  example::expect(example::max_abs_diff(maps.gradcam_raw.data(), cam, 16) < 1e-12, "step 4: gradcam_raw = ReLU(Σ α_k A_k)");
  example::expect(example::max_abs_diff(maps.gradcam.data(), resized, 64) < 1e-12, "step 5: gradcam = the bilinear resize");
  const auto peak = std::max_element(resized, resized + 64) - resized;
  std::printf("the map peaks at row %lld, column %lld\n", static_cast<long long>(peak / 8), static_cast<long long>(peak % 8));
  example::expect(peak / 8 >= 1 && peak / 8 <= 3 && peak % 8 >= 1 && peak % 8 <= 3, "Grad-CAM of class 0 peaks on the bright square");
  return example::finish();
}
