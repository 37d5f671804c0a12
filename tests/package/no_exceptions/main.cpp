// qx without exceptions: built with -fno-exceptions, so QX_EXCEPTIONS is 0 and every error goes to the
// handler installed with qx::set_error_handler. This program first does real work (the five maps of a
// small ResNet), then passes a weight with the wrong channel count to conv2d; its handler prints the
// message and ends the program with exit code 3, which tests/package/no_exceptions.cmake checks.
#include <qx/explain/attribution.hpp>
#include <qx/nn/resnet.hpp>
#include <qx/ops/conv2d.hpp>

#include <cstdio>
#include <cstdlib>

#if QX_EXCEPTIONS
#error "this consumer must be compiled with -fno-exceptions"
#endif

namespace {
[[noreturn]] void report_and_exit(const char* message) {
  std::printf("handler: %s\n", message);
  std::fflush(stdout);
  std::exit(3);
}
}  // namespace

int main() {
  qx::set_error_handler(&report_and_exit);
  qx::Rng rng(5);
  auto model = qx::nn::resnet18<float>(1, 2, 4, 5);
  const auto maps = qx::explain::explain(*model, qx::Tensor<float>::randn({1, 1, 40, 40}, rng));
  std::printf("maps without exceptions: saliency %s, guided Grad-CAM %s\n", qx::to_string(maps.saliency.shape()).c_str(),
              qx::to_string(maps.guided_gradcam.shape()).c_str());
  const auto x = qx::Tensor<float>::zeros({1, 3, 8, 8});
  const auto w = qx::Tensor<float>::zeros({4, 2, 3, 3});
  qx::ops::conv2d(x, w);  // does not return: the handler ends the program
  std::printf("conv2d returned after a shape error\n");
  return 0;
}
