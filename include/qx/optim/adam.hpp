// Adam (Kingma & Ba 2015) with PyTorch's semantics, and AdamW (Loshchilov & Hutter 2019).
// For each parameter p with gradient g at step t (t = 1, 2, …), learning rate η, weight decay λ:
//   Adam:  g ← g + λ·p                        (L2 added to the gradient: torch.optim.Adam)
//   AdamW: p ← p·(1 − η·λ)                    (decoupled decay: torch.optim.AdamW)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   p ← p − (η / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/optim.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/optim/optimizer.hpp"

#include <cmath>
#include <type_traits>

QX_NAMESPACE_BEGIN
namespace optim {

namespace detail {
/// One Adam step over n elements on the host: floats 16 at a time as vectors (kernels::LaneVector), the
/// rest one by one, all by the same kernels::AdamUpdate body the GPU runs.
template <class T>
void adam_on_host(const kernels::AdamUpdate<T>& update, T* w, const T* g, T* m, T* v, Index n) {
  Index done = 0;
#if !defined(__CUDACC__)  // kernels::LaneVector is host-compiler code
  if constexpr (std::is_same_v<T, float>) {
    constexpr Index width = kernels::lanes;
    const Index blocks = n / width;
    parallel_for(0, blocks, [&](Index b) {
      const Index at = b * width;
      kernels::LaneVector<float> wv, gv, mv, vv;
      __builtin_memcpy(&wv, w + at, sizeof wv);
      __builtin_memcpy(&gv, g + at, sizeof gv);
      __builtin_memcpy(&mv, m + at, sizeof mv);
      __builtin_memcpy(&vv, v + at, sizeof vv);
      update(wv, gv, mv, vv);
      __builtin_memcpy(w + at, &wv, sizeof wv);
      __builtin_memcpy(m + at, &mv, sizeof mv);
      __builtin_memcpy(v + at, &vv, sizeof vv);
    }, width);
    done = blocks * width;
  }
#endif
  parallel_for(done, n, [&](Index i) { update(w[i], g[i], m[i], v[i]); });
}
}  // namespace detail

struct AdamOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool decoupled_weight_decay = false;  ///< true: AdamW
};

template <class T>
class Adam : public Optimizer<T> {
 public:
  Adam(std::vector<ParamGroup<T>> groups, AdamOptions options = {}) : Optimizer<T>(std::move(groups)), options_(options) {
    for (const auto& g : this->groups_) state_.emplace_back(g.params.size());
  }

  void step() override {
    ++step_;
    const double bias1 = 1 - std::pow(options_.beta1, static_cast<double>(step_));
    const double bias2_sqrt = std::sqrt(1 - std::pow(options_.beta2, static_cast<double>(step_)));
    for (std::size_t gi = 0; gi < this->groups_.size(); ++gi) {
      auto& group = this->groups_[gi];
      for (std::size_t pi = 0; pi < group.params.size(); ++pi) {
        Tensor<T>& p = group.params[pi];
        if (!p.has_grad()) continue;
        auto& s = state_[gi][pi];
        if (!s.exp_avg.defined()) {
          s.exp_avg = Tensor<T>::zeros(p.shape(), p.device());
          s.exp_avg_sq = Tensor<T>::zeros(p.shape(), p.device());
        }
        const Tensor<T> grad = p.grad().contiguous();
        T* w = p.data();
        const T* g = grad.data();
        T* m = s.exp_avg.data();
        T* v = s.exp_avg_sq.data();
        const kernels::AdamUpdate<T> update{static_cast<T>(group.lr),         static_cast<T>(group.weight_decay),
                                            static_cast<T>(options_.beta1),  static_cast<T>(options_.beta2),
                                            static_cast<T>(options_.eps),    static_cast<T>(group.lr / bias1),
                                            static_cast<T>(bias2_sqrt),      options_.decoupled_weight_decay};
        dispatch(p.device(), "Adam", [&] { detail::adam_on_host(update, w, g, m, v, p.numel()); },
                 [&] { backends::cuda::launch_on_device(backends::cuda::AdamStep<T>{update, w, g, m, v, p.numel()}); });
      }
    }
  }

  std::map<std::string, Tensor<T>> state_dict() const override {
    std::map<std::string, Tensor<T>> out{{"step", Tensor<T>::full({}, static_cast<T>(step_))}};
    for (std::size_t g = 0; g < state_.size(); ++g)
      for (std::size_t p = 0; p < state_[g].size(); ++p) {
        if (!state_[g][p].exp_avg.defined()) continue;
        out[this->key(g, p, "exp_avg")] = state_[g][p].exp_avg.clone();
        out[this->key(g, p, "exp_avg_sq")] = state_[g][p].exp_avg_sq.clone();
      }
    return out;
  }
  void load_state_dict(const std::map<std::string, Tensor<T>>& state) override {
    auto it = state.find("step");
    check(it != state.end(), "Adam: optimizer state has no 'step'");
    step_ = static_cast<long>(it->second.item());
    for (std::size_t g = 0; g < state_.size(); ++g)
      for (std::size_t p = 0; p < state_[g].size(); ++p) {
        const Shape& shape = this->groups_[g].params[p].shape();
        this->restore(state, this->key(g, p, "exp_avg"), state_[g][p].exp_avg, shape);
        this->restore(state, this->key(g, p, "exp_avg_sq"), state_[g][p].exp_avg_sq, shape);
      }
  }
  long steps_taken() const noexcept { return step_; }

 private:
  struct State {
    Tensor<T> exp_avg, exp_avg_sq;
  };
  AdamOptions options_;
  std::vector<std::vector<State>> state_;
  long step_ = 0;
};

/// AdamW: Adam with decoupled weight decay.
template <class T>
class AdamW final : public Adam<T> {
 public:
  AdamW(std::vector<ParamGroup<T>> groups, AdamOptions options = {})
      : Adam<T>(std::move(groups), with_decoupled(options)) {}

 private:
  static AdamOptions with_decoupled(AdamOptions o) {
    o.decoupled_weight_decay = true;
    return o;
  }
};

}  // namespace optim
QX_NAMESPACE_END
