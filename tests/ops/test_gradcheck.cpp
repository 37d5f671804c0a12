// Every op's backward against central finite differences in double, for inputs and parameters, on
// shapes that exercise batch > 1, non-square images, stride 2, padding 0/1/3, 1×1 and 7×7 kernels and
// channel counts that are not multiples of 8. Test points are drawn away from kinks (ReLU at 0,
// max-pool ties) by construction, as noted per case.
#include <doctest/doctest.h>

#include "qx/autograd/gradcheck.hpp"
#include "qx/autograd/engine.hpp"
#include "qx/ops/ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

using qx::Index;
using qx::Tensor;
using Inputs = std::vector<Tensor<double>>;

namespace {
Tensor<double> leaf(const qx::Shape& shape, qx::Rng& rng, double scale = 1.0) {
  return Tensor<double>::randn(shape, rng, 0.0, scale).requires_grad_();
}

/// Values at least `gap` apart from each other and from zero: no ReLU kink, no max-pool tie.
Tensor<double> distinct(const qx::Shape& shape, qx::Rng& rng) {
  auto t = Tensor<double>::empty(shape);
  const Index n = t.numel();
  std::vector<Index> perm(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) perm[i] = i;
  for (Index i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(static_cast<std::uint64_t>(i + 1))]);
  for (Index i = 0; i < n; ++i) t.data()[i] = (static_cast<double>(perm[i]) - static_cast<double>(n) / 2 + 0.25) * 0.05;
  return t.requires_grad_();
}

void expect_ok(const qx::GradcheckResult& r) { CHECK_MESSAGE(r.ok, r.message); }
}  // namespace

TEST_CASE("conv2d gradcheck over strides, paddings and kernel sizes") {
  struct Case {
    Index n, c_in, h, w, c_out, k, stride, pad;
    bool bias;
  };
  const Case cases[] = {
      {2, 3, 7, 5, 5, 3, 1, 1, true},   // 3×3, padding 1, non-square
      {2, 3, 9, 8, 4, 3, 2, 1, false},  // stride 2
      {1, 5, 6, 7, 3, 1, 1, 0, true},   // 1×1
      {2, 2, 11, 9, 3, 7, 2, 3, true},  // the 7×7 stem shape: stride 2, padding 3
      {3, 7, 5, 4, 9, 3, 1, 0, true},   // padding 0, channels not multiples of 8
      {1, 6, 5, 5, 2, 1, 2, 0, false},  // 1×1 stride 2 (downsample)
  };
  for (const auto& c : cases) {
    CAPTURE(c.k);
    CAPTURE(c.stride);
    CAPTURE(c.pad);
    qx::Rng rng(static_cast<std::uint64_t>(c.k * 100 + c.stride * 10 + c.pad));
    Inputs in{leaf({c.n, c.c_in, c.h, c.w}, rng), leaf({c.c_out, c.c_in, c.k, c.k}, rng)};
    if (c.bias) in.push_back(leaf({c.c_out}, rng));
    expect_ok(qx::gradcheck(
        [&](Inputs& t) { return qx::ops::conv2d(t[0], t[1], c.bias ? t[2] : Tensor<double>(), c.stride, c.pad); }, in));
  }
  qx::Rng rng(3);  // asymmetric stride and padding
  expect_ok(qx::gradcheck(
      [](Inputs& t) { return qx::ops::conv2d(t[0], t[1], t[2], qx::ops::Conv2dOptions{2, 1, 0, 2}); },
      {leaf({2, 3, 6, 5}, rng), leaf({2, 3, 3, 2}, rng), leaf({2}, rng)}));
}

TEST_CASE("conv2d with an epilogue: gradcheck, the graph of the separate ops, and their values") {
  using qx::ops::Conv2dEpilogue;
  using Algorithm = qx::kernels::Conv2dAlgorithm;
  for (const Algorithm algorithm : {Algorithm::im2col_gemm, Algorithm::winograd, Algorithm::direct}) {
    const int algorithm_index = static_cast<int>(algorithm);
    CAPTURE(algorithm_index);
    qx::kernels::set_conv2d_algorithm(algorithm);
    qx::Rng rng(algorithm == Algorithm::im2col_gemm ? 32 : algorithm == Algorithm::winograd ? 31 : 33);
    // 3×3 padding 1 (Winograd's shape); batch 2, non-square, channels not multiples of 8 — or the direct
    // kernel's shape (rows of 16, channels of 8).
    const bool direct = algorithm == Algorithm::direct;
    const Index c_in = direct ? 8 : 3, c_out = direct ? 8 : 5, h = direct ? 3 : 7, w = direct ? 16 : 6;
    Inputs in{leaf({2, c_in, h, w}, rng), leaf({c_out, c_in, 3, 3}, rng), leaf({c_out}, rng), leaf({2, c_out, h, w}, rng)};
    CHECK(qx::kernels::runs_direct({2, c_in, h, w, c_out, 3, 3, 1, 1, 1, 1}) == direct);
    const auto separate = [](Inputs& t, bool add, bool relu) {
      auto y = qx::ops::conv2d(t[0], t[1], t[2], 1, 1);
      if (add) y = qx::ops::add(y, t[3]);
      return relu ? qx::ops::relu(y) : y;
    };
    {  // no pre-ReLU value within 10⁻³ of the kink, so finite differences see one side only
      qx::NoGradGuard no_grad;
      const auto v = separate(in, true, false), u = qx::ops::conv2d(in[0], in[1], in[2], 1, 1);
      for (Index i = 0; i < v.numel(); ++i) REQUIRE(std::min(std::abs(v.flat(i)), std::abs(u.flat(i))) > 1e-3);
    }
    for (const auto& combination : {std::pair{true, true}, std::pair{false, true}, std::pair{true, false}}) {
      const bool add = combination.first, relu = combination.second;  // not a structured binding: CAPTURE's lambda
      CAPTURE(add);
      CAPTURE(relu);
      const auto fused = [add, relu](Inputs& t) {
        return qx::ops::conv2d(t[0], t[1], t[2], qx::ops::Conv2dOptions{1, 1, 1, 1},
                               Conv2dEpilogue<double>{add ? t[3] : Tensor<double>(), relu});
      };
      Inputs used = in;
      if (!add) used.pop_back();
      expect_ok(qx::gradcheck(fused, used));
      for (auto& t : in) t.zero_grad();
      // Values and every gradient equal to the separate ops'; the graph holds their nodes.
      const auto z = fused(in), reference = separate(in, add, relu);
      std::vector<std::string> names;
      qx::autograd::for_each_node(z, [&](auto& node) { names.push_back(node.name()); });
      std::vector<std::string> expected;
      if (relu) expected.push_back("relu");
      if (add) expected.push_back("add");
      expected.push_back("conv2d");
      std::sort(names.begin(), names.end());
      std::sort(expected.begin(), expected.end());
      CHECK(names == expected);
      for (Index i = 0; i < z.numel(); ++i) CHECK(z.flat(i) == doctest::Approx(reference.flat(i)).epsilon(1e-12));
      const auto seed = Tensor<double>::randn(z.shape(), rng);
      std::vector<Tensor<double>> grads[2];
      for (int k = 0; k < 2; ++k) {
        for (auto& t : in) t.zero_grad();
        qx::autograd::backward(k == 0 ? z : reference, seed);
        for (std::size_t j = 0; j < (add ? 4u : 3u); ++j) grads[k].push_back(in[j].grad().clone());
      }
      for (std::size_t j = 0; j < grads[0].size(); ++j)
        for (Index i = 0; i < grads[0][j].numel(); ++i)
          CHECK(grads[0][j].flat(i) == doctest::Approx(grads[1][j].flat(i)).epsilon(1e-12));
    }
  }
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
  CHECK_THROWS_WITH_AS(qx::ops::conv2d(Tensor<float>::zeros({1, 3, 8, 8}), Tensor<float>::zeros({4, 3, 3, 3}), {},
                                       qx::ops::Conv2dOptions{1, 1, 1, 1}, Conv2dEpilogue<float>{Tensor<float>::zeros({1, 4, 6, 6}), true}),
                       "conv2d: residual (1, 4, 6, 6) on cpu does not fit the output (1, 4, 8, 8) on cpu", qx::Error);
}

TEST_CASE("conv2d by Winograd F(4x4, 3x3) gradcheck: input, weight and bias") {
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::winograd);
  for (Index pad : {0, 1}) {
    CAPTURE(pad);
    qx::Rng rng(static_cast<std::uint64_t>(31 + pad));
    const qx::kernels::Conv2dShape shape{2, 3, 9, 6, 4, 3, 3, 1, 1, pad, pad};
    CHECK(qx::kernels::runs_winograd(shape));
    expect_ok(qx::gradcheck([pad](Inputs& t) { return qx::ops::conv2d(t[0], t[1], t[2], 1, pad); },
                            {leaf({2, 3, 9, 6}, rng), leaf({4, 3, 3, 3}, rng), leaf({4}, rng)}));
  }
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
}

TEST_CASE("conv2d by the direct 3x3 kernel gradcheck: input, weight and bias") {
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::direct);
  qx::Rng rng(41);
  const qx::kernels::Conv2dShape shape{2, 8, 3, 16, 8, 3, 3, 1, 1, 1, 1};
  CHECK(qx::kernels::runs_direct(shape, qx::kernels::ConvPass::forward));
  CHECK(qx::kernels::runs_direct(shape, qx::kernels::ConvPass::input_gradient));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::conv2d(t[0], t[1], t[2], 1, 1); },
                          {leaf({2, 8, 3, 16}, rng), leaf({8, 8, 3, 3}, rng), leaf({8}, rng)}));
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
}

TEST_CASE("batch_norm2d gradcheck in training and eval mode") {
  for (bool training : {true, false}) {
    CAPTURE(training);
    qx::Rng rng(training ? 11 : 12);
    auto rm = Tensor<double>::randn({3}, rng), rv = Tensor<double>::uniform({3}, rng, 0.5, 2.0);
    expect_ok(qx::gradcheck(
        [&](Inputs& t) {
          auto m = rm.clone(), v = rv.clone();  // running stats must not drift between evaluations
          return qx::ops::batch_norm2d(t[0], t[1], t[2], m, v, training);
        },
        {leaf({4, 3, 5, 3}, rng, 2.0), leaf({3}, rng), leaf({3}, rng)}));
  }
}

TEST_CASE("fused batch_norm2d_relu gradcheck in training and eval mode, and equal to the two ops") {
  for (bool training : {true, false}) {
    CAPTURE(training);
    qx::Rng rng(training ? 13 : 14);
    auto rm = Tensor<double>::randn({3}, rng), rv = Tensor<double>::uniform({3}, rng, 0.5, 2.0);
    // β = 0.05 and distinct inputs: no normalised value sits on the ReLU's kink.
    Inputs in{distinct({4, 3, 5, 3}, rng), leaf({3}, rng), Tensor<double>::full({3}, 0.05).requires_grad_()};
    expect_ok(qx::gradcheck(
        [&](Inputs& t) {
          auto m = rm.clone(), v = rv.clone();
          return qx::ops::batch_norm2d_relu(t[0], t[1], t[2], m, v, training);
        },
        in));
    // Forward and every gradient equal to relu(batch_norm2d(…)) on the same values.
    auto m1 = rm.clone(), v1 = rv.clone(), m2 = rm.clone(), v2 = rv.clone();
    auto fused = qx::ops::batch_norm2d_relu(in[0], in[1], in[2], m1, v1, training);
    auto plain = qx::ops::relu(qx::ops::batch_norm2d(in[0], in[1], in[2], m2, v2, training));
    CHECK(fused.grad_fn()->name() == std::string("batch_norm2d_relu"));
    auto seed = Tensor<double>::randn(fused.shape(), rng);
    std::vector<std::vector<double>> grads[2];
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& t : in) t.zero_grad();
      qx::autograd::backward(pass == 0 ? fused : plain, seed);
      for (auto& t : in) grads[pass].push_back(t.grad().to_vector());
    }
    for (Index i = 0; i < fused.numel(); ++i) CHECK(fused.flat(i) == doctest::Approx(plain.flat(i)).epsilon(1e-12));
    for (std::size_t k = 0; k < in.size(); ++k)
      for (std::size_t i = 0; i < grads[0][k].size(); ++i) CHECK(grads[0][k][i] == doctest::Approx(grads[1][k][i]).epsilon(1e-10));
    for (Index c = 0; c < 3; ++c) CHECK(m1.flat(c) == m2.flat(c));
  }
}

TEST_CASE("fused add_relu gradcheck; both inputs receive the masked gradient") {
  qx::Rng rng(22);
  auto a = distinct({2, 3, 4, 5}, rng);
  auto b = Tensor<double>::full({2, 3, 4, 5}, 0.0125).requires_grad_();  // a + b keeps away from 0
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::add_relu(t[0], t[1]); }, {a, b}));
  a.zero_grad();
  b.zero_grad();
  auto z = qx::ops::add_relu(a, b);
  CHECK(z.grad_fn()->name() == std::string("add_relu"));
  qx::autograd::backward(qx::ops::sum(z));
  for (Index i = 0; i < z.numel(); ++i) {
    CHECK(z.flat(i) == std::max(0.0, a.flat(i) + b.flat(i)));
    CHECK(a.grad().flat(i) == (z.flat(i) > 0 ? 1.0 : 0.0));
    CHECK(b.grad().flat(i) == a.grad().flat(i));
  }
  CHECK_THROWS_WITH_AS(qx::ops::add_relu(a, Tensor<double>::zeros({2, 3})), doctest::Contains("add_relu: shapes"), qx::Error);
}

TEST_CASE("relu, add, mul, flatten, reshape gradcheck") {
  qx::Rng rng(21);
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::relu(t[0]); }, {distinct({2, 3, 4, 5}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::add(t[0], t[1]); }, {leaf({2, 5, 3}, rng), leaf({2, 5, 3}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::mul(t[0], t[1]); }, {leaf({3, 4}, rng), leaf({3, 4}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::flatten(t[0]); }, {leaf({2, 3, 2, 5}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::flatten(t[0], 2); }, {leaf({2, 3, 2, 5}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::mean(qx::ops::relu(t[0])); }, {distinct({3, 7}, rng)}));
}

TEST_CASE("max_pool2d against a naive loop: ties to the first maximum in scan order, NaN propagates, windows of -inf") {
  struct Case {
    Index h, w, kernel, stride, pad;
  };
  // The wide cases have more columns than one vector; stride 3 takes the path without a constant stride.
  for (const Case c : {Case{9, 7, 3, 2, 1}, Case{8, 8, 2, 2, 0}, Case{6, 11, 3, 1, 1}, Case{5, 5, 3, 1, 0}, Case{12, 10, 3, 2, 0},
                       Case{7, 45, 3, 2, 1}, Case{5, 38, 3, 1, 1}, Case{4, 70, 2, 2, 0}, Case{9, 13, 3, 3, 1}, Case{6, 9, 2, 1, 1}}) {
    CAPTURE(c.kernel);
    CAPTURE(c.stride);
    CAPTURE(c.pad);
    qx::Rng rng(static_cast<std::uint64_t>(c.h * 100 + c.w));
    auto x = Tensor<double>::empty({2, 3, c.h, c.w});
    for (double& v : x.span()) v = static_cast<double>(rng.below(4));  // many ties
    x.data()[5] = std::nan("");
    x.data()[(c.h / 2) * c.w + c.w / 2] = std::nan("");  // inside the interior columns
    for (Index r = 0; r < 3; ++r)  // a corner of −∞: the clipped windows there keep their first pixel
      for (Index q = 0; q < 3; ++q) x.data()[(c.h + r) * c.w + q] = -std::numeric_limits<double>::infinity();
    const auto y_without_grad = qx::ops::max_pool2d(x, c.kernel, c.stride, c.pad);  // keeps no argmax
    x.requires_grad_();
    auto y = qx::ops::max_pool2d(x, c.kernel, c.stride, c.pad);
    qx::autograd::backward(qx::ops::sum(y));
    const Index oh = y.size(2), ow = y.size(3);
    std::vector<double> routed(static_cast<std::size_t>(x.numel()), 0.0);
    for (Index p = 0; p < 6; ++p)
      for (Index i = 0; i < oh; ++i)
        for (Index j = 0; j < ow; ++j) {
          double best = 0;
          Index at = -1;
          for (Index r = i * c.stride - c.pad; r < i * c.stride - c.pad + c.kernel; ++r)
            for (Index q = j * c.stride - c.pad; q < j * c.stride - c.pad + c.kernel; ++q) {
              if (r < 0 || r >= c.h || q < 0 || q >= c.w) continue;
              const double v = x.data()[(p * c.h + r) * c.w + q];
              if (at < 0 || v > best || std::isnan(v)) best = v, at = (p * c.h + r) * c.w + q;
            }
          const double got = y.data()[(p * oh + i) * ow + j], got_without_grad = y_without_grad.data()[(p * oh + i) * ow + j];
          CHECK((std::isnan(best) ? std::isnan(got) : got == best));
          CHECK((std::isnan(best) ? std::isnan(got_without_grad) : got_without_grad == best));
          routed[static_cast<std::size_t>(at)] += 1.0;
        }
    for (Index k = 0; k < x.numel(); ++k) CHECK(x.grad().data()[k] == routed[static_cast<std::size_t>(k)]);
  }
}

TEST_CASE("max_pool2d and adaptive_avg_pool2d gradcheck") {
  qx::Rng rng(31);
  // distinct() keeps every window's maximum unique, so the max is differentiable.
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::max_pool2d(t[0], 3, 2, 1); }, {distinct({2, 3, 9, 7}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::max_pool2d(t[0], 2, 2, 0); }, {distinct({1, 5, 6, 8}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::max_pool2d(t[0], 3, 1, 0); }, {distinct({2, 2, 5, 6}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::adaptive_avg_pool2d(t[0], 1, 1); }, {leaf({2, 5, 4, 3}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::adaptive_avg_pool2d(t[0], 3, 2); }, {leaf({2, 3, 7, 5}, rng)}));
}

TEST_CASE("linear, log_softmax and weighted cross_entropy gradcheck") {
  qx::Rng rng(41);
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::linear(t[0], t[1], t[2]); },
                          {leaf({5, 7}, rng), leaf({3, 7}, rng), leaf({3}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::linear(t[0], t[1]); }, {leaf({2, 9}, rng), leaf({4, 9}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::log_softmax(t[0]); }, {leaf({4, 5}, rng, 3.0)}));
  const std::vector<Index> targets{1, 0, 2, 2, 1};
  const auto weights = Tensor<double>::from({3}, {0.2, 1.5, 0.7});
  expect_ok(qx::gradcheck([&](Inputs& t) { return qx::ops::cross_entropy(t[0], targets, weights); }, {leaf({5, 3}, rng)}));
  expect_ok(qx::gradcheck([&](Inputs& t) { return qx::ops::cross_entropy(t[0], targets); }, {leaf({5, 3}, rng)}));
}

TEST_CASE("interpolate_bilinear gradcheck, up and down") {
  qx::Rng rng(51);
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::interpolate_bilinear(t[0], 13, 11); }, {leaf({2, 2, 4, 3}, rng)}));
  expect_ok(qx::gradcheck([](Inputs& t) { return qx::ops::interpolate_bilinear(t[0], 3, 5); }, {leaf({1, 2, 7, 9}, rng)}));
}

TEST_CASE("a small network end to end: conv → bn → relu → pool → linear → cross_entropy") {
  qx::Rng rng(61);
  auto rm = Tensor<double>::zeros({4}), rv = Tensor<double>::ones({4});
  expect_ok(qx::gradcheck(
      [&](Inputs& t) {
        auto m = rm.clone(), v = rv.clone();
        auto h = qx::ops::relu(qx::ops::batch_norm2d(qx::ops::conv2d(t[0], t[1], {}, 1, 1), t[2], t[3], m, v, true));
        auto pooled = qx::ops::flatten(qx::ops::adaptive_avg_pool2d(qx::ops::max_pool2d(h, 2, 2, 0), 1, 1));
        return qx::ops::cross_entropy(qx::ops::linear(pooled, t[4], t[5]), {0, 1, 1});
      },
      {leaf({3, 2, 6, 5}, rng), leaf({4, 2, 3, 3}, rng), leaf({4}, rng), leaf({4}, rng), leaf({2, 4}, rng), leaf({2}, rng)},
      {.atol = 1e-5}));
}

TEST_CASE("ops reject bad shapes with messages naming op and shapes") {
  // The exact text a build without exceptions hands its error handler (tests/package/no_exceptions.cmake).
  CHECK_THROWS_WITH_AS(qx::ops::conv2d(Tensor<float>::zeros({1, 3, 8, 8}), Tensor<float>::zeros({4, 2, 3, 3})),
                       "conv2d: input (1, 3, 8, 8) has 3 channels but weight (4, 2, 3, 3) expects 2", qx::Error);
  auto x = Tensor<float>::zeros({2, 3, 8, 8});
  CHECK_THROWS_WITH(qx::ops::conv2d(x, Tensor<float>::zeros({4, 2, 3, 3})), doctest::Contains("conv2d"));
  CHECK_THROWS_WITH(qx::ops::conv2d(x, Tensor<float>::zeros({4, 2, 3, 3})), doctest::Contains("(4, 2, 3, 3)"));
  CHECK_THROWS_WITH(qx::ops::conv2d(Tensor<float>::zeros({3, 8, 8}), Tensor<float>::zeros({4, 3, 3, 3})),
                    doctest::Contains("(3, 8, 8)"));
  CHECK_THROWS_AS(qx::ops::conv2d(x, Tensor<float>::zeros({4, 3, 9, 9})), qx::Error);
  CHECK_THROWS_AS(qx::ops::conv2d(x, Tensor<float>::zeros({4, 3, 3, 3}), Tensor<float>::zeros({5})), qx::Error);
  CHECK_THROWS_WITH(qx::ops::add(x, Tensor<float>::zeros({2, 3, 8, 7})), doctest::Contains("(2, 3, 8, 7)"));
  auto rm = Tensor<float>::zeros({4}), rv = Tensor<float>::ones({4});
  CHECK_THROWS_WITH(qx::ops::batch_norm2d(x, rm, rm, rm, rv, false), doctest::Contains("batch_norm2d"));
  CHECK_THROWS_AS(qx::ops::linear(Tensor<float>::zeros({2, 5}), Tensor<float>::zeros({3, 4})), qx::Error);
  CHECK_THROWS_WITH(qx::ops::cross_entropy(Tensor<float>::zeros({2, 3}), {0, 3}), doctest::Contains("target 3"));
  CHECK_THROWS_AS(qx::ops::cross_entropy(Tensor<float>::zeros({2, 3}), {0}), qx::Error);
  CHECK_THROWS_AS(qx::ops::max_pool2d(x, 3, 2, 2), qx::Error);
  CHECK_THROWS_AS(qx::ops::interpolate_bilinear(x, 0, 4), qx::Error);
  CHECK_THROWS_AS(qx::ops::flatten(x, 4), qx::Error);
}
