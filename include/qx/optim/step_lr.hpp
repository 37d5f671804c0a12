// StepLR (torch.optim.lr_scheduler.StepLR): after `epoch` calls of step(), every group's learning rate
// is its initial rate · γ^⌊epoch / step_size⌋. The paper's setting: step_size 4 epochs, γ = 0.1.
#pragma once
#include "qx/config.hpp"
#include "qx/optim/optimizer.hpp"

#include <cmath>
#include <vector>

QX_NAMESPACE_BEGIN
namespace optim {

template <class T>
class StepLR {
 public:
  StepLR(Optimizer<T>& optimizer, long step_size, double gamma) : optimizer_(optimizer), step_size_(step_size), gamma_(gamma) {
    check(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
    for (std::size_t g = 0; g < optimizer.num_groups(); ++g) initial_.push_back(optimizer.lr(g));
  }
  /// Ends an epoch: advances the epoch count and sets the groups' learning rates.
  void step() { set_epoch(last_epoch_ + 1); }
  /// Sets the epoch count directly (used when resuming).
  void set_epoch(long epoch) {
    last_epoch_ = epoch;
    for (std::size_t g = 0; g < initial_.size(); ++g) optimizer_.set_lr(g, lr(g));
  }
  double lr(std::size_t group) const {
    return initial_.at(group) * std::pow(gamma_, static_cast<double>(last_epoch_ / step_size_));
  }
  long last_epoch() const noexcept { return last_epoch_; }

 private:
  Optimizer<T>& optimizer_;
  long step_size_;
  double gamma_;
  std::vector<double> initial_;
  long last_epoch_ = 0;
};

}  // namespace optim
QX_NAMESPACE_END
