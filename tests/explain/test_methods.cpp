// Further methods (gradient × input, integrated gradients, SmoothGrad, Grad-CAM++), the cascading
// randomisation sanity check, and map pictures.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/explain/explain.hpp"
#include "qx/nn/nn.hpp"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image.h>

#include <cmath>
#include <filesystem>

using qx::Index;
using qx::Tensor;
using qx::explain::Method;

namespace {
std::unique_ptr<qx::nn::ResNet<double>> small_model() {
  auto model = qx::nn::resnet18<double>(1, 3, 4, 21);
  qx::Rng rng(22);
  // Random batch-norm statistics and shifts: the network is then not positively homogeneous, so
  // integrated gradients' path integral is not trivially exact.
  for (auto& e : model->named_state()) {
    if (e.name.find("running_var") != std::string::npos) for (double& v : e.tensor->span()) v = rng.uniform(0.5, 2.0);
    if (e.name.find("running_mean") != std::string::npos) for (double& v : e.tensor->span()) v = rng.uniform(-0.3, 0.3);
    if (e.name.find("bn") != std::string::npos && e.name.find(".bias") != std::string::npos)
      for (double& v : e.tensor->span()) v = rng.uniform(-0.3, 0.3);
  }
  return model;
}
}  // namespace

TEST_CASE("gradient x input is the input times the saliency") {
  auto model = small_model();
  qx::Rng rng(1);
  const auto x = Tensor<double>::randn({2, 1, 20, 18}, rng);
  const auto gxi = qx::explain::gradient_x_input(*model, x, {0, 2});
  const auto sal = qx::explain::explain(*model, x, {{Method::saliency}, "layer4", {0, 2}}).saliency;
  for (Index i = 0; i < x.numel(); ++i) CHECK(gxi.data()[i] == doctest::Approx(x.data()[i] * sal.data()[i]));
}

TEST_CASE("integrated gradients satisfies completeness to 1e-3 with enough steps") {
  auto model = small_model();
  qx::Rng rng(2);
  const auto x = Tensor<double>::randn({2, 1, 20, 18}, rng);
  const auto coarse = qx::explain::integrated_gradients(*model, x, 4);
  const auto fine = qx::explain::integrated_gradients(*model, x, 1024);
  for (std::size_t s = 0; s < 2; ++s) {
    MESSAGE("completeness error, 4 steps: ", coarse.completeness_error[s], "; 1024 steps: ", fine.completeness_error[s]);
    CHECK(std::abs(fine.completeness_error[s]) <= 1e-3);
    CHECK(std::abs(fine.completeness_error[s]) < std::abs(coarse.completeness_error[s]));
  }
  CHECK_THROWS_AS(qx::explain::integrated_gradients(*model, x, 0), qx::Error);
}

TEST_CASE("SmoothGrad: zero noise gives the saliency, and it is seeded") {
  auto model = small_model();
  qx::Rng rng(3);
  const auto x = Tensor<double>::randn({1, 1, 16, 16}, rng);
  const auto sal = qx::explain::explain(*model, x, {{Method::saliency}, "layer4", {1}}).saliency;
  const auto zero = qx::explain::smoothgrad(*model, x, 3, 0.0, 0, {1});
  for (Index i = 0; i < x.numel(); ++i) CHECK(zero.data()[i] == doctest::Approx(sal.data()[i]));
  const auto a = qx::explain::smoothgrad(*model, x, 4, 0.2, 5, {1}), b = qx::explain::smoothgrad(*model, x, 4, 0.2, 5, {1});
  const auto c = qx::explain::smoothgrad(*model, x, 4, 0.2, 6, {1});
  CHECK(a.to_vector() == b.to_vector());
  CHECK(a.to_vector() != c.to_vector());
}

TEST_CASE("integrated gradients and SmoothGrad fold batch norm once for all their passes") {
  auto model = small_model();
  qx::Rng rng(4);
  const auto x = Tensor<double>::randn({2, 1, 20, 18}, rng);
  constexpr std::size_t pairs = 20;  // resnet18's conv → batch norm pairs
  // Without a cache of the caller's, each call keeps one of its own while it runs.
  const auto ig = qx::explain::integrated_gradients(*model, x, 5, {}, {0, 1});
  // The same sum from uncached input gradients (no cache is active here), operation for operation as
  // integrated_gradients writes it with a zero baseline: the cache changes no bit.
  {
    auto total = Tensor<double>::zeros(x.shape()), point = Tensor<double>::empty(x.shape());
    for (Index k = 1; k <= 5; ++k) {
      const double alpha = (static_cast<double>(k) - 0.5) / 5.0;
      for (Index i = 0; i < x.numel(); ++i) point.data()[i] = 0.0 + alpha * (x.data()[i] - 0.0);
      const auto g = qx::explain::input_gradient(*model, point, {0, 1});
      for (Index i = 0; i < x.numel(); ++i) total.data()[i] += g.grad.data()[i];
    }
    for (Index i = 0; i < x.numel(); ++i) total.data()[i] *= (x.data()[i] - 0.0) / 5.0;
    CHECK(ig.attribution.to_vector() == total.to_vector());
  }
  const auto sg = qx::explain::smoothgrad(*model, x, 3, 0.1, 7, {0, 1});
  CHECK(qx::nn::WeightCache<double>::active() == nullptr);
  // With the caller's: 5 steps and the two ends' forward passes, 3 noisy copies — each pair folded once.
  qx::nn::WeightCache<double> cache;
  const qx::nn::WeightCache<double>::Scope use(cache);
  const auto ig_cached = qx::explain::integrated_gradients(*model, x, 5, {}, {0, 1});
  CHECK(cache.stats().folded == pairs);
  CHECK(cache.stats().reused == pairs * (5 + 2 - 1));
  const auto sg_cached = qx::explain::smoothgrad(*model, x, 3, 0.1, 7, {0, 1});
  CHECK(cache.stats().folded == pairs);
  CHECK(cache.stats().reused == pairs * (5 + 2 - 1 + 3));
  CHECK(ig_cached.attribution.to_vector() == ig.attribution.to_vector());  // the same arithmetic
  CHECK(sg_cached.to_vector() == sg.to_vector());
}

TEST_CASE("Grad-CAM++ on a network whose score is linear in the activation") {
  // y_c = Σ_k W[c,k]·mean_ij A_kij + b: the gradient g = W[c,k]/(h·w) is constant over a channel.
  struct Head final : qx::nn::Module<double> {
    std::shared_ptr<qx::nn::Conv2d<double>> conv;
    std::shared_ptr<qx::nn::Linear<double>> fc;
    explicit Head(qx::Rng& rng) {
      conv = register_module("conv", std::make_shared<qx::nn::Conv2d<double>>(1, 3, 3, 1, 1, true, rng));
      fc = register_module("fc", std::make_shared<qx::nn::Linear<double>>(3, 2, rng));
    }
    Tensor<double> forward(const Tensor<double>& x) override {
      return (*fc)(qx::ops::flatten(qx::ops::adaptive_avg_pool2d(qx::ops::relu((*conv)(x)), 1, 1)));
    }
  };
  qx::Rng rng(4);
  Head model(rng);
  const auto x = Tensor<double>::randn({1, 1, 5, 4}, rng);
  const auto cam = qx::explain::gradcam_pp(model, x, "conv", {1});
  qx::NoGradGuard no_grad;
  const auto a = (*model.conv)(x);  // the captured layer is the conv, before the ReLU
  // The gradient reaching A passes the ReLU: g_kij = W[1,k]/20 where A_kij > 0, else 0.
  for (Index i = 0; i < 5; ++i)
    for (Index j = 0; j < 4; ++j) {
      double expected = 0;
      for (Index k = 0; k < 3; ++k) {
        double sum_a = 0, weight = 0;
        for (Index p = 0; p < 20; ++p) sum_a += a.data()[k * 20 + p];
        for (Index p = 0; p < 20; ++p) {
          const double g = a.data()[k * 20 + p] > 0 ? model.fc->weight.at({1, k}) / 20.0 : 0.0;
          if (g != 0) weight += g * g / (2 * g * g + sum_a * g * g * g + 1e-6) * std::max(g, 0.0);
        }
        expected += weight * a.at({0, k, i, j});
      }
      CHECK(cam.at({0, i, j}) == doctest::Approx(std::max(expected, 0.0)));
    }
}

TEST_CASE("cascading randomisation lowers the rank correlation and restores the model") {
  auto model = small_model();
  qx::Rng rng(5);
  const auto x = Tensor<double>::randn({2, 1, 24, 20}, rng);
  const auto before = qx::explain::explain(*model, x, {{Method::saliency}, "layer4", {}}).logits;
  const auto rows = qx::explain::cascading_randomization(*model, x, {"fc", "layer4", "layer3", "layer2", "layer1", "conv1"},
                                                        {{Method::saliency, Method::gradcam, Method::guided_backprop}, "layer4", {}}, 9);
  CHECK(rows.size() == 18);
  double last_saliency = 1;
  for (const auto& r : rows) {
    CHECK(r.spearman <= 1.0 + 1e-12);
    CHECK(r.spearman >= -1.0 - 1e-12);
    if (r.method == Method::saliency && r.randomized_through == "conv1") last_saliency = r.spearman;
  }
  MESSAGE("saliency rank correlation with every layer randomised: ", last_saliency);
  CHECK(last_saliency < 0.9);
  const auto after = qx::explain::explain(*model, x, {{Method::saliency}, "layer4", {}}).logits;
  CHECK(after.to_vector() == before.to_vector());
  CHECK(qx::explain::spearman({1, 2, 3, 4}, {10, 20, 30, 40}) == doctest::Approx(1.0));
  CHECK(qx::explain::spearman({1, 2, 3, 4}, {4, 3, 2, 1}) == doctest::Approx(-1.0));
  CHECK(qx::explain::spearman({1, 1, 2}, {1, 1, 2}) == doctest::Approx(1.0));
}

TEST_CASE("a map picture: heat map over the input with the ROI outlined") {
  const auto path = qx_test::temp_path("map", ".png");
  auto map = Tensor<float>::zeros({1, 1, 12, 16});
  map.at({0, 0, 6, 8}) = 1;
  const auto image = Tensor<float>::zeros({1, 1, 12, 16});
  qx::explain::write_map_png(path, map, Method::saliency, 0, image, qx::metrics::Roi{2, 3, 10, 9});
  int w = 0, h = 0, c = 0;
  unsigned char* pixels = stbi_load(path.string().c_str(), &w, &h, &c, 3);
  REQUIRE(pixels != nullptr);
  CHECK(w == 16);
  CHECK(h == 12);
  auto px = [&](int x, int y, int k) { return pixels[(y * w + x) * 3 + k]; };
  CHECK(px(2, 3, 0) == 255);  // the ROI's top-left corner is outlined in red
  CHECK(px(2, 3, 1) == 64);
  CHECK(px(0, 0, 0) > 100);   // white input under a dark (zero) map
  stbi_image_free(pixels);
  std::filesystem::remove(path);
}
