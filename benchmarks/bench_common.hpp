// Shared by the benchmark programs: wall-clock timing (best of n after a warm-up), the FMA-chain peak
// probe the "% of peak" figures divide by, and the environment PyTorch runs in when compared (tuned as a
// careful user would: OpenBLAS held to one thread, glibc keeping large allocations mapped).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <CLI/CLI.hpp>
#include <sys/resource.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace bench {

/// Prefix of every PyTorch command line the benchmarks start.
inline constexpr const char* torch_env =
    "OPENBLAS_NUM_THREADS=1 GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 ";

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// Minor page faults of this process so far: each is a page the system handed out (and zeroed).
inline long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

/// Peak resident memory of this process, MiB.
inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

/// Best wall time of `repeats` calls of f, in seconds, after one warm-up call.
template <class F>
double best_seconds(F&& f, int repeats) {
  f();
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t = std::chrono::steady_clock::now();
    f();
    best = std::min(best, seconds_since(t));
  }
  return best;
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
inline double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t half = values.size() / 2;
  return values.size() % 2 ? values[half] : (values[half - 1] + values[half]) / 2;
}

/// Prints "  min–max" of `ratios` (nothing when empty): the spread of a speed-up over --rounds.
inline void print_range(const std::vector<double>& ratios) {
  if (ratios.empty()) return;
  const auto [low, high] = std::minmax_element(ratios.begin(), ratios.end());
  std::printf("  %.2f–%.2f", *low, *high);
}

/// `--rounds N` (default 1): a comparison with PyTorch runs qx and PyTorch alternately N times and reports
/// medians: this project's machines drift by 10–30 %
/// from one minute to the next, and one qx run followed by one PyTorch run measures the drift as often as
/// the code.
inline void add_rounds_option(CLI::App& app, int& rounds) {
  app.add_option("--rounds", rounds, "run qx and PyTorch alternately this many times; print medians and the ratio's range")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
}

/// The vector width fma_peak_per_thread measures: the widest the build targets.
inline const char* fma_peak_isa() {
#if defined(__AVX512F__)
  return "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "AVX2 + FMA";
#else
  return nullptr;
#endif
}

/// fp32 FMA throughput of the calling thread in GFLOP/s: 12 independent chains of fused multiply-adds on
/// the widest vectors the build targets (512-bit with AVX-512, 256-bit with AVX2 + FMA; enough chains to
/// hide the FMA latency), 2 flops per lane. 0 on a build with neither (fma_peak_isa() null).
inline double fma_peak_per_thread(long iterations = 50'000'000) {
#if defined(__AVX512F__)
  using Vector = __m512;
  constexpr int lanes = 16;
  const auto splat = [](float v) { return _mm512_set1_ps(v); };
  const auto fma = [](Vector x, Vector a, Vector b) { return _mm512_fmadd_ps(x, a, b); };
  const auto add = [](Vector x, Vector y) { return _mm512_add_ps(x, y); };
#elif defined(__AVX2__) && defined(__FMA__)
  using Vector = __m256;
  constexpr int lanes = 8;
  const auto splat = [](float v) { return _mm256_set1_ps(v); };
  const auto fma = [](Vector x, Vector a, Vector b) { return _mm256_fmadd_ps(x, a, b); };
  const auto add = [](Vector x, Vector y) { return _mm256_add_ps(x, y); };
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  Vector acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = splat(static_cast<float>(i));
  const Vector a = splat(0.999999f), b = splat(1e-7f);
  const auto t = std::chrono::steady_clock::now();
  for (long it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = fma(acc[i], a, b);
  const double s = seconds_since(t);
  Vector sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = add(sum, acc[i]);
  alignas(64) float out[lanes];
  std::memcpy(out, &sum, sizeof out);
  volatile float sink = out[0];
  (void)sink;
  return 2.0 * lanes * 12 * static_cast<double>(iterations) / s * 1e-9;
#else
  (void)iterations;
  return 0;
#endif
}

}  // namespace bench
