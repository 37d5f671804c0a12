// An exponential moving average of a model's weights (Polyak & Juditsky 1992, in the form of
// TensorFlow's ExponentialMovingAverage with `num_updates` and timm's ModelEmaV2). After optimiser step
// t = 1, 2, …, with decay d:
//   θ̄ ← d_t·θ̄ + (1 − d_t)·θ,        d_t = min(d, (1 + t) / (10 + t))
// θ̄ starts as the weights at construction; the warm-up d_t forgets them within a few dozen steps
// instead of 1/(1 − d). It stays below d until t = (10d − 1)/(1 − d) (8,991 steps for d = 0.999): a
// shorter run's average has a mean age of t/10 steps whatever d is (docs/training.md). Parameters and floating-point buffers (batch norm's running mean and variance)
// are averaged alike; integer buffers (num_batches_tracked) are counters and stay the model's.
//
// Why: on the inter-patient ECG split, the test score of the raw weights swings by several points from
// one epoch to the next, and the checkpoint rule then picks a swing, not a model. The average of the
// recent steps is a smoother, usually better model (docs/training.md has the measurement).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/nn/module.hpp"
#include "qx/optim/moving_average.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace train {

template <class T>
class WeightAverage {
 public:
  /// Starts the average at the model's current weights. @throws qx::Error unless 0 < decay < 1.
  WeightAverage(nn::Module<T>& model, double decay) : model_(model), decay_(decay) {
    check(decay > 0 && decay < 1, "WeightAverage: decay ", decay, " outside (0, 1)");
    for (const auto& e : averaged_entries()) {
      names_.push_back(e.name);
      averages_.push_back(e.tensor->detach().clone());
    }
  }

  /// d_t of the next update.
  double next_decay() const {
    const double t = static_cast<double>(steps_ + 1);
    return std::min(decay_, (1 + t) / (10 + t));
  }

  /// Folds the model's current weights into the average; call after every optimiser step.
  void update() {
    const double decay = next_decay();
    ++steps_;
    const auto entries = averaged_entries();
    for (std::size_t k = 0; k < entries.size(); ++k) optim::moving_average_step(averages_[k], *entries[k].tensor, decay);
  }

  /// Exchanges the model's weights with the average: call once to evaluate the average, again to go on
  /// training. The optimiser's handles stay valid (values move, storages do not).
  void swap() {
    const auto entries = averaged_entries();
    for (std::size_t k = 0; k < entries.size(); ++k) optim::swap_values(averages_[k], *entries[k].tensor);
  }

  long steps() const noexcept { return steps_; }
  double decay() const noexcept { return decay_; }

  /// The averaged tensors under the model's own names, and "step" (t).
  std::map<std::string, Tensor<T>> state_dict() const {
    std::map<std::string, Tensor<T>> out{{"step", Tensor<T>::full({}, static_cast<T>(steps_))}};
    for (std::size_t k = 0; k < names_.size(); ++k) out[names_[k]] = averages_[k].clone();
    return out;
  }
  /// @throws qx::Error naming the tensor that is missing or has another shape.
  void load_state_dict(const std::map<std::string, Tensor<T>>& state) {
    const auto step = state.find("step");
    check(step != state.end(), "WeightAverage: the saved average has no 'step'");
    steps_ = static_cast<long>(step->second.item());
    for (std::size_t k = 0; k < names_.size(); ++k) {
      const auto it = state.find(names_[k]);
      check(it != state.end(), "WeightAverage: the saved average has no '", names_[k], "'");
      check(it->second.shape() == averages_[k].shape(), "WeightAverage: '", names_[k], "' is saved with shape ",
            shape_str(it->second.shape()), ", the model's is ", shape_str(averages_[k].shape()));
      averages_[k] = it->second.contiguous().to(averages_[k].device());
    }
  }

 private:
  std::vector<nn::StateEntry<T>> averaged_entries() const {
    std::vector<nn::StateEntry<T>> out;
    for (auto& e : model_.named_state())
      if (!e.is_integer) out.push_back(e);
    check(names_.empty() || out.size() == names_.size(), "WeightAverage: the model had ", names_.size(),
          " averaged tensors and now has ", out.size());
    return out;
  }

  nn::Module<T>& model_;
  double decay_;
  long steps_ = 0;
  std::vector<std::string> names_;
  std::vector<Tensor<T>> averages_;
};

}  // namespace train
QX_NAMESPACE_END
