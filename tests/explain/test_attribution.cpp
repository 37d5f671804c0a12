// Attribution maps: closed-form cases (linear model, one-conv network, a single ReLU), PyTorch reference
// maps of resnet18/resnet50 made with hooks, per-sample targets in a batch equal to each sample alone,
// guided Grad-CAM's two factors explaining the same target, and no weight gradient ever computed.
#include <doctest/doctest.h>

#include "qx/explain/attribution.hpp"
#include "qx/nn/nn.hpp"

#include <cmath>
#include <cstring>
#include <memory>

using qx::Index;
using qx::Tensor;
using qx::explain::Method;

namespace {
/// y = W·flatten(x) + b.
template <class T>
struct LinearModel final : qx::nn::Module<T> {
  std::shared_ptr<qx::nn::Linear<T>> fc;
  LinearModel(Index in, Index out, qx::Rng& rng) { fc = this->register_module("fc", std::make_shared<qx::nn::Linear<T>>(in, out, rng)); }
  Tensor<T> forward(const Tensor<T>& x) override { return (*fc)(qx::ops::flatten(x)); }
};

/// y = W·mean_ij(conv(x)) + b: Grad-CAM of "conv" is ReLU(Σ_k W[c,k]/(h·w)·A_k).
template <class T>
struct OneConv final : qx::nn::Module<T> {
  std::shared_ptr<qx::nn::Conv2d<T>> conv;
  std::shared_ptr<qx::nn::Linear<T>> fc;
  OneConv(qx::Rng& rng) {
    conv = this->register_module("conv", std::make_shared<qx::nn::Conv2d<T>>(2, 3, 3, 1, 1, true, rng));
    fc = this->register_module("fc", std::make_shared<qx::nn::Linear<T>>(3, 2, rng));
  }
  Tensor<T> forward(const Tensor<T>& x) override {
    return (*fc)(qx::ops::flatten(qx::ops::adaptive_avg_pool2d((*conv)(x), 1, 1)));
  }
};

/// y = V·relu(U·x): guided backprop keeps only positive gradient through the ReLU.
template <class T>
struct TwoLayer final : qx::nn::Module<T> {
  std::shared_ptr<qx::nn::Linear<T>> l1, l2;
  TwoLayer(qx::Rng& rng) {
    l1 = this->register_module("l1", std::make_shared<qx::nn::Linear<T>>(3, 4, rng));
    l2 = this->register_module("l2", std::make_shared<qx::nn::Linear<T>>(4, 2, rng));
  }
  Tensor<T> forward(const Tensor<T>& x) override { return (*l2)(qx::ops::relu((*l1)(qx::ops::flatten(x)))); }
};

template <class T>
double max_abs(const Tensor<T>& t) {
  double m = 0;
  for (Index i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(double(t.flat(i))));
  return m;
}

/// max |a − e| / max |e|: a map-level relative error, robust to near-zero elements.
template <class T, class U>
double map_error(const Tensor<T>& a, const Tensor<U>& e) {
  REQUIRE(a.shape() == e.shape());
  double worst = 0;
  for (Index i = 0; i < a.numel(); ++i) worst = std::max(worst, std::abs(double(a.flat(i)) - double(e.flat(i))));
  return worst / std::max(1e-30, max_abs(e));
}
}  // namespace

TEST_CASE_TEMPLATE("linear model: the saliency is the target's weight row", T, float, double) {
  qx::Rng rng(1);
  LinearModel<T> model(6, 3, rng);
  const auto x = Tensor<T>::randn({2, 1, 2, 3}, rng);
  qx::explain::ExplainOptions options{{Method::saliency}, "fc", {2, 0}};
  const auto maps = qx::explain::explain(model, x, options);
  for (Index s = 0; s < 2; ++s)
    for (Index i = 0; i < 6; ++i)
      CHECK(maps.saliency.data()[s * 6 + i] == doctest::Approx(model.fc->weight.at({options.targets[s], i})));
  CHECK_FALSE(model.fc->weight.has_grad());  // no weight gradient was computed
}

TEST_CASE_TEMPLATE("one-conv network: Grad-CAM written by hand", T, float, double) {
  qx::Rng rng(2);
  OneConv<T> model(rng);
  const auto x = Tensor<T>::randn({2, 2, 4, 5}, rng);
  const auto maps = qx::explain::explain(model, x, {{Method::gradcam_raw, Method::gradcam}, "conv", {1, 0}});
  qx::NoGradGuard no_grad;
  const auto a = (*model.conv)(x);  // (2, 3, 4, 5)
  for (Index s = 0; s < 2; ++s)
    for (Index i = 0; i < 4; ++i)
      for (Index j = 0; j < 5; ++j) {
        double v = 0;
        for (Index k = 0; k < 3; ++k) v += double(model.fc->weight.at({s == 0 ? 1 : 0, k})) / 20.0 * double(a.at({s, k, i, j}));
        CHECK(double(maps.gradcam_raw.at({s, i, j})) == doctest::Approx(std::max(v, 0.0)).epsilon(1e-5));
      }
  // Same spatial size: the bilinear resize is the identity.
  CHECK(maps.gradcam.to_vector() == maps.gradcam_raw.to_vector());
  CHECK_THROWS_WITH(qx::explain::explain(model, x, {{Method::gradcam}, "layer4", {}}), doctest::Contains("conv"));
  CHECK_THROWS_WITH(qx::explain::explain(model, x, {{Method::saliency}, "conv", {0, 2}}), doctest::Contains("target 2"));
}

TEST_CASE("guided backprop through a single ReLU with known signs") {
  qx::Rng rng(3);
  TwoLayer<double> model(rng);
  // U = I-like rows so that h = U x has signs (+, +, −, −); V's target row has signs (+, −, +, −).
  model.l1->weight = Tensor<double>::from({4, 3}, {1, 0, 0, 0, 1, 0, -1, 0, 0, 0, -1, 0}).requires_grad_();
  model.l1->bias = Tensor<double>::zeros({4}).requires_grad_();
  model.l2->weight = Tensor<double>::from({2, 4}, {2, -3, 5, -7, 1, 1, 1, 1}).requires_grad_();
  model.l2->bias = Tensor<double>::zeros({2}).requires_grad_();
  const auto x = Tensor<double>::from({1, 1, 1, 3}, {1, 2, 0.5});  // h = (1, 2, −1, −2)
  const auto maps = qx::explain::explain(model, x, {{Method::saliency, Method::guided_backprop}, "l1", {0}});
  // Plain: ∂y/∂h = (2, −3, 0, 0) (ReLU open for h > 0) → ∂y/∂x = Uᵀ(2, −3, 0, 0) = (2, −3, 0).
  CHECK(maps.saliency.to_vector() == std::vector<double>{2, -3, 0});
  // Guided: the ReLU also drops the negative gradient −3 → (2, 0, 0, 0) → ∂x = (2, 0, 0).
  CHECK(maps.guided_backprop.to_vector() == std::vector<double>{2, 0, 0});
}

TEST_CASE_TEMPLATE("resnet18 and resnet50 maps match PyTorch's hooks, with either convolution", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 2e-3 : 1e-8;
  for (auto algorithm : {qx::kernels::Conv2dAlgorithm::automatic, qx::kernels::Conv2dAlgorithm::winograd})
  for (const char* arch : {"resnet18", "resnet50"}) {
    CAPTURE(arch);
    CAPTURE(static_cast<int>(algorithm));  // 2: every 3×3 stride-1 convolution by Winograd
    qx::kernels::set_conv2d_algorithm(algorithm);
    const auto weights = qx::io::SafetensorsFile::open(std::string(QX_TEST_FIXTURES "/nn/") + arch + ".safetensors");
    const auto expected = qx::io::SafetensorsFile::open(std::string(QX_TEST_FIXTURES "/explain/") + arch + ".safetensors");
    const auto& meta = weights.metadata();
    auto model = qx::nn::make_resnet<T>(arch, std::stoll(meta.at("in_channels")), std::stoll(meta.at("num_classes")),
                                        std::stoll(meta.at("width")));
    qx::nn::load_state(*model, weights, /*strict=*/false);  // the fixture also holds input and expected values
    const auto x = weights.get_as<T>("input");
    const auto target = expected.get<std::int64_t>("target");
    qx::explain::ExplainOptions options;
    options.targets = {target.data()[0], target.data()[1]};
    REQUIRE(options.targets[0] != options.targets[1]);  // different targets in one batch
    const auto maps = qx::explain::explain(*model, x, options);
    CHECK(map_error(maps.logits, expected.get<double>("logits")) <= tol);
    for (Method m : qx::explain::all_methods()) {
      CAPTURE(qx::explain::to_string(m));
      const auto reference = expected.get<double>(qx::explain::to_string(m));
      CHECK(max_abs(reference) > 0);
      CHECK(map_error(maps.map(m), reference) <= tol);
    }
    for (auto& [name, p] : model->named_parameters()) CHECK_FALSE(p->has_grad());
    qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
  }
}

TEST_CASE("a batch with per-sample targets gives each sample exactly its own maps") {
  auto model = qx::nn::resnet18<double>(1, 3, 4, 11);
  qx::Rng rng(5);
  auto bn_rng = qx::Rng(6);
  for (auto& [name, t] : model->named_buffers())
    if (name.find("running_var") != std::string::npos) for (double& v : t->span()) v = bn_rng.uniform(0.5, 2.0);
  const auto x = Tensor<double>::randn({3, 1, 36, 28}, rng);
  const std::vector<Index> targets{2, 0, 1};
  const auto batch = qx::explain::explain(*model, x, {qx::explain::all_methods(), "layer4", targets});
  for (Index s = 0; s < 3; ++s) {
    const auto alone = qx::explain::explain(*model, x.slice(0, s, s + 1), {qx::explain::all_methods(), "layer4", {targets[s]}});
    for (Method m : qx::explain::all_methods()) {
      CAPTURE(qx::explain::to_string(m));
      const auto& b = batch.map(m);
      const auto one = b.slice(0, s, s + 1).contiguous();
      CHECK(map_error(one, alone.map(m)) <= 1e-12);
    }
  }
  // Guided Grad-CAM's factors explain the same target: it equals guided_backprop ⊙ gradcam of that target.
  for (Index s = 0; s < 3; ++s)
    for (Index c = 0; c < 1; ++c)
      for (Index i = 0; i < 36; ++i)
        for (Index j = 0; j < 28; ++j)
          CHECK(batch.guided_gradcam.at({s, c, i, j}) == doctest::Approx(batch.guided_backprop.at({s, c, i, j}) * batch.gradcam.at({s, i, j})));
  const auto other = qx::explain::explain(*model, x, {qx::explain::all_methods(), "layer4", {0, 1, 2}});
  CHECK(map_error(other.guided_gradcam, batch.guided_gradcam) > 1e-3);  // another target, another map
  CHECK(model->is_training());  // the model's mode is restored
}

TEST_CASE("the one-walk maps equal the maps of separate walks through the unfolded graph") {
  // A forward hook on layer1.0.bn1 keeps that conv → batch norm pair unfolded; its "batch_norm2d" node
  // cannot carry stacked gradients, so explain falls back to two walks. Both routes give the same maps.
  auto model = qx::nn::resnet18<double>(1, 3, 4, 13);
  qx::Rng rng(8);
  for (auto& [name, t] : model->named_buffers())
    if (name.find("running_var") != std::string::npos) for (double& v : t->span()) v = rng.uniform(0.5, 2.0);
  const auto x = Tensor<double>::randn({2, 1, 40, 33}, rng);
  // Which route explain takes: a frozen eval forward of the folded model can carry stacked gradients;
  // with the hook, the unfolded batch norm cannot.
  auto carries_replicas = [&] {
    qx::nn::FrozenParametersGuard frozen;
    model->eval();
    const bool all = qx::autograd::handles_replicas((*model)(x.clone().requires_grad_()));
    model->train();
    return all;
  };
  CHECK(carries_replicas());
  const auto together = qx::explain::explain(*model, x);
  const int id = model->submodule("layer1.0.bn1").add_forward_hook([](auto&, const auto&, auto&) {});
  CHECK_FALSE(carries_replicas());
  const auto apart = qx::explain::explain(*model, x);
  model->submodule("layer1.0.bn1").remove_forward_hook(id);
  for (Method m : qx::explain::all_methods()) {
    CAPTURE(qx::explain::to_string(m));
    CHECK(map_error(together.map(m), apart.map(m)) <= 1e-10);
  }
}

TEST_CASE("a weight cache gives the same maps bit for bit, folds once, and folds again when a parameter changes") {
  // resnet18 of width 64 on batch 4 of 64×64: its 64-channel layers run by Winograd in float with
  // AVX-512, whose transformed filters the cache keeps too.
  auto model = qx::nn::resnet18<float>(1, 2, 64, 21);
  qx::Rng rng(9);
  for (auto& [name, t] : model->named_buffers())
    if (name.find("running_var") != std::string::npos) for (float& v : t->span()) v = static_cast<float>(rng.uniform(0.5, 2.0));
  const auto x = Tensor<float>::randn({4, 1, 64, 64}, rng);
  auto same = [](const qx::explain::Attributions<float>& a, const qx::explain::Attributions<float>& b) {
    for (Method m : qx::explain::all_methods()) {
      CAPTURE(qx::explain::to_string(m));
      REQUIRE(a.map(m).shape() == b.map(m).shape());
      CHECK(std::memcmp(a.map(m).data(), b.map(m).data(), sizeof(float) * static_cast<std::size_t>(a.map(m).numel())) == 0);
    }
  };
  const auto before = qx::explain::explain(*model, x);
  qx::nn::WeightCache<float> cache;
  constexpr std::size_t pairs = 20;  // conv → batch norm pairs of resnet18: the stem, 16 in blocks, 3 shortcuts
  qx::explain::Attributions<float> changed;
  {
    const qx::nn::WeightCache<float>::Scope use(cache);
    CHECK(qx::nn::WeightCache<float>::active() == &cache);
    same(qx::explain::explain(*model, x), before);
    CHECK(cache.stats().folds == pairs);
    CHECK(cache.stats().folded == pairs);
    CHECK(cache.stats().reused == 0);
    const auto derived = cache.stats().derived.made;
#if defined(__AVX512F__)
    CHECK(derived > 0);  // Winograd's filters of the folded weights
#endif
    same(qx::explain::explain(*model, x), before);
    CHECK(cache.stats().folded == pairs);
    CHECK(cache.stats().reused == pairs);
    CHECK(cache.stats().derived.made == derived);  // nothing transformed again
    CHECK(cache.stats().derived.reuses == derived);
    // A weight written through data() and a running mean changed: those two pairs fold again (and their
    // filters are transformed again), and the maps are the changed model's.
    dynamic_cast<qx::nn::Conv2d<float>&>(model->submodule("layer1.0.conv1")).weight.data()[5] += 0.25f;
    dynamic_cast<qx::nn::BatchNorm2d<float>&>(model->submodule("layer2.0.bn1")).running_mean.data()[3] += 0.5f;
    const auto values = cache.stats().derived.values;
    changed = qx::explain::explain(*model, x);
    CHECK(cache.stats().folded == pairs + 2);
    CHECK(cache.stats().folds == pairs);
    CHECK(cache.stats().derived.values == values);  // the old weights' filters dropped, the new ones kept
#if defined(__AVX512F__)
    CHECK(cache.stats().derived.made > derived);  // layer1.0.conv1 runs by Winograd: its filters made anew
#endif
    CHECK(std::memcmp(changed.saliency.data(), before.saliency.data(), sizeof(float) * static_cast<std::size_t>(x.numel())) != 0);
  }
  CHECK(qx::nn::WeightCache<float>::active() == nullptr);  // the scope ended
  same(changed, qx::explain::explain(*model, x));          // the changed model explained without a cache
  CHECK(cache.stats().bytes > 0);
  cache.clear();
  CHECK(cache.stats().bytes == 0);
  CHECK(cache.stats().folds == 0);
}
