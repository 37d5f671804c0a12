// The reverse-mode engine: walks the graph recorded by ops from a root tensor back to its leaves.
// Order: metas are visited in reverse topological order, so each node's gradient is complete (summed
// over every use) before its backward runs. Only nodes on a path to a tensor that wants a gradient run,
// and each learns through needs_input_grad which of its inputs to differentiate.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/core/error.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"

#include <functional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

QX_NAMESPACE_BEGIN
namespace autograd {

template <class T>
struct BackwardOptions {
  /// Keep saved tensors so the graph can be walked again (e.g. a second, guided walk).
  bool retain_graph = false;
  /// When non-empty: only these leaves (and tensors marked retain_grad) receive gradients, and no
  /// op computes a gradient that does not lead to them (an input-only backward skips weight grads).
  std::vector<Tensor<T>> inputs;
  /// Several gradients in one walk, stacked along dimension 0: the seed has replicas × the root's
  /// first dimension, every node carries them side by side (one GEMM serves them all), and the inputs'
  /// grad() holds them stacked likewise. Backward hooks may treat replicas differently (qx::explain
  /// walks the plain and the guided gradient together this way). Only ops that handle replicas may lie
  /// on the walk (Node::handles_replicas), and no parameter gradient can be asked for.
  Index replicas = 1;
};

namespace detail {
template <class T>
using MetaPtr = qx::detail::AutogradMeta<T>*;

/// Post-order (inputs before consumers) of all metas reachable from `root` through grad_fn edges.
template <class T>
std::vector<MetaPtr<T>> post_order(MetaPtr<T> root) {
  std::vector<MetaPtr<T>> order;
  std::unordered_set<MetaPtr<T>> seen{root};
  std::vector<std::pair<MetaPtr<T>, std::size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [meta, next] = stack.back();
    const auto* node = meta->grad_fn.get();
    if (node && next < node->inputs_.size()) {
      MetaPtr<T> child = node->inputs_[next++].get();
      if (child && seen.insert(child).second) stack.emplace_back(child, 0);
    } else {
      order.push_back(meta);
      stack.pop_back();
    }
  }
  return order;
}

/// sum += grad, element-wise, in place (shapes checked; `op` names the gradient's producer in the error).
template <class T>
void add_in_place(Tensor<T>& sum, const Tensor<T>& grad, const char* op) {
  check(sum.shape() == grad.shape(), "autograd: op ", op, " returned a gradient of shape ", shape_str(grad.shape()),
        " for a tensor of shape ", shape_str(sum.shape()));
  check(sum.device() == grad.device(), "autograd: op ", op, " returned a gradient on device ", grad.device(),
        " for a tensor on device ", sum.device());
  const Tensor<T> g = grad.contiguous();
  T* dst = sum.data();
  const T* src = g.data();
  dispatch(sum.device(), "autograd", [&] { parallel_for(0, sum.numel(), [&](Index k) { dst[k] += src[k]; }); },
           [&] { backends::cuda::launch_on_device(backends::cuda::AddForward<T>{dst, src, dst, sum.numel(), false}); });
}

/// A leaf's or retained tensor's grad() += grad. The first gradient is adopted without a copy when no
/// other tensor can see its memory; later ones add in place (holders of grad() see the sum, as in PyTorch).
template <class T>
void accumulate(std::shared_ptr<Tensor<T>>& slot, Tensor<T> grad, const char* op) {
  if (!slot) {
    const bool adopt = grad.is_sole_owner() && grad.is_contiguous();
    slot = std::make_shared<Tensor<T>>(adopt ? std::move(grad) : grad.clone());
    return;
  }
  add_in_place(*slot, grad, op);
}
}  // namespace detail

/**
 * @brief Back-propagates from `root`: ∂(Σ seed ⊙ root)/∂leaf is added to every leaf's grad().
 * @param seed gradient of the root; undefined means 1 for a one-element root.
 * @throws qx::Error if root does not require grad, the seed's shape differs, or the graph was freed.
 */
template <class T>
void backward(const Tensor<T>& root, const Tensor<T>& seed = {}, const BackwardOptions<T>& options = {}) {
  check(root.requires_grad(), "backward: the root tensor of shape ", shape_str(root.shape()),
        " does not require grad (no input of its graph has requires_grad, or it was computed under NoGradGuard)");
  Tensor<T> root_grad;
  const Index replicas = options.replicas;
  check(replicas >= 1, "backward: replicas must be at least 1, got ", replicas);
  check(replicas == 1 || !options.inputs.empty(), "backward: replicated gradients (replicas = ", replicas,
        ") need `inputs`: parameter gradients of several replicas would be summed together");
  if (seed.defined()) {
    Shape expected = root.shape();
    if (!expected.empty()) expected[0] *= replicas;
    check(seed.shape() == expected, "backward: seed of shape ", shape_str(seed.shape()), " does not match the root's shape ",
          shape_str(root.shape()), replicas > 1 ? " with its first dimension times the replicas" : "");
    root_grad = seed;
  } else {
    check(root.numel() == 1 && replicas == 1, "backward: root of shape ", shape_str(root.shape()),
          " is not a single value (or replicas > 1); pass a seed gradient of that shape");
    root_grad = Tensor<T>::ones(root.shape()).to(root.device());
  }

  using MetaPtr = detail::MetaPtr<T>;
  MetaPtr root_meta = root.meta().get();
  const std::vector<MetaPtr> order = detail::post_order<T>(root_meta);

  // Which metas want a gradient, and which lie on a path to one (needed).
  std::unordered_set<MetaPtr> wanted;
  for (const auto& t : options.inputs) {
    check(t.requires_grad(), "backward: a tensor in `inputs` (shape ", shape_str(t.shape()), ") does not require grad");
    wanted.insert(t.meta().get());
  }
  std::unordered_map<MetaPtr, bool> needed;
  needed.reserve(order.size());
  for (MetaPtr m : order) {
    bool n = m->retains_grad || (options.inputs.empty() ? (!m->grad_fn && m->requires_grad) : wanted.count(m) > 0);
    if (auto* node = m->grad_fn.get()) {
      node->needs_input_grad_.assign(node->inputs_.size(), false);
      for (std::size_t i = 0; i < node->inputs_.size(); ++i) {
        MetaPtr child = node->inputs_[i].get();
        if (child && needed[child]) node->needs_input_grad_[i] = n = true;
      }
    }
    needed[m] = n;
  }

  std::unordered_map<MetaPtr, Tensor<T>> pending;  // summed gradient arriving at each meta
  pending[root_meta] = root_grad;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    MetaPtr m = *it;
    auto found = pending.find(m);
    if (found == pending.end() || !needed[m]) continue;
    Tensor<T> grad = std::move(found->second);
    pending.erase(found);
    if (!m->grad_fn) {
      if (m->requires_grad) detail::accumulate(m->grad, std::move(grad), "(leaf)");
      continue;
    }
    if (m->retains_grad) detail::accumulate(m->grad, grad, m->grad_fn->name());
    auto& node = *m->grad_fn;
    check(replicas == 1 || node.handles_replicas(), "backward: op ", node.name(),
          " cannot carry replicated gradients (BackwardOptions::replicas = ", replicas, ")");
    node.replicas_ = replicas;
    std::vector<Tensor<T>> grads = node.backward(grad);
    node.replicas_ = 1;
    check(grads.size() == node.inputs_.size(), "autograd: op ", node.name(), " returned ", grads.size(),
          " gradients for ", node.inputs_.size(), " inputs");
    for (std::size_t i = 0; i < grads.size(); ++i) {
      MetaPtr child = node.inputs_[i].get();
      if (!child || !node.needs_input_grad_[i] || !grads[i].defined()) continue;
      auto slot = pending.find(child);
      if (slot == pending.end()) {
        pending.emplace(child, std::move(grads[i]));
      } else {
        // A second use of the same tensor: sum in place unless another tensor sees the first gradient's
        // memory (a residual add hands one tensor to both branches; the caller's seed is theirs).
        Tensor<T>& sum = slot->second;
        if (!(sum.is_sole_owner() && sum.is_contiguous())) sum = sum.clone();
        detail::add_in_place(sum, grads[i], node.name());
      }
    }
    // Saved tensors are dropped as soon as their node has run: memory falls while the walk proceeds.
    if (!options.retain_graph) node.release_saved();
  }
  if (!options.retain_graph) {
    for (MetaPtr m : order)
      if (m->grad_fn) m->grad_fn->release_saved();
  }
}

/// True when every op in the graph of `root` can carry replicated gradients (BackwardOptions::replicas).
template <class T>
bool handles_replicas(const Tensor<T>& root) {
  if (!root.meta()) return true;
  for (auto* m : detail::post_order<T>(root.meta().get()))
    if (m->grad_fn && !m->grad_fn->handles_replicas()) return false;
  return true;
}

/// Calls fn(node) once for every node in the graph that produced `root` (e.g. to install hooks).
template <class T, class Fn>
void for_each_node(const Tensor<T>& root, Fn&& fn) {
  if (!root.meta()) return;
  for (auto* m : detail::post_order<T>(root.meta().get()))
    if (m->grad_fn) fn(*m->grad_fn);
}

}  // namespace autograd
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_AUTOGRAD_ENGINE(instance, T) \
  instance void backward<T>(const Tensor<T>&, const Tensor<T>&, const BackwardOptions<T>&);
QX_DECLARE_INSTANCES(autograd, QX_INSTANCES_AUTOGRAD_ENGINE)
#undef QX_INSTANCES_AUTOGRAD_ENGINE
