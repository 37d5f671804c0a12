// The machine's fp32 FMA peak: independent chains of fused multiply-adds (enough to hide the FMA
// latency) on the widest vectors the compiler targets, on 1 thread and on all threads. The figure the
// convolution benchmark divides by. Usage: qx_bench_fma_peak
#include <qx/core/parallel.hpp>

#include <chrono>
#include <cstdio>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {
// 2 flops per lane per FMA; 12 independent accumulators × iterations.
double run_chains(long iterations) {
#if defined(__AVX512F__)
  constexpr int lanes = 16;
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm512_add_ps(sum, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(sum);
  (void)sink;
#else
  constexpr int lanes = 8;  // let the compiler vectorise 12×8 scalar chains
  float acc[12][lanes];
  for (int i = 0; i < 12; ++i)
    for (int l = 0; l < lanes; ++l) acc[i][l] = static_cast<float>(i + l);
  for (long it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i)
      for (int l = 0; l < lanes; ++l) acc[i][l] = acc[i][l] * 0.999999f + 1e-7f;
  volatile float sink = acc[3][2];
  (void)sink;
#endif
  return 2.0 * lanes * 12.0 * static_cast<double>(iterations);
}

double gflops(int threads, long iterations) {
  const auto start = std::chrono::steady_clock::now();
  double flops = 0;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : flops)
  flops += run_chains(iterations);
#else
  (void)threads;
  flops = run_chains(iterations);
#endif
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return flops / seconds * 1e-9;
}
}  // namespace

int main() {
  const long iterations = 200'000'000;
  gflops(1, iterations / 10);  // warm-up: raise the clock
  const int all = qx::num_threads();
#if defined(__AVX512F__)
  std::printf("fp32 FMA peak (AVX-512, 12 independent chains)\n");
#else
  std::printf("fp32 FMA peak (compiler-vectorised chains; build with -march=native for AVX-512)\n");
#endif
  std::printf("  1 thread : %7.1f GFLOP/s\n", gflops(1, iterations));
  std::printf("  %d threads: %7.1f GFLOP/s\n", all, gflops(all, iterations));
  return 0;
}
