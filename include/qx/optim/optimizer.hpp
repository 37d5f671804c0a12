// The optimiser interface shared by Adam, AdamW and SGD: parameter groups with their own learning rate
// and weight decay, zero_grad, and a named-tensor state so a run can be resumed exactly.
// Parameters without a gradient (frozen, or unused in the last backward) are skipped by step().
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/tensor.hpp"

#include <map>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace optim {

template <class T>
struct ParamGroup {
  std::vector<Tensor<T>> params;  ///< handles sharing storage and gradients with the model's tensors
  double lr = 1e-3;
  double weight_decay = 0;
  std::string name;  ///< for logs ("layer4", "fc", …)
};

template <class T>
class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup<T>> groups) : groups_(std::move(groups)) {
    for (const auto& g : groups_)
      check(g.lr >= 0 && g.weight_decay >= 0, "optimizer: group '", g.name, "' has a negative learning rate (", g.lr,
            ") or weight decay (", g.weight_decay, ")");
  }
  virtual ~Optimizer() = default;

  /// One update of every parameter that has a gradient.
  virtual void step() = 0;

  void zero_grad() {
    for (auto& g : groups_)
      for (auto& p : g.params) p.zero_grad();
  }
  std::size_t num_groups() const noexcept { return groups_.size(); }
  double lr(std::size_t group) const { return groups_.at(group).lr; }
  void set_lr(std::size_t group, double lr) { groups_.at(group).lr = lr; }
  const std::vector<ParamGroup<T>>& groups() const noexcept { return groups_; }

  /// Optimiser state as named tensors ("step", "g0.p3.exp_avg", …) for checkpoints.
  virtual std::map<std::string, Tensor<T>> state_dict() const = 0;
  /// Restores what state_dict() returned. @throws qx::Error on a missing or mis-shaped tensor.
  virtual void load_state_dict(const std::map<std::string, Tensor<T>>& state) = 0;

 protected:
  static std::string key(std::size_t g, std::size_t p, const char* what) {
    return "g" + std::to_string(g) + ".p" + std::to_string(p) + "." + what;
  }
  static void restore(const std::map<std::string, Tensor<T>>& state, const std::string& name, Tensor<T>& into,
                      const Shape& shape) {
    auto it = state.find(name);
    if (it == state.end()) {
      into = Tensor<T>();
      return;
    }
    check(it->second.shape() == shape, "optimizer state '", name, "' has shape ", shape_str(it->second.shape()),
          " but the parameter has shape ", shape_str(shape));
    into = it->second.clone();
  }

  std::vector<ParamGroup<T>> groups_;
};

}  // namespace optim
QX_NAMESPACE_END
