// Forward values and input gradients of every op against PyTorch 1.13 (float64), from the fixture
// written by tests/fixtures/make_ops_fixtures.py. Run in float and double: float within 1e-4 relative.
#include <doctest/doctest.h>

#include "qx/autograd/engine.hpp"
#include "qx/io/safetensors.hpp"
#include "qx/ops/ops.hpp"

#include <cmath>
#include <functional>
#include <map>
#include <string>

using qx::Index;
using qx::Tensor;

namespace {
const qx::io::SafetensorsFile& fixture() {
  static const auto file = qx::io::SafetensorsFile::open(QX_TEST_FIXTURES "/ops/ops.safetensors");
  return file;
}

template <class T>
Tensor<T> load(const std::string& name) {
  return fixture().get_as<T>(name);
}

template <class T>
void expect_close(const Tensor<T>& actual, const Tensor<T>& expected, const std::string& what) {
  REQUIRE_MESSAGE(actual.shape() == expected.shape(), what, ": shape ", qx::to_string(actual.shape()), " vs ",
                  qx::to_string(expected.shape()));
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
  double worst = 0;
  Index worst_at = 0;
  for (Index i = 0; i < actual.numel(); ++i) {
    const double a = actual.flat(i), e = expected.flat(i);
    const double err = std::abs(a - e) / (1.0 + std::abs(e));
    if (err > worst) worst = err, worst_at = i;
  }
  CHECK_MESSAGE(worst <= tol, what, ": worst relative error ", worst, " at flat index ", worst_at);
}

/// Runs `op` on the fixture inputs `names` of case `name`, compares the output and every input gradient.
template <class T>
void check_case(const std::string& name, const std::vector<std::string>& names,
                const std::function<Tensor<T>(std::vector<Tensor<T>>&)>& op) {
  std::vector<Tensor<T>> inputs;
  for (const auto& n : names) inputs.push_back(load<T>(name + "." + n).requires_grad_());
  auto y = op(inputs);
  expect_close(y, load<T>(name + ".out"), name + " forward");
  qx::autograd::backward(y, load<T>(name + ".proj"));
  for (std::size_t i = 0; i < names.size(); ++i)
    expect_close(inputs[i].grad(), load<T>(name + ".grad." + names[i]), name + " grad " + names[i]);
}
}  // namespace

TEST_CASE_TEMPLATE("ops match PyTorch forward and backward", T, float, double) {
  using V = std::vector<Tensor<T>>;
  check_case<T>("conv_s1p1", {"x", "w", "b"}, [](V& t) { return qx::ops::conv2d(t[0], t[1], t[2], 1, 1); });
  check_case<T>("conv_s2p3_k7", {"x", "w"}, [](V& t) { return qx::ops::conv2d(t[0], t[1], {}, 2, 3); });
  check_case<T>("conv_1x1_s2", {"x", "w", "b"}, [](V& t) { return qx::ops::conv2d(t[0], t[1], t[2], 2, 0); });
  check_case<T>("bn_train", {"x", "w", "b"}, [](V& t) {
    auto rm = Tensor<T>::zeros({3}), rv = Tensor<T>::ones({3});
    auto y = qx::ops::batch_norm2d(t[0], t[1], t[2], rm, rv, true);
    expect_close(rm, load<T>("bn_train.running_mean_after"), "bn running_mean");
    expect_close(rv, load<T>("bn_train.running_var_after"), "bn running_var (unbiased)");
    return y;
  });
  check_case<T>("bn_eval", {"x", "w", "b"}, [](V& t) {
    auto rm = load<T>("bn_eval.running_mean"), rv = load<T>("bn_eval.running_var");
    return qx::ops::batch_norm2d(t[0], t[1], t[2], rm, rv, false);
  });
  check_case<T>("relu", {"x"}, [](V& t) { return qx::ops::relu(t[0]); });
  check_case<T>("maxpool_k3s2p1", {"x"}, [](V& t) { return qx::ops::max_pool2d(t[0], 3, 2, 1); });
  check_case<T>("maxpool_k2s2", {"x"}, [](V& t) { return qx::ops::max_pool2d(t[0], 2, 2, 0); });
  check_case<T>("avgpool_1x1", {"x"}, [](V& t) { return qx::ops::adaptive_avg_pool2d(t[0], 1, 1); });
  check_case<T>("avgpool_3x2", {"x"}, [](V& t) { return qx::ops::adaptive_avg_pool2d(t[0], 3, 2); });
  check_case<T>("linear", {"x", "w", "b"}, [](V& t) { return qx::ops::linear(t[0], t[1], t[2]); });
  check_case<T>("add", {"a", "b"}, [](V& t) { return qx::ops::add(t[0], t[1]); });
  check_case<T>("flatten", {"x"}, [](V& t) { return qx::ops::flatten(t[0]); });
  check_case<T>("log_softmax", {"x"}, [](V& t) { return qx::ops::log_softmax(t[0]); });
  check_case<T>("cross_entropy", {"x"}, [](V& t) {
    const auto targets = fixture().get<std::int64_t>("cross_entropy.targets").to_vector();
    return qx::ops::cross_entropy(t[0], std::vector<Index>(targets.begin(), targets.end()),
                                  load<T>("cross_entropy.weights"));
  });
  check_case<T>("interp_up", {"x"}, [](V& t) { return qx::ops::interpolate_bilinear(t[0], 13, 11); });
  check_case<T>("interp_down", {"x"}, [](V& t) { return qx::ops::interpolate_bilinear(t[0], 3, 5); });
}

TEST_CASE_TEMPLATE("the Winograd convolution matches PyTorch's on the 3x3 stride-1 case", T, float, double) {
  // Forced where it applies (the automatic choice keeps it for wide layers); restored afterwards.
  using V = std::vector<Tensor<T>>;
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::winograd);
  check_case<T>("conv_s1p1", {"x", "w", "b"}, [](V& t) {
    CHECK(qx::kernels::runs_winograd(qx::kernels::Conv2dShape{t[0].size(0), 3, 7, 9, 5, 3, 3, 1, 1, 1, 1}));
    return qx::ops::conv2d(t[0], t[1], t[2], 1, 1);
  });
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
}

TEST_CASE_TEMPLATE("the direct 3x3 convolution matches PyTorch's on a narrow layer", T, float, double) {
  // Under `automatic` an AVX-512 build already picks it for this shape; forced, so that every build runs it.
  using V = std::vector<Tensor<T>>;
  const qx::kernels::Conv2dShape shape{2, 16, 5, 32, 16, 3, 3, 1, 1, 1, 1};
#if defined(__AVX512F__)
  CHECK(qx::kernels::runs_direct(shape));
#endif
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::direct);
  check_case<T>("conv_narrow_s1p1", {"x", "w", "b"}, [&](V& t) {
    CHECK(qx::kernels::runs_direct(shape, qx::kernels::ConvPass::input_gradient));
    return qx::ops::conv2d(t[0], t[1], t[2], 1, 1);
  });
  qx::kernels::set_conv2d_algorithm(qx::kernels::Conv2dAlgorithm::automatic);
}
