// The autograd engine: accumulation rules, seeds, input-only backward, freed graphs, no-grad scope,
// backward hooks per node instance, and capture of an intermediate activation and its gradient.
#include <doctest/doctest.h>

#include "qx/autograd/engine.hpp"
#include "qx/autograd/gradcheck.hpp"
#include "qx/ops/ops.hpp"

using qx::Tensor;

TEST_CASE("leaf gradients accumulate across backwards and a reused tensor sums its uses") {
  auto x = Tensor<double>::from({3}, {1, -2, 3}).requires_grad_();
  auto y = qx::ops::sum(qx::ops::add(x, x));  // y = 2 Σ x → ∂y/∂x = 2
  qx::autograd::backward(y);
  CHECK(x.grad().to_vector() == std::vector<double>{2, 2, 2});
  auto z = qx::ops::sum(qx::ops::mul(x, x));  // ∂/∂x = 2x, accumulated onto 2
  qx::autograd::backward(z);
  CHECK(x.grad().to_vector() == std::vector<double>{4, -2, 8});
}

TEST_CASE("a seed gradient weights the output, and shape errors name the shapes") {
  auto x = Tensor<double>::from({2, 2}, {1, -1, 2, -2}).requires_grad_();
  auto y = qx::ops::relu(x);
  qx::autograd::backward(y, Tensor<double>::from({2, 2}, {10, 20, 30, 40}));
  CHECK(x.grad().to_vector() == std::vector<double>{10, 0, 30, 0});
  auto y2 = qx::ops::relu(x);
  CHECK_THROWS_WITH(qx::autograd::backward(y2), doctest::Contains("(2, 2)"));
  CHECK_THROWS_WITH(qx::autograd::backward(y2, Tensor<double>::ones({4})), doctest::Contains("(4,)"));
  auto plain = Tensor<double>::ones({1});
  CHECK_THROWS_AS(qx::autograd::backward(plain), qx::Error);
}

TEST_CASE("backward through a freed graph throws, retain_graph allows a second walk") {
  auto x = Tensor<double>::from({2}, {1, 2}).requires_grad_();
  auto y = qx::ops::sum(qx::ops::relu(x));
  qx::autograd::backward(y, {}, {.retain_graph = true});
  qx::autograd::backward(y);
  CHECK(x.grad().to_vector() == std::vector<double>{2, 2});
  CHECK_THROWS_WITH(qx::autograd::backward(y), doctest::Contains("freed"));
}

TEST_CASE("no-grad scope records nothing") {
  auto x = Tensor<float>::ones({2}).requires_grad_();
  {
    qx::NoGradGuard guard;
    auto y = qx::ops::relu(x);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(y.grad_fn());
  }
  CHECK(qx::ops::relu(x).requires_grad());
}

TEST_CASE("an input-only backward leaves parameter gradients untouched and skips their computation") {
  qx::Rng rng(1);
  auto x = Tensor<double>::randn({2, 3}, rng).requires_grad_();
  auto w = Tensor<double>::randn({4, 3}, rng).requires_grad_();
  auto b = Tensor<double>::randn({4}, rng).requires_grad_();
  auto y = qx::ops::sum(qx::ops::linear(x, w, b));
  bool weight_grad_asked = true;
  y.grad_fn()->inputs()[0]->grad_fn->add_backward_hook(
      [&](const auto& node, const auto&, auto&) { weight_grad_asked = node.needs_input_grad(1); });
  qx::autograd::backward(y, {}, {.inputs = {x}});
  CHECK(x.has_grad());
  CHECK_FALSE(w.has_grad());
  CHECK_FALSE(b.has_grad());
  CHECK_FALSE(weight_grad_asked);
  // ∂Σ(xWᵀ + b)/∂x = column sums of W, the same for every row.
  for (int c = 0; c < 3; ++c) {
    double col = 0;
    for (int r = 0; r < 4; ++r) col += w.at({r, c});
    CHECK(x.grad().at({0, c}) == doctest::Approx(col));
    CHECK(x.grad().at({1, c}) == doctest::Approx(col));
  }
}

TEST_CASE("a ReLU backward hook replaces the ReLU rule (guided backprop)") {
  // y = Σ s ⊙ relu(x) with signs chosen so every case of [x > 0]·[g > 0] occurs.
  auto x = Tensor<double>::from({4}, {1, 1, -1, -1}).requires_grad_();
  auto s = Tensor<double>::from({4}, {2, -3, 4, -5});
  auto h = qx::ops::relu(x);
  auto y = qx::ops::sum(qx::ops::mul(h, s));
  int relu_nodes = 0;
  qx::autograd::for_each_node(y, [&](qx::autograd::Node<double>& node) {
    if (std::string(node.name()) != "relu") return;
    ++relu_nodes;
    node.add_backward_hook([](const auto&, const auto&, std::vector<Tensor<double>>& grads) {
      for (double& v : grads[0].span()) v = std::max(v, 0.0);
    });
  });
  CHECK(relu_nodes == 1);
  qx::autograd::backward(y);
  CHECK(x.grad().to_vector() == std::vector<double>{2, 0, 0, 0});  // plain ReLU would give {2, -3, 0, 0}
}

TEST_CASE("the ReLU node's own guided rule equals the hook, on the last replica only") {
  auto x = Tensor<double>::from({1, 4}, {1, 1, -1, -1}).requires_grad_();
  auto h = qx::ops::relu(x);
  REQUIRE(qx::ops::use_guided_rule(*h.grad_fn()));
  const auto seed = Tensor<double>::from({2, 4}, {2, -3, 4, -5, 2, -3, 4, -5});
  qx::autograd::backward(h, seed, {.inputs = {x}, .replicas = 2});
  // Replica 0: the ReLU's rule g·[x > 0]; replica 1: guided, g·[x > 0]·[g > 0].
  CHECK(x.grad().to_vector() == std::vector<double>{2, -3, 0, 0, 2, 0, 0, 0});
  CHECK(seed.to_vector() == std::vector<double>{2, -3, 4, -5, 2, -3, 4, -5});  // the caller's seed is not overwritten
  auto add = qx::ops::add(x, x);
  CHECK_FALSE(qx::ops::use_guided_rule(*add.grad_fn()));
}

TEST_CASE("the ReLU's backward overwrites a gradient only when no other tensor or hook can see it") {
  const auto y = Tensor<double>::from({4}, {1, 0, 2, 0});
  auto g = Tensor<double>::from({4}, {5, 6, -7, 8});
  const double* memory = g.data();
  const auto out = qx::ops::detail::relu_grad(g, y, false, true);
  CHECK(out.data() == memory);
  CHECK(out.to_vector() == std::vector<double>{5, 0, -7, 0});
  auto shared = Tensor<double>::from({4}, {5, 6, -7, 8});
  const auto alias = shared;
  const auto fresh = qx::ops::detail::relu_grad(shared, y, false, true);
  CHECK(fresh.data() != shared.data());
  CHECK(shared.to_vector() == std::vector<double>{5, 6, -7, 8});
  CHECK(fresh.to_vector() == std::vector<double>{5, 0, -7, 0});
  // In a walk: the gradient reaching relu(x) is the engine's own, but a hook reads it after the rule ran,
  // so the hook must see it unmasked.
  auto x = Tensor<double>::from({4}, {1, -1, 1, -1}).requires_grad_();
  auto s = Tensor<double>::from({4}, {2, 3, -4, 5});
  auto z = qx::ops::sum(qx::ops::mul(qx::ops::relu(x), s));
  std::vector<double> seen;
  qx::autograd::for_each_node(z, [&](qx::autograd::Node<double>& node) {
    if (std::string(node.name()) == "relu")
      node.add_backward_hook([&](const auto&, const Tensor<double>& grad_output, auto&) { seen = grad_output.to_vector(); });
  });
  qx::autograd::backward(z);
  CHECK(seen == std::vector<double>{2, 3, -4, 5});
  CHECK(x.grad().to_vector() == std::vector<double>{2, 0, -4, 0});
}

TEST_CASE("batch norm's backward overwrites a gradient only when no other tensor or hook can see it") {
  // z = Σ s ⊙ relu(batch_norm(x)): the gradient reaching the batch norm is s, the engine's own tensor, which
  // the backward overwrites with ∂x unless a hook is to read it afterwards.
  qx::Rng rng(3);
  const auto x0 = Tensor<double>::randn({2, 3, 4, 4}, rng);
  const auto s = Tensor<double>::randn({2, 3, 4, 4}, rng);
  auto walk = [&](bool hooked) {
    auto x = x0.clone().requires_grad_();
    auto gamma = Tensor<double>::from({3}, {1.5, -0.5, 2}), beta = Tensor<double>::from({3}, {0.1, 0.2, -0.3});
    auto mean = Tensor<double>::zeros({3}), var = Tensor<double>::ones({3});
    auto z = qx::ops::sum(qx::ops::mul(qx::ops::batch_norm2d_relu(x, gamma, beta, mean, var, true), s));
    std::vector<double> seen;
    if (hooked)
      qx::autograd::for_each_node(z, [&](qx::autograd::Node<double>& node) {
        if (std::string(node.name()) == "batch_norm2d_relu")
          node.add_backward_hook([&](const auto&, const Tensor<double>& grad_output, auto&) { seen = grad_output.to_vector(); });
      });
    qx::autograd::backward(z);
    if (hooked) CHECK(seen == s.to_vector());
    return x.grad().to_vector();
  };
  CHECK(walk(true) == walk(false));
  // A gradient that another tensor holds is not overwritten: the caller's seed stays as it was.
  auto x = x0.clone().requires_grad_();
  auto gamma = Tensor<double>::ones({3}), beta = Tensor<double>::zeros({3});
  auto mean = Tensor<double>::zeros({3}), var = Tensor<double>::ones({3});
  const auto y = qx::ops::batch_norm2d(x, gamma, beta, mean, var, true);
  const auto before = s.to_vector();
  qx::autograd::backward(y, s);
  CHECK(x.grad().to_vector() != before);
  CHECK(s.to_vector() == before);
}

TEST_CASE("a captured activation and the gradient arriving at it equal finite differences") {
  // y = Σ r ⊙ relu(conv(x)); capture a = conv(x) with retain_grad and check ∂y/∂a by perturbing a.
  qx::Rng rng(7);
  auto x = Tensor<double>::randn({2, 2, 5, 4}, rng);
  auto w = Tensor<double>::randn({3, 2, 3, 3}, rng).requires_grad_();
  auto r = Tensor<double>::randn({2, 3, 5, 4}, rng);
  auto a = qx::ops::conv2d(x, w, {}, 1, 1);
  a.retain_grad();
  auto y = qx::ops::sum(qx::ops::mul(qx::ops::relu(a), r));
  qx::autograd::backward(y);
  REQUIRE(a.has_grad());
  const double eps = 1e-6;
  auto f = [&](const Tensor<double>& act) {
    double s = 0;
    for (qx::Index i = 0; i < act.numel(); ++i) s += std::max(act.flat(i), 0.0) * r.flat(i);
    return s;
  };
  auto base = a.detach().clone();
  for (qx::Index i = 0; i < base.numel(); ++i) {
    if (std::abs(base.data()[i]) < 1e-3) continue;  // away from the ReLU kink
    auto p = base.clone(), m = base.clone();
    p.data()[i] += eps;
    m.data()[i] -= eps;
    CHECK(a.grad().data()[i] == doctest::Approx((f(p) - f(m)) / (2 * eps)).epsilon(1e-6));
  }
}

TEST_CASE("gradcheck reports the worst element of a wrong gradient") {
  // A deliberately wrong op: forward 2x, backward claims 3g.
  struct WrongNode final : qx::autograd::Node<double> {
    const char* name() const override { return "wrong"; }
    std::vector<Tensor<double>> apply(const Tensor<double>& g) override {
      auto out = g.clone();
      for (double& v : out.span()) v *= 3;
      return {out};
    }
  };
  auto x = Tensor<double>::from({2, 2}, {1, 2, 3, 4}).requires_grad_();
  auto result = qx::gradcheck(
      [](std::vector<Tensor<double>>& in) {
        auto y = in[0].clone();
        for (double& v : y.span()) v *= 2;
        return qx::autograd::make_result(y, {&in[0]}, std::make_shared<WrongNode>());
      },
      {x});
  CHECK_FALSE(result.ok);
  CHECK(result.message.find("input 0 of shape (2, 2)") != std::string::npos);
  CHECK(result.message.find("numeric") != std::string::npos);
}

TEST_CASE("replicated gradients: one walk carrying two seeds equals two walks, op by op") {
  qx::Rng rng(41);
  auto w1 = Tensor<double>::randn({4, 2, 3, 3}, rng), w2 = Tensor<double>::randn({5, 4, 1, 1}, rng);
  auto fc = Tensor<double>::randn({3, 5}, rng), fb = Tensor<double>::randn({3}, rng);
  auto x = Tensor<double>::randn({2, 2, 9, 8}, rng).requires_grad_();
  // conv → relu → max-pool → conv(1×1) → add (residual-like fan-out) → relu → avg-pool → flatten → linear
  auto net = [&](const Tensor<double>& in) {
    auto h = qx::ops::max_pool2d(qx::ops::relu(qx::ops::conv2d(in, w1, {}, 1, 1)), 3, 2, 1);
    auto g = qx::ops::conv2d(h, w2, {}, 1, 0);
    auto r = qx::ops::add_relu(g, qx::ops::relu(g));
    return qx::ops::linear(qx::ops::flatten(qx::ops::adaptive_avg_pool2d(r, 1, 1)), fc, fb);
  };
  const auto seed_a = Tensor<double>::randn({2, 3}, rng), seed_b = Tensor<double>::randn({2, 3}, rng);
  std::vector<double> separate;
  for (const auto* seed : {&seed_a, &seed_b}) {
    x.zero_grad();
    qx::autograd::BackwardOptions<double> walk;
    walk.inputs = {x};
    qx::autograd::backward(net(x), *seed, walk);
    const auto g = x.grad().to_vector();
    separate.insert(separate.end(), g.begin(), g.end());
  }
  x.zero_grad();
  auto stacked = Tensor<double>::empty({4, 3});
  std::copy_n(seed_a.data(), 6, stacked.data());
  std::copy_n(seed_b.data(), 6, stacked.data() + 6);
  qx::autograd::BackwardOptions<double> walk;
  walk.inputs = {x};
  walk.replicas = 2;
  qx::autograd::backward(net(x), stacked, walk);
  REQUIRE(x.grad().shape() == qx::Shape{4, 2, 9, 8});
  const auto together = x.grad().to_vector();
  for (std::size_t i = 0; i < together.size(); ++i) CHECK(together[i] == doctest::Approx(separate[i]).epsilon(1e-12));
}

TEST_CASE("replicated gradients are refused by ops that cannot carry them, and without `inputs`") {
  qx::Rng rng(42);
  auto x = Tensor<double>::randn({2, 3}, rng).requires_grad_();
  auto y = qx::ops::log_softmax(x);
  qx::autograd::BackwardOptions<double> walk;
  walk.inputs = {x};
  walk.replicas = 2;
  CHECK(!qx::autograd::handles_replicas(y));
  CHECK_THROWS_WITH_AS(qx::autograd::backward(y, Tensor<double>::ones({4, 3}), walk),
                       doctest::Contains("cannot carry replicated gradients"), qx::Error);
  auto z = qx::ops::relu(x);
  CHECK(qx::autograd::handles_replicas(z));
  CHECK_THROWS_WITH_AS(qx::autograd::backward(z, Tensor<double>::ones({2, 3}), walk), doctest::Contains("first dimension"),
                       qx::Error);
  walk.inputs.clear();
  CHECK_THROWS_WITH_AS(qx::autograd::backward(z, Tensor<double>::ones({4, 3}), walk), doctest::Contains("need `inputs`"),
                       qx::Error);
}
