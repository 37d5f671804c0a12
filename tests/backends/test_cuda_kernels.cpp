// Every CUDA kernel body, run on the CPU by the host launcher (backends/cuda/launch.hpp) over the same
// grid a GPU would use — and over small odd grids, so the grid-stride tail is reached — and compared with
// the CPU op, forward and backward. These tests need no GPU and no nvcc: they prove the indexing, the
// bounds and the reductions of the GPU code; docs/cuda.md says what they cannot prove.
#include <doctest/doctest.h>

#include "qx/autograd/engine.hpp"
#include "qx/backends/cuda/batch_norm2d.hpp"
#include "qx/backends/cuda/conv2d.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/backends/cuda/interpolate.hpp"
#include "qx/backends/cuda/linear.hpp"
#include "qx/backends/cuda/optim.hpp"
#include "qx/backends/cuda/pooling.hpp"
#include "qx/backends/cuda/softmax.hpp"
#include "qx/core/random.hpp"
#include "qx/kernels/conv2d.hpp"
#include "qx/kernels/gemm.hpp"
#include "qx/nn/layers.hpp"
#include "qx/ops/add.hpp"
#include "qx/ops/add_relu.hpp"
#include "qx/ops/batch_norm2d.hpp"
#include "qx/ops/conv2d.hpp"
#include "qx/ops/interpolate.hpp"
#include "qx/ops/linear.hpp"
#include "qx/ops/pooling.hpp"
#include "qx/ops/relu.hpp"
#include "qx/ops/softmax.hpp"
#include "qx/optim/adam.hpp"
#include "qx/optim/sgd.hpp"
#include "qx/train/weight_average.hpp"

#include <cmath>
#include <vector>

namespace cuda = qx::backends::cuda;
using qx::Index;
using qx::Tensor;

namespace {
/// The grids every kernel runs on: its own (launch_shape), one block of one thread, and small odd grids
/// whose threads each stride over many indices.
std::vector<cuda::LaunchShape> shapes_for(Index n) { return {cuda::launch_shape(n), {1, 1}, {3, 7}, {2, 32}}; }

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

/// Worst |a − b| / (1 + |b|) over two equally long arrays.
template <class T>
double worst_error(const T* a, const T* b, Index n) {
  double worst = 0;
  for (Index i = 0; i < n; ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])) / (1.0 + std::abs(static_cast<double>(b[i])));
    worst = std::max(worst, d != d ? INFINITY : d);
  }
  return worst;
}

template <class T>
void expect_same(const T* actual, const Tensor<T>& expected, const char* what) {
  const Tensor<T> e = expected.contiguous();
  const double worst = worst_error(actual, e.data(), e.numel());
  CHECK_MESSAGE(worst <= tolerance<T>(), what, ": worst relative error ", worst);
}

/// Runs `make(output)` on every grid of shapes_for, each time into a buffer pre-filled with NaN (so an
/// index the kernel skips shows), and checks the output against `expected`.
template <class T, class Make>
void check_kernel(const Tensor<T>& expected, const char* what, Make&& make) {
  for (const auto shape : shapes_for(expected.numel())) {
    CAPTURE(shape.grid);
    CAPTURE(shape.block);
    std::vector<T> out(static_cast<std::size_t>(expected.numel()), static_cast<T>(NAN));
    cuda::launch_on_host(make(out.data()), shape);
    expect_same(out.data(), expected, what);
  }
}

template <class T>
Tensor<T> randn(const qx::Shape& shape, qx::Rng& rng) {
  return Tensor<T>::randn(shape, rng);
}

/// Σ y·seed's gradient with respect to each of `inputs` (the backward of y seeded with `seed`).
template <class T>
void backward(const Tensor<T>& y, const Tensor<T>& seed) {
  qx::autograd::backward(y, seed);
}

/// The device drivers' executor on the CPU: kernels through the host launcher on an odd grid, the CPU
/// GEMM, host scratch.
struct HostExecutor {
  template <class Kernel>
  static void launch(const Kernel& kernel) {
    cuda::launch_on_host(kernel, {3, 7});
  }
  template <class T>
  static void gemm(bool ta, bool tb, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb, T beta,
                   T* c, Index ldc) {
    qx::kernels::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  template <class T>
  using Buffer = qx::memory::Buffer<T>;
};

struct CountOnce {
  int* hits;
  Index n;
  Index size() const { return n; }
  void operator()(Index i) const { ++hits[i]; }
};
}  // namespace

TEST_CASE("host launcher: every index runs exactly once on every grid") {
  for (Index n : {0, 1, 7, 255, 256, 257, 1000}) {
    for (const auto shape : shapes_for(n)) {
      std::vector<int> hits(static_cast<std::size_t>(n), 0);
      cuda::launch_on_host(CountOnce{hits.data(), n}, shape);
      for (Index i = 0; i < n; ++i) CHECK_MESSAGE(hits[static_cast<std::size_t>(i)] == 1, "n ", n, " index ", i);
    }
  }
  CHECK(cuda::launch_shape(0).grid == 1);
  CHECK(cuda::launch_shape(257).grid == 2);
  CHECK(cuda::launch_shape(Index{1} << 40).grid == cuda::max_blocks);
}

TEST_CASE_TEMPLATE("cuda kernels: fill, relu, guided relu, add, mul", T, float, double) {
  qx::Rng rng(11);
  auto x = randn<T>({3, 5, 7}, rng), b = randn<T>({3, 5, 7}, rng);
  const Index n = x.numel();
  check_kernel(Tensor<T>::full({n}, T(2.5)), "fill", [&](T* out) { return cuda::Fill<T>{out, n, T(2.5)}; });
  auto y = qx::ops::relu(x);
  check_kernel(y, "relu", [&](T* out) { return cuda::ReluForward<T>{x.data(), out, n}; });
  check_kernel(qx::ops::add(x, b), "add", [&](T* out) { return cuda::AddForward<T>{x.data(), b.data(), out, n, false}; });
  check_kernel(qx::ops::mul(x, b), "mul", [&](T* out) { return cuda::AddForward<T>{x.data(), b.data(), out, n, true}; });
  check_kernel(qx::ops::add_relu(x, b), "add_relu",
               [&](T* out) { return cuda::AddForward<T>{x.data(), b.data(), out, n, false, true}; });
  // Backward over two replicas of the gradient, plain and guided.
  auto g = randn<T>({6, 5, 7}, rng);
  check_kernel(qx::ops::detail::relu_grad(g, y), "relu backward",
               [&](T* out) { return cuda::ReluBackward<T>{g.data(), y.data(), out, 2 * n, n, false}; });
  auto guided = Tensor<T>::empty(g.shape());
  for (Index i = 0; i < 2 * n; ++i) guided.data()[i] = (y.data()[i % n] > 0 && g.data()[i] > 0) ? g.data()[i] : T(0);
  check_kernel(guided, "guided relu backward",
               [&](T* out) { return cuda::ReluBackward<T>{g.data(), y.data(), out, 2 * n, n, true}; });
}

TEST_CASE_TEMPLATE("cuda kernels: batch_norm2d training and eval, with and without the fused relu, forward and backward", T,
                   float, double) {
  qx::Rng rng(12);
  const Index n = 3, c = 4, h = 5, w = 6, plane = h * w;
  for (bool training : {true, false})
    for (bool relu : {false, true}) {
      CAPTURE(training);
      CAPTURE(relu);
      auto x = randn<T>({n, c, h, w}, rng).requires_grad_();
      auto gamma = Tensor<T>::uniform({c}, rng, 0.5, 1.5).requires_grad_(), beta = randn<T>({c}, rng).requires_grad_();
      auto rm = randn<T>({c}, rng), rv = Tensor<T>::uniform({c}, rng, 0.5, 2.0);
      auto rm_gpu = rm.clone(), rv_gpu = rv.clone();
      auto y = relu ? qx::ops::batch_norm2d_relu(x, gamma, beta, rm, rv, training)
                    : qx::ops::batch_norm2d(x, gamma, beta, rm, rv, training);
      auto g = randn<T>(x.shape(), rng);
      backward(y, g);

      // The device drivers, statistics (two passes in training, the running ones in eval) and all.
      std::vector<T> mean(c), inv_std(c), y_gpu(static_cast<std::size_t>(x.numel()));
      const cuda::BatchNormTerms<T> bn{x.data(), mean.data(), inv_std.data(), gamma.data(), beta.data(), n, c, plane, relu};
      cuda::batch_norm2d_forward<T, HostExecutor>(bn, mean.data(), inv_std.data(), rm_gpu.data(), rv_gpu.data(), training, 0.1,
                                                  1e-5, y_gpu.data());
      expect_same(rm_gpu.data(), rm, "running mean");
      expect_same(rv_gpu.data(), rv, "running var");
      expect_same(y_gpu.data(), y, "batch norm forward (driver)");
      check_kernel(y, "batch norm forward", [&](T* out) { return cuda::BatchNormForward<T>{bn, out}; });

      std::vector<T> grad_gamma(c), grad_beta(c), grad_x(static_cast<std::size_t>(x.numel()));
      cuda::batch_norm2d_backward<T, HostExecutor>(bn, g.data(), training, grad_x.data(), grad_gamma.data(), grad_beta.data());
      expect_same(grad_gamma.data(), gamma.grad(), "grad gamma");
      expect_same(grad_beta.data(), beta.grad(), "grad beta");
      expect_same(grad_x.data(), x.grad(), "batch norm backward input (driver)");
      // The input gradient's kernel alone, on every grid, with the means the reduction gave.
      std::vector<double> partial(static_cast<std::size_t>(2 * n * c));
      std::vector<T> means(2 * c);
      cuda::launch_on_host(cuda::BatchNormBackwardPartialSums<T>{bn, g.data(), partial.data()});
      cuda::launch_on_host(cuda::BatchNormBackwardReduce<T>{partial.data(), nullptr, nullptr, means.data(), n, c, plane, training});
      check_kernel(x.grad(), "batch norm backward input",
                   [&](T* out) { return cuda::BatchNormBackwardInput<T>{bn, g.data(), means.data(), out}; });
    }
}

TEST_CASE_TEMPLATE("cuda kernels: conv2d by im2col, col2im and the bias sums, against the CPU convolution", T, float, double) {
  qx::Rng rng(13);
  using qx::kernels::Conv2dShape;
  // (n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w): 3×3 padded, strided 7×7 (the stem),
  // pointwise strided (a downsample), non-square with unequal strides and paddings.
  for (const Conv2dShape& s : {Conv2dShape{2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1}, Conv2dShape{2, 3, 13, 11, 5, 7, 7, 2, 2, 3, 3},
                              Conv2dShape{3, 4, 7, 7, 6, 1, 1, 2, 2, 0, 0}, Conv2dShape{2, 2, 9, 6, 3, 3, 2, 2, 1, 0, 1}}) {
    CAPTURE(s.kh);
    CAPTURE(s.stride_h);
    const Index k = s.patch(), p = s.positions(), oh = s.out_h(), ow = s.out_w();
    auto x = randn<T>({s.n, s.c_in, s.h, s.w}, rng), wt = randn<T>({s.c_out, s.c_in, s.kh, s.kw}, rng);
    auto bias = randn<T>({s.c_out}, rng), g = randn<T>({s.n, s.c_out, oh, ow}, rng);

    auto expected_y = Tensor<T>::empty({s.n, s.c_out, oh, ow}), expected_gx = Tensor<T>::empty(x.shape());
    auto expected_gw = Tensor<T>::empty(wt.shape()), expected_gb = Tensor<T>::empty({s.c_out});
    qx::kernels::conv2d_forward(s, x.data(), wt.data(), bias.data(), expected_y.data());
    qx::kernels::conv2d_backward_input(s, g.data(), wt.data(), expected_gx.data());
    qx::kernels::conv2d_backward_weight(s, x.data(), g.data(), expected_gw.data(), expected_gb.data());

    // The device drivers (one column buffer, one GEMM per image), forward and both backwards.
    std::vector<T> y(static_cast<std::size_t>(expected_y.numel())), gx(static_cast<std::size_t>(x.numel()));
    std::vector<T> gw(static_cast<std::size_t>(wt.numel())), gb(static_cast<std::size_t>(s.c_out));
    cuda::conv2d_forward<T, HostExecutor>(s, x.data(), wt.data(), bias.data(), y.data());
    expect_same(y.data(), expected_y, "conv2d forward");
    {  // with the output stage (residual add and ReLU) the CPU store applies
      auto residual = randn<T>(expected_y.shape(), rng), expected_z = Tensor<T>::empty(expected_y.shape());
      const qx::kernels::ConvOutputStage<T> stage{residual.data(), true};
      qx::kernels::conv2d_forward(s, x.data(), wt.data(), bias.data(), expected_z.data(), stage);
      std::vector<T> z(y.size());
      cuda::conv2d_forward<T, HostExecutor>(s, x.data(), wt.data(), bias.data(), z.data(), stage);
      expect_same(z.data(), expected_z, "conv2d forward with residual and relu");
      check_kernel(expected_z, "conv2d output stage", [&](T* out) {
        std::copy(y.begin(), y.end(), out);  // the biased product, before the stage
        for (std::size_t i = 0; i < y.size(); ++i) out[i] -= bias.data()[(static_cast<Index>(i) / p) % s.c_out];
        return cuda::FinishConvOutput<T>{out, bias.data(), stage, s.n, s.c_out, p};
      });
    }
    cuda::conv2d_backward_input<T, HostExecutor>(s, g.data(), wt.data(), gx.data());
    expect_same(gx.data(), expected_gx, "conv2d backward input");
    cuda::conv2d_backward_weight<T, HostExecutor>(s, x.data(), g.data(), gw.data(), gb.data());
    expect_same(gw.data(), expected_gw, "conv2d backward weight");
    expect_same(gb.data(), expected_gb, "conv2d bias gradient");

    // Each kernel on every grid, with several images' columns side by side (the `images` layout).
    std::vector<T> col(static_cast<std::size_t>(k * s.n * p));
    auto expected_col = Tensor<T>::empty({k, s.n * p});
    qx::kernels::detail::im2col_block(s, x.data(), s.n, expected_col.data());
    check_kernel(expected_col, "im2col", [&](T* out) { return cuda::Im2col<T>{s, x.data(), out, s.n}; });
    for (Index b = 0; b < s.n; ++b)  // ∂col = Wᵀ g per image into the shared column layout
      qx::kernels::gemm(true, false, k, p, s.c_out, T(1), wt.data(), k, g.data() + b * s.c_out * p, p, T(0),
                        col.data() + b * p, s.n * p);
    check_kernel(expected_gx, "col2im", [&](T* out) { return cuda::Col2im<T>{s, col.data(), out, s.n}; });
    check_kernel(expected_gb, "conv2d bias gradient", [&](T* out) { return cuda::ChannelSums<T>{g.data(), out, s.n, s.c_out, p}; });
  }
}

TEST_CASE_TEMPLATE("cuda kernels: max_pool2d and adaptive_avg_pool2d, forward and backward with replicas", T, float, double) {
  qx::Rng rng(14);
  const Index n = 2, c = 3;
  struct Pool {
    Index h, w, kernel, stride, padding;
  };
  for (const Pool pool : {Pool{8, 8, 3, 2, 1}, Pool{7, 9, 2, 2, 0}, Pool{6, 5, 3, 1, 1}}) {
    CAPTURE(pool.h);
    auto x = randn<T>({n, c, pool.h, pool.w}, rng).requires_grad_();
    auto y = qx::ops::max_pool2d(x, pool.kernel, pool.stride, pool.padding);
    const Index oh = y.size(2), ow = y.size(3), planes = n * c;
    std::vector<Index> argmax(static_cast<std::size_t>(y.numel()));
    check_kernel(y, "max_pool2d forward", [&](T* out) {
      return cuda::MaxPoolForward<T>{x.data(), out, argmax.data(), {planes, pool.h, pool.w, oh, ow}, pool.kernel, pool.stride,
                                     pool.padding};
    });
    // Two replicas of the gradient in one walk, as the attribution pass sends them.
    auto g = randn<T>({2 * n, c, oh, ow}, rng);
    qx::autograd::BackwardOptions<T> options;
    options.replicas = 2;
    options.inputs = {x};
    qx::autograd::backward(y, g, options);
    check_kernel(x.grad(), "max_pool2d backward", [&](T* out) {
      return cuda::MaxPoolBackward<T>{g.data(), argmax.data(), out, {2 * planes, pool.h, pool.w, oh, ow}, planes, pool.kernel,
                                      pool.stride, pool.padding};
    });
  }
  for (const auto& [h, w, oh, ow] : std::vector<std::array<Index, 4>>{{7, 7, 1, 1}, {10, 7, 3, 4}, {5, 6, 5, 6}}) {
    auto x = randn<T>({n, c, h, w}, rng).requires_grad_();
    auto y = qx::ops::adaptive_avg_pool2d(x, oh, ow);
    check_kernel(y, "adaptive_avg_pool2d forward",
                 [&](T* out) { return cuda::AdaptiveAvgPoolForward<T>{x.data(), out, {n * c, h, w, oh, ow}}; });
    auto g = randn<T>(y.shape(), rng);
    backward(y, g);
    check_kernel(x.grad(), "adaptive_avg_pool2d backward",
                 [&](T* out) { return cuda::AdaptiveAvgPoolBackward<T>{g.data(), out, {n * c, h, w, oh, ow}}; });
  }
}

TEST_CASE_TEMPLATE("cuda kernels: bilinear resize up and down, forward and backward", T, float, double) {
  qx::Rng rng(15);
  for (const auto& [h, w, oh, ow] : std::vector<std::array<Index, 4>>{{7, 7, 64, 64}, {2, 3, 9, 5}, {11, 9, 4, 3}, {5, 5, 5, 5}}) {
    CAPTURE(h);
    CAPTURE(oh);
    auto x = randn<T>({2, 3, h, w}, rng).requires_grad_();
    auto y = qx::ops::interpolate_bilinear(x, oh, ow);
    check_kernel(y, "bilinear forward", [&](T* out) { return cuda::BilinearForward<T>{x.data(), out, {6, h, w, oh, ow}}; });
    auto g = randn<T>(y.shape(), rng);
    backward(y, g);
    check_kernel(x.grad(), "bilinear backward", [&](T* out) { return cuda::BilinearBackward<T>{g.data(), out, {6, h, w, oh, ow}}; });
  }
}

TEST_CASE_TEMPLATE("cuda kernels: linear bias, log_softmax and weighted cross-entropy, forward and backward", T, float, double) {
  qx::Rng rng(16);
  const Index n = 5, in = 7, out = 3;
  auto x = randn<T>({n, in}, rng), wt = randn<T>({out, in}, rng), bias = randn<T>({out}, rng).requires_grad_();
  auto y = qx::ops::linear(x, wt, bias);
  std::vector<T> y_gpu(static_cast<std::size_t>(n * out));
  cuda::launch_on_host(cuda::BroadcastRows<T>{bias.data(), y_gpu.data(), n, out}, {3, 7});
  qx::kernels::gemm(false, true, n, out, in, T(1), x.data(), in, wt.data(), in, T(1), y_gpu.data(), out);
  expect_same(y_gpu.data(), y, "linear forward");
  auto g = randn<T>(y.shape(), rng);
  backward(y, g);
  check_kernel(bias.grad(), "linear bias gradient", [&](T* o) { return cuda::ColumnSums<T>{g.data(), o, n, out}; });

  auto logits = randn<T>({n, out}, rng).requires_grad_();
  auto lp = qx::ops::log_softmax(logits);
  check_kernel(lp, "log_softmax forward", [&](T* o) { return cuda::LogSoftmaxForward<T>{logits.data(), o, n, out}; });
  backward(lp, g);
  check_kernel(logits.grad(), "log_softmax backward",
               [&](T* o) { return cuda::LogSoftmaxBackward<T>{g.data(), lp.data(), o, n, out}; });

  logits.zero_grad();
  const std::vector<Index> targets{0, 2, 1, 2, 2};
  auto class_weights = Tensor<T>::from({out}, {T(0.5), T(2), T(1.5)});
  auto loss = qx::ops::cross_entropy(logits, targets, class_weights);
  std::vector<T> sample_weight(static_cast<std::size_t>(n)), loss_gpu(1);
  auto log_probs = qx::ops::log_softmax(logits.detach());
  cuda::launch_on_host(cuda::CrossEntropyForward<T>{log_probs.data(), targets.data(), class_weights.data(), sample_weight.data(),
                                                    loss_gpu.data(), n, out});
  expect_same(loss_gpu.data(), loss, "cross-entropy loss");
  backward(loss, Tensor<T>::full({}, T(0.75)));
  check_kernel(logits.grad(), "cross-entropy backward", [&](T* o) {
    return cuda::CrossEntropyBackward<T>{log_probs.data(), targets.data(), sample_weight.data(), T(0.75), o, n, out};
  });
}

TEST_CASE_TEMPLATE("cuda kernels: Adam, AdamW and SGD steps match the CPU optimisers", T, float, double) {
  qx::Rng rng(17);
  for (int variant = 0; variant < 4; ++variant) {
    CAPTURE(variant);
    auto p = randn<T>({41}, rng).requires_grad_();
    auto w = p.detach().clone();
    const auto grad = randn<T>({41}, rng);
    p.ensure_meta().grad = std::make_shared<Tensor<T>>(grad.clone());
    std::vector<T> m(41, T(0)), v(41, T(0)), buffer(41, T(0));
    const double lr = 0.01, wd = 0.1;
    if (variant < 2) {
      qx::optim::AdamOptions o;
      o.decoupled_weight_decay = variant == 1;
      qx::optim::Adam<T> adam({{{p}, lr, wd}}, o);
      for (int step = 1; step <= 2; ++step) {
        adam.step();
        const double bias1 = 1 - std::pow(o.beta1, step), bias2_sqrt = std::sqrt(1 - std::pow(o.beta2, step));
        const qx::kernels::AdamUpdate<T> update{T(lr), T(wd), T(o.beta1), T(o.beta2), T(o.eps), T(lr / bias1), T(bias2_sqrt),
                                                o.decoupled_weight_decay};
        cuda::launch_on_host(cuda::AdamStep<T>{update, w.data(), grad.data(), m.data(), v.data(), 41}, {3, 7});
      }
    } else {
      qx::optim::SgdOptions o;
      o.momentum = 0.9;
      o.nesterov = variant == 3;
      qx::optim::Sgd<T> sgd({{{p}, lr, wd}}, o);
      for (int step = 1; step <= 2; ++step) {
        sgd.step();
        const qx::kernels::SgdUpdate<T> update{T(lr), T(wd), T(o.momentum), T(o.dampening), o.nesterov, step == 1};
        cuda::launch_on_host(cuda::SgdStep<T>{update, w.data(), grad.data(), buffer.data(), 41}, {3, 7});
      }
    }
    expect_same(w.data(), p, "parameters after two steps");
  }
}

TEST_CASE_TEMPLATE("cuda kernels: the weight average's update and swap match train::WeightAverage on the CPU", T, float, double) {
  qx::Rng rng(23);
  qx::nn::Linear<T> model(5, 8, rng);  // 48 values
  std::vector<T> average(model.weight.to_vector());
  const auto bias = model.bias.to_vector();
  average.insert(average.end(), bias.begin(), bias.end());
  qx::train::WeightAverage<T> cpu(model, 0.9);
  std::vector<T> w;
  for (int step = 1; step <= 3; ++step) {
    const T decay = static_cast<T>(cpu.next_decay());
    model.weight = randn<T>({8, 5}, rng);
    model.bias = randn<T>({8}, rng);
    cpu.update();
    w = model.weight.to_vector();
    const auto b = model.bias.to_vector();
    w.insert(w.end(), b.begin(), b.end());
    cuda::launch_on_host(cuda::AverageStep<T>{{decay}, average.data(), w.data(), 48}, {3, 7});
  }
  cpu.swap();  // the model now holds the CPU average
  auto expected = model.weight.to_vector();
  const auto expected_bias = model.bias.to_vector();
  expected.insert(expected.end(), expected_bias.begin(), expected_bias.end());
  expect_same(average.data(), Tensor<T>::from({48}, expected), "average after three steps");
  std::vector<T> a = average, b = w;
  cuda::launch_on_host(cuda::SwapValues<T>{a.data(), b.data(), 48}, {3, 7});
  CHECK(a == w);
  CHECK(b == average);
}
