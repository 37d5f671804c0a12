// CUDA kernels of the element-wise ops (fill, relu, the guided rule, add, mul), one output element per
// index. The arithmetic is kernels/functors.hpp's, the functions the CPU ops call.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/kernels/functors.hpp"

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// y[i] = value
template <class T>
struct Fill {
  T* y;
  Index n;
  T value;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const { y[i] = value; }
};

/// y[i] = relu(x[i])
template <class T>
struct ReluForward {
  const T* x;
  T* y;
  Index n;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const { y[i] = kernels::Relu{}(x[i]); }
};

/// grad_x[i] = rule(g[i], y[i mod per_replica]): ReluGrad, or GuidedReluGrad when `guided`. g may hold
/// several replicas of y's shape stacked along dimension 0 (autograd BackwardOptions::replicas).
template <class T>
struct ReluBackward {
  const T* grad_y;
  const T* y;
  T* grad_x;
  Index n, per_replica;
  bool guided;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const T yi = y[i % per_replica];
    grad_x[i] = guided ? kernels::GuidedReluGrad{}(grad_y[i], yi) : kernels::ReluGrad{}(grad_y[i], yi);
  }
};

/// y[i] = a[i] + b[i] (mul: a[i]·b[i]), then relu when `relu` (add_relu); y may be a (in-place sums).
template <class T>
struct AddForward {
  const T* a;
  const T* b;
  T* y;
  Index n;
  bool multiply;
  bool relu = false;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const T v = multiply ? a[i] * b[i] : a[i] + b[i];
    y[i] = relu ? kernels::Relu{}(v) : v;
  }
};

}  // namespace backends::cuda
QX_NAMESPACE_END
