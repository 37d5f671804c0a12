// Training step (forward + class-weighted cross-entropy + backward + Adam) of resnet18 on 1×128×128,
// batch 32, resnet50 on 3×224×224, batch 16, and the model `qx reproduce` trains by default (resnet18 of
// base width 16 on 1×64×64, batch 32): milliseconds per image, peak memory and minor page
// faults per steady-state step (getrusage: the memory the step asked the system for), beside PyTorch
// 1.13 (benchmarks/train_step_torch.py, tuned) on the same machine in the same run. Each configuration
// runs in its own process so that peak memory is its own.
// Usage: qx_bench_train_step [--quick] [--no-torch] | --config ARCH CHANNELS SIZE BATCH STEPS [WIDTH]
#include "bench_common.hpp"
#include <qx/nn/nn.hpp>
#include <qx/autograd/engine.hpp>
#include <qx/optim/adam.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {
int run_config(const std::string& arch, qx::Index channels, qx::Index size, qx::Index batch, int steps, qx::Index width) {
  auto model = qx::nn::make_resnet<float>(arch, channels, 2, width, 0);
  model->train();
  qx::optim::Adam<float> adam({qx::optim::ParamGroup<float>{model->parameters(), 1e-4, 0.1, "all"}});
  qx::Rng rng(1);
  const auto x = qx::Tensor<float>::randn({batch, channels, size, size}, rng);
  std::vector<qx::Index> y(static_cast<std::size_t>(batch));
  for (auto& v : y) v = static_cast<qx::Index>(rng.below(2));
  const auto weights = qx::Tensor<float>::from({2}, {1.0f, 8.0f});
  auto step = [&] {
    auto loss = qx::ops::cross_entropy((*model)(x), y, weights);
    qx::autograd::backward(loss);
    adam.step();
    adam.zero_grad();
  };
  step();
  step();  // two warm-up steps: Adam's state is allocated by the first
  const long faults_before = bench::minor_faults();
  double best = 1e30;
  for (int s = 0; s < steps; ++s) {
    const auto t = std::chrono::steady_clock::now();
    step();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
  }
  const double faults = static_cast<double>(bench::minor_faults() - faults_before) / steps;
  const std::string name = arch + (width == 64 ? "" : "w" + std::to_string(width));
  std::printf("%s_%lldx%lld_b%lld %.3f %.0f %.0f\n", name.c_str(), static_cast<long long>(channels), static_cast<long long>(size),
              static_cast<long long>(batch), best / static_cast<double>(batch), bench::peak_rss_mib(), faults);
  return 0;
}

/// Reads "<name> [<layout>] <ms> <MiB> <faults>" from a child process.
bool read_line(const std::string& command, char* name, double& ms, double& mib, double& faults, char* format = nullptr) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return false;
  char fmt[64] = "";
  const int got = format ? std::fscanf(pipe, "%127s %63s %lf %lf %lf", name, fmt, &ms, &mib, &faults)
                         : std::fscanf(pipe, "%127s %lf %lf %lf", name, &ms, &mib, &faults);
  pclose(pipe);
  if (format) std::strcpy(format, fmt);
  return got == (format ? 5 : 4);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 7 && std::string(argv[1]) == "--config")
    return run_config(argv[2], std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), std::atoi(argv[6]),
                      argc >= 8 ? std::atoll(argv[7]) : 64);
  bool quick = false, torch = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--no-torch")) torch = false;
  }
  torch = torch && std::system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
  struct Config {
    const char* arch;
    int channels, size, batch, width;
  };
  // The last is `qx reproduce`'s default model: what the main job spends its training time on.
  const Config configs[] = {{"resnet18", 1, 128, 32, 64}, {"resnet50", 3, 224, 16, 64}, {"resnet18", 1, 64, 32, 16}};
  const int steps = quick ? 1 : 8;  // best of 8 on both sides: the machines this runs on drift by 10–20 % within a minute
  std::printf("training step (forward + weighted CE + backward + Adam), float32, %d threads, best of %d steps\n", qx::num_threads(), steps);
  std::printf("%-22s %10s %7s %9s %12s %9s %9s %-14s %8s\n", "config", "qx ms/img", "qx MiB", "qx flt/st", "torch ms/img",
              "torch MiB", "t flt/st", "torch layout", "speed-up");
  for (const auto& c : configs) {
    if (quick && std::string(c.arch) == "resnet50") continue;
    char name[128];
    double ms = 0, mib = 0, faults = 0, tms = 0, tmib = 0, tfaults = 0;
    const std::string self = std::string(argv[0]) + " --config " + c.arch + " " + std::to_string(c.channels) + " " +
                             std::to_string(c.size) + " " + std::to_string(c.batch) + " " + std::to_string(steps) + " " +
                             std::to_string(c.width);
    if (!read_line(self, name, ms, mib, faults)) return 1;
    char layout[64] = "-";
    if (torch) {
      const std::string cmd = std::string(bench::torch_env) +
                              "/usr/bin/python3 " QX_BENCH_DIR "/train_step_torch.py " + std::string(c.arch) + " " +
                              std::to_string(c.channels) + " " + std::to_string(c.size) + " " + std::to_string(c.batch) + " " +
                              std::to_string(steps) + " " + std::to_string(qx::num_threads()) + " " +
                              std::to_string(c.width);
      char tname[128];
      if (!read_line(cmd, tname, tms, tmib, tfaults, layout)) torch = false;
    }
    std::printf("%-22s %10.2f %7.0f %9.0f", name, ms, mib, faults);
    if (torch) std::printf(" %12.2f %9.0f %9.0f %-14s %7.2fx", tms, tmib, tfaults, layout, tms / ms);
    std::printf("\n");
  }
  std::printf("speed-up = PyTorch's time per image / qx's (> 1: qx is faster); flt/st = minor page faults per steady-state step.\n");
  return 0;
}
