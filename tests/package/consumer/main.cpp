// A consumer of qx, built three ways by tests/package (find_package, add_subdirectory, pkg-config) and
// shown in docs/getting-started-embedded.md: one include; a small ResNet explains one image, the focus
// of two maps in a box is printed beside the random focus, and one gradient is checked.
// Exits non-zero if a number is wrong.
#include <qx/qx.hpp>

#include <cstdio>

int main() {
  qx::Rng rng(1);
  auto model = qx::nn::resnet18<float>(/*in_channels=*/1, /*num_classes=*/2, /*width=*/8, /*seed=*/1);
  const auto image = qx::Tensor<float>::randn({1, 1, 64, 64}, rng);  // (N, C, H, W); layer4 is 2×2
  const auto maps = qx::explain::explain(*model, image);              // all five maps, predicted class
  const qx::metrics::Roi box{0, 0, 32, 32};                          // [x0, x1) × [y0, y1): top-left
  const double saliency = qx::metrics::focus_batch(maps.saliency, {box})[0].focus;
  const double gradcam = qx::metrics::focus_batch(maps.gradcam, {box}, qx::metrics::Identity{})[0].focus;
  std::printf("class %lld; focus in the box: saliency %.3f, Grad-CAM %.3f (random focus %.3f)\n",
              static_cast<long long>(maps.targets[0]), saliency, gradcam, qx::metrics::random_focus(box, 64, 64));
  const bool maps_ok = maps.saliency.shape() == qx::Shape{1, 1, 64, 64} && maps.gradcam.shape() == qx::Shape{1, 64, 64} &&
                       saliency > 0 && saliency < 1 && gradcam >= 0 && gradcam <= 1;

  auto x = qx::Tensor<double>::from({1, 3}, {1.0, -2.0, 3.0}).requires_grad_();
  qx::autograd::backward(qx::ops::sum(qx::ops::relu(x)));
  const auto g = x.grad().to_vector();
  std::printf("d/dx sum(relu(x)) at (1, -2, 3) = (%g, %g, %g)\n", g[0], g[1], g[2]);
  return maps_ok && g[0] == 1.0 && g[1] == 0.0 && g[2] == 1.0 ? 0 : 1;
}
