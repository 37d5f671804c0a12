// Input-only backward vs full backward through a stack of convolutions: the autograd engine skips
// every weight-gradient kernel when only the input's gradient is requested (attribution maps).
// Usage: qx_bench_input_only_backward [repeats]
#include "bench_common.hpp"
#include <qx/qx.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using qx::Tensor;

int main(int argc, char** argv) {
  int repeats = 5;
  CLI::App app{"Input-only backward against the full backward through a stack of convolutions"};
  app.add_option("repeats", repeats, "best of this many runs")->capture_default_str()->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  qx::Rng rng(0);
  const qx::Index channels = 64, size = 56, batch = 8, depth = 4;
  std::vector<Tensor<float>> weights;
  for (int i = 0; i < depth; ++i)
    weights.push_back(Tensor<float>::randn({channels, channels, 3, 3}, rng, 0.0, 0.05).requires_grad_());
  auto x = Tensor<float>::randn({batch, channels, size, size}, rng).requires_grad_();

  auto run = [&](bool input_only) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      auto h = x;
      for (auto& w : weights) h = qx::ops::relu(qx::ops::conv2d(h, w, {}, 1, 1));
      auto loss = qx::ops::sum(h);
      const auto start = std::chrono::steady_clock::now();
      qx::autograd::BackwardOptions<float> options;
      if (input_only) options.inputs = {x};
      qx::autograd::backward(loss, {}, options);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      x.zero_grad();
      for (auto& w : weights) w.zero_grad();
    }
    return best;
  };
  run(false);  // warm-up
  const double full = run(false), input_only = run(true);
  std::printf("backward through %lld conv3x3 %lldx%lld @ %lldx%lld, batch %lld, %d threads (best of %d)\n", static_cast<long long>(depth),
              static_cast<long long>(channels), static_cast<long long>(channels), static_cast<long long>(size),
              static_cast<long long>(size), static_cast<long long>(batch), qx::num_threads(), repeats);
  std::printf("  full backward (input + weights): %8.1f ms\n", full);
  std::printf("  input-only backward:             %8.1f ms   (%.2fx cheaper)\n", input_only, full / input_only);
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0) {
    const std::string cmd = std::string(bench::torch_env) +
                            "/usr/bin/python3 " QX_BENCH_DIR "/input_only_backward_torch.py " + std::to_string(repeats) + " " +
                            std::to_string(qx::num_threads());
    FILE* pipe = popen(cmd.c_str(), "r");
    double torch_full = 0, torch_input = 0;
    if (pipe && std::fscanf(pipe, "%lf %lf", &torch_full, &torch_input) == 2)
      std::printf("  PyTorch 1.13, same work:         %8.1f ms full, %.1f ms input-only (%.2fx cheaper)\n", torch_full, torch_input,
                  torch_full / torch_input);
    if (pipe) pclose(pipe);
  }
  return 0;
}
