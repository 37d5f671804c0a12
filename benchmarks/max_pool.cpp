// max_pool2d (kernel 3, stride 2, padding 1: the ResNet stem's) forward, and forward + backward, on the
// shapes of the models qx trains, float32, best of `repeats`. The backward routes an all-ones gradient
// through the saved argmax, as a training step does. When /usr/bin/python3 has torch, the same work in
// PyTorch 1.13 (benchmarks/max_pool_torch.py, tuned) is printed beside it.
// Usage: qx_bench_max_pool [repeats]
#include "bench_common.hpp"
#include <qx/qx.hpp>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using qx::Index;
using qx::Tensor;

int main(int argc, char** argv) {
  int repeats = 30;
  CLI::App app{"max_pool2d (the ResNet stem's) forward and backward, qx beside PyTorch"};
  app.add_option("repeats", repeats, "best of this many runs")->capture_default_str()->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  struct Case {
    const char* model;
    std::array<Index, 4> shape;
  };
  // The stem outputs of the main job's model (64 px and 128 px), resnet18 on 1×128² and resnet50 on 3×224².
  const std::vector<Case> cases = {{"resnet18w16_1x64_b32", {32, 16, 32, 32}},
                                   {"resnet18w16_1x128_b32", {32, 16, 64, 64}},
                                   {"resnet18_1x128_b32", {32, 64, 64, 64}},
                                   {"resnet50_3x224_b16", {16, 64, 112, 112}}};
  const bool torch = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  std::printf("max_pool2d 3/2/1, float32, %d threads, best of %d, ms per batch\n", qx::num_threads(), repeats);
  std::printf("%-24s %-18s %9s %11s %11s %13s %9s\n", "model", "input", "qx fwd", "qx fwd+bwd", "torch fwd", "torch fwd+bwd",
              "speed-up");
  qx::Rng rng(0);
  for (const Case& c : cases) {
    auto x = Tensor<float>::randn({c.shape[0], c.shape[1], c.shape[2], c.shape[3]}, rng);
    const double forward = bench::best_seconds([&] { auto y = qx::ops::max_pool2d(x, 3, 2, 1); }, repeats) * 1e3;
    auto leaf = x.detach().requires_grad_();
    Tensor<float> ones;
    const double both = bench::best_seconds([&] {
      auto y = qx::ops::max_pool2d(leaf, 3, 2, 1);
      if (!ones.defined()) ones = Tensor<float>::ones(y.shape());
      qx::autograd::BackwardOptions<float> options;
      options.inputs = {leaf};
      qx::autograd::backward(y, ones, options);
      leaf.zero_grad();
    }, repeats) * 1e3;
    char input[32];
    std::snprintf(input, sizeof input, "%lldx%lldx%lldx%lld", static_cast<long long>(c.shape[0]), static_cast<long long>(c.shape[1]),
                  static_cast<long long>(c.shape[2]), static_cast<long long>(c.shape[3]));
    double torch_forward = 0, torch_both = 0;
    if (torch) {
      const std::string cmd = std::string(bench::torch_env) + "/usr/bin/python3 " QX_BENCH_DIR "/max_pool_torch.py " +
                              std::to_string(c.shape[0]) + " " + std::to_string(c.shape[1]) + " " + std::to_string(c.shape[2]) +
                              " " + std::to_string(repeats) + " " + std::to_string(qx::num_threads());
      FILE* pipe = popen(cmd.c_str(), "r");
      if (!pipe || std::fscanf(pipe, "%lf %lf", &torch_forward, &torch_both) != 2) torch_forward = torch_both = 0;
      if (pipe) pclose(pipe);
    }
    if (torch_both > 0)
      std::printf("%-24s %-18s %9.3f %11.3f %11.3f %13.3f %8.2fx\n", c.model, input, forward, both, torch_forward, torch_both,
                  torch_both / both);
    else
      std::printf("%-24s %-18s %9.3f %11.3f %11s %13s %9s\n", c.model, input, forward, both, "-", "-", "-");
  }
  std::printf("speed-up = PyTorch's forward + backward time / qx's (> 1: qx is faster).\n");
  return 0;
}
