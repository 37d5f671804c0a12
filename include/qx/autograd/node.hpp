// The autograd graph node: one per op application, holding what the op saved for its backward, the
// autograd metadata of its inputs (edges), and per-instance backward hooks.
// Gradient rule of the whole library: leaf and parameter gradients accumulate (+=) across backwards;
// gradients of intermediate tensors are summed over their uses within one backward (a residual add
// fans its gradient out to both branches, and the tensor feeding both branches receives the sum).
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/core/error.hpp"
#include "qx/core/tensor.hpp"

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

QX_NAMESPACE_BEGIN
namespace autograd {

/**
 * @brief A recorded op application. Subclasses implement apply() (the op's backward rule) and
 * release() (drop saved tensors); ops create them through make_result().
 */
template <class T>
class Node {
 public:
  /// Called after apply(); may rewrite the input gradients (e.g. the guided-backprop ReLU rule).
  using BackwardHook =
      std::function<void(const Node<T>&, const Tensor<T>& grad_output, std::vector<Tensor<T>>& grad_inputs)>;

  virtual ~Node() = default;
  /// The op's name as used in error messages and graph traversals ("relu", "conv2d", ...).
  virtual const char* name() const = 0;

  /// Gradients for each input given the gradient of the output. Entry i may be left undefined when
  /// needs_input_grad(i) is false; the op should then skip computing it.
  std::vector<Tensor<T>> backward(const Tensor<T>& grad_output) {
    check(!released_, "autograd: backward through the graph of op ", name(),
          " a second time, but its saved tensors were freed by the first backward (pass retain_graph = true)");
    std::vector<Tensor<T>> grads = apply(grad_output);
    for (auto& [id, hook] : hooks_) hook(*this, grad_output, grads);
    return grads;
  }

  /// Drops the tensors saved for backward; afterwards backward() throws.
  void release_saved() {
    release();
    released_ = true;
  }
  bool released() const noexcept { return released_; }

  int add_backward_hook(BackwardHook hook) {
    hooks_.emplace_back(next_hook_id_, std::move(hook));
    return next_hook_id_++;
  }
  void remove_backward_hook(int id) {
    std::erase_if(hooks_, [id](const auto& h) { return h.first == id; });
  }
  void clear_backward_hooks() { hooks_.clear(); }
  /// Whether hooks will see grad_output after apply(): an op may overwrite grad_output only when none do.
  bool has_backward_hooks() const noexcept { return !hooks_.empty(); }

  const std::vector<std::shared_ptr<detail::AutogradMeta<T>>>& inputs() const noexcept { return inputs_; }
  /// Set by the engine before apply(): whether input i lies on a path to a tensor that wants a gradient.
  bool needs_input_grad(std::size_t i) const { return i < needs_input_grad_.size() && needs_input_grad_[i]; }
  /// Shape of the op's output (for errors and for shape checks of seeds).
  const Shape& output_shape() const noexcept { return output_shape_; }

  /// How many gradients this walk carries stacked along dimension 0 (BackwardOptions::replicas): each
  /// gradient this node sees and returns has replicas()× the batch of its forward tensors, and replica
  /// r is differentiated exactly as a walk of its own would be.
  Index replicas() const noexcept { return replicas_; }
  /// Whether apply() honours replicas() > 1; ops that do not are refused by the engine with a message.
  virtual bool handles_replicas() const { return false; }
  /// `shape` with its first dimension multiplied by replicas(): the shape of a replicated gradient.
  Shape replicated(Shape shape) const {
    if (!shape.empty()) shape[0] *= replicas_;
    return shape;
  }

  // Engine-facing state.
  std::vector<std::shared_ptr<detail::AutogradMeta<T>>> inputs_;
  std::vector<bool> needs_input_grad_;
  Shape output_shape_;
  Index replicas_ = 1;

 protected:
  virtual std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) = 0;
  virtual void release() {}

 private:
  std::vector<std::pair<int, BackwardHook>> hooks_;
  int next_hook_id_ = 0;
  bool released_ = false;
};

/// True when grad mode is on and any of `inputs` requires grad: the op must record a node.
template <class T>
bool any_requires_grad(std::initializer_list<const Tensor<T>*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor<T>* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

/**
 * Attaches `node` as the grad_fn of `output` when any input requires grad (and grad mode is on);
 * `inputs` are the op's differentiable inputs in the order apply() returns their gradients.
 * Returns output (now a non-leaf requiring grad) or output unchanged.
 */
template <class T, class NodeT>
Tensor<T> make_result(Tensor<T> output, std::initializer_list<const Tensor<T>*> inputs, std::shared_ptr<NodeT> node) {
  if (!any_requires_grad<T>(inputs)) return output;
  for (const Tensor<T>* t : inputs) {
    if (t && t->defined() && t->requires_grad()) {
      node->inputs_.push_back(t->meta());
    } else {
      node->inputs_.push_back(nullptr);
    }
  }
  node->output_shape_ = output.shape();
  auto& meta = output.ensure_meta();
  meta.requires_grad = true;
  meta.grad_fn = std::move(node);
  return output;
}

}  // namespace autograd
QX_NAMESPACE_END
