// Training step (forward + class-weighted cross-entropy + backward + Adam) of resnet18 on 1×128×128,
// batch 32, resnet50 on 3×224×224, batch 16, and the model `qx reproduce` trains by default (resnet18 of
// base width 16 on 1×64×64, batch 32): milliseconds per image, peak memory and minor page
// faults per steady-state step (getrusage: the memory the step asked the system for), beside PyTorch
// 1.13 (benchmarks/train_step_torch.py, tuned) on the same machine in the same run. Each configuration
// runs in its own process so that peak memory is its own.
// Usage: qx_bench_train_step [--quick] [--no-torch] [--rounds N] | --config ARCH CHANNELS SIZE BATCH STEPS [--width W]
#include "bench_common.hpp"
#include <qx/nn/nn.hpp>
#include <qx/autograd/engine.hpp>
#include <qx/optim/adam.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

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
  bool quick = false, no_torch = false;
  int rounds = 1;
  std::tuple<std::string, qx::Index, qx::Index, qx::Index, int> config;  // arch, channels, size, batch, steps
  qx::Index width = 64;
  CLI::App app{"A training step, qx beside PyTorch, ms per image"};
  app.add_flag("--quick", quick, "one step per configuration, no resnet50");
  app.add_flag("--no-torch", no_torch, "time qx alone");
  bench::add_rounds_option(app, rounds);
  auto* config_option = app.add_option("--config", config,
                                       "ARCH CHANNELS SIZE BATCH STEPS: time one configuration in this process and "
                                       "print one line (what the comparison starts as its child)");
  app.add_option("--width", width, "the model's base width, with --config")->capture_default_str()->check(CLI::Range(1, 4096));
  CLI11_PARSE(app, argc, argv);
  if (config_option->count()) {
    const auto& [arch, channels, size, batch, steps] = config;
    if (channels <= 0 || size <= 0 || batch <= 0 || steps <= 0) {
      std::fprintf(stderr, "qx_bench_train_step: --config: channels, size, batch and steps must be positive\n");
      return 2;
    }
    try {
      return run_config(arch, channels, size, batch, steps, width);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qx_bench_train_step: --config: %s\n", e.what());
      return 1;
    }
  }
  bool torch = !no_torch && std::system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
  struct Config {
    const char* arch;
    int channels, size, batch, width;
  };
  // The last is `qx reproduce`'s default model: what the main job spends its training time on.
  const Config configs[] = {{"resnet18", 1, 128, 32, 64}, {"resnet50", 3, 224, 16, 64}, {"resnet18", 1, 64, 32, 16}};
  const int steps = quick ? 1 : 8;  // best of 8 on both sides: the machines this runs on drift by 10–20 % within a minute
  std::printf("training step (forward + weighted CE + backward + Adam), float32, %d threads, best of %d steps", qx::num_threads(), steps);
  if (rounds > 1) std::printf(", medians of %d alternating rounds", rounds);
  std::printf("\n%-22s %10s %7s %9s %12s %9s %9s %-14s %8s%s\n", "config", "qx ms/img", "qx MiB", "qx flt/st", "torch ms/img",
              "torch MiB", "t flt/st", "torch layout", "speed-up", rounds > 1 ? "  range" : "");
  for (const auto& c : configs) {
    if (quick && std::string(c.arch) == "resnet50") continue;
    char name[128], layout[64] = "-";
    std::vector<double> ms, mib, faults, tms, tmib, tfaults, ratios;
    const std::string self = std::string(argv[0]) + " --config " + c.arch + " " + std::to_string(c.channels) + " " +
                             std::to_string(c.size) + " " + std::to_string(c.batch) + " " + std::to_string(steps) + " --width " +
                             std::to_string(c.width);
    const std::string torch_command = std::string(bench::torch_env) + "/usr/bin/python3 " QX_BENCH_DIR "/train_step_torch.py " +
                                      std::string(c.arch) + " " + std::to_string(c.channels) + " " + std::to_string(c.size) + " " +
                                      std::to_string(c.batch) + " " + std::to_string(steps) + " " +
                                      std::to_string(qx::num_threads()) + " " + std::to_string(c.width);
    for (int round = 0; round < rounds; ++round) {  // qx, then PyTorch, then qx again …
      double q[3], t[3];
      if (!read_line(self, name, q[0], q[1], q[2])) return 1;
      ms.push_back(q[0]), mib.push_back(q[1]), faults.push_back(q[2]);
      char tname[128];
      if (torch && !read_line(torch_command, tname, t[0], t[1], t[2], layout)) torch = false;
      if (!torch) continue;
      tms.push_back(t[0]), tmib.push_back(t[1]), tfaults.push_back(t[2]), ratios.push_back(t[0] / q[0]);
    }
    std::printf("%-22s %10.2f %7.0f %9.0f", name, bench::median(ms), bench::median(mib), bench::median(faults));
    if (torch) {
      std::printf(" %12.2f %9.0f %9.0f %-14s %7.2fx", bench::median(tms), bench::median(tmib), bench::median(tfaults), layout,
                  bench::median(ratios));
      if (rounds > 1) bench::print_range(ratios);
    }
    std::printf("\n");
  }
  std::printf("speed-up = PyTorch's time per image / qx's (> 1: qx is faster); flt/st = minor page faults per steady-state step.\n");
  if (rounds > 1) std::printf("With --rounds: every figure is the median over the rounds; speed-up is the median of each round's ratio, range its extremes.\n");
  return 0;
}
