// conv → batch norm (→ ReLU), the unit ResNets are built of, run the cheapest way that is exact:
//   training: the convolution, then batch norm and ReLU as one fused op (ops::batch_norm2d_relu);
//   eval with parameters frozen (FrozenParametersGuard — qx::explain — or NoGradGuard): batch norm folded
//     into the convolution,  s = γ/√(σ²_run + ε),  w' = w·s (per output channel),  b' = β − μ_run·s,
//     so conv(x, w') + b' = bn(conv(x, w)) up to rounding, for the output and for every input gradient;
//     the residual add and the ReLU are done as the convolution stores its output, recorded as their
//     own "add" and "relu" nodes (ops::Conv2dEpilogue), the nodes guided backprop rewrites;
//   otherwise (eval with parameter gradients possible, or a forward hook on either module): the modules
//     one after another, exactly as written.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/core/parallel.hpp"
#include "qx/nn/layers.hpp"

#include <cmath>

QX_NAMESPACE_BEGIN
namespace nn {

namespace detail {
/// The folded convolution's weight (C_out, C_in, k, k) and bias (C_out), constants (no autograd).
template <class T>
std::pair<Tensor<T>, Tensor<T>> fold_batch_norm(const Conv2d<T>& conv, const BatchNorm2d<T>& bn) {
  NoGradGuard no_grad;
  const Index c_out = conv.weight.size(0), per_channel = conv.weight.numel() / c_out;
  auto weight = Tensor<T>::empty(conv.weight.shape());
  auto bias = Tensor<T>::empty({c_out});
  // Folded once per forward on the host (C_out·K values); a model on a GPU gets the result back there.
  const Device device = conv.weight.device();
  auto host = [](const Tensor<T>& t) { return t.to(Device::cpu).contiguous(); };
  const Tensor<T> w = host(conv.weight), gamma = host(bn.weight), beta = host(bn.bias);
  const Tensor<T> mean = host(bn.running_mean), var = host(bn.running_var);
  const Tensor<T> conv_bias = conv.bias.defined() ? host(conv.bias) : Tensor<T>();
  parallel_for(0, c_out, [&](Index o) {
    const double scale = static_cast<double>(gamma.data()[o]) / std::sqrt(static_cast<double>(var.data()[o]) + bn.eps());
    const double shift = conv_bias.defined() ? static_cast<double>(conv_bias.data()[o]) : 0.0;
    const T* src = w.data() + o * per_channel;
    T* dst = weight.data() + o * per_channel;
    for (Index i = 0; i < per_channel; ++i) dst[i] = static_cast<T>(static_cast<double>(src[i]) * scale);
    bias.data()[o] = static_cast<T>(static_cast<double>(beta.data()[o]) + (shift - static_cast<double>(mean.data()[o])) * scale);
  }, per_channel);
  return {weight.to(device), bias.to(device)};
}
}  // namespace detail

/// bn(conv(x)) (+ residual, a residual block's shortcut, when defined), followed by relu when `relu`; see
/// the top of this file for which path runs (in training a residual add and its ReLU are ops::add_relu).
template <class T>
Tensor<T> conv_bn(Conv2d<T>& conv, BatchNorm2d<T>& bn, const Tensor<T>& x, bool relu, const Tensor<T>& residual = {}) {
  const bool hooked = conv.has_forward_hooks() || bn.has_forward_hooks(), adds = residual.defined();
  if (!hooked && bn.is_training()) {
    const auto y = bn.forward_relu_or_plain(conv(x), relu && !adds);
    if (!adds) return y;
    return relu ? ops::add_relu(y, residual) : ops::add(y, residual);
  }
  if (!hooked && (parameters_frozen() || !grad_enabled())) {
    const auto [weight, bias] = detail::fold_batch_norm(conv, bn);
    const Index stride = conv.stride(), padding = conv.padding();
    return ops::conv2d(x, weight, bias, {stride, stride, padding, padding}, ops::Conv2dEpilogue<T>{residual, relu});
  }
  auto y = bn(conv(x));
  if (adds) y = ops::add(y, residual);
  return relu ? ops::relu(y) : y;
}

}  // namespace nn
QX_NAMESPACE_END
