// batch_norm2d over (N, C, H, W), per channel, PyTorch semantics (eps 1e-5, momentum 0.1):
//   training: μ, σ² = mean and biased variance over (N, H, W); running ← (1 − m)·running + m·stat, with the
//             unbiased variance σ²·M/(M − 1) for running_var (M = N·H·W);
//   eval:     μ, σ² = running_mean, running_var.
//   y = γ·(x − μ)/√(σ² + eps) + β
// Backward (training), with x̂ = (x − μ)·inv_std and ĝ = g·γ, per channel over M elements:
//   ∂x = inv_std/M · (M·ĝ − Σĝ − x̂·Σ(ĝ·x̂)),  ∂γ = Σ g·x̂,  ∂β = Σ g.   In eval: ∂x = g·γ·inv_std.
// batch_norm2d_relu is z = max(y, 0) in the same passes: its backward first masks g by [y > 0] (y
// recomputed from the saved x by the same functor, so the mask is the forward's bit for bit), then
// applies the rule above — one pass and one tensor fewer than the two ops, forward and backward.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/batch_norm2d.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/kernels/prefetch.hpp"

#include <array>
#include <cmath>
#include <initializer_list>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
/// How far ahead of a channel's passes to prefetch: 4 KiB, one page (a 56×56 plane is three).
template <class T>
inline constexpr Index prefetch_elements = 4096 / static_cast<Index>(sizeof(T));

template <class T>
class BatchNorm2dNode final : public autograd::Node<T> {
 public:
  BatchNorm2dNode(Tensor<T> x, Tensor<T> gamma, Tensor<T> beta, Tensor<T> mean, Tensor<T> inv_std, bool training,
                  bool fused_relu)
      : x_(std::move(x)), gamma_(std::move(gamma)), beta_(std::move(beta)), mean_(std::move(mean)),
        inv_std_(std::move(inv_std)), training_(training), fused_relu_(fused_relu) {}
  const char* name() const override { return fused_relu_ ? "batch_norm2d_relu" : "batch_norm2d"; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const bool want_x = this->needs_input_grad(0), want_w = this->needs_input_grad(1), want_b = this->needs_input_grad(2);
    // ∂x written over g when no other tensor sees g (the engine's own gradient; relu_grad's rule): the
    // second pass below then writes lines the first just read, where a fresh ∂x would also stream a
    // tensor of new memory in. Each element is read before it is written, at the same index. CPU only:
    // the CUDA kernel has not been run in place.
    const bool overwrite = want_x && grad_output.device() == Device::cpu && !this->has_backward_hooks() &&
                           grad_output.is_sole_owner() && grad_output.is_contiguous();
    const Tensor<T> g = grad_output.contiguous();  // grad_output itself when it is to be overwritten
    const Index n = x_.size(0), c = x_.size(1), plane = x_.size(2) * x_.size(3);
    const double m = static_cast<double>(n * plane);
    Tensor<T> gx, gw, gb;
    const Device device = g.device();
    if (want_x) gx = overwrite ? grad_output : Tensor<T>::empty(x_.shape(), device);
    if (want_w) gw = Tensor<T>::empty({c}, device);
    if (want_b) gb = Tensor<T>::empty({c}, device);
    dispatch(device, name(), [&] {
      const T* xp = x_.data();
      const T* gp = g.data();
      const bool relu = fused_relu_;
      parallel_for(0, c, [&](Index ch) {
        const T mu = mean_.data()[ch], is = inv_std_.data()[ch], gamma = gamma_.data()[ch], beta = beta_.data()[ch];
        // The gradient reaching the batch norm: g, or g·[y > 0] behind the fused ReLU. The lambdas below
        // capture by value: captured by reference, GCC reloaded each scalar per element inside lane_sums
        // (as broadcast gathers) and kept the accumulators in memory.
        auto g_at = [relu, mu, is, gamma, beta](const T* xs, const T* gs, Index k) {
          return relu ? kernels::ReluGrad{}(gs[k], kernels::BatchNormNormalize{}(xs[k], mu, is, gamma, beta)) : gs[k];
        };
        // Σ g and Σ g·x̂ over (N, H, W), in one pass; it reads x and g from memory, the pass below from cache.
        const T* x_channel = xp + ch * plane;
        const T* g_channel = gp + ch * plane;
        const Index stride = c * plane;
        const auto sums = kernels::plane_lane_sums<T, 2>(
            n, plane,
            [g_at, x_channel, g_channel, stride, mu, is](Index b, Index k) {
              const T* xs = x_channel + b * stride;
              const T gk = g_at(xs, g_channel + b * stride, k);
              return std::array<T, 2>{gk, gk * (xs[k] - mu) * is};
            },
            kernels::detail::ChannelAhead<T, 2>({x_channel, g_channel}, stride, n, plane, prefetch_elements<T>));
        const double sum_g = sums[0], sum_gx = sums[1];
        if (want_w) gw.data()[ch] = static_cast<T>(sum_gx);
        if (want_b) gb.data()[ch] = static_cast<T>(sum_g);
        if (!want_x) return;
        const T scale = gamma * is;
        const T mean_g = training_ ? static_cast<T>(sum_g / m) : T(0);
        const T mean_gx = training_ ? static_cast<T>(sum_gx / m) : T(0);
        for (Index b = 0; b < n; ++b) {
          const T* xs = xp + (b * c + ch) * plane;
          const T* gs = gp + (b * c + ch) * plane;
          T* out = gx.data() + (b * c + ch) * plane;
          for (Index k = 0; k < plane; ++k) out[k] = scale * (g_at(xs, gs, k) - mean_g - (xs[k] - mu) * is * mean_gx);
        }
      }, n * plane, 4096);
    }, [&] {
      const backends::cuda::BatchNormTerms<T> bn{x_.data(), mean_.data(), inv_std_.data(), gamma_.data(), beta_.data(),
                                                 n, c, plane, fused_relu_};
      backends::cuda::batch_norm2d_backward(bn, g.data(), training_, want_x ? gx.data() : nullptr, want_w ? gw.data() : nullptr,
                                            want_b ? gb.data() : nullptr);
    });
    return {gx, gw, gb};
  }
  void release() override { x_ = gamma_ = beta_ = {}; }

 private:
  Tensor<T> x_, gamma_, beta_;
  Tensor<T> mean_, inv_std_;  // (C) each, on x's device
  bool training_, fused_relu_;
};

template <class T>
Tensor<T> batch_norm2d_impl(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, Tensor<T>& running_mean,
                            Tensor<T>& running_var, bool training, double momentum, double eps, bool relu) {
  check(x.dim() == 4, "batch_norm2d: input must be (N, C, H, W), got ", shape_str(x.shape()));
  const Index n = x.size(0), c = x.size(1), plane = x.size(2) * x.size(3);
  for (const Tensor<T>* p : std::initializer_list<const Tensor<T>*>{&weight, &bias, &running_mean, &running_var})
    check(p->defined() && p->dim() == 1 && p->size(0) == c, "batch_norm2d: input ", shape_str(x.shape()),
          " has ", c, " channels but a parameter or running statistic has shape ", shape_str(p->shape()));
  check(!training || n * plane > 1, "batch_norm2d: training needs more than one value per channel, got input ",
        shape_str(x.shape()));
  for (const Tensor<T>* p : std::initializer_list<const Tensor<T>*>{&weight, &bias, &running_mean, &running_var})
    check(p->device() == x.device(), "batch_norm2d: input on ", x.device(), " but a parameter or running statistic on ",
          p->device());
  const Tensor<T> xc = x.contiguous();
  const T* xp = xc.data();
  const Device device = x.device();
  auto mean = Tensor<T>::empty({c}, device), inv_std = Tensor<T>::empty({c}, device);
  auto y = Tensor<T>::empty(x.shape(), device);
  const Tensor<T> wc = weight.contiguous(), bc = bias.contiguous();
  dispatch(device, relu ? "batch_norm2d_relu" : "batch_norm2d", [&] {
    const double m = static_cast<double>(n * plane);
    parallel_for(0, c, [&](Index ch) {
      double mu, var;
      if (training) {
        double s = 0;
        for (Index b = 0; b < n; ++b) {
          const T* xs = xp + (b * c + ch) * plane;
          s += kernels::lane_sum<T>(plane, [xs](Index k) { return xs[k]; });
        }
        mu = s / m;
        double ss = 0;  // two-pass variance: no cancellation for large means
        const T mu_t = static_cast<T>(mu);
        for (Index b = 0; b < n; ++b) {
          const T* xs = xp + (b * c + ch) * plane;
          ss += kernels::lane_sum<T>(plane, [xs, mu_t](Index k) { return (xs[k] - mu_t) * (xs[k] - mu_t); });
        }
        var = ss / m;
        running_mean.data()[ch] = static_cast<T>((1 - momentum) * running_mean.data()[ch] + momentum * mu);
        running_var.data()[ch] = static_cast<T>((1 - momentum) * running_var.data()[ch] + momentum * var * m / (m - 1));
      } else {
        mu = running_mean.data()[ch];
        var = running_var.data()[ch];
      }
      mean.data()[ch] = static_cast<T>(mu);
      inv_std.data()[ch] = static_cast<T>(1.0 / std::sqrt(var + eps));
    }, n * plane, 4096);
    T* yp = y.data();
    const T *gamma = wc.data(), *beta = bc.data();
    parallel_for(0, n * c, [&](Index image_channel) {
      const Index ch = image_channel % c;
      const T* xs = xp + image_channel * plane;
      T* ys = yp + image_channel * plane;
      const T mu = mean.data()[ch], is = inv_std.data()[ch], g = gamma[ch], b = beta[ch];
      if (relu) {
        for (Index k = 0; k < plane; ++k) ys[k] = kernels::Relu{}(kernels::BatchNormNormalize{}(xs[k], mu, is, g, b));
      } else {
        for (Index k = 0; k < plane; ++k) ys[k] = kernels::BatchNormNormalize{}(xs[k], mu, is, g, b);
      }
    }, plane, 4096);
  }, [&] {
    const backends::cuda::BatchNormTerms<T> bn{xp, mean.data(), inv_std.data(), wc.data(), bc.data(), n, c, plane, relu};
    backends::cuda::batch_norm2d_forward(bn, mean.data(), inv_std.data(), running_mean.data(), running_var.data(), training,
                                         momentum, eps, y.data());
  });
  if (!autograd::any_requires_grad<T>({&x, &weight, &bias})) return y;
  return autograd::make_result(y, {&x, &weight, &bias},
                               std::make_shared<BatchNorm2dNode<T>>(xc.detach(), wc.detach(), bc.detach(), std::move(mean),
                                                                    std::move(inv_std), training, relu));
}
}  // namespace detail

/// Batch normalisation of x (N, C, H, W) with γ = weight (C), β = bias (C); updates the running
/// statistics in place when training.
template <class T>
Tensor<T> batch_norm2d(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, Tensor<T>& running_mean,
                       Tensor<T>& running_var, bool training, double momentum = 0.1, double eps = 1e-5) {
  return detail::batch_norm2d_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, false);
}

/// relu(batch_norm2d(…)) as one op (node "batch_norm2d_relu"): the pair every ResNet block trains with,
/// in one pass over memory each way. Guided backprop hooks "relu" nodes, so attribution uses the pair.
template <class T>
Tensor<T> batch_norm2d_relu(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, Tensor<T>& running_mean,
                            Tensor<T>& running_var, bool training, double momentum = 0.1, double eps = 1e-5) {
  return detail::batch_norm2d_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, true);
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_BATCH_NORM2D(instance, T) \
  instance class detail::BatchNorm2dNode<T>; \
  instance Tensor<T> detail::batch_norm2d_impl<T>(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&, Tensor<T>&, \
                                                 Tensor<T>&, bool, double, double, bool);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_BATCH_NORM2D)
#undef QX_INSTANCES_OPS_BATCH_NORM2D
