// conv → batch norm (→ ReLU), the unit ResNets are built of, run the cheapest way that is exact:
//   training: the convolution, then batch norm and ReLU as one fused op (ops::batch_norm2d_relu);
//   eval with parameters frozen (FrozenParametersGuard — qx::explain — or NoGradGuard): batch norm folded
//     into the convolution,  s = γ/√(σ²_run + ε),  w' = w·s (per output channel),  b' = β − μ_run·s,
//     so conv(x, w') + b' = bn(conv(x, w)) up to rounding, for the output and for every input gradient;
//     the residual add and the ReLU are done as the convolution stores its output, recorded as their
//     own "add" and "relu" nodes (ops::Conv2dEpilogue), the nodes guided backprop rewrites; the folded
//     weights come from the thread's nn::WeightCache when one is active (nn/weight_cache.hpp);
//   otherwise (eval with parameter gradients possible, or a forward hook on either module): the modules
//     one after another, exactly as written.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/nn/layers.hpp"
#include "qx/nn/weight_cache.hpp"

QX_NAMESPACE_BEGIN
namespace nn {

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
    WeightCache<T>* cache = WeightCache<T>::active();
    const auto [weight, bias] = cache ? cache->folded(conv, bn) : detail::fold_batch_norm(conv, bn);
    const Index stride = conv.stride(), padding = conv.padding();
    return ops::conv2d(x, weight, bias, {stride, stride, padding, padding}, ops::Conv2dEpilogue<T>{residual, relu});
  }
  auto y = bn(conv(x));
  if (adds) y = ops::add(y, residual);
  return relu ? ops::relu(y) : y;
}

}  // namespace nn
QX_NAMESPACE_END
