// CPU–GPU parity: every op of the CUDA path forward and backward, a ResNet training step and the five
// attribution maps, each computed on the CPU and on the GPU from the same inputs and compared. Runs only
// where a GPU is present: elsewhere the program prints why and exits 77, which CTest reports as
// skipped (SKIP_RETURN_CODE), never as passed. Never run yet: no machine of the project has a GPU
// (docs/cuda.md).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "qx/core/cuda.hpp"
#include "qx/qx.hpp"

#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

using qx::Device;
using qx::Index;
using qx::Tensor;

namespace {
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;
}

template <class T>
void expect_close(const Tensor<T>& gpu, const Tensor<T>& cpu, const char* what) {
  REQUIRE(gpu.device() == Device::cuda);
  const auto a = gpu.to(Device::cpu).to_vector(), b = cpu.to_vector();
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / (1.0 + std::abs(static_cast<double>(b[i]))));
  CHECK_MESSAGE(worst <= tolerance<T>(), what, ": worst relative error ", worst);
}

/// op(inputs) on the CPU and on the GPU, seeded with the same gradient: outputs and every input gradient agree.
template <class T>
void check_parity(const char* what, std::vector<Tensor<T>> inputs, const std::function<Tensor<T>(std::vector<Tensor<T>>&)>& op) {
  CAPTURE(what);
  qx::Rng rng(3);
  std::vector<Tensor<T>> on_gpu;
  for (auto& x : inputs) {
    x.requires_grad_();
    on_gpu.push_back(x.to(Device::cuda).requires_grad_());
  }
  auto y = op(inputs);
  auto y_gpu = op(on_gpu);
  expect_close(y_gpu, y, "forward");
  const auto seed = Tensor<T>::randn(y.shape(), rng);
  qx::autograd::backward(y, seed);
  qx::autograd::backward(y_gpu, seed.to(Device::cuda));
  for (std::size_t i = 0; i < inputs.size(); ++i) expect_close(on_gpu[i].grad(), inputs[i].grad(), "input gradient");
}
}  // namespace

TEST_CASE_TEMPLATE("parity: each op forward and backward", T, float, double) {
  qx::Rng rng(1);
  auto r = [&](qx::Shape s) { return Tensor<T>::randn(s, rng); };
  check_parity<T>("relu", {r({2, 3, 5, 5})}, [](auto& in) { return qx::ops::relu(in[0]); });
  check_parity<T>("add", {r({2, 3, 5, 5}), r({2, 3, 5, 5})}, [](auto& in) { return qx::ops::add(in[0], in[1]); });
  check_parity<T>("conv2d", {r({2, 3, 9, 9}), r({4, 3, 3, 3}), r({4})},
                  [](auto& in) { return qx::ops::conv2d(in[0], in[1], in[2], 2, 1); });
  check_parity<T>("max_pool2d", {r({2, 3, 8, 8})}, [](auto& in) { return qx::ops::max_pool2d(in[0], 3, 2, 1); });
  check_parity<T>("adaptive_avg_pool2d", {r({2, 3, 7, 7})}, [](auto& in) { return qx::ops::adaptive_avg_pool2d(in[0], 1, 1); });
  check_parity<T>("linear", {r({5, 7}), r({3, 7}), r({3})}, [](auto& in) { return qx::ops::linear(in[0], in[1], in[2]); });
  check_parity<T>("interpolate_bilinear", {r({2, 1, 4, 4})}, [](auto& in) { return qx::ops::interpolate_bilinear(in[0], 16, 16); });
  check_parity<T>("log_softmax", {r({5, 3})}, [](auto& in) { return qx::ops::log_softmax(in[0]); });
  check_parity<T>("cross_entropy", {r({5, 3})}, [](auto& in) { return qx::ops::cross_entropy(in[0], {0, 2, 1, 2, 2}); });
  for (bool training : {true, false}) {
    auto mean = r({3}), var = Tensor<T>::uniform({3}, rng, 0.5, 2.0);
    auto mean_gpu = mean.to(Device::cuda), var_gpu = var.to(Device::cuda);
    check_parity<T>("batch_norm2d", {r({2, 3, 5, 5}), Tensor<T>::uniform({3}, rng, 0.5, 1.5), r({3})}, [&](auto& in) {
      const bool gpu = in[0].device() == Device::cuda;
      return qx::ops::batch_norm2d_relu(in[0], in[1], in[2], gpu ? mean_gpu : mean, gpu ? var_gpu : var, training);
    });
    expect_close(mean_gpu, mean, "running mean");
    expect_close(var_gpu, var, "running variance");
  }
}

TEST_CASE("parity: one ResNet training step (forward, loss, backward, Adam)") {
  auto cpu = qx::nn::resnet18<float>(1, 2, 8, 7), gpu = qx::nn::resnet18<float>(1, 2, 8, 7);
  gpu->to(Device::cuda);
  qx::Rng rng(2);
  const auto x = Tensor<float>::randn({4, 1, 32, 32}, rng);
  const std::vector<Index> targets{0, 1, 1, 0};
  qx::optim::Adam<float> adam_cpu({{cpu->parameters(), 1e-3, 0.1}}), adam_gpu({{gpu->parameters(), 1e-3, 0.1}});
  auto loss_cpu = qx::ops::cross_entropy(cpu->forward(x), targets);
  auto loss_gpu = qx::ops::cross_entropy(gpu->forward(x.to(Device::cuda)), targets);
  CHECK(loss_gpu.item() == doctest::Approx(loss_cpu.item()).epsilon(1e-4));
  qx::autograd::backward(loss_cpu);
  qx::autograd::backward(loss_gpu);
  adam_cpu.step();
  adam_gpu.step();
  const auto a = cpu->named_state(), b = gpu->named_state();
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].name);
    expect_close(*b[i].tensor, *a[i].tensor, "parameter or buffer after one step");
  }
}

TEST_CASE("parity: the five attribution maps") {
  auto cpu = qx::nn::resnet18<float>(1, 2, 8, 9), gpu = qx::nn::resnet18<float>(1, 2, 8, 9);
  cpu->eval();
  gpu->eval();
  gpu->to(Device::cuda);
  qx::Rng rng(4);
  const auto x = Tensor<float>::randn({2, 1, 32, 32}, rng);
  const auto maps_cpu = qx::explain::explain(*cpu, x), maps_gpu = qx::explain::explain(*gpu, x.to(Device::cuda));
  for (auto m : qx::explain::all_methods()) {
    CAPTURE(qx::explain::to_string(m));
    expect_close(maps_gpu.map(m), maps_cpu.map(m), "map");
  }
}

int main(int argc, char** argv) {
  if (!qx::cuda::available()) {
    std::printf("SKIPPED: CPU-GPU parity tests need a GPU: %s\n", qx::cuda::unavailable_reason().c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
