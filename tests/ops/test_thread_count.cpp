// Every op's forward and backward on tensors large enough for its parallel path (above the
// 32,768-element grain of parallel_for, several GEMM blocks) give the same results with one thread and
// with two, and the same bits twice with two. Measured: element-wise ops, pooling, interpolation, batch
// norm (each channel's sums belong to one thread), linear and cross-entropy are bit-identical across
// thread counts; convolutions differ by float rounding (≤ 4.3e-6 of the largest value, Winograd's weight
// gradient), because their weight and bias gradients sum per-thread partials over the batch. The race
// check (cmake/run-race-check.sh) runs these tests under ThreadSanitizer.
#include <doctest/doctest.h>

#include "../test_compare.hpp"
#include "../test_threads.hpp"

#include "qx/autograd/engine.hpp"
#include "qx/ops/ops.hpp"

#include <cmath>
#include <functional>
#include <string>

using qx::Index;
using qx::Tensor;

namespace {
struct Result {
  std::vector<std::vector<float>> values;  // the output, then each input's gradient
};

// out = fn(inputs); then ∂(Σ seed ⊙ out)/∂inputs, with a fixed random seed tensor; run on `threads`.
Result run(int threads, const std::function<Tensor<float>(std::vector<Tensor<float>>&)>& fn, std::vector<Tensor<float>> inputs) {
  const qx_test::ThreadCount scope(threads);
  for (auto& t : inputs) t = t.clone().requires_grad_();
  const Tensor<float> out = fn(inputs);
  qx::Rng rng(99);
  const auto seed = Tensor<float>::randn(out.shape(), rng);
  qx::autograd::backward(out, seed);
  Result r;
  r.values.push_back(out.to_vector());
  for (auto& t : inputs) r.values.push_back(t.grad().to_vector());
  return r;
}

void check_threads(const std::string& op, double tolerance, const std::function<Tensor<float>(std::vector<Tensor<float>>&)>& fn,
                   const std::vector<Tensor<float>>& inputs) {
  CAPTURE(op);
  const auto one = run(1, fn, inputs), two = run(2, fn, inputs), again = run(2, fn, inputs);
  CHECK(two.values == again.values);  // deterministic for a given thread count
  const double d = qx_test::worst_relative_difference(one.values, two.values);
  MESSAGE(op, ": 1 vs 2 threads differ by ", d);
  CHECK(d <= tolerance);
}

Tensor<float> randn(const qx::Shape& shape, std::uint64_t seed) {
  qx::Rng rng(seed);
  return Tensor<float>::randn(shape, rng);
}
}  // namespace

TEST_CASE("convolutions give the same results on one and two threads, every algorithm") {
  using qx::kernels::Conv2dAlgorithm;
  struct Case {
    const char* name;
    Index n, c_in, size, c_out, k, stride, pad;
    Conv2dAlgorithm algorithm;
  };
  const Case cases[] = {
      {"3x3 stride 1, Winograd", 8, 32, 24, 32, 3, 1, 1, Conv2dAlgorithm::winograd},
      {"3x3 stride 1, im2col", 8, 32, 24, 32, 3, 1, 1, Conv2dAlgorithm::im2col_gemm},
      {"3x3 stride 1, direct", 8, 16, 32, 16, 3, 1, 1, Conv2dAlgorithm::direct},
      {"3x3 stride 2, im2col", 8, 16, 32, 24, 3, 2, 1, Conv2dAlgorithm::automatic},
      {"1x1", 8, 64, 16, 48, 1, 1, 0, Conv2dAlgorithm::automatic},
      {"7x7 stride 2 stem", 4, 3, 48, 16, 7, 2, 3, Conv2dAlgorithm::automatic},
  };
  for (const auto& c : cases) {
    qx::kernels::set_conv2d_algorithm(c.algorithm);
    // The weight and bias gradients sum over the batch, split across threads: float rounding differs.
    check_threads(c.name, 5e-5, [&](auto& t) { return qx::ops::conv2d(t[0], t[1], t[2], c.stride, c.pad); },
                  {randn({c.n, c.c_in, c.size, c.size}, 1), randn({c.c_out, c.c_in, c.k, c.k}, 2), randn({c.c_out}, 3)});
  }
  qx::kernels::set_conv2d_algorithm(Conv2dAlgorithm::automatic);
}

TEST_CASE("batch norm, element-wise ops, pooling, interpolation, linear and cross-entropy on one and two threads") {
  const auto x = randn({8, 16, 32, 32}, 4), y = randn({8, 16, 32, 32}, 5);
  for (bool training : {true, false}) {
    auto stats = [&](std::uint64_t s) { return std::pair{randn({16}, s), qx::ops::add(randn({16}, s + 1), Tensor<float>::full({16}, 3.0f))}; };
    check_threads(training ? "batch_norm2d (training)" : "batch_norm2d (eval)", 1e-5,
                  [&](auto& t) {
                    auto [mean, var] = stats(6);
                    return qx::ops::batch_norm2d(t[0], t[1], t[2], mean, var, training);
                  },
                  {x, randn({16}, 8), randn({16}, 9)});
    check_threads(training ? "batch_norm2d_relu (training)" : "batch_norm2d_relu (eval)", 1e-5,
                  [&](auto& t) {
                    auto [mean, var] = stats(6);
                    return qx::ops::batch_norm2d_relu(t[0], t[1], t[2], mean, var, training);
                  },
                  {x, randn({16}, 8), randn({16}, 9)});
  }
  // One thread computes each output: identical bits.
  check_threads("relu", 0, [](auto& t) { return qx::ops::relu(t[0]); }, {x});
  check_threads("add", 0, [](auto& t) { return qx::ops::add(t[0], t[1]); }, {x, y});
  check_threads("add_relu", 0, [](auto& t) { return qx::ops::add_relu(t[0], t[1]); }, {x, y});
  check_threads("max_pool2d 3/2/1", 0, [](auto& t) { return qx::ops::max_pool2d(t[0], 3, 2, 1); }, {x});
  check_threads("adaptive_avg_pool2d", 0, [](auto& t) { return qx::ops::adaptive_avg_pool2d(t[0], 5, 7); }, {x});
  check_threads("interpolate_bilinear", 0, [](auto& t) { return qx::ops::interpolate_bilinear(t[0], 45, 51); }, {x});
  check_threads("linear", 1e-5, [](auto& t) { return qx::ops::linear(t[0], t[1], t[2]); },
                {randn({256, 384}, 10), randn({200, 384}, 11), randn({200}, 12)});
  std::vector<Index> targets(4096);
  for (std::size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<Index>((i * 7) % 10);
  check_threads("cross_entropy", 1e-5, [&](auto& t) { return qx::ops::cross_entropy(t[0], targets); }, {randn({4096, 10}, 13)});
}
