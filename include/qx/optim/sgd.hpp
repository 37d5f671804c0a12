// Stochastic gradient descent with momentum, PyTorch's torch.optim.SGD semantics. With weight decay λ,
// momentum μ, dampening τ, learning rate η:
//   g ← g + λ·p;   b ← g at the first step, else b ← μ·b + (1 − τ)·g   (when μ ≠ 0)
//   g ← g + μ·b (Nesterov) or g ← b;   p ← p − η·g
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/optim.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/optim/optimizer.hpp"

QX_NAMESPACE_BEGIN
namespace optim {

struct SgdOptions {
  double momentum = 0, dampening = 0;
  bool nesterov = false;
};

template <class T>
class Sgd final : public Optimizer<T> {
 public:
  Sgd(std::vector<ParamGroup<T>> groups, SgdOptions options = {}) : Optimizer<T>(std::move(groups)), options_(options) {
    check(!options.nesterov || (options.momentum > 0 && options.dampening == 0),
          "SGD: Nesterov momentum needs momentum > 0 and dampening 0");
    for (const auto& g : this->groups_) buffers_.emplace_back(g.params.size());
  }

  void step() override {
    for (std::size_t gi = 0; gi < this->groups_.size(); ++gi) {
      auto& group = this->groups_[gi];
      for (std::size_t pi = 0; pi < group.params.size(); ++pi) {
        Tensor<T>& p = group.params[pi];
        if (!p.has_grad()) continue;
        const Tensor<T> grad = p.grad().contiguous();
        Tensor<T>& buffer = buffers_[gi][pi];
        const bool first = !buffer.defined();
        if (options_.momentum != 0 && first) buffer = Tensor<T>::zeros(p.shape(), p.device());
        T* w = p.data();
        const T* g = grad.data();
        T* b = options_.momentum != 0 ? buffer.data() : nullptr;
        const kernels::SgdUpdate<T> update{static_cast<T>(group.lr), static_cast<T>(group.weight_decay),
                                           static_cast<T>(options_.momentum), static_cast<T>(options_.dampening),
                                           options_.nesterov, first};
        dispatch(p.device(), "SGD", [&] { parallel_for(0, p.numel(), [&](Index i) { update(w[i], g[i], b ? b + i : nullptr); }); },
                 [&] { backends::cuda::launch_on_device(backends::cuda::SgdStep<T>{update, w, g, b, p.numel()}); });
      }
    }
  }

  std::map<std::string, Tensor<T>> state_dict() const override {
    std::map<std::string, Tensor<T>> out;
    for (std::size_t g = 0; g < buffers_.size(); ++g)
      for (std::size_t p = 0; p < buffers_[g].size(); ++p)
        if (buffers_[g][p].defined()) out[this->key(g, p, "momentum_buffer")] = buffers_[g][p].clone();
    return out;
  }
  void load_state_dict(const std::map<std::string, Tensor<T>>& state) override {
    for (std::size_t g = 0; g < buffers_.size(); ++g)
      for (std::size_t p = 0; p < buffers_[g].size(); ++p)
        this->restore(state, this->key(g, p, "momentum_buffer"), buffers_[g][p], this->groups_[g].params[p].shape());
  }

 private:
  SgdOptions options_;
  std::vector<std::vector<Tensor<T>>> buffers_;
};

}  // namespace optim
QX_NAMESPACE_END
