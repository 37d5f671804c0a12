// The machine's fp32 FMA peak: independent chains of fused multiply-adds (enough to hide the FMA
// latency) on the widest vectors the build targets (512-bit with AVX-512, 256-bit with AVX2 + FMA), on
// 1 thread and on all threads — the figure the convolution and GEMM benchmarks divide by. Usage: qx_bench_fma_peak
#include <qx/core/parallel.hpp>

#include <cstdio>

#include "bench_common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"The fp32 FMA peak of one thread and of all threads, GFLOP/s"};
  CLI11_PARSE(app, argc, argv);
  if (!bench::fma_peak_isa()) {
    std::printf("built without AVX-512 or AVX2 + FMA (configure with QX_NATIVE=ON): no figure\n");
    return 0;
  }
  const long iterations = 200'000'000;
  bench::fma_peak_per_thread(iterations / 10);  // warm-up: raise the clock
  const int all = qx::num_threads();
  double total = 0;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#pragma omp parallel num_threads(all) reduction(+ : total)
  total += bench::fma_peak_per_thread(iterations);
#else
  total = bench::fma_peak_per_thread(iterations);
#endif
  std::printf("fp32 FMA peak (%s, 12 independent chains)\n", bench::fma_peak_isa());
  std::printf("  1 thread : %7.1f GFLOP/s\n", bench::fma_peak_per_thread(iterations));
  std::printf("  %d threads: %7.1f GFLOP/s\n", all, total);
  return 0;
}
