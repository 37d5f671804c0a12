// More attribution methods on the same machinery (input-only backwards seeded with one-hot targets):
//   gradient × input       x ⊙ ∂y_c/∂x
//   integrated gradients   (x − b) ⊙ (1/m) Σ_{k=1..m} ∂y_c/∂x |_{b + α_k (x − b)},  α_k = (k − ½)/m  (midpoint rule)
//                          completeness error Σ attribution − (y_c(x) − y_c(b))   (Sundararajan et al. 2017)
//   SmoothGrad             (1/n) Σ ∂y_c/∂x |_{x + ε_i},  ε_i ~ N(0, (σ·(max x − min x))²) per sample (Smilkov et al. 2017)
//   Grad-CAM++             w_k = Σ_ij a_kij·ReLU(g_kij),  a = g² / (2g² + Σ_ab A_kab · g³ + 10⁻⁶)  (0 where g = 0),
//                          map = ReLU(Σ_k w_k A_k)   (Chattopadhay et al. 2018, as pytorch-grad-cam computes it)
#pragma once
#include "qx/config.hpp"
#include "qx/explain/attribution.hpp"
#include "qx/nn/weight_cache.hpp"

#include <cmath>
#include <vector>

QX_NAMESPACE_BEGIN
namespace explain {

/// The logits and ∂y_c/∂x of each sample for fixed targets (or the predicted ones when empty).
template <class T>
struct InputGradient {
  Tensor<T> logits;            // (N, K)
  std::vector<Index> targets;  // (N)
  Tensor<T> grad;              // (N, C, H, W)
};

template <class T>
InputGradient<T> input_gradient(nn::Module<T>& model, const Tensor<T>& x, std::vector<Index> targets = {}) {
  check(x.dim() == 4, "input_gradient: input must be (N, C, H, W), got ", shape_str(x.shape()));
  detail::EvalScope<T> eval(model);
  nn::FrozenParametersGuard frozen;  // input gradients only: batch norm may fold into the convolutions
  Tensor<T> input = x.contiguous().clone().requires_grad_();
  Tensor<T> logits = model(input);
  if (targets.empty()) targets = detail::argmax_rows(logits.detach());
  detail::check_targets<T>(targets, x.size(0), logits.size(1));
  autograd::BackwardOptions<T> walk;
  walk.inputs = {input};
  autograd::backward(logits, detail::one_hot<T>(targets, logits.size(1)), walk);
  return {logits.detach().clone(), targets, input.grad().clone()};
}

/// x ⊙ ∂y_c/∂x.
template <class T>
Tensor<T> gradient_x_input(nn::Module<T>& model, const Tensor<T>& x, const std::vector<Index>& targets = {}) {
  auto g = input_gradient(model, x, targets);
  const Tensor<T> xc = x.contiguous();
  for (Index i = 0; i < xc.numel(); ++i) g.grad.data()[i] *= xc.data()[i];
  return g.grad;
}

template <class T>
struct IntegratedGradients {
  Tensor<T> attribution;                  // (N, C, H, W)
  std::vector<Index> targets;
  std::vector<double> completeness_error;  ///< per sample: Σ attribution − (y_c(x) − y_c(baseline))
};

/// Integrated gradients from `baseline` (undefined: zeros) with `steps` midpoint-rule steps.
template <class T>
IntegratedGradients<T> integrated_gradients(nn::Module<T>& model, const Tensor<T>& x, Index steps = 64,
                                            const Tensor<T>& baseline = {}, std::vector<Index> targets = {}) {
  check(steps > 0, "integrated_gradients: steps must be positive, got ", steps);
  const Tensor<T> xc = x.contiguous();
  const Tensor<T> base = baseline.defined() ? baseline.contiguous() : Tensor<T>::zeros(x.shape());
  check(base.shape() == x.shape(), "integrated_gradients: baseline ", shape_str(base.shape()), " differs from input ",
        shape_str(x.shape()));
  const nn::ScopedWeightCache<T> folded_once;  // every step runs the same frozen model
  if (targets.empty()) targets = input_gradient(model, x).targets;
  auto total = Tensor<T>::zeros(x.shape());
  auto point = Tensor<T>::empty(x.shape());
  for (Index k = 1; k <= steps; ++k) {
    const T alpha = static_cast<T>((static_cast<double>(k) - 0.5) / static_cast<double>(steps));
    for (Index i = 0; i < x.numel(); ++i) point.data()[i] = base.data()[i] + alpha * (xc.data()[i] - base.data()[i]);
    const auto g = input_gradient(model, point, targets);
    for (Index i = 0; i < x.numel(); ++i) total.data()[i] += g.grad.data()[i];
  }
  IntegratedGradients<T> out;
  out.targets = targets;
  out.attribution = total;
  for (Index i = 0; i < x.numel(); ++i)
    out.attribution.data()[i] *= (xc.data()[i] - base.data()[i]) / static_cast<T>(steps);
  // y_c at the two ends, for the completeness check.
  Tensor<T> y_x, y_b;
  {
    NoGradGuard no_grad;
    detail::EvalScope<T> eval(model);
    y_x = model(xc);
    y_b = model(base);
  }
  const Index n = x.size(0), per = x.numel() / n, k = y_x.size(1);
  for (Index s = 0; s < n; ++s) {
    double sum = 0;
    for (Index i = 0; i < per; ++i) sum += out.attribution.data()[s * per + i];
    const Index c = targets[static_cast<std::size_t>(s)];
    out.completeness_error.push_back(sum - (double(y_x.data()[s * k + c]) - double(y_b.data()[s * k + c])));
  }
  return out;
}

/// SmoothGrad: the mean input gradient over `samples` noisy copies; `noise_level` σ relative to each
/// sample's value range; seeded.
template <class T>
Tensor<T> smoothgrad(nn::Module<T>& model, const Tensor<T>& x, Index samples = 25, double noise_level = 0.15,
                     std::uint64_t seed = 0, std::vector<Index> targets = {}) {
  check(samples > 0 && noise_level >= 0, "smoothgrad: samples (", samples, ") must be positive and noise level (",
        noise_level, ") non-negative");
  const Tensor<T> xc = x.contiguous();
  const nn::ScopedWeightCache<T> folded_once;  // every noisy copy runs the same frozen model
  if (targets.empty()) targets = input_gradient(model, x).targets;
  const Index n = x.size(0), per = x.numel() / n;
  std::vector<double> sigma(static_cast<std::size_t>(n));
  for (Index s = 0; s < n; ++s) {
    const auto [lo, hi] = std::minmax_element(xc.data() + s * per, xc.data() + (s + 1) * per);
    sigma[static_cast<std::size_t>(s)] = noise_level * (double(*hi) - double(*lo));
  }
  Rng rng(seed);
  auto total = Tensor<T>::zeros(x.shape());
  auto noisy = Tensor<T>::empty(x.shape());
  for (Index k = 0; k < samples; ++k) {
    for (Index i = 0; i < x.numel(); ++i)
      noisy.data()[i] = xc.data()[i] + static_cast<T>(rng.normal(0.0, sigma[static_cast<std::size_t>(i / per)]));
    const auto g = input_gradient(model, noisy, targets);
    for (Index i = 0; i < x.numel(); ++i) total.data()[i] += g.grad.data()[i];
  }
  for (T& v : total.span()) v /= static_cast<T>(samples);
  return total;
}

/// Grad-CAM++ at `layer` (N, h, w), from one forward and one input-only backward.
template <class T>
Tensor<T> gradcam_pp(nn::Module<T>& model, const Tensor<T>& x, const std::string& layer = "layer4",
                     const std::vector<Index>& targets = {}) {
  const auto r = explain(model, x, ExplainOptions{{Method::gradcam_raw}, layer, targets});
  const Tensor<T>& a = r.activation;
  const Tensor<T>& g = r.activation_grad;
  const Index n = a.size(0), k = a.size(1), plane = a.size(2) * a.size(3);
  auto cam = Tensor<T>::zeros({n, a.size(2), a.size(3)});
  for (Index s = 0; s < n; ++s)
    for (Index c = 0; c < k; ++c) {
      const T* ac = a.data() + (s * k + c) * plane;
      const T* gc = g.data() + (s * k + c) * plane;
      double sum_a = 0;
      for (Index p = 0; p < plane; ++p) sum_a += ac[p];
      double weight = 0;
      for (Index p = 0; p < plane; ++p) {
        const double g1 = gc[p], g2 = g1 * g1, g3 = g2 * g1;
        const double denominator = 2 * g2 + sum_a * g3 + 1e-6;  // pytorch-grad-cam's ε
        const double alpha = g1 != 0 ? g2 / denominator : 0.0;
        weight += alpha * std::max(g1, 0.0);
      }
      T* out = cam.data() + s * plane;
      for (Index p = 0; p < plane; ++p) out[p] += static_cast<T>(weight) * ac[p];
    }
  for (T& v : cam.span()) v = v > T(0) ? v : T(0);
  return cam;
}

}  // namespace explain
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_EXPLAIN_METHODS(instance, T) \
  instance InputGradient<T> input_gradient<T>(nn::Module<T>&, const Tensor<T>&, std::vector<Index>); \
  instance IntegratedGradients<T> integrated_gradients<T>(nn::Module<T>&, const Tensor<T>&, Index, const Tensor<T>&, \
                                                        std::vector<Index>); \
  instance Tensor<T> smoothgrad<T>(nn::Module<T>&, const Tensor<T>&, Index, double, std::uint64_t, std::vector<Index>); \
  instance Tensor<T> gradcam_pp<T>(nn::Module<T>&, const Tensor<T>&, const std::string&, const std::vector<Index>&);
QX_DECLARE_INSTANCES(explain, QX_INSTANCES_EXPLAIN_METHODS)
#undef QX_INSTANCES_EXPLAIN_METHODS
