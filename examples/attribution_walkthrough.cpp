// A walk through the attribution mathematics on a network small enough to print.
//
//   x (1×1×4×4) → conv 2×2, two filters, bias → A (2×3×3) → ReLU → global average → linear 2→2 → y
//
// Every intermediate value of saliency, Grad-CAM and guided backprop is printed, recomputed here by its
// formula, and compared with what qx::explain returns. The program exits non-zero if any check fails.
#include <qx/qx.hpp>

#include "example_checks.hpp"

#include <cmath>
#include <cstdio>

using qx::Index;
using qx::Tensor;

struct Tiny final : qx::nn::Module<double> {
  std::shared_ptr<qx::nn::Conv2d<double>> conv;
  std::shared_ptr<qx::nn::Linear<double>> fc;
  explicit Tiny(qx::Rng& rng) {
    conv = register_module("conv", std::make_shared<qx::nn::Conv2d<double>>(1, 2, 2, 1, 0, true, rng));
    fc = register_module("fc", std::make_shared<qx::nn::Linear<double>>(2, 2, rng));
  }
  Tensor<double> forward(const Tensor<double>& x) override {
    return (*fc)(qx::ops::flatten(qx::ops::adaptive_avg_pool2d(qx::ops::relu((*conv)(x)), 1, 1)));
  }
};

int main() {
  qx::Rng rng(2024);
  Tiny model(rng);
  // Readable weights: filter 0 detects a rising edge, filter 1 a falling one.
  model.conv->weight.copy_(Tensor<double>::from({2, 1, 2, 2}, {-1, 1, -1, 1, 1, -1, 1, -1}));
  model.conv->bias.copy_(Tensor<double>::from({2}, {0.1, -0.2}));
  model.fc->weight.copy_(Tensor<double>::from({2, 2}, {1.5, -0.5, -1.0, 2.0}));
  model.fc->bias.copy_(Tensor<double>::from({2}, {0.0, 0.0}));
  const auto x = Tensor<double>::from({1, 1, 4, 4}, {0, 1, 2, 3, 0, 1, 2, 3, 3, 2, 1, 0, 3, 2, 1, 0});
  example::print_plane("input x (4×4): rising in the top rows, falling in the bottom rows", x.data(), 4, 4);

  // --- forward, by hand ---------------------------------------------------------------------------
  // A_k[i,j] = b_k + Σ_pq W_k[p,q]·x[i+p, j+q];   h_k = mean_ij ReLU(A_k);   y_c = Σ_k V[c,k]·h_k + d_c
  double a[2][9], h[2] = {0, 0};
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        double s = model.conv->bias.at({k});
        for (int p = 0; p < 2; ++p)
          for (int q = 0; q < 2; ++q) s += model.conv->weight.at({k, 0, p, q}) * x.at({0, 0, i + p, j + q});
        a[k][i * 3 + j] = s;
        h[k] += std::max(s, 0.0) / 9;
      }
  example::print_plane("A_0 = conv filter 0 (rising edge)", a[0], 3, 3);
  example::print_plane("A_1 = conv filter 1 (falling edge)", a[1], 3, 3);
  double y[2];
  for (int c = 0; c < 2; ++c) y[c] = model.fc->weight.at({c, 0}) * h[0] + model.fc->weight.at({c, 1}) * h[1];
  std::printf("pooled h = (%.4f, %.4f);  logits y = (%.4f, %.4f)\n", h[0], h[1], y[0], y[1]);
  const int target = y[1] > y[0] ? 1 : 0;
  std::printf("target c = argmax y = %d\n\n", target);

  const auto maps = qx::explain::explain(model, x, {qx::explain::all_methods(), "conv", {}});
  example::expect(maps.targets[0] == target, "explain picks the predicted class");
  example::expect(std::abs(maps.logits.at({0, 0}) - y[0]) < 1e-12 && std::abs(maps.logits.at({0, 1}) - y[1]) < 1e-12,
         "logits equal the hand-computed forward");

  // --- Grad-CAM -----------------------------------------------------------------------------------
  // ∂y_c/∂A_k[i,j] = V[c,k]·[A_k[i,j] > 0]/9;  α_k = mean_ij of that;  cam = ReLU(Σ_k α_k A_k)
  double grad_a[2][9], alpha[2] = {0, 0}, cam[9];
  for (int k = 0; k < 2; ++k)
    for (int p = 0; p < 9; ++p) {
      grad_a[k][p] = model.fc->weight.at({target, k}) * (a[k][p] > 0 ? 1.0 : 0.0) / 9;
      alpha[k] += grad_a[k][p] / 9;
    }
  example::print_plane("∂y_c/∂A_0", grad_a[0], 3, 3);
  example::print_plane("∂y_c/∂A_1", grad_a[1], 3, 3);
  std::printf("α = (%.5f, %.5f)\n", alpha[0], alpha[1]);
  for (int p = 0; p < 9; ++p) cam[p] = std::max(0.0, alpha[0] * a[0][p] + alpha[1] * a[1][p]);
  example::print_plane("gradcam_raw = ReLU(α_0·A_0 + α_1·A_1)", cam, 3, 3);
  bool same = true;
  for (int p = 0; p < 9; ++p) same = same && std::abs(maps.gradcam_raw.data()[p] - cam[p]) < 1e-12;
  example::expect(same, "gradcam_raw equals the formula");
  example::print_plane("gradcam = gradcam_raw resized bilinearly to 4×4", maps.gradcam.data(), 4, 4);

  // --- saliency and guided backprop -----------------------------------------------------------------
  // ∂y_c/∂x[r,s] = Σ_k Σ_{ij: (r,s) in the window at (i,j)} W_k[r−i, s−j]·∂y_c/∂A_k[i,j]
  // guided: the ReLU passes only positive gradient, so ∂y_c/∂A is replaced by max(∂y_c/∂A, 0) on A > 0.
  double saliency[16] = {}, guided[16] = {};
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int p = 0; p < 2; ++p)
          for (int q = 0; q < 2; ++q) {
            const double w = model.conv->weight.at({k, 0, p, q}), g = grad_a[k][i * 3 + j];
            saliency[(i + p) * 4 + j + q] += w * g;
            guided[(i + p) * 4 + j + q] += w * std::max(g, 0.0);
          }
  example::print_plane("saliency ∂y_c/∂x", saliency, 4, 4);
  example::print_plane("guided backprop (negative gradients stopped at the ReLU)", guided, 4, 4);
  bool sal_ok = true, gb_ok = true, ggc_ok = true;
  for (int p = 0; p < 16; ++p) {
    sal_ok = sal_ok && std::abs(maps.saliency.data()[p] - saliency[p]) < 1e-12;
    gb_ok = gb_ok && std::abs(maps.guided_backprop.data()[p] - guided[p]) < 1e-12;
    ggc_ok = ggc_ok && std::abs(maps.guided_gradcam.data()[p] - guided[p] * maps.gradcam.data()[p]) < 1e-12;
  }
  example::expect(sal_ok, "saliency equals the formula");
  example::expect(gb_ok, "guided backprop equals the formula");
  example::expect(ggc_ok, "guided Grad-CAM = guided backprop ⊙ gradcam");

  // --- focus --------------------------------------------------------------------------------------
  const qx::metrics::Roi top{0, 0, 4, 2};
  const auto f = qx::metrics::focus(maps.saliency.slice(0, 0, 1).view({1, 4, 4}), top, qx::metrics::MaxAbsOverChannels{});
  std::printf("\nfocus of |saliency| in the top half [0,4)×[0,2): %.4f (random focus %.2f)\n", f.focus,
              qx::metrics::random_focus(top, 4, 4));
  return example::finish();
}
