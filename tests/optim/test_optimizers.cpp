// Adam, AdamW, SGD (plain, momentum with dampening and weight decay, Nesterov) and StepLR against
// torch.optim 1.13 trajectories (tests/fixtures/make_optim_fixtures.py), to 1e-6, in float and double;
// and an exact resume through state_dict()/load_state_dict().
#include <doctest/doctest.h>

#include "qx/io/safetensors.hpp"
#include "qx/optim/optim.hpp"

#include <cmath>
#include <functional>
#include <memory>

using qx::Tensor;
using namespace qx::optim;

namespace {
const qx::io::SafetensorsFile& fixture() {
  static const auto f = qx::io::SafetensorsFile::open(QX_TEST_FIXTURES "/optim/optim.safetensors");
  return f;
}

template <class T>
using Factory = std::function<std::unique_ptr<Optimizer<T>>(std::vector<ParamGroup<T>>)>;

template <class T>
std::map<std::string, Factory<T>> factories() {
  return {
      {"adam", [](auto g) { for (auto& x : g) x.lr = 1e-2, x.weight_decay = 0.1; return std::make_unique<Adam<T>>(g); }},
      {"adam_betas", [](auto g) { for (auto& x : g) x.lr = 3e-2; return std::make_unique<Adam<T>>(g, AdamOptions{0.8, 0.95, 1e-6}); }},
      {"adamw", [](auto g) { for (auto& x : g) x.lr = 1e-2, x.weight_decay = 0.1; return std::make_unique<AdamW<T>>(g); }},
      {"sgd", [](auto g) { for (auto& x : g) x.lr = 0.1; return std::make_unique<Sgd<T>>(g); }},
      {"sgd_momentum", [](auto g) { for (auto& x : g) x.lr = 0.1, x.weight_decay = 0.01; return std::make_unique<Sgd<T>>(g, SgdOptions{0.9, 0.1, false}); }},
      {"sgd_nesterov", [](auto g) { for (auto& x : g) x.lr = 0.05, x.weight_decay = 0.02; return std::make_unique<Sgd<T>>(g, SgdOptions{0.9, 0.0, true}); }},
  };
}

template <class T>
void set_grads(std::vector<Tensor<T>>& params, int step) {
  for (int k = 0; k < 2; ++k) {
    params[k].zero_grad();
    auto& meta = params[k].ensure_meta();
    meta.grad = std::make_shared<Tensor<T>>(fixture().get_as<T>("grad" + std::to_string(step) + ".p" + std::to_string(k)));
  }
}
}  // namespace

TEST_CASE_TEMPLATE("optimisers follow torch.optim step by step", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-6;
  for (auto& [name, make] : factories<T>()) {
    CAPTURE(name);
    std::vector<Tensor<T>> params{fixture().get_as<T>("init.p0").requires_grad_(), fixture().get_as<T>("init.p1").requires_grad_()};
    auto optimizer = make({ParamGroup<T>{params, 0, 0, "all"}});
    for (int s = 0; s < 6; ++s) {
      set_grads(params, s);
      optimizer->step();
      for (int k = 0; k < 2; ++k) {
        const auto expected = fixture().get_as<double>(name + ".step" + std::to_string(s) + ".p" + std::to_string(k));
        double worst = 0;
        for (qx::Index i = 0; i < expected.numel(); ++i) worst = std::max(worst, std::abs(double(params[k].data()[i]) - expected.data()[i]));
        CHECK_MESSAGE(worst <= tol, name, " step ", s, " param ", k, ": max abs error ", worst);
      }
    }
  }
}

TEST_CASE_TEMPLATE("a resumed optimiser continues exactly", T, float, double) {
  for (auto& [name, make] : factories<T>()) {
    CAPTURE(name);
    std::vector<Tensor<T>> straight{fixture().get_as<T>("init.p0").requires_grad_(), fixture().get_as<T>("init.p1").requires_grad_()};
    auto a = make({ParamGroup<T>{straight, 0, 0, "all"}});
    for (int s = 0; s < 6; ++s) set_grads(straight, s), a->step();
    std::vector<Tensor<T>> resumed{fixture().get_as<T>("init.p0").requires_grad_(), fixture().get_as<T>("init.p1").requires_grad_()};
    auto b = make({ParamGroup<T>{resumed, 0, 0, "all"}});
    for (int s = 0; s < 3; ++s) set_grads(resumed, s), b->step();
    const auto saved = b->state_dict();
    std::vector<Tensor<T>> copy{resumed[0].clone().requires_grad_(), resumed[1].clone().requires_grad_()};
    auto c = make({ParamGroup<T>{copy, 0, 0, "all"}});
    c->load_state_dict(saved);
    for (int s = 3; s < 6; ++s) set_grads(copy, s), c->step();
    CHECK(copy[0].to_vector() == straight[0].to_vector());
    CHECK(copy[1].to_vector() == straight[1].to_vector());
  }
}

TEST_CASE("parameters without a gradient are left alone, and StepLR matches torch") {
  std::vector<Tensor<double>> params{Tensor<double>::ones({2}).requires_grad_()};
  Adam<double> adam({ParamGroup<double>{params, 0.1, 0, "frozen"}});
  adam.step();
  CHECK(params[0].to_vector() == std::vector<double>{1, 1});
  StepLR<double> schedule(adam, 4, 0.1);
  const auto expected = fixture().get<double>("steplr.lrs");
  for (qx::Index epoch = 0; epoch < expected.numel(); ++epoch) {
    CHECK(adam.lr(0) == doctest::Approx(expected.data()[epoch]).epsilon(1e-12));
    schedule.step();
  }
  CHECK_THROWS_AS(StepLR<double>(adam, 0, 0.1), qx::Error);
  CHECK_THROWS_AS(Sgd<double>({ParamGroup<double>{params, 0.1, 0, "x"}}, SgdOptions{0, 0, true}), qx::Error);
}

TEST_CASE("Adam on the host: floats 16 at a time as vectors give the scalar body's results bit for bit") {
  // The PyTorch trajectories above have 12 and 5 elements, all in the scalar tail; here 16·9 + 7
  // elements take the vector blocks and the tail, for Adam and AdamW, over several steps.
  const qx::Index n = 16 * 9 + 7;
  for (const bool decoupled : {false, true}) {
    CAPTURE(decoupled);
    qx::Rng rng(decoupled ? 11 : 12);
    auto w = Tensor<float>::randn({n}, rng), m = Tensor<float>::zeros({n}), v = Tensor<float>::zeros({n});
    auto w_ref = w.clone(), m_ref = m.clone(), v_ref = v.clone();
    for (int step = 1; step <= 4; ++step) {
      const auto g = Tensor<float>::randn({n}, rng, 0.0, 0.5);
      const float bias1 = 1.0f - std::pow(0.9f, float(step)), bias2_sqrt = std::sqrt(1.0f - std::pow(0.999f, float(step)));
      const qx::kernels::AdamUpdate<float> update{1e-2f, 0.1f, 0.9f, 0.999f, 1e-8f, 1e-2f / bias1, bias2_sqrt, decoupled};
      qx::optim::detail::adam_on_host(update, w.data(), g.data(), m.data(), v.data(), n);
      for (qx::Index i = 0; i < n; ++i) update(w_ref.data()[i], g.data()[i], m_ref.data()[i], v_ref.data()[i]);
      for (qx::Index i = 0; i < n; ++i) {
        CHECK(w.data()[i] == w_ref.data()[i]);
        CHECK(m.data()[i] == m_ref.data()[i]);
        CHECK(v.data()[i] == v_ref.data()[i]);
      }
    }
  }
}
