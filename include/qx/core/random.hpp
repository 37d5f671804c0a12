// Seeded random numbers. Every random thing in qx (initialisation, shuffling, SmoothGrad noise) takes
// an explicit Rng so that results are reproducible from a seed. The generator is std::mt19937_64.
#pragma once
#include "qx/config.hpp"

#include <cstdint>
#include <random>

QX_NAMESPACE_BEGIN

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}
  double uniform(double lo = 0.0, double hi = 1.0) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  double normal(double mean = 0.0, double stddev = 1.0) { return std::normal_distribution<double>(mean, stddev)(engine_); }
  std::uint64_t next() { return engine_(); }
  /// Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b); drawn again in the rare case that both
  /// underflow to 0 (small a and b put most of their mass there).
  double beta(double a, double b) {
    for (;;) {
      const double x = std::gamma_distribution<double>(a, 1.0)(engine_), y = std::gamma_distribution<double>(b, 1.0)(engine_);
      if (x + y > 0) return x / (x + y);
    }
  }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(engine_); }
  std::mt19937_64& engine() { return engine_; }

 private:
  std::mt19937_64 engine_;
};

QX_NAMESPACE_END
