// The attribution maps of docs/conventions.md ("Attribution maps") from ONE forward pass:
//   saliency        ∂y_c/∂x                                   (the input gradient of the plain walk)
//   gradcam_raw     ReLU(Σ_k α_k A_k), α_k = mean_ij ∂y_c/∂A_kij   (A, ∂y_c/∂A captured at `layer`)
//   gradcam         gradcam_raw resized bilinearly (align_corners = False) to the input size
//   guided_backprop ∂y_c/∂x with every ReLU's backward replaced by g·[x > 0]·[g > 0]
//   guided_gradcam  guided_backprop ⊙ gradcam, broadcast over channels
// The forward graph is recorded once (batch norm folded into the convolutions: parameters are frozen).
// One input-only backward walk carries two gradients stacked along the batch, seeded alike with a one-hot
// of each sample's target: the plain one (saliency; Grad-CAM from the gradient captured at `layer`) and
// the guided one (every "relu" node applies the guided rule to that replica only: a ReLU node in its own
// pass, ops::use_guided_rule; another node of that name through a backward hook). A graph with
// an op that cannot carry stacked gradients falls back to two walks of the same graph. No weight gradient
// is computed, and every sample's maps are exactly those it gets alone (batch norm in eval mode).
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/engine.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/core/cuda.hpp"
#include "qx/core/parallel.hpp"
#include "qx/nn/module.hpp"
#include "qx/ops/interpolate.hpp"
#include "qx/ops/relu.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace explain {

enum class Method { saliency, gradcam_raw, gradcam, guided_backprop, guided_gradcam };

inline const char* to_string(Method m) {
  switch (m) {
    case Method::saliency: return "saliency";
    case Method::gradcam_raw: return "gradcam_raw";
    case Method::gradcam: return "gradcam";
    case Method::guided_backprop: return "guided_backprop";
    case Method::guided_gradcam: return "guided_gradcam";
  }
  return "?";
}

inline const std::set<Method>& all_methods() {
  static const std::set<Method> all{Method::saliency, Method::gradcam_raw, Method::gradcam, Method::guided_backprop,
                                    Method::guided_gradcam};
  return all;
}

struct ExplainOptions {
  std::set<Method> methods = all_methods();
  std::string layer = "layer4";  ///< Grad-CAM's layer, by module name
  std::vector<Index> targets;    ///< one class per sample; empty: the predicted class (argmax of the logits)
};

/// The result of one attribution pass; maps not asked for are undefined tensors.
template <class T>
struct Attributions {
  Tensor<T> logits;           // (N, K)
  std::vector<Index> targets;  // (N)
  Tensor<T> saliency;         // (N, C, H, W)
  Tensor<T> gradcam_raw;      // (N, h, w)
  Tensor<T> gradcam;          // (N, H, W)
  Tensor<T> guided_backprop;  // (N, C, H, W)
  Tensor<T> guided_gradcam;   // (N, C, H, W)
  Tensor<T> activation;       // (N, K', h, w): A at the Grad-CAM layer (when Grad-CAM was computed)
  Tensor<T> activation_grad;  // (N, K', h, w): ∂y_c/∂A

  const Tensor<T>& map(Method m) const {
    switch (m) {
      case Method::saliency: return saliency;
      case Method::gradcam_raw: return gradcam_raw;
      case Method::gradcam: return gradcam;
      case Method::guided_backprop: return guided_backprop;
      case Method::guided_gradcam: return guided_gradcam;
    }
    return saliency;
  }

  /// Every tensor copied to `device` (maps computed on a GPU, brought back to be written or reduced).
  Attributions to(Device device) const {
    Attributions out = *this;
    for (Tensor<T>* t : {&out.logits, &out.saliency, &out.gradcam_raw, &out.gradcam, &out.guided_backprop, &out.guided_gradcam,
                         &out.activation, &out.activation_grad})
      if (t->defined()) *t = t->to(device);
    return out;
  }
};

namespace detail {
/// Keeps a model in eval mode for a scope and restores its previous mode.
template <class T>
struct EvalScope {
  nn::Module<T>& model;
  bool was_training;
  explicit EvalScope(nn::Module<T>& m) : model(m), was_training(m.is_training()) { m.eval(); }
  ~EvalScope() { model.train(was_training); }
};

/// argmax over each row of (N, K); the first maximum wins a tie.
template <class T>
std::vector<Index> argmax_rows(const Tensor<T>& logits) {
  const Tensor<T> l = logits.to(Device::cpu).contiguous();  // N·K values
  const Index n = l.size(0), k = l.size(1);
  std::vector<Index> out(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    Index best = 0;
    for (Index c = 1; c < k; ++c)
      if (l.data()[i * k + c] > l.data()[i * k + best]) best = c;
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

/// The seed of Σ_n y_{n, c_n}: a one-hot row per sample.
template <class T>
Tensor<T> one_hot(const std::vector<Index>& targets, Index classes) {
  auto seed = Tensor<T>::zeros({static_cast<Index>(targets.size()), classes});
  for (std::size_t i = 0; i < targets.size(); ++i) seed.data()[static_cast<Index>(i) * classes + targets[i]] = T(1);
  return seed;
}

/// ReLU(Σ_k α_k A_k) with α_k = mean_ij G_kij, per sample: A, G (N, K, h, w) → (N, h, w). On the host (the
/// last stage's small maps); a GPU's tensors are copied there and the map back.
template <class T>
Tensor<T> gradcam_from(const Tensor<T>& activation_on_device, const Tensor<T>& grad_on_device) {
  const Device device = activation_on_device.device();
  const Tensor<T> activation = activation_on_device.to(Device::cpu).contiguous(), grad = grad_on_device.to(Device::cpu).contiguous();
  const Index n = activation.size(0), k = activation.size(1), plane = activation.size(2) * activation.size(3);
  auto cam = Tensor<T>::zeros({n, activation.size(2), activation.size(3)});
  for (Index s = 0; s < n; ++s) {
    T* out = cam.data() + s * plane;
    for (Index c = 0; c < k; ++c) {
      const T* g = grad.data() + (s * k + c) * plane;
      const T* a = activation.data() + (s * k + c) * plane;
      double alpha = 0;
      for (Index p = 0; p < plane; ++p) alpha += g[p];
      const T w = static_cast<T>(alpha / static_cast<double>(plane));
      for (Index p = 0; p < plane; ++p) out[p] += w * a[p];
    }
    for (Index p = 0; p < plane; ++p) out[p] = out[p] > T(0) ? out[p] : T(0);
  }
  return cam.to(device);
}

/// The guided-backprop rule, applied after the ReLU's own rule gave g·[x > 0]: keep its positive part.
/// With several replicas stacked along the batch, only the last (the guided one) is rewritten.
template <class T>
void guided_relu_rule(Tensor<T>& grad_input, Index replicas) {
  if (!grad_input.defined()) return;
  const Index total = grad_input.numel(), first = total / replicas * (replicas - 1);
  T* g = grad_input.data();
  // g·[g > 0] is GuidedReluGrad(g, g): the GPU runs it in place through the guided ReLU kernel.
  dispatch(grad_input.device(), "guided_backprop", [&] { parallel_for(first, total, [&](Index i) { g[i] = g[i] > T(0) ? g[i] : T(0); }); },
           [&] {
             backends::cuda::launch_on_device(
                 backends::cuda::ReluBackward<T>{g + first, g + first, g + first, total - first, total - first, true});
           });
}

/// `replicas` copies of t stacked along dimension 0.
template <class T>
Tensor<T> stack(const Tensor<T>& t, Index replicas) {
  Shape shape = t.shape();
  shape[0] *= replicas;
  auto out = Tensor<T>::empty(shape, t.device());
  const std::size_t bytes = static_cast<std::size_t>(t.numel()) * sizeof(T);
  for (Index r = 0; r < replicas; ++r) cuda::copy(out.data() + r * t.numel(), t.device(), t.data(), t.device(), bytes);
  return out;
}

template <class T>
void check_targets(const std::vector<Index>& targets, Index n, Index k) {
  check(static_cast<Index>(targets.size()) == n, "explain: ", targets.size(), " targets for a batch of ", n);
  for (std::size_t i = 0; i < targets.size(); ++i)
    check(targets[i] >= 0 && targets[i] < k, "explain: target ", targets[i], " of sample ", i, " is outside [0, ", k, ")");
}
}  // namespace detail

/**
 * @brief Computes the requested attribution maps of `model` for the batch `x` (N, C, H, W).
 * @throws qx::Error if the layer does not exist, a target is out of range, or the input does not fit.
 * @code
 * auto maps = qx::explain::explain(*model, images);           // all five maps, predicted classes
 * auto cam = qx::explain::explain(*model, images, {{Method::gradcam}, "layer3"}).gradcam;
 * @endcode
 * Explaining batch after batch with the same model, keep an nn::WeightCache active (nn/weight_cache.hpp):
 * batch norm is then folded, and Winograd's filters transformed, once rather than for every call.
 */
template <class T>
Attributions<T> explain(nn::Module<T>& model, const Tensor<T>& x, const ExplainOptions& options = {}) {
  check(x.dim() == 4, "explain: input must be (N, C, H, W), got ", shape_str(x.shape()));
  const bool want_cam = options.methods.count(Method::gradcam_raw) || options.methods.count(Method::gradcam) ||
                        options.methods.count(Method::guided_gradcam);
  const bool want_saliency = options.methods.count(Method::saliency) > 0;
  const bool want_guided = options.methods.count(Method::guided_backprop) || options.methods.count(Method::guided_gradcam);
  detail::EvalScope<T> eval(model);
  // Only input gradients are asked for below: batch norm may fold into the convolutions (nn/conv_bn.hpp).
  nn::FrozenParametersGuard frozen;

  Tensor<T> input = x.contiguous().clone().requires_grad_();
  Tensor<T> activation;
  std::optional<nn::ScopedForwardHook<T>> capture;
  if (want_cam)
    capture.emplace(model.submodule(options.layer), [&](nn::Module<T>&, const Tensor<T>&, Tensor<T>& out) {
      out.retain_grad();
      activation = out;
    });

  Attributions<T> result;
  Tensor<T> logits = model(input);
  check(logits.dim() == 2, "explain: the model's output must be (N, K) logits, got ", shape_str(logits.shape()));
  result.logits = logits.detach().clone();
  result.targets = options.targets.empty() ? detail::argmax_rows(result.logits) : options.targets;
  detail::check_targets<T>(result.targets, x.size(0), logits.size(1));
  if (want_cam) check(activation.defined(), "explain: layer '", options.layer, "' did not run in the forward pass");
  const Tensor<T> seed = detail::one_hot<T>(result.targets, logits.size(1)).to(x.device());

  const Index n = x.size(0);
  const bool plain = want_saliency || want_cam;
  // One walk carries the plain and the guided gradient side by side (replicas 0 and 1 along the batch)
  // when both are wanted and every op can: one GEMM per convolution serves both. Otherwise each wanted
  // walk runs on its own through the same graph.
  const bool together = plain && want_guided && autograd::handles_replicas(logits);
  // The guided rule on every "relu" node's last replica: ReLU nodes apply it in their own pass
  // (ops::use_guided_rule); any other node of that name gets a hook that rewrites its result.
  auto guided_hooks = [&](Index replicas) {
    autograd::for_each_node(logits, [replicas](autograd::Node<T>& node) {
      if (std::string(node.name()) != "relu" || ops::use_guided_rule(node)) return;
      node.add_backward_hook([replicas](const autograd::Node<T>&, const Tensor<T>&, std::vector<Tensor<T>>& grads) {
        detail::guided_relu_rule(grads[0], replicas);
      });
    });
  };
  auto take = [&](Index replica, Index replicas) {  // replica r of a stacked gradient, as its own tensor
    const Tensor<T>& g = input.grad();
    return replicas == 1 ? g.clone() : g.slice(0, replica * n, (replica + 1) * n).clone();
  };
  auto gradcam_from_walk = [&](Index replicas) {
    result.activation = activation.detach().clone();
    const Tensor<T>& g = activation.grad();
    result.activation_grad = replicas == 1 ? g.clone() : g.slice(0, 0, n).clone();
    result.gradcam_raw = detail::gradcam_from(result.activation, result.activation_grad);
    const Index h = result.gradcam_raw.size(1), w = result.gradcam_raw.size(2);
    result.gradcam = ops::interpolate_bilinear(result.gradcam_raw.view({n, 1, h, w}), x.size(2), x.size(3))
                         .view({n, x.size(2), x.size(3)});
  };

  if (together) {
    guided_hooks(2);
    autograd::BackwardOptions<T> walk;
    walk.inputs = {input};
    walk.replicas = 2;
    autograd::backward(logits, detail::stack(seed, 2), walk);
    if (want_saliency) result.saliency = take(0, 2);
    if (want_cam) gradcam_from_walk(2);
    result.guided_backprop = take(1, 2);
  } else {
    if (plain) {
      autograd::BackwardOptions<T> walk;
      walk.retain_graph = want_guided;
      walk.inputs = {input};
      autograd::backward(logits, seed, walk);
      if (want_saliency) result.saliency = take(0, 1);
      if (want_cam) gradcam_from_walk(1);
      input.zero_grad();
    }
    if (want_guided) {
      guided_hooks(1);
      autograd::BackwardOptions<T> walk;
      walk.inputs = {input};
      autograd::backward(logits, seed, walk);
      result.guided_backprop = take(0, 1);
    }
  }
  if (want_guided && options.methods.count(Method::guided_gradcam)) {
    // On the host; a GPU's maps are copied there and the product back.
    auto guided_gradcam = result.guided_backprop.to(Device::cpu).clone();
    const Tensor<T> gradcam = result.gradcam.to(Device::cpu);
    const Index c = x.size(1), plane = x.size(2) * x.size(3);
    T* out = guided_gradcam.data();
    const T* cam = gradcam.data();
    parallel_for(0, n * c, [&](Index sc) {
      const T* cam_s = cam + (sc / c) * plane;
      for (Index p = 0; p < plane; ++p) out[sc * plane + p] *= cam_s[p];
    }, plane);
    result.guided_gradcam = guided_gradcam.to(x.device());
  }
  // Maps the caller did not ask for are not returned even if computed on the way.
  if (!options.methods.count(Method::gradcam_raw)) result.gradcam_raw = {};
  if (!options.methods.count(Method::gradcam)) result.gradcam = {};
  if (!options.methods.count(Method::guided_backprop)) result.guided_backprop = {};
  return result;
}

}  // namespace explain
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_EXPLAIN_ATTRIBUTION(instance, T) \
  instance Attributions<T> explain<T>(nn::Module<T>&, const Tensor<T>&, const ExplainOptions&);
QX_DECLARE_INSTANCES(explain, QX_INSTANCES_EXPLAIN_ATTRIBUTION)
#undef QX_INSTANCES_EXPLAIN_ATTRIBUTION
