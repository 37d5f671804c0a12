// The module system: a Module owns named parameters, buffers and child modules, and forwards through
// qx::ops. Names are dotted paths exactly as PyTorch's state_dict() keys ("layer1.0.conv1.weight"), so
// torchvision weights load by name. Forward hooks let callers see (and mark, e.g. retain_grad) a
// module's output: explain captures Grad-CAM's activation this way.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/tensor.hpp"

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

QX_NAMESPACE_BEGIN
namespace nn {

namespace detail {
inline bool& parameters_frozen_flag() {
  thread_local bool frozen = false;
  return frozen;
}
}  // namespace detail

/// True inside a FrozenParametersGuard: no gradient with respect to a parameter will be asked for.
inline bool parameters_frozen() { return detail::parameters_frozen_flag(); }

/**
 * @brief Scope in which the caller promises to ask for no parameter gradient (input-only backwards,
 * inference). Modules may then treat parameters as constants — conv → batch norm pairs in eval mode are
 * folded into one convolution. Thread-local; qx::explain sets it.
 */
class FrozenParametersGuard {
 public:
  FrozenParametersGuard() : previous_(detail::parameters_frozen_flag()) { detail::parameters_frozen_flag() = true; }
  ~FrozenParametersGuard() { detail::parameters_frozen_flag() = previous_; }
  FrozenParametersGuard(const FrozenParametersGuard&) = delete;
  FrozenParametersGuard& operator=(const FrozenParametersGuard&) = delete;

 private:
  bool previous_;
};

/// One named tensor of a module's state (a parameter or a buffer).
template <class T>
struct StateEntry {
  std::string name;   ///< dotted path, e.g. "layer2.0.downsample.1.running_var"
  Tensor<T>* tensor;  ///< the module's own tensor (a handle: writing its data changes the module)
  bool is_parameter;  ///< trained by optimisers; buffers (running statistics, counters) are not
  bool is_integer;    ///< stored as I64 in files (num_batches_tracked)
};

/**
 * @brief Base of every layer and model.
 * @code
 * auto model = qx::nn::resnet18<float>(1, 2, 16);
 * int id = model->submodule("layer4").add_forward_hook([](auto&, const auto&, auto& out) { out.retain_grad(); });
 * @endcode
 */
template <class T>
class Module {
 public:
  using ForwardHook = std::function<void(Module<T>&, const Tensor<T>& input, Tensor<T>& output)>;

  Module() = default;
  Module(const Module&) = delete;  // parameters are registered by address
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /// The module's computation; call the module itself (operator()) so that forward hooks run.
  virtual Tensor<T> forward(const Tensor<T>& x) = 0;

  Tensor<T> operator()(const Tensor<T>& x) {
    Tensor<T> y = forward(x);
    for (auto& [id, hook] : hooks_) hook(*this, x, y);
    return y;
  }

  int add_forward_hook(ForwardHook hook) {
    hooks_.emplace_back(next_hook_id_, std::move(hook));
    return next_hook_id_++;
  }
  void remove_forward_hook(int id) {
    std::erase_if(hooks_, [id](const auto& h) { return h.first == id; });
  }
  /// True when a forward hook watches this module's output (fused paths then run it as written).
  bool has_forward_hooks() const noexcept { return !hooks_.empty(); }

  /// Training mode (batch statistics in batch norm) for this module and all below it.
  void train(bool on = true) {
    training_ = on;
    for (auto& [name, child] : children_) child->train(on);
  }
  void eval() { train(false); }
  bool is_training() const noexcept { return training_; }

  /// Every parameter and buffer below this module, with dotted names, in registration order.
  std::vector<StateEntry<T>> named_state(const std::string& prefix = "") {
    std::vector<StateEntry<T>> out;
    collect_state(prefix, out);
    return out;
  }
  std::vector<std::pair<std::string, Tensor<T>*>> named_parameters() {
    std::vector<std::pair<std::string, Tensor<T>*>> out;
    for (auto& e : named_state())
      if (e.is_parameter) out.emplace_back(e.name, e.tensor);
    return out;
  }
  std::vector<std::pair<std::string, Tensor<T>*>> named_buffers() {
    std::vector<std::pair<std::string, Tensor<T>*>> out;
    for (auto& e : named_state())
      if (!e.is_parameter) out.emplace_back(e.name, e.tensor);
    return out;
  }
  /// Moves every parameter and buffer to `device` (a copy each; parameters keep requires_grad, lose any
  /// gradient). Take optimiser parameter handles after this, not before. @throws qx::Error when CUDA is
  /// missing from the build or the machine.
  void to(Device device) {
    for (auto& e : named_state()) {
      if (e.tensor->device() == device) continue;
      const bool requires_grad = e.tensor->requires_grad();
      *e.tensor = e.tensor->to(device);
      if (requires_grad) e.tensor->requires_grad_();
    }
  }
  /// Parameter handles (sharing storage and gradients with the module's own).
  std::vector<Tensor<T>> parameters() {
    std::vector<Tensor<T>> out;
    for (auto& [name, t] : named_parameters()) out.push_back(*t);
    return out;
  }
  /// Every module below this one with its dotted name ("" is this module itself).
  std::vector<std::pair<std::string, Module<T>*>> named_modules(const std::string& prefix = "") {
    std::vector<std::pair<std::string, Module<T>*>> out{{prefix, this}};
    for (auto& [name, child] : children_) {
      auto sub = child->named_modules(prefix.empty() ? name : prefix + "." + name);
      out.insert(out.end(), sub.begin(), sub.end());
    }
    return out;
  }
  /// The module at a dotted path ("layer4", "layer3.1.conv2"). @throws qx::Error listing valid names.
  Module<T>& submodule(const std::string& path) {
    for (auto& [name, module] : named_modules())
      if (name == path) return *module;
    std::string names;
    for (auto& [name, module] : named_modules())
      if (!name.empty() && name.find('.') == std::string::npos) names += (names.empty() ? "" : ", ") + name;
    fail("module has no submodule named '", path, "'; top-level names: ", names,
         " (nested names are dotted, e.g. 'layer3.1')");
  }
  bool has_submodule(const std::string& path) {
    for (auto& [name, module] : named_modules())
      if (name == path) return true;
    return false;
  }
  /// Drops the gradients of every parameter.
  void zero_grad() {
    for (auto& [name, t] : named_parameters()) t->zero_grad();
  }

 protected:
  /// Registers a member tensor as a parameter (it is made a leaf requiring grad).
  void register_parameter(std::string name, Tensor<T>& t) {
    t.requires_grad_(true);
    state_.push_back({std::move(name), &t, true, false});
  }
  void register_buffer(std::string name, Tensor<T>& t, bool is_integer = false) {
    state_.push_back({std::move(name), &t, false, is_integer});
  }
  template <class M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module) {
    children_.emplace_back(std::move(name), module);
    return module;
  }

 private:
  void collect_state(const std::string& prefix, std::vector<StateEntry<T>>& out) {
    for (const auto& e : state_) out.push_back({prefix.empty() ? e.name : prefix + "." + e.name, e.tensor, e.is_parameter, e.is_integer});
    for (auto& [name, child] : children_) child->collect_state(prefix.empty() ? name : prefix + "." + name, out);
  }

  std::vector<StateEntry<T>> state_;
  std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>> children_;
  std::vector<std::pair<int, ForwardHook>> hooks_;
  int next_hook_id_ = 0;
  bool training_ = true;
};

/// A forward hook that lives for one scope: added on construction, removed on destruction (qx::explain's
/// activation capture, train::fit's auxiliary head).
template <class T>
class ScopedForwardHook {
 public:
  ScopedForwardHook(Module<T>& module, typename Module<T>::ForwardHook hook)
      : module_(module), id_(module.add_forward_hook(std::move(hook))) {}
  ScopedForwardHook(const ScopedForwardHook&) = delete;
  ScopedForwardHook& operator=(const ScopedForwardHook&) = delete;
  ~ScopedForwardHook() { module_.remove_forward_hook(id_); }

 private:
  Module<T>& module_;
  int id_;
};

}  // namespace nn
QX_NAMESPACE_END
