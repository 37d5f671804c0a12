// qx::gradcheck — compares the engine's analytic gradients with central finite differences in double.
// The output is reduced to a scalar with a fixed random projection r (seeded), s = Σ r ⊙ f(x), so every
// output element contributes; ∂s/∂x_i is then compared with (s(x + ε e_i) − s(x − ε e_i)) / 2ε.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/engine.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/core/random.hpp"
#include "qx/core/tensor.hpp"

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN

struct GradcheckOptions {
  double eps = 1e-6;   ///< finite-difference step
  double atol = 1e-6;  ///< accepted |analytic − numeric| ≤ atol + rtol·|numeric|
  double rtol = 1e-4;
  std::uint64_t seed = 0;  ///< seed of the output projection r
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  ///< the worst element: input, index, analytic, numeric
  double max_error = 0;  ///< largest |analytic − numeric| − rtol·|numeric| over all checked elements
  explicit operator bool() const { return ok; }
};

namespace detail {
inline std::string multi_index(const Shape& shape, Index flat) {
  std::vector<Index> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  std::string s = "[";
  for (std::size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}
}  // namespace detail

/**
 * @brief Checks the gradient of `f` with respect to every tensor in `inputs` that requires grad.
 * Parameters are checked the same way: pass the parameter tensors in `inputs` (handles share storage,
 * so the perturbation reaches the module that owns them) and let `f` ignore those arguments.
 * @code
 * auto r = qx::gradcheck([](auto& in) { return qx::ops::relu(in[0]); }, {x});
 * CHECK_MESSAGE(r.ok, r.message);
 * @endcode
 */
template <class F>
GradcheckResult gradcheck(F&& f, std::vector<Tensor<double>> inputs, const GradcheckOptions& options = {}) {
  for (auto& t : inputs) {
    check(t.is_contiguous(), "gradcheck: input of shape ", shape_str(t.shape()), " is not contiguous");
    t.zero_grad();
  }
  Tensor<double> out = f(inputs);
  check(out.requires_grad(), "gradcheck: f's output of shape ", shape_str(out.shape()), " does not require grad");
  Rng rng(options.seed);
  const auto projection = Tensor<double>::uniform(out.shape(), rng, -1.0, 1.0);
  autograd::backward(out, projection);

  auto project = [&]() {
    NoGradGuard no_grad;
    const Tensor<double> y = f(inputs).contiguous();
    double s = 0;
    for (Index i = 0; i < y.numel(); ++i) s += y.data()[i] * projection.data()[i];
    return s;
  };

  GradcheckResult result;
  double worst = -1;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    auto& x = inputs[k];
    if (!x.requires_grad()) continue;
    const Tensor<double> analytic = x.has_grad() ? x.grad() : Tensor<double>::zeros(x.shape());
    double* data = x.data();
    for (Index i = 0; i < x.numel(); ++i) {
      const double saved = data[i];
      data[i] = saved + options.eps;
      const double plus = project();
      data[i] = saved - options.eps;
      const double minus = project();
      data[i] = saved;
      const double numeric = (plus - minus) / (2 * options.eps);
      const double a = analytic.data()[i];
      const double excess = std::abs(a - numeric) - options.rtol * std::abs(numeric);
      if (excess > worst) {
        worst = excess;
        std::ostringstream msg;
        msg.precision(10);
        msg << "gradcheck: input " << k << " of shape " << to_string(x.shape()) << ", element "
            << detail::multi_index(x.shape(), i) << ": analytic " << a << ", numeric " << numeric << " (|diff| "
            << std::abs(a - numeric) << ", tolerance " << options.atol + options.rtol * std::abs(numeric) << ")";
        result.message = msg.str();
      }
    }
  }
  result.max_error = worst;
  result.ok = worst <= options.atol;
  if (result.ok) result.message = "gradcheck passed; worst element: " + result.message;
  return result;
}

QX_NAMESPACE_END
