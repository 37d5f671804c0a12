// conv2d forward, backward_input and backward_weight on ResNet layer shapes, float32, batch 32, on 1
// and 2 threads, with the algorithm qx picks per pass (im2col + GEMM, tap tiles, Winograd F(4×4, 3×3) or
// the direct 3×3 kernel of narrow layers: column "algo"):
// milliseconds, GFLOP/s counted as a direct convolution's (2·N·C_out·H_out·W_out·C_in·k² per pass, so
// Winograd rows can exceed 100 %) and the fraction of the fp32 FMA peak measured by the same chains as
// qx_bench_fma_peak. When /usr/bin/python3 has torch, the
// same work in PyTorch 1.13 (benchmarks/conv2d_torch.py, tuned) is printed beside it with the ratio.
// Usage: qx_bench_conv2d [--quick] [--no-torch] [--narrow | --resnet18 | --resnet50] [--peak GFLOPS_PER_CORE]
//                        [--repeats N]
//                        [--algorithm automatic|im2col|winograd|direct] [--threads 1|2] [--help]
// (--peak fixes the denominator, e.g. to the figure qx_bench_fma_peak measured on an idle machine;
// --narrow times the main job's narrow model's layers instead of resnet50/resnet18's; --resnet18 the
// distinct convolutions of issue 8's resnet18 on 1×128², each with how many times the model holds it, and
// their total; --resnet50 the same for resnet50 on 3×224² at batch 16;
// --algorithm forces one algorithm where it applies, to compare it with what `automatic` picks; --threads
// times only that many threads instead of 1 and 2.)
#include <qx/core/parallel.hpp>
#include <qx/core/random.hpp>
#include <qx/kernels/conv2d_algorithm.hpp>

#include "bench_common.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>


using qx::Index;
using qx::kernels::Conv2dShape;

namespace {
struct Case {
  const char* name;
  Index c_in, c_out, size, kernel, stride, pad;
  int in_model = 1;  // how many convolutions of the model have this shape (--resnet18's and --resnet50's total)
};
const std::vector<Case> wide_cases = {
    {"stem7x7s2_3to64_224", 3, 64, 224, 7, 2, 3},  {"3x3_64to64_56", 64, 64, 56, 3, 1, 1},
    {"3x3_128to128_28", 128, 128, 28, 3, 1, 1},    {"3x3_256to256_14", 256, 256, 14, 3, 1, 1},
    {"3x3_512to512_7", 512, 512, 7, 3, 1, 1},
};
// --narrow: the convolutions of the model `qx reproduce` trains (resnet18 of width 16 on 1×64²) that run
// by im2col + GEMM (its 32-channel 8×8 layers run by Winograd and are left out).
const std::vector<Case> narrow_cases = {
    {"stem7x7s2_1to16_64", 1, 16, 64, 7, 2, 3},   {"3x3_16to16_16", 16, 16, 16, 3, 1, 1},
    {"3x3s2_16to32_16", 16, 32, 16, 3, 2, 1},     {"3x3s2_32to64_8", 32, 64, 8, 3, 2, 1},
    {"3x3_64to64_4", 64, 64, 4, 3, 1, 1},         {"3x3s2_64to128_4", 64, 128, 4, 3, 2, 1},
    {"3x3_128to128_2", 128, 128, 2, 3, 1, 1},     {"1x1s2_64to128_4", 64, 128, 4, 1, 2, 0},
};
// --resnet18: torchvision's resnet18 with a 1-channel stem on 1×128² (qx_bench_train_step's first model).
const std::vector<Case> resnet18_cases = {
    {"stem7x7s2_1to64_128", 1, 64, 128, 7, 2, 3, 1},  {"3x3_64to64_32", 64, 64, 32, 3, 1, 1, 4},
    {"3x3s2_64to128_32", 64, 128, 32, 3, 2, 1, 1},    {"1x1s2_64to128_32", 64, 128, 32, 1, 2, 0, 1},
    {"3x3_128to128_16", 128, 128, 16, 3, 1, 1, 3},    {"3x3s2_128to256_16", 128, 256, 16, 3, 2, 1, 1},
    {"1x1s2_128to256_16", 128, 256, 16, 1, 2, 0, 1},  {"3x3_256to256_8", 256, 256, 8, 3, 1, 1, 3},
    {"3x3s2_256to512_8", 256, 512, 8, 3, 2, 1, 1},    {"1x1s2_256to512_8", 256, 512, 8, 1, 2, 0, 1},
    {"3x3_512to512_4", 512, 512, 4, 3, 1, 1, 3},
};
// --resnet50: torchvision's resnet50 (stride on the 3×3 of a bottleneck) on 3×224² (qx_bench_train_step's
// second model): 53 convolutions, 23 distinct.
const std::vector<Case> resnet50_cases = {
    {"stem7x7s2_3to64_224", 3, 64, 224, 7, 2, 3, 1},    {"1x1_64to64_56", 64, 64, 56, 1, 1, 0, 1},
    {"3x3_64to64_56", 64, 64, 56, 3, 1, 1, 3},          {"1x1_64to256_56", 64, 256, 56, 1, 1, 0, 4},
    {"1x1_256to64_56", 256, 64, 56, 1, 1, 0, 2},        {"1x1_256to128_56", 256, 128, 56, 1, 1, 0, 1},
    {"3x3s2_128to128_56", 128, 128, 56, 3, 2, 1, 1},    {"1x1_128to512_28", 128, 512, 28, 1, 1, 0, 4},
    {"1x1s2_256to512_56", 256, 512, 56, 1, 2, 0, 1},    {"1x1_512to128_28", 512, 128, 28, 1, 1, 0, 3},
    {"3x3_128to128_28", 128, 128, 28, 3, 1, 1, 3},      {"1x1_512to256_28", 512, 256, 28, 1, 1, 0, 1},
    {"3x3s2_256to256_28", 256, 256, 28, 3, 2, 1, 1},    {"1x1_256to1024_14", 256, 1024, 14, 1, 1, 0, 6},
    {"1x1s2_512to1024_28", 512, 1024, 28, 1, 2, 0, 1},  {"1x1_1024to256_14", 1024, 256, 14, 1, 1, 0, 5},
    {"3x3_256to256_14", 256, 256, 14, 3, 1, 1, 5},      {"1x1_1024to512_14", 1024, 512, 14, 1, 1, 0, 1},
    {"3x3s2_512to512_14", 512, 512, 14, 3, 2, 1, 1},    {"1x1_512to2048_7", 512, 2048, 7, 1, 1, 0, 3},
    {"1x1s2_1024to2048_14", 1024, 2048, 14, 1, 2, 0, 1}, {"1x1_2048to512_7", 2048, 512, 7, 1, 1, 0, 2},
    {"3x3_512to512_7", 512, 512, 7, 3, 1, 1, 2},
};

// What one run times: the wide layers (the default), or a model's convolutions — `model` named, whose
// weighted total is printed after the layers.
struct CaseSet {
  const std::vector<Case>* cases;
  const char* model;
  Index batch, quick_batch;
};

// The algorithm of one pass, or of the three ("mixed" when they differ), as conv2d_*_auto picks it;
// "tap_tiles" where the im2col pass reads the image in place instead (kernels/tap_tiles.hpp).
const char* algorithm_name(const Conv2dShape& s, const char* pass) {
  using qx::kernels::ConvPass;
  namespace kd = qx::kernels::detail;
  const auto name = [&](ConvPass p) {
    if (qx::kernels::runs_direct(s, p)) return "direct";
    if (qx::kernels::runs_winograd(s, p)) return "winograd";
    const bool tiles = p == ConvPass::forward          ? kd::forward_by_tap_tiles<float>(s)
                       : p == ConvPass::input_gradient ? kd::input_gradient_by_tap_tiles<float>(s)
                                                       : kd::weight_gradient_by_tap_tiles<float>(s);
    return tiles ? "tap_tiles" : "im2col";
  };
  if (!std::strcmp(pass, "forward")) return name(ConvPass::forward);
  if (!std::strcmp(pass, "backward_input")) return name(ConvPass::input_gradient);
  if (!std::strcmp(pass, "backward_weight")) return name(ConvPass::weight_gradient);
  const char* forward = name(ConvPass::forward);
  return !std::strcmp(forward, name(ConvPass::input_gradient)) && !std::strcmp(forward, name(ConvPass::weight_gradient))
             ? forward
             : "mixed";
}

template <class F>
double best_ms(F&& f, int repeats) {
  return bench::best_seconds(std::forward<F>(f), repeats) * 1e3;
}

std::map<std::string, double> run_torch(Index batch, int repeats, const std::string& only) {
  std::map<std::string, double> out;
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) return out;
  const std::string script = std::string(QX_BENCH_DIR) + "/conv2d_torch.py";
  const std::string command =
      std::string(bench::torch_env) + "/usr/bin/python3 " + script + " " + std::to_string(batch) + " " + std::to_string(repeats) + " '" + only + "'";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  char name[128], pass[64];
  int threads;
  double ms;
  while (std::fscanf(pipe, "%127s %63s %d %lf", name, pass, &threads, &ms) == 4)
    out[std::string(name) + "/" + pass + "/" + std::to_string(threads)] = ms;
  pclose(pipe);
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  bool quick = false, no_torch = false, narrow = false, resnet18 = false, resnet50 = false;
  double fixed_peak = 0;
  int only_threads = 0, repeats_option = 0;
  std::string algorithm = "automatic";
  CLI::App app{"Convolution passes on ResNet layer shapes, qx beside PyTorch"};
  app.add_flag("--quick", quick, "a smaller batch, best of 2");
  app.add_flag("--no-torch", no_torch, "time qx alone");
  auto* narrow_flag = app.add_flag("--narrow", narrow, "the main job's narrow model's layers instead of the wide ones");
  auto* resnet18_flag = app.add_flag("--resnet18", resnet18, "resnet18 on 1x128^2, each distinct layer and the model's total")
                            ->excludes(narrow_flag);
  app.add_flag("--resnet50", resnet50, "resnet50 on 3x224^2 at batch 16, each distinct layer and the model's total")
      ->excludes(narrow_flag)
      ->excludes(resnet18_flag);
  app.add_option("--peak", fixed_peak, "GFLOP/s per core to divide by instead of probing")->check(CLI::Range(1.0, 100000.0));
  app.add_option("--threads", only_threads, "time only this many threads (1 or 2) instead of both")->check(CLI::IsMember({1, 2}));
  // A machine whose speed moves by tens of percent within minutes (docs/benchmarks.md) needs more calls
  // than three for a best that both qx and PyTorch reach.
  app.add_option("--repeats", repeats_option, "calls per pass, the best of which is reported (default 3, 2 with --quick)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--algorithm", algorithm, "force one algorithm where it applies")
      ->capture_default_str()
      ->check(CLI::IsMember({"automatic", "im2col", "winograd", "direct"}));
  CLI11_PARSE(app, argc, argv);
  const bool torch = !no_torch;
  const CaseSet set = narrow     ? CaseSet{&narrow_cases, nullptr, 32, 8}
                      : resnet18 ? CaseSet{&resnet18_cases, "resnet18 1x128", 32, 8}
                      : resnet50 ? CaseSet{&resnet50_cases, "resnet50 3x224", 16, 4}
                                 : CaseSet{&wide_cases, nullptr, 32, 8};
  using qx::kernels::Conv2dAlgorithm;
  if (algorithm == "im2col") qx::kernels::set_conv2d_algorithm(Conv2dAlgorithm::im2col_gemm);
  if (algorithm == "winograd") qx::kernels::set_conv2d_algorithm(Conv2dAlgorithm::winograd);
  if (algorithm == "direct") qx::kernels::set_conv2d_algorithm(Conv2dAlgorithm::direct);
  const Index batch = quick ? set.quick_batch : set.batch;
  const int repeats = repeats_option > 0 ? repeats_option : quick ? 2 : 3;
  const int max_threads = qx::num_threads();
  const double peak1 = fixed_peak > 0 ? fixed_peak : bench::fma_peak_per_thread();
  std::printf("conv2d, float32, batch %lld, best of %d; fp32 FMA peak %.1f GFLOP/s per thread\n",
              static_cast<long long>(batch), repeats, peak1);
  const std::vector<Case>& cases = *set.cases;
  std::string names;
  for (const auto& c : cases) names += (names.empty() ? "" : ",") + std::string(c.name);
  const auto reference = torch ? run_torch(batch, repeats, names) : std::map<std::string, double>{};
  if (torch && reference.empty()) std::printf("(PyTorch not found at /usr/bin/python3: no comparison)\n");
  std::printf("%-22s %-16s %3s %-8s %9s %8s %7s %11s %8s\n", "shape", "pass", "thr", "algo", "qx ms", "GFLOP/s", "%peak",
              "torch ms", "qx/torch");
  qx::Rng rng(0);
  for (int threads = 1; threads <= std::min(2, max_threads); ++threads) {
    if (only_threads > 0 && threads != only_threads) continue;
    qx::set_num_threads(threads);
    double model_ms = 0, model_torch = 0;  // Σ over the model's convolutions (--resnet18, --resnet50)
    bool model_torch_complete = true;
    for (const auto& c : cases) {
      const Conv2dShape s{batch, c.c_in, c.size, c.size, c.c_out, c.kernel, c.kernel, c.stride, c.stride, c.pad, c.pad};
      std::vector<float> x(static_cast<std::size_t>(s.n * s.c_in * s.h * s.w)), w(static_cast<std::size_t>(s.c_out * s.patch()));
      std::vector<float> y(static_cast<std::size_t>(s.n * s.c_out * s.positions())), gx(x.size()), gw(w.size());
      for (auto& v : x) v = static_cast<float>(rng.uniform(-1, 1));
      for (auto& v : w) v = static_cast<float>(rng.uniform(-1, 1));
      for (auto& v : y) v = static_cast<float>(rng.uniform(-1, 1));
      const double gflop = 2.0 * double(s.n * s.c_out * s.positions() * s.patch()) * 1e-9;
      const std::pair<const char*, double> passes[] = {
          {"forward", best_ms([&] { qx::kernels::conv2d_forward_auto(s, x.data(), w.data(), static_cast<const float*>(nullptr), y.data()); }, repeats)},
          {"backward_input", best_ms([&] { qx::kernels::conv2d_backward_input_auto(s, y.data(), w.data(), gx.data()); }, repeats)},
          {"backward_weight",
           best_ms([&] { qx::kernels::conv2d_backward_weight_auto(s, x.data(), y.data(), gw.data(), static_cast<float*>(nullptr)); }, repeats)},
      };
      double total_ms = 0, total_torch = 0;
      int torch_found = 0;
      auto print = [&](const char* pass, double ms, double work, double torch_ms) {
        const double rate = work / (ms * 1e-3);
        std::printf("%-22s %-16s %3d %-8s %9.2f %8.1f %6.1f%%", c.name, pass, threads, algorithm_name(s, pass), ms,
                    rate, peak1 > 0 ? 100.0 * rate / (peak1 * threads) : 0.0);
        if (torch_ms > 0) std::printf(" %11.2f %7.2fx", torch_ms, torch_ms / ms);
        std::printf("\n");
      };
      for (const auto& [pass, ms] : passes) {
        const auto it = reference.find(std::string(c.name) + "/" + pass + "/" + std::to_string(threads));
        print(pass, ms, gflop, it != reference.end() ? it->second : 0.0);
        total_ms += ms;
        if (it != reference.end()) total_torch += it->second, ++torch_found;
      }
      print("total", total_ms, 3 * gflop, torch_found == 3 ? total_torch : 0.0);
      model_ms += c.in_model * total_ms;
      model_torch += c.in_model * total_torch;
      model_torch_complete = model_torch_complete && torch_found == 3;
    }
    if (set.model) {
      std::printf("%s b%lld, all convolutions' three passes, %d thread(s): qx %.2f ms", set.model, static_cast<long long>(batch),
                  threads, model_ms);
      if (model_torch_complete && model_torch > 0) std::printf(", torch %.2f ms, qx/torch %.2fx", model_torch, model_torch / model_ms);
      std::printf("\n");
    }
  }
  std::printf("qx/torch > 1 means qx is faster (ratio of PyTorch's time to qx's).\n");
  return 0;
}
