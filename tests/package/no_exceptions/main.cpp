// qx without exceptions: built with -fno-exceptions, so QX_EXCEPTIONS is 0 and every error goes to the
// handler installed with qx::set_error_handler. This program first does real work (the five maps of a
// small ResNet), then passes a weight with the wrong channel count to conv2d; its handler prints the
// message and ends the program with exit code 3, which tests/package/no_exceptions.cmake checks.
// Every header of qx::core (docs/getting-started-embedded.md lists them), so the test proves the whole
// core compiles without exceptions.
#include <qx/autograd/engine.hpp>
#include <qx/autograd/gradcheck.hpp>
#include <qx/core/allocator.hpp>
#include <qx/core/tensor.hpp>
#include <qx/ecg/beats.hpp>
#include <qx/ecg/render.hpp>
#include <qx/ecg/wfdb.hpp>
#include <qx/explain/attribution.hpp>
#include <qx/explain/methods.hpp>
#include <qx/explain/reduce.hpp>
#include <qx/explain/sanity.hpp>
#include <qx/io/atomic_file.hpp>
#include <qx/io/colormap.hpp>
#include <qx/io/progress.hpp>
#include <qx/kernels/conv2d_algorithm.hpp>
#include <qx/metrics/classification.hpp>
#include <qx/metrics/focus.hpp>
#include <qx/nn/resnet.hpp>
#include <qx/ops/ops.hpp>
#include <qx/optim/optim.hpp>

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
