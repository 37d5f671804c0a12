// ResNet-18/34/50 (He et al. 2016) in torchvision's layout (v1.5: the stride sits on the 3×3 conv of a
// bottleneck), with the number of input channels, of classes and the base width as arguments. Module and
// parameter names are torchvision's, so its state_dict loads by name. Each conv → batch norm (→ add
// shortcut) (→ ReLU) runs through nn::conv_bn (fused in training, folded into the
// convolution and its store in frozen eval). Outside training every ReLU use — including the one after
// each residual add — is a separate "relu" node in the graph, the node guided backprop rewrites; in
// training the residual add and its ReLU are one op (ops::add_relu).
#pragma once
#include "qx/config.hpp"
#include "qx/nn/conv_bn.hpp"
#include "qx/nn/layers.hpp"
#include "qx/nn/module.hpp"

#include <memory>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace nn {

namespace detail {
/// The shortcut of a residual block: x itself, or its 1×1 conv → batch norm (run through conv_bn).
template <class T>
struct Shortcut {
  std::shared_ptr<Sequential<T>> sequence;  // registered as "downsample": children "0" (conv) and "1" (bn)
  std::shared_ptr<Conv2d<T>> conv;
  std::shared_ptr<BatchNorm2d<T>> bn;

  /// Fills `downsample` (already registered by the block) with the 1×1 conv and its batch norm.
  void make(std::shared_ptr<Sequential<T>> downsample, Index in_planes, Index out_planes, Index stride, Rng& rng) {
    sequence = std::move(downsample);
    conv = sequence->push_back(std::make_shared<Conv2d<T>>(in_planes, out_planes, 1, stride, 0, false, rng));
    bn = sequence->push_back(std::make_shared<BatchNorm2d<T>>(out_planes));
  }
  Tensor<T> operator()(const Tensor<T>& x) {
    if (!sequence) return x;
    if (sequence->has_forward_hooks()) return (*sequence)(x);
    return conv_bn(*conv, *bn, x, false);
  }
};

}  // namespace detail

/// Two 3×3 convolutions: y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
template <class T>
class BasicBlock final : public Module<T> {
 public:
  static constexpr Index expansion = 1;
  BasicBlock(Index in_planes, Index planes, Index stride, Rng& rng) {
    conv1 = this->register_module("conv1", std::make_shared<Conv2d<T>>(in_planes, planes, 3, stride, 1, false, rng));
    bn1 = this->register_module("bn1", std::make_shared<BatchNorm2d<T>>(planes));
    conv2 = this->register_module("conv2", std::make_shared<Conv2d<T>>(planes, planes, 3, 1, 1, false, rng));
    bn2 = this->register_module("bn2", std::make_shared<BatchNorm2d<T>>(planes));
    if (stride != 1 || in_planes != planes) shortcut.make(this->register_module("downsample", std::make_shared<Sequential<T>>()), in_planes, planes, stride, rng);
  }
  Tensor<T> forward(const Tensor<T>& x) override {
    const auto h = conv_bn(*conv1, *bn1, x, true);
    return conv_bn(*conv2, *bn2, h, true, shortcut(x));
  }
  std::shared_ptr<Conv2d<T>> conv1, conv2;
  std::shared_ptr<BatchNorm2d<T>> bn1, bn2;
  detail::Shortcut<T> shortcut;
};

/// 1×1 reduce, 3×3 (strided), 1×1 expand ×4: y = relu(bn3(conv3(…)) + shortcut(x)).
template <class T>
class Bottleneck final : public Module<T> {
 public:
  static constexpr Index expansion = 4;
  Bottleneck(Index in_planes, Index planes, Index stride, Rng& rng) {
    conv1 = this->register_module("conv1", std::make_shared<Conv2d<T>>(in_planes, planes, 1, 1, 0, false, rng));
    bn1 = this->register_module("bn1", std::make_shared<BatchNorm2d<T>>(planes));
    conv2 = this->register_module("conv2", std::make_shared<Conv2d<T>>(planes, planes, 3, stride, 1, false, rng));
    bn2 = this->register_module("bn2", std::make_shared<BatchNorm2d<T>>(planes));
    conv3 = this->register_module("conv3", std::make_shared<Conv2d<T>>(planes, planes * expansion, 1, 1, 0, false, rng));
    bn3 = this->register_module("bn3", std::make_shared<BatchNorm2d<T>>(planes * expansion));
    if (stride != 1 || in_planes != planes * expansion) shortcut.make(this->register_module("downsample", std::make_shared<Sequential<T>>()), in_planes, planes * expansion, stride, rng);
  }
  Tensor<T> forward(const Tensor<T>& x) override {
    auto h = conv_bn(*conv1, *bn1, x, true);
    h = conv_bn(*conv2, *bn2, h, true);
    return conv_bn(*conv3, *bn3, h, true, shortcut(x));
  }
  std::shared_ptr<Conv2d<T>> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm2d<T>> bn1, bn2, bn3;
  detail::Shortcut<T> shortcut;
};

/// The architecture of a ResNet: block kind and blocks per stage.
struct ResNetSpec {
  std::string arch;
  bool bottleneck;
  std::vector<Index> blocks;  // per stage, 4 stages
};

inline ResNetSpec resnet_spec(const std::string& arch) {
  if (arch == "resnet18") return {arch, false, {2, 2, 2, 2}};
  if (arch == "resnet34") return {arch, false, {3, 4, 6, 3}};
  if (arch == "resnet50") return {arch, true, {3, 4, 6, 3}};
  fail("unknown architecture '", arch, "' (expected resnet18, resnet34 or resnet50)");
}

/**
 * @brief conv1 7×7/2 → bn1 → relu → maxpool 3×3/2 → layer1…layer4 → avgpool → fc.
 * Stage widths are width·(1, 2, 4, 8) (·4 after a bottleneck); torchvision's is width = 64.
 */
template <class T>
class ResNet final : public Module<T> {
 public:
  ResNet(const ResNetSpec& spec, Index in_channels, Index num_classes, Index width, std::uint64_t seed)
      : spec_(spec), in_channels_(in_channels), num_classes_(num_classes), width_(width) {
    check(in_channels > 0 && num_classes > 0 && width > 0, spec.arch, ": in_channels (", in_channels, "), num_classes (",
          num_classes, ") and width (", width, ") must be positive");
    Rng rng(seed);
    conv1 = this->register_module("conv1", std::make_shared<Conv2d<T>>(in_channels, width, 7, 2, 3, false, rng));
    bn1 = this->register_module("bn1", std::make_shared<BatchNorm2d<T>>(width));
    this->register_module("relu", std::make_shared<ReLU<T>>());
    this->register_module("maxpool", std::make_shared<MaxPool2d<T>>(3, 2, 1));
    Index in_planes = width;
    const Index expansion = spec.bottleneck ? Bottleneck<T>::expansion : BasicBlock<T>::expansion;
    for (std::size_t stage = 0; stage < 4; ++stage) {
      auto layer = std::make_shared<Sequential<T>>();
      const Index planes = width << stage;
      for (Index b = 0; b < spec.blocks[stage]; ++b) {
        const Index stride = (stage > 0 && b == 0) ? 2 : 1;
        if (spec.bottleneck) layer->push_back(std::make_shared<Bottleneck<T>>(in_planes, planes, stride, rng));
        else layer->push_back(std::make_shared<BasicBlock<T>>(in_planes, planes, stride, rng));
        in_planes = planes * expansion;
      }
      layers[stage] = this->register_module("layer" + std::to_string(stage + 1), layer);
    }
    this->register_module("avgpool", std::make_shared<AdaptiveAvgPool2d<T>>(1, 1));
    fc = this->register_module("fc", std::make_shared<Linear<T>>(in_planes, num_classes, rng));
  }

  Tensor<T> forward(const Tensor<T>& x) override {
    check(x.dim() == 4 && x.size(1) == in_channels_, spec_.arch, ": expected input (N, ", in_channels_,
          ", H, W), got ", shape_str(x.shape()));
    auto h = this->submodule("maxpool")(conv_bn(*conv1, *bn1, x, true));
    for (auto& layer : layers) h = (*layer)(h);
    return (*fc)(ops::flatten(this->submodule("avgpool")(h)));
  }

  const ResNetSpec& spec() const noexcept { return spec_; }
  Index in_channels() const noexcept { return in_channels_; }
  Index num_classes() const noexcept { return num_classes_; }
  Index width() const noexcept { return width_; }

  std::shared_ptr<Conv2d<T>> conv1;
  std::shared_ptr<BatchNorm2d<T>> bn1;
  std::shared_ptr<Sequential<T>> layers[4];
  std::shared_ptr<Linear<T>> fc;

 private:
  ResNetSpec spec_;
  Index in_channels_, num_classes_, width_;
};

/// A ResNet by name ("resnet18", "resnet34", "resnet50"); weights drawn from `seed`.
template <class T>
std::unique_ptr<ResNet<T>> make_resnet(const std::string& arch, Index in_channels, Index num_classes, Index width = 64,
                                       std::uint64_t seed = 0) {
  return std::make_unique<ResNet<T>>(resnet_spec(arch), in_channels, num_classes, width, seed);
}
template <class T>
std::unique_ptr<ResNet<T>> resnet18(Index in_channels, Index num_classes, Index width = 64, std::uint64_t seed = 0) {
  return make_resnet<T>("resnet18", in_channels, num_classes, width, seed);
}
template <class T>
std::unique_ptr<ResNet<T>> resnet34(Index in_channels, Index num_classes, Index width = 64, std::uint64_t seed = 0) {
  return make_resnet<T>("resnet34", in_channels, num_classes, width, seed);
}
template <class T>
std::unique_ptr<ResNet<T>> resnet50(Index in_channels, Index num_classes, Index width = 64, std::uint64_t seed = 0) {
  return make_resnet<T>("resnet50", in_channels, num_classes, width, seed);
}

}  // namespace nn
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_NN_RESNET(instance, T) \
  instance class BasicBlock<T>; \
  instance class Bottleneck<T>; \
  instance class ResNet<T>; \
  instance std::unique_ptr<ResNet<T>> make_resnet<T>(const std::string&, Index, Index, Index, std::uint64_t);
QX_DECLARE_INSTANCES(nn, QX_INSTANCES_NN_RESNET)
#undef QX_INSTANCES_NN_RESNET
