// Trains a tiny CNN on a synthetic two-class image task (a bright blob on the left or on the right
// half of a noisy 16×16 image) with qx's ops and autograd only, and prints the falling loss.
// The model: conv 3×3 (1→8) → relu → max-pool 2 → conv 3×3 (8→8) → relu → global average → linear 8→2.
// The update is plain SGD written out, so every step of training is visible in this file.
#include <qx/qx.hpp>

#include <cstdio>
#include <vector>

using qx::Index;
using qx::Tensor;

// One batch of the task: label 0 puts a Gaussian blob in the left half, label 1 in the right half.
static void make_batch(qx::Rng& rng, Index n, Tensor<float>& images, std::vector<Index>& labels) {
  images = Tensor<float>::randn({n, 1, 16, 16}, rng, 0.0, 0.3);
  labels.resize(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    labels[i] = static_cast<Index>(rng.below(2));
    const double cx = labels[i] == 0 ? rng.uniform(2, 6) : rng.uniform(10, 14), cy = rng.uniform(3, 13);
    for (Index y = 0; y < 16; ++y)
      for (Index x = 0; x < 16; ++x) {
        const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
        images.at({i, 0, y, x}) += static_cast<float>(2.0 * std::exp(-d2 / 4.0));
      }
  }
}

int main() {
  qx::Rng rng(42);
  // Parameters, He-initialised: std = √(2 / fan_in).
  auto w1 = Tensor<float>::randn({8, 1, 3, 3}, rng, 0.0, std::sqrt(2.0 / 9)).requires_grad_();
  auto b1 = Tensor<float>::zeros({8}).requires_grad_();
  auto w2 = Tensor<float>::randn({8, 8, 3, 3}, rng, 0.0, std::sqrt(2.0 / 72)).requires_grad_();
  auto b2 = Tensor<float>::zeros({8}).requires_grad_();
  auto w3 = Tensor<float>::randn({2, 8}, rng, 0.0, std::sqrt(1.0 / 8)).requires_grad_();
  auto b3 = Tensor<float>::zeros({2}).requires_grad_();
  std::vector<Tensor<float>*> params{&w1, &b1, &w2, &b2, &w3, &b3};

  auto forward = [&](const Tensor<float>& x) {
    auto h = qx::ops::max_pool2d(qx::ops::relu(qx::ops::conv2d(x, w1, b1, 1, 1)), 2);  // (N, 8, 8, 8)
    h = qx::ops::relu(qx::ops::conv2d(h, w2, b2, 1, 1));                                // (N, 8, 8, 8)
    return qx::ops::linear(qx::ops::flatten(qx::ops::adaptive_avg_pool2d(h, 1, 1)), w3, b3);  // (N, 2)
  };

  const float learning_rate = 0.2f;
  Tensor<float> images;
  std::vector<Index> labels;
  for (int step = 1; step <= 400; ++step) {
    make_batch(rng, 32, images, labels);
    auto loss = qx::ops::cross_entropy(forward(images), labels);
    qx::autograd::backward(loss);
    for (auto* p : params) {  // p ← p − η·∂loss/∂p
      auto g = p->grad().span();
      auto v = p->span();
      for (std::size_t i = 0; i < v.size(); ++i) v[i] -= learning_rate * g[i];
      p->zero_grad();
    }
    if (step % 40 == 0) std::printf("step %3d  loss %.4f\n", step, loss.item());
  }

  qx::NoGradGuard no_grad;
  make_batch(rng, 500, images, labels);
  const auto logits = forward(images);
  int correct = 0;
  for (Index i = 0; i < 500; ++i) correct += (logits.at({i, 1}) > logits.at({i, 0})) == (labels[i] == 1);
  std::printf("held-out accuracy: %.1f %%\n", correct / 5.0);
  return correct >= 450 ? 0 : 1;
}
