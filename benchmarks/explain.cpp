// All five attribution maps (saliency, Grad-CAM raw and resized, guided backprop, guided Grad-CAM) from
// one forward pass, for one image and for a batch of 16, resnet18 on 1×128×128 and resnet50 on
// 3×224×224: milliseconds per image, beside PyTorch 1.13 doing the same the usual way (three separate
// forward + backward passes with hooks; benchmarks/explain_torch.py, tuned) in the same run. qx twice:
// each call by itself (explain()), and as a program explaining batch after batch runs it, with a
// nn::WeightCache active (batch norm folded and Winograd's filters transformed once, docs/explain.md).
// Usage: qx_bench_explain [--quick] [--no-torch] [--rounds N]
#include "bench_common.hpp"
#include <qx/qx.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  bool quick = false, no_torch = false;
  int rounds = 1;
  CLI::App app{"The five attribution maps, qx beside PyTorch, ms per image"};
  app.add_flag("--quick", quick, "one pass per configuration, resnet18 only");
  app.add_flag("--no-torch", no_torch, "time qx alone");
  bench::add_rounds_option(app, rounds);
  CLI11_PARSE(app, argc, argv);
  bool torch = !no_torch && std::system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
  struct Config {
    const char* arch;
    int channels, size, batch;
  };
  const Config configs[] = {{"resnet18", 1, 128, 1}, {"resnet18", 1, 128, 16}, {"resnet50", 3, 224, 1}, {"resnet50", 3, 224, 16}};
  const int repeats = quick ? 1 : 8;  // best of 8 on both sides, as qx_bench_train_step
  std::printf("five attribution maps, eval mode, float32, %d threads, best of %d", qx::num_threads(), repeats);
  if (rounds > 1) std::printf(", medians of %d alternating rounds", rounds);
  std::printf("\n%-24s %10s %12s %9s %11s %14s %-14s %9s %9s%s\n", "config", "qx ms/img", "cached ms/img", "cache MB",
              "qx flt/pass", "torch ms/img", "torch layout", "speed-up", "cached", rounds > 1 ? "  range (cached)" : "");
  for (const auto& c : configs) {
    if (quick && std::string(c.arch) == "resnet50") continue;
    auto model = qx::nn::make_resnet<float>(c.arch, c.channels, 2, 64, 0);
    qx::Rng rng(1);
    const auto x = qx::Tensor<float>::randn({c.batch, c.channels, c.size, c.size}, rng);
    qx::explain::explain(*model, x);  // warm-up
    auto best_of = [&] {
      double best = 1e30;
      for (int r = 0; r < repeats; ++r) {
        const auto t = std::chrono::steady_clock::now();
        const auto maps = qx::explain::explain(*model, x);
        best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
      }
      return best / c.batch;
    };
    qx::nn::WeightCache<float> cache;
    const std::string torch_command = std::string(bench::torch_env) + "/usr/bin/python3 " QX_BENCH_DIR "/explain_torch.py " +
                                      std::string(c.arch) + " " + std::to_string(c.channels) + " " + std::to_string(c.size) + " " +
                                      std::to_string(c.batch) + " " + std::to_string(repeats) + " " +
                                      std::to_string(qx::num_threads());
    std::vector<double> ms, cached, faults, tms, ratios, cached_ratios;  // one entry per round
    char layout[64] = "-";
    for (int round = 0; round < rounds; ++round) {  // qx, then PyTorch, then qx again …
      const long faults_before = bench::minor_faults();
      ms.push_back(best_of());
      // Faults in the first round only: a later round's first pass follows passes with the cache, which
      // holds its own blocks, and asks the system again for what the uncached passes fold per call.
      if (round == 0) faults.push_back(static_cast<double>(bench::minor_faults() - faults_before) / repeats);
      {
        const qx::nn::WeightCache<float>::Scope use(cache);
        if (round == 0) qx::explain::explain(*model, x);  // fills the cache
        cached.push_back(best_of());
      }
      if (!torch) continue;
      FILE* pipe = popen(torch_command.c_str(), "r");
      char tname[128];
      double t = 0;
      const bool read = pipe && std::fscanf(pipe, "%127s %63s %lf", tname, layout, &t) == 3;
      if (pipe) pclose(pipe);
      if (!read) {
        torch = false;
        continue;
      }
      tms.push_back(t), ratios.push_back(t / ms.back()), cached_ratios.push_back(t / cached.back());
    }
    char name[128];
    std::snprintf(name, sizeof name, "%s_%dx%d_b%d", c.arch, c.channels, c.size, c.batch);
    const double cache_mb = static_cast<double>(cache.stats().bytes) / (1 << 20);
    std::printf("%-24s %10.2f %12.2f %9.0f %11.0f", name, bench::median(ms), bench::median(cached), cache_mb, faults.front());
    if (torch) {
      std::printf(" %14.2f %-14s %8.2fx %8.2fx", bench::median(tms), layout, bench::median(ratios), bench::median(cached_ratios));
      if (rounds > 1) bench::print_range(cached_ratios);
    }
    std::printf("\n");
  }
  std::printf("speed-up = PyTorch's time per image / qx's (> 1: qx is faster), of explain() alone and with a weight cache;\n"
              "cache MB = what the cache holds; flt/pass = minor page faults per steady-state pass of explain().\n");
  if (rounds > 1)
    std::printf("With --rounds: every time is the median over the rounds, speed-up the median of each round's ratio, range\n"
                "its extremes; flt/pass is the first round's.\n");
  return 0;
}
