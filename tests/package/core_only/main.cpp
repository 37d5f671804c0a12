// The minimal-dependency consumer: a ResNet explained and its maps measured through the core headers,
// which need only the standard library, Eigen (the portable GEMM) and OpenMP. It does not compile if one
// of them pulls in nlohmann-json, xtensor or stb, and exits non-zero if the maps are wrong.
#include <qx/explain/attribution.hpp>
#include <qx/metrics/focus.hpp>
#include <qx/nn/resnet.hpp>

#if defined(INCLUDE_NLOHMANN_JSON_HPP_)
#error "a qx core header included nlohmann-json"
#endif
#if defined(XTENSOR_CONFIG_HPP)
#error "a qx core header included xtensor"
#endif
#if defined(STBI_INCLUDE_STB_IMAGE_H) || defined(INCLUDE_STB_IMAGE_WRITE_H)
#error "a qx core header included stb"
#endif

#include <cstdio>

int main() {
  qx::Rng rng(3);
  auto model = qx::nn::resnet18<float>(/*in_channels=*/1, /*num_classes=*/2, /*width=*/8, /*seed=*/3);
  const auto image = qx::Tensor<float>::randn({1, 1, 64, 64}, rng);
  const auto maps = qx::explain::explain(*model, image, {{qx::explain::Method::gradcam, qx::explain::Method::saliency}});
  const qx::metrics::Roi box{0, 0, 32, 32};
  const auto f = qx::metrics::focus_batch(maps.gradcam, {box}, qx::metrics::Identity{})[0];
  std::printf("core only: class %lld, Grad-CAM focus %.3f in the top-left quadrant (random focus 0.25)\n",
              static_cast<long long>(maps.targets[0]), f.focus);
  return maps.gradcam.shape() == qx::Shape{1, 64, 64} && maps.saliency.shape() == qx::Shape{1, 1, 64, 64} &&
                 f.focus >= 0 && f.focus <= 1
             ? 0
             : 1;
}
