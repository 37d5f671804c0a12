// linear: y = x Wᵀ + b with x (N, in), W (out, in), b (out) — PyTorch's nn.Linear.
// Backward: ∂x = g W, ∂W = gᵀ x, ∂b = Σ_n g; each computed only when asked for.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/gemm.hpp"
#include "qx/backends/cuda/linear.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/gemm.hpp"

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
/// kernels::gemm on the CPU, cuBLAS on the GPU (α = 1).
template <class T>
void linear_gemm(Device device, bool trans_a, bool trans_b, Index m, Index n, Index k, const T* a, Index lda, const T* b,
                 Index ldb, T beta, T* c, Index ldc) {
  dispatch(device, "linear", [&] { kernels::gemm(trans_a, trans_b, m, n, k, T(1), a, lda, b, ldb, beta, c, ldc); },
           [&] { backends::cuda::gemm(trans_a, trans_b, m, n, k, T(1), a, lda, b, ldb, beta, c, ldc); });
}

template <class T>
class LinearNode final : public autograd::Node<T> {
 public:
  LinearNode(Tensor<T> x, Tensor<T> weight, bool has_bias) : x_(std::move(x)), weight_(std::move(weight)), has_bias_(has_bias) {}
  const char* name() const override { return "linear"; }
  bool handles_replicas() const override { return true; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();  // (N, out), or (replicas·N, out)
    const Index n = g.size(0), in = x_.size(1), out = weight_.size(0);
    check(this->replicas() == 1 || !(this->needs_input_grad(1) || this->needs_input_grad(2)),
          "linear: parameter gradients cannot be taken with replicated gradients");
    Tensor<T> gx, gw, gb;
    const Device device = g.device();
    if (this->needs_input_grad(0)) {  // (N, in) = (N, out)(out, in)
      gx = Tensor<T>::empty({n, in}, device);
      linear_gemm(device, false, false, n, in, out, g.data(), out, weight_.data(), in, T(0), gx.data(), in);
    }
    if (this->needs_input_grad(1)) {  // (out, in) = (N, out)ᵀ(N, in)
      gw = Tensor<T>::empty({out, in}, device);
      linear_gemm(device, true, false, out, in, n, g.data(), out, x_.data(), in, T(0), gw.data(), in);
    }
    if (has_bias_ && this->needs_input_grad(2)) {
      gb = Tensor<T>::zeros({out}, device);
      dispatch(device, "linear", [&] {
        for (Index r = 0; r < n; ++r)
          for (Index c = 0; c < out; ++c) gb.data()[c] += g.data()[r * out + c];
      }, [&] { backends::cuda::launch_on_device(backends::cuda::ColumnSums<T>{g.data(), gb.data(), n, out}); });
    }
    return {gx, gw, gb};
  }
  void release() override { x_ = weight_ = {}; }

 private:
  Tensor<T> x_, weight_;
  bool has_bias_;
};
}  // namespace detail

/// y = x Wᵀ + b;  x (N, in), weight (out, in), bias (out) or undefined.
template <class T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = {}) {
  check(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "linear: input ", shape_str(x.shape()),
        " does not fit weight ", shape_str(weight.shape()), " (expected input (N, ", weight.dim() == 2 ? weight.size(1) : -1, "))");
  check(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), "linear: bias ", shape_str(bias.shape()),
        " does not fit weight ", shape_str(weight.shape()));
  const Tensor<T> xc = x.contiguous(), wc = weight.contiguous();
  const Index n = x.size(0), in = x.size(1), out = weight.size(0);
  check(x.device() == weight.device() && (!bias.defined() || bias.device() == x.device()), "linear: input on ", x.device(),
        ", weight on ", weight.device(), bias.defined() ? ", bias on " : "", bias.defined() ? to_string(bias.device()) : "");
  auto y = Tensor<T>::empty({n, out}, x.device());
  if (bias.defined()) {
    const Tensor<T> bc = bias.contiguous();
    dispatch(x.device(), "linear", [&] { for (Index r = 0; r < n; ++r) std::copy_n(bc.data(), out, y.data() + r * out); },
             [&] { backends::cuda::launch_on_device(backends::cuda::BroadcastRows<T>{bc.data(), y.data(), n, out}); });
  }
  detail::linear_gemm(x.device(), false, true, n, out, in, xc.data(), in, wc.data(), in, bias.defined() ? T(1) : T(0), y.data(), out);
  if (!autograd::any_requires_grad<T>({&x, &weight, &bias})) return y;
  return autograd::make_result(y, {&x, &weight, &bias},
                               std::make_shared<detail::LinearNode<T>>(xc.detach(), wc.detach(), bias.defined()));
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_LINEAR(instance, T) \
  instance class detail::LinearNode<T>; \
  instance Tensor<T> linear<T>(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_LINEAR)
#undef QX_INSTANCES_OPS_LINEAR
