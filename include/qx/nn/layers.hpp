// The layers of a ResNet as modules, each a thin owner of parameters around one qx::ops function.
// Parameter names and initialisation follow torch.nn / torchvision: conv weights kaiming-normal
// (fan_out, ReLU gain), batch norm γ = 1, β = 0, linear U(−1/√fan_in, 1/√fan_in).
#pragma once
#include "qx/config.hpp"
#include "qx/core/random.hpp"
#include "qx/nn/module.hpp"
#include "qx/ops/ops.hpp"

#include <cmath>
#include <memory>
#include <string>

QX_NAMESPACE_BEGIN
namespace nn {

template <class T>
class Conv2d final : public Module<T> {
 public:
  Conv2d(Index in_channels, Index out_channels, Index kernel, Index stride, Index padding, bool with_bias, Rng& rng)
      : stride_(stride), padding_(padding) {
    // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = √(2 / (C_out·k·k))
    weight = Tensor<T>::randn({out_channels, in_channels, kernel, kernel}, rng, 0.0,
                              std::sqrt(2.0 / static_cast<double>(out_channels * kernel * kernel)));
    this->register_parameter("weight", weight);
    if (with_bias) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * kernel * kernel));
      this->bias = Tensor<T>::uniform({out_channels}, rng, -bound, bound);
      this->register_parameter("bias", this->bias);
    }
  }
  Tensor<T> forward(const Tensor<T>& x) override { return ops::conv2d(x, weight, bias, stride_, padding_); }
  Index stride() const noexcept { return stride_; }
  Index padding() const noexcept { return padding_; }

  Tensor<T> weight;  // (C_out, C_in, k, k)
  Tensor<T> bias;    // (C_out) or undefined

 private:
  Index stride_, padding_;
};

template <class T>
class BatchNorm2d final : public Module<T> {
 public:
  explicit BatchNorm2d(Index channels, double momentum = 0.1, double eps = 1e-5) : momentum_(momentum), eps_(eps) {
    weight = Tensor<T>::ones({channels});
    bias = Tensor<T>::zeros({channels});
    running_mean = Tensor<T>::zeros({channels});
    running_var = Tensor<T>::ones({channels});
    num_batches_tracked = Tensor<T>::zeros({});
    this->register_parameter("weight", weight);
    this->register_parameter("bias", bias);
    this->register_buffer("running_mean", running_mean);
    this->register_buffer("running_var", running_var);
    this->register_buffer("num_batches_tracked", num_batches_tracked, true);
  }
  Tensor<T> forward(const Tensor<T>& x) override { return normalize(x, false); }
  /// relu(forward(x)) as one fused op when `relu` (ResNet blocks in training; see nn/conv_bn.hpp).
  Tensor<T> forward_relu_or_plain(const Tensor<T>& x, bool relu) { return normalize(x, relu); }
  double eps() const noexcept { return eps_; }

  Tensor<T> weight, bias, running_mean, running_var;  // (C)
  Tensor<T> num_batches_tracked;                      // () counter, saved as I64

 private:
  Tensor<T> normalize(const Tensor<T>& x, bool relu) {
    if (this->is_training()) num_batches_tracked.fill_(num_batches_tracked.item() + T(1));  // either device
    return relu ? ops::batch_norm2d_relu(x, weight, bias, running_mean, running_var, this->is_training(), momentum_, eps_)
                : ops::batch_norm2d(x, weight, bias, running_mean, running_var, this->is_training(), momentum_, eps_);
  }
  double momentum_, eps_;
};

template <class T>
class ReLU final : public Module<T> {
 public:
  Tensor<T> forward(const Tensor<T>& x) override { return ops::relu(x); }
};

template <class T>
class MaxPool2d final : public Module<T> {
 public:
  MaxPool2d(Index kernel, Index stride, Index padding) : kernel_(kernel), stride_(stride), padding_(padding) {}
  Tensor<T> forward(const Tensor<T>& x) override { return ops::max_pool2d(x, kernel_, stride_, padding_); }

 private:
  Index kernel_, stride_, padding_;
};

template <class T>
class AdaptiveAvgPool2d final : public Module<T> {
 public:
  AdaptiveAvgPool2d(Index out_h, Index out_w) : out_h_(out_h), out_w_(out_w) {}
  Tensor<T> forward(const Tensor<T>& x) override { return ops::adaptive_avg_pool2d(x, out_h_, out_w_); }

 private:
  Index out_h_, out_w_;
};

template <class T>
class Flatten final : public Module<T> {
 public:
  Tensor<T> forward(const Tensor<T>& x) override { return ops::flatten(x, 1); }
};

template <class T>
class Linear final : public Module<T> {
 public:
  Linear(Index in_features, Index out_features, Rng& rng) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    weight = Tensor<T>::uniform({out_features, in_features}, rng, -bound, bound);
    bias = Tensor<T>::uniform({out_features}, rng, -bound, bound);
    this->register_parameter("weight", weight);
    this->register_parameter("bias", bias);
  }
  Tensor<T> forward(const Tensor<T>& x) override { return ops::linear(x, weight, bias); }

  Tensor<T> weight;  // (out, in)
  Tensor<T> bias;    // (out)
};

/// Children named "0", "1", … run in order.
template <class T>
class Sequential final : public Module<T> {
 public:
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    layers_.push_back(module);
    return this->register_module(std::to_string(layers_.size() - 1), std::move(module));
  }
  Tensor<T> forward(const Tensor<T>& x) override {
    Tensor<T> h = x;
    for (auto& layer : layers_) h = (*layer)(h);
    return h;
  }
  std::size_t size() const noexcept { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Module<T>>> layers_;
};

}  // namespace nn
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_NN_LAYERS(instance, T) \
  instance class Conv2d<T>; \
  instance class BatchNorm2d<T>; \
  instance class Linear<T>; \
  instance class Sequential<T>;
QX_DECLARE_INSTANCES(nn, QX_INSTANCES_NN_LAYERS)
#undef QX_INSTANCES_NN_LAYERS
