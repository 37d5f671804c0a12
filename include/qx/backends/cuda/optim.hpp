// CUDA kernels of the optimiser steps: one parameter element per index, through the update functors
// the CPU optimisers call (kernels::AdamUpdate, kernels::SgdUpdate; formulas in optim/adam.hpp, sgd.hpp).
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/kernels/functors.hpp"

QX_NAMESPACE_BEGIN
namespace backends::cuda {

template <class T>
struct AdamStep {
  kernels::AdamUpdate<T> update;
  T* w;
  const T* g;
  T* m;
  T* v;
  Index n;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const { update(w[i], g[i], m[i], v[i]); }
};

template <class T>
struct SgdStep {
  kernels::SgdUpdate<T> update;
  T* w;
  const T* g;
  T* buffer;  // momentum buffer or null
  Index n;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const { update(w[i], g[i], buffer ? buffer + i : nullptr); }
};

template <class T>
struct AverageStep {
  kernels::AverageUpdate<T> update;
  T* average;
  const T* w;
  Index n;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const { update(average[i], w[i]); }
};

/// Exchanges two arrays element by element (the model's weights and their average).
template <class T>
struct SwapValues {
  T* a;
  T* b;
  Index n;
  Index size() const { return n; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const T t = a[i];
    a[i] = b[i];
    b[i] = t;
  }
};

}  // namespace backends::cuda
QX_NAMESPACE_END
