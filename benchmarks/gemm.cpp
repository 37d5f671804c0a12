// float GEMM on the products convolution makes (C_out × images·P × C_in·k²) and their transposes, on one
// thread: qx's packed AVX-512 kernel beside Eigen's, in GFLOP/s and fraction of the FMA peak measured
// the same way as qx_bench_fma_peak. Shows whether GEMM or the im2col around it limits convolution.
// Usage: qx_bench_gemm
#include <qx/core/parallel.hpp>
#include <qx/core/random.hpp>
#include <qx/kernels/gemm.hpp>

#include <Eigen/Core>

#include "bench_common.hpp"

#include <chrono>
#include <cstdio>
#include <vector>


using qx::Index;

namespace {
template <class F>
double best_s(F&& f, int repeats) {
  return bench::best_seconds(std::forward<F>(f), repeats);
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qx's packed float GEMM beside Eigen's on convolution-shaped products, 1 thread"};
  CLI11_PARSE(app, argc, argv);
  qx::set_num_threads(1);
  const double peak = bench::fma_peak_per_thread();
  std::printf("float GEMM, 1 thread, best of 5; FMA peak %.1f GFLOP/s\n", peak);
  std::printf("%-34s %10s %7s %10s %7s\n", "product (ta tb m n k)", "qx GFLOP/s", "%peak", "Eigen", "%peak");
  struct Case {
    const char* name;
    bool ta, tb;
    Index m, n, k;
  };
  const Case cases[] = {
      {"fwd 64x(56*56)x576", false, false, 64, 3136, 576},       {"fwd 128x(2*784)x1152", false, false, 128, 1568, 1152},
      {"fwd 256x(3*196)x2304", false, false, 256, 588, 2304},    {"fwd 512x(11*49)x4608", false, false, 512, 539, 4608},
      {"bwd_in T 576x3136x64", true, false, 576, 3136, 64},      {"bwd_in T 2304x588x256", true, false, 2304, 588, 256},
      {"bwd_w N,T 64x576x3136", false, true, 64, 576, 3136},     {"bwd_w N,T 256x2304x588", false, true, 256, 2304, 588},
      {"stem fwd 64x12544x147", false, false, 64, 12544, 147},
  };
  qx::Rng rng(0);
  for (const auto& c : cases) {
    std::vector<float> a(static_cast<std::size_t>(c.m * c.k)), b(static_cast<std::size_t>(c.k * c.n)), out(static_cast<std::size_t>(c.m * c.n));
    for (auto& v : a) v = static_cast<float>(rng.uniform(-1, 1));
    for (auto& v : b) v = static_cast<float>(rng.uniform(-1, 1));
    const Index lda = c.ta ? c.m : c.k, ldb = c.tb ? c.k : c.n;
    const double gflop = 2.0 * double(c.m * c.n * c.k) * 1e-9;
    const double qx_s = best_s([&] { qx::kernels::gemm(c.ta, c.tb, c.m, c.n, c.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, out.data(), c.n); }, 5);
    using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const M> am(a.data(), c.ta ? c.k : c.m, c.ta ? c.m : c.k), bm(b.data(), c.tb ? c.n : c.k, c.tb ? c.k : c.n);
    Eigen::Map<M> cm(out.data(), c.m, c.n);
    const double eigen_s = best_s([&] {
      if (c.ta) cm.noalias() = am.transpose() * bm;
      else if (c.tb) cm.noalias() = am * bm.transpose();
      else cm.noalias() = am * bm;
    }, 5);
    std::printf("%-34s %10.1f %6.1f%% %10.1f %6.1f%%\n", c.name, gflop / qx_s, 100 * gflop / qx_s / peak, gflop / eigen_s,
                100 * gflop / eigen_s / peak);
  }
  return 0;
}
