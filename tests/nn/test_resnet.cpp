// ResNets against torchvision: the same state_dict (random weights and batch-norm statistics, narrow
// widths to keep fixtures small) and input give the same logits in eval and train mode; names match
// torchvision's exactly (strict load); save → load round trips; strict-load errors list every problem.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/autograd/engine.hpp"
#include "qx/nn/nn.hpp"
#include "qx/ops/softmax.hpp"

#include <cmath>
#include <filesystem>
#include <optional>

using qx::Index;
using qx::Tensor;

namespace {
template <class T>
void expect_close(const Tensor<T>& actual, const Tensor<T>& expected, const std::string& what, double tol) {
  REQUIRE_MESSAGE(actual.shape() == expected.shape(), what);
  double worst = 0;
  for (Index i = 0; i < actual.numel(); ++i)
    worst = std::max(worst, std::abs(double(actual.flat(i)) - double(expected.flat(i))) / (1e-3 + std::abs(double(expected.flat(i)))));
  CHECK_MESSAGE(worst <= tol, what, ": worst relative error ", worst);
}

template <class T>
std::unique_ptr<qx::nn::ResNet<T>> from_fixture(const qx::io::SafetensorsFile& file) {
  const auto& meta = file.metadata();
  auto model = qx::nn::make_resnet<T>(meta.at("arch"), std::stoll(meta.at("in_channels")), std::stoll(meta.at("num_classes")),
                                      std::stoll(meta.at("width")));
  // The fixture also holds the input and expected values: load the model's names strictly from a copy.
  qx::io::SafetensorsWriter weights;
  for (const auto& name : file.names())
    if (name != "input" && name.rfind("expected.", 0) != 0) {
      auto bytes = file.bytes(name);
      weights.add_raw(name, file.dtype(name), file.shape(name), bytes);
    }
  const std::string blob = weights.serialize();
  std::vector<std::byte> raw(blob.size());
  std::memcpy(raw.data(), blob.data(), blob.size());
  qx::nn::load_state(*model, qx::io::SafetensorsFile::from_bytes(std::move(raw), file.path() + " (weights)"));
  return model;
}
}  // namespace

TEST_CASE_TEMPLATE("resnet18/34/50 logits match torchvision in eval and train mode, with either convolution", T, float,
                   double) {
  const double tol = std::is_same_v<T, float> ? 2e-4 : 1e-9;
  for (auto algorithm : {qx::kernels::Conv2dAlgorithm::automatic, qx::kernels::Conv2dAlgorithm::winograd})
  for (const char* arch : {"resnet18", "resnet34", "resnet50"}) {
    CAPTURE(arch);
    CAPTURE(static_cast<int>(algorithm));  // 2: every 3×3 stride-1 convolution by Winograd
    qx::kernels::set_conv2d_algorithm(algorithm);
    const auto file = qx::io::SafetensorsFile::open(std::string(QX_TEST_FIXTURES "/nn/") + arch + ".safetensors");
    auto model = from_fixture<T>(file);
    const auto x = file.get_as<T>("input");
    model->eval();
    expect_close((*model)(x), file.get_as<T>("expected.logits_eval"), std::string(arch) + " eval logits", tol);
    model->train();
    expect_close((*model)(x), file.get_as<T>("expected.logits_train"), std::string(arch) + " train logits", tol);
    auto& bn = dynamic_cast<qx::nn::BatchNorm2d<T>&>(model->submodule("layer1.0.bn1"));
    expect_close(bn.running_mean, file.get_as<T>("expected.layer1.0.bn1.running_mean"), "running_mean", tol);
    expect_close(bn.running_var, file.get_as<T>("expected.layer1.0.bn1.running_var"), "running_var", tol);
    CHECK(bn.num_batches_tracked.item() == T(8));
    qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
  }
}

TEST_CASE("parameter names are torchvision's state_dict keys") {
  auto model = qx::nn::resnet50<float>(3, 2, 4);
  const auto state = model->named_state();
  std::vector<std::string> names;
  for (const auto& e : state) names.push_back(e.name);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("conv1.weight"));
  CHECK(has("bn1.num_batches_tracked"));
  CHECK(has("layer1.0.downsample.0.weight"));
  CHECK(has("layer2.0.downsample.1.running_var"));
  CHECK(has("layer4.2.conv3.weight"));
  CHECK(has("fc.bias"));
  CHECK(names.size() == 320);  // torchvision resnet50's state_dict has 320 entries
  CHECK(qx::nn::resnet18<float>(1, 2, 4)->named_state().size() == 122);
  CHECK(model->has_submodule("layer3.1"));
  CHECK_THROWS_WITH(model->submodule("layer5"), doctest::Contains("layer4"));
}

TEST_CASE("save then load reproduces the outputs exactly, and strict load lists every problem") {
  namespace fs = std::filesystem;
  const fs::path dir = qx_test::temp_path("nn_roundtrip");
  fs::create_directories(dir);
  qx::Rng rng(3);
  auto a = qx::nn::resnet18<float>(1, 2, 4, /*seed=*/1);
  auto b = qx::nn::resnet18<float>(1, 2, 4, /*seed=*/2);
  const auto x = Tensor<float>::randn({2, 1, 32, 28}, rng);
  a->train();
  (*a)(x);  // moves running statistics away from their defaults
  a->eval();
  b->eval();
  qx::nn::save_safetensors(*a, dir / "a.safetensors");
  qx::nn::load_safetensors(*b, dir / "a.safetensors");
  CHECK((*a)(x).to_vector() == (*b)(x).to_vector());
  const auto file = qx::io::SafetensorsFile::open(dir / "a.safetensors");
  CHECK(file.dtype("bn1.num_batches_tracked") == qx::io::DType::i64);
  CHECK(file.get<std::int64_t>("bn1.num_batches_tracked").item() == 1);

  auto other = qx::nn::resnet18<float>(3, 5, 4);  // different stem channels and classes
  try {
    qx::nn::load_safetensors(*other, dir / "a.safetensors");
    FAIL("mismatched weights loaded");
  } catch (const qx::Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("conv1.weight (4, 1, 7, 7) (model (4, 3, 7, 7))") != std::string::npos);
    CHECK(msg.find("fc.weight") != std::string::npos);
    CHECK(msg.find("fc.bias") != std::string::npos);
  }
  auto deeper = qx::nn::resnet34<float>(1, 2, 4);
  CHECK_THROWS_WITH(qx::nn::load_safetensors(*deeper, dir / "a.safetensors"), doctest::Contains("missing: [layer1.2.conv1.weight"));
  auto shallower = qx::nn::resnet18<float>(1, 2, 4);
  qx::io::SafetensorsWriter extra;
  qx::nn::add_state(extra, *a);
  extra.add("layer9.weight", Tensor<float>::zeros({1}));
  extra.write(dir / "extra.safetensors");
  CHECK_THROWS_WITH(qx::nn::load_safetensors(*shallower, dir / "extra.safetensors"), doctest::Contains("unexpected: [layer9.weight]"));
  fs::remove_all(dir);
}

namespace {
/// Random batch-norm statistics and affine parameters, so folding has something to fold.
template <class T>
void randomise_batch_norms(qx::nn::Module<T>& model, qx::Rng& rng) {
  for (auto& e : model.named_state()) {
    const bool var = e.name.find("running_var") != std::string::npos;
    const bool bn = e.name.find("bn") != std::string::npos || e.name.find("downsample.1") != std::string::npos;
    if (!bn || e.is_integer) continue;
    for (Index i = 0; i < e.tensor->numel(); ++i)
      e.tensor->data()[i] = static_cast<T>(var ? rng.uniform(0.5, 2.0) : rng.normal(0.0, 0.3));
  }
}
}  // namespace

TEST_CASE("frozen eval folds batch norm into the convolutions: same logits and input gradients as unfolded") {
  for (const char* arch : {"resnet18", "resnet50"}) {
    CAPTURE(arch);
    auto model = qx::nn::make_resnet<double>(arch, 2, 3, 4, 7);
    qx::Rng rng(5);
    randomise_batch_norms(*model, rng);
    model->eval();
    const auto x = Tensor<double>::randn({2, 2, 33, 29}, rng);
    const auto seed = Tensor<double>::randn({2, 3}, rng);
    Tensor<double> logits[2], grads[2];
    Index relu_nodes[2] = {0, 0}, add_nodes[2] = {0, 0};
    for (int folded = 0; folded < 2; ++folded) {
      std::optional<qx::nn::FrozenParametersGuard> frozen;
      if (folded) frozen.emplace();
      auto input = x.clone().requires_grad_();
      logits[folded] = (*model)(input);
      bool has_bn = false;
      qx::autograd::for_each_node(logits[folded], [&](auto& node) {
        const std::string name = node.name();
        has_bn |= name == "batch_norm2d";
        relu_nodes[folded] += name == "relu";
        add_nodes[folded] += name == "add";
      });
      CHECK(has_bn == !folded);  // folded: no batch-norm node is left in the graph
      qx::autograd::BackwardOptions<double> walk;
      walk.inputs = {input};
      qx::autograd::backward(logits[folded], seed, walk);
      grads[folded] = input.grad().clone();
    }
    // Folded, the residual add and the ReLUs are done in the convolutions' stores, yet every one is still
    // its own node (guided backprop rewrites each "relu" node): as many as unfolded, one per block's add.
    CHECK(relu_nodes[1] == relu_nodes[0]);
    CHECK(add_nodes[1] == add_nodes[0]);
    CHECK(add_nodes[0] == (std::string(arch) == "resnet18" ? 8 : 16));
    expect_close(logits[1], logits[0], "logits", 1e-12);
    expect_close(grads[1], grads[0], "input gradient", 1e-10);
  }
}

TEST_CASE("training steps after the first ask the system for no memory (caching allocator)") {
  auto model = qx::nn::resnet18<float>(1, 2, 8, 3);
  model->train();
  qx::Rng rng(2);
  const auto x = Tensor<float>::randn({4, 1, 32, 32}, rng);
  auto step = [&] {
    auto loss = qx::ops::cross_entropy((*model)(x), std::vector<Index>{0, 1, 1, 0});
    qx::autograd::backward(loss);
    for (auto& p : model->parameters()) p.zero_grad();
  };
  step();
  step();
  const auto before = qx::memory::stats();
  for (int i = 0; i < 3; ++i) step();
  const auto after = qx::memory::stats();
  CHECK(after.system_allocations == before.system_allocations);
  CHECK(after.cache_hits > before.cache_hits);
}

TEST_CASE("--init-weights: a torchvision state loads by name and shape, RGB filters summed, a foreign fc left fresh") {
  // tests/fixtures/nn/resnet34.safetensors is a torchvision ResNet34 state_dict (3 input channels, 3 classes,
  // width 2; make_resnet_fixtures.py) — the layout of a converted ImageNet ResNet at a small size.
  const auto file = qx::io::SafetensorsFile::open(std::string(QX_TEST_FIXTURES) + "/nn/resnet34.safetensors");
  auto model = qx::nn::make_resnet<float>("resnet34", 1, 2, 2, /*seed=*/5);
  const auto fresh_fc = model->named_parameters();
  Tensor<float> fc_before;
  for (const auto& [name, p] : fresh_fc)
    if (name == "fc.weight") fc_before = p->clone();
  const auto report = qx::nn::load_matching(*model, file);
  CHECK(report.summed_first_conv);
  CHECK(report.skipped == std::vector<std::string>{"fc.weight", "fc.bias"});  // 3 classes in the file, 2 here
  CHECK(report.loaded == static_cast<Index>(model->named_state().size()) - 2);
  const auto rgb = file.get_as<float>("conv1.weight");  // (2, 3, 7, 7)
  for (const auto& [name, p] : model->named_parameters()) {
    if (name == "conv1.weight") {
      for (Index o = 0; o < 2; ++o)
        CHECK(p->at({o, 0, 3, 4}) == doctest::Approx(rgb.at({o, 0, 3, 4}) + rgb.at({o, 1, 3, 4}) + rgb.at({o, 2, 3, 4})));
    } else if (name == "layer3.1.bn2.weight") {
      const auto stored = file.get_as<float>(name);
      for (Index i = 0; i < stored.numel(); ++i) CHECK(p->flat(i) == stored.flat(i));
    } else if (name == "fc.weight") {
      for (Index i = 0; i < p->numel(); ++i) CHECK(p->flat(i) == fc_before.flat(i));
    }
  }
  auto other = qx::nn::make_resnet<float>("resnet18", 1, 2, 8, 1);  // nothing fits a resnet18 of width 8
  CHECK_THROWS_WITH(qx::nn::load_matching(*other, file), doctest::Contains("no tensor matches"));
}
