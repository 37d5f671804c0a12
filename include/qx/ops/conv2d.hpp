// conv2d: PyTorch's cross-correlation with zero padding, NCHW:
//   y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q] · x[n, c, i·s_h + p − pad_h, j·s_w + q − pad_w]
// The arithmetic is in kernels/conv2d.hpp (im2col + GEMM), kernels/winograd.hpp (F(4×4, 3×3)) and
// kernels/direct_conv3x3.hpp (narrow 3×3 layers), chosen per pass by kernels/conv2d_algorithm.hpp; this
// file adds shape checks and autograd.
// With an epilogue, z = relu(y + residual) (either part optional) is computed as the convolution stores
// y — one pass over the feature map instead of three — and recorded as the ops it replaces.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/conv2d.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/conv2d.hpp"
#include "qx/kernels/conv2d_algorithm.hpp"
#include "qx/ops/add.hpp"
#include "qx/ops/relu.hpp"

QX_NAMESPACE_BEGIN
namespace ops {

struct Conv2dOptions {
  Index stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};

/// What follows the convolution, fused into its store: z = relu(y + residual), the residual (the
/// output's shape) and the ReLU each optional. A frozen ResNet's "conv → bn → add shortcut → relu".
template <class T>
struct Conv2dEpilogue {
  Tensor<T> residual;
  bool relu = false;
};

namespace detail {
template <class T>
class Conv2dNode final : public autograd::Node<T> {
 public:
  Conv2dNode(kernels::Conv2dShape shape, Tensor<T> x, Tensor<T> weight, bool has_bias)
      : shape_(shape), x_(std::move(x)), weight_(std::move(weight)), has_bias_(has_bias) {}
  const char* name() const override { return "conv2d"; }
  bool handles_replicas() const override { return true; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();  // (N, C_out, H_out, W_out), or (replicas·N, …)
    Tensor<T> gx, gw, gb;
    check(this->replicas() == 1 || !(this->needs_input_grad(1) || this->needs_input_grad(2)),
          "conv2d: parameter gradients cannot be taken with replicated gradients");
    if (this->needs_input_grad(0)) {
      kernels::Conv2dShape replicated = shape_;  // the input gradient needs only the weight: any batch
      replicated.n = g.size(0);
      gx = Tensor<T>::empty({replicated.n, shape_.c_in, shape_.h, shape_.w}, g.device());
      dispatch(g.device(), "conv2d", [&] { kernels::conv2d_backward_input_auto(replicated, g.data(), weight_.data(), gx.data()); },
               [&] { backends::cuda::conv2d_backward_input(replicated, g.data(), weight_.data(), gx.data()); });
    }
    const bool want_bias = has_bias_ && this->needs_input_grad(2);
    if (this->needs_input_grad(1) || want_bias) {
      if (this->needs_input_grad(1)) gw = Tensor<T>::empty(weight_.shape(), g.device());
      if (want_bias) gb = Tensor<T>::empty({shape_.c_out}, g.device());
      check(!gw.defined() || x_.defined(), "conv2d: the weight gradient needs the input, which was not saved (weight did not require grad)");
      T* grad_bias = want_bias ? gb.data() : nullptr;
      dispatch(g.device(), "conv2d", [&] {
        if (gw.defined()) kernels::conv2d_backward_weight_auto(shape_, x_.data(), g.data(), gw.data(), grad_bias);
        else kernels::conv2d_backward_bias(shape_, g.data(), gb.data());
      }, [&] { backends::cuda::conv2d_backward_weight(shape_, x_.data(), g.data(), gw.defined() ? gw.data() : nullptr, grad_bias); });
    }
    return {gx, gw, gb};
  }
  void release() override { x_ = weight_ = {}; }

 private:
  kernels::Conv2dShape shape_;
  Tensor<T> x_, weight_;
  bool has_bias_;
};
}  // namespace detail

/**
 * 2-D convolution; x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out) or undefined; then
 * `epilogue`'s residual add and ReLU, done as the output is stored. The graph is the one of the separate
 * ops — "conv2d", then "add" (with a residual), then "relu" — with the same saved tensors, so gradients,
 * backward hooks on "relu" nodes (guided backprop) and replica walks are exactly theirs; the values
 * between the ops are never stored (no node reads them).
 */
template <class T>
Tensor<T> conv2d(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, const Conv2dOptions& o,
                 const Conv2dEpilogue<T>& epilogue) {
  check(x.dim() == 4, "conv2d: input must be (N, C, H, W), got ", shape_str(x.shape()));
  check(weight.dim() == 4, "conv2d: weight must be (C_out, C_in, kH, kW), got ", shape_str(weight.shape()));
  check(x.size(1) == weight.size(1), "conv2d: input ", shape_str(x.shape()), " has ", x.size(1),
        " channels but weight ", shape_str(weight.shape()), " expects ", weight.size(1));
  check(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), "conv2d: bias ",
        shape_str(bias.shape()), " does not fit weight ", shape_str(weight.shape()));
  check(o.stride_h > 0 && o.stride_w > 0 && o.pad_h >= 0 && o.pad_w >= 0, "conv2d: stride (", o.stride_h, ", ",
        o.stride_w, ") must be positive and padding (", o.pad_h, ", ", o.pad_w, ") non-negative");
  check(x.device() == weight.device() && (!bias.defined() || bias.device() == x.device()), "conv2d: input on ", x.device(),
        " but weight on ", weight.device(), bias.defined() ? " and bias on " : "", bias.defined() ? to_string(bias.device()) : "");
  kernels::Conv2dShape s{x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(2), weight.size(3),
                         o.stride_h, o.stride_w, o.pad_h, o.pad_w};
  check(s.out_h() > 0 && s.out_w() > 0, "conv2d: input ", shape_str(x.shape()), " with padding (", o.pad_h, ", ",
        o.pad_w, ") is smaller than kernel ", shape_str(weight.shape()));
  const Tensor<T>& residual = epilogue.residual;
  const Shape out_shape{s.n, s.c_out, s.out_h(), s.out_w()};
  if (residual.defined())
    check(residual.shape() == out_shape && residual.device() == x.device(), "conv2d: residual ", shape_str(residual.shape()),
          " on ", residual.device(), " does not fit the output ", shape_str(out_shape), " on ", x.device());
  const Tensor<T> xc = x.contiguous(), wc = weight.contiguous(), bc = bias.defined() ? bias.contiguous() : Tensor<T>();
  const Tensor<T> rc = residual.defined() ? residual.contiguous() : Tensor<T>();
  auto y = Tensor<T>::empty(out_shape, x.device());
  const T* b = bc.defined() ? bc.data() : nullptr;
  const kernels::ConvOutputStage<T> stage{rc.defined() ? rc.data() : nullptr, epilogue.relu};
  dispatch(x.device(), "conv2d", [&] { kernels::conv2d_forward_auto(s, xc.data(), wc.data(), b, y.data(), stage); },
           [&] { backends::cuda::conv2d_forward(s, xc.data(), wc.data(), b, y.data(), stage); });
  if (!autograd::any_requires_grad<T>({&x, &weight, &bias, &residual})) return y;
  // Each op's node on its own view of y's storage (the values between the ops are never stored and no
  // node reads them); the last view is the result. The input is kept only for the weight gradient:
  // attribution through folded (constant) weights saves none of the activations.
  Tensor<T> h = autograd::make_result(y.detach(), {&x, &weight, &bias},
                                      std::make_shared<detail::Conv2dNode<T>>(s, weight.requires_grad() ? xc.detach() : Tensor<T>(),
                                                                              wc.detach(), bias.defined()));
  if (residual.defined()) h = autograd::make_result(y.detach(), {&h, &residual}, std::make_shared<detail::AddNode<T>>());
  if (epilogue.relu) h = autograd::make_result(y.detach(), {&h}, std::make_shared<detail::ReluNode<T>>(y.detach()));
  return h;
}

/// 2-D convolution; x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out) or undefined.
template <class T>
Tensor<T> conv2d(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, const Conv2dOptions& o) {
  return conv2d(x, weight, bias, o, Conv2dEpilogue<T>{});
}

/// Square stride and padding.
template <class T>
Tensor<T> conv2d(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = {}, Index stride = 1,
                 Index padding = 0) {
  return conv2d(x, weight, bias, Conv2dOptions{stride, stride, padding, padding});
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_CONV2D(instance, T) \
  instance class detail::Conv2dNode<T>; \
  instance Tensor<T> conv2d<T>(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&, const Conv2dOptions&); \
  instance Tensor<T> conv2d<T>(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&, const Conv2dOptions&, const Conv2dEpilogue<T>&);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_CONV2D)
#undef QX_INSTANCES_OPS_CONV2D
