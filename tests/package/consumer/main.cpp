// A consumer of an installed qx: one include, one target. Exits non-zero if the gradient is wrong.
#include <qx/qx.hpp>

#include <cstdio>

int main() {
  auto x = qx::Tensor<double>::from({1, 3}, {1.0, -2.0, 3.0}).requires_grad_();
  auto y = qx::ops::sum(qx::ops::relu(x));
  qx::autograd::backward(y);
  const auto g = x.grad().to_vector();
  std::printf("grad = %g %g %g\n", g[0], g[1], g[2]);
  return (g[0] == 1.0 && g[1] == 0.0 && g[2] == 1.0) ? 0 : 1;
}
