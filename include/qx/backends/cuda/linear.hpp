// CUDA kernels of linear besides its GEMMs (cuBLAS, backends/cuda/gemm.hpp): the bias broadcast into the
// output before y = x Wᵀ + 1·y, and ∂b = Σ_n g, one output feature per index in sample order, as the CPU.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// y[r, c] = bias[c] for y (N, out).
template <class T>
struct BroadcastRows {
  const T* bias;
  T* y;
  Index n, out;
  Index size() const { return n * out; }
  QX_HOST_DEVICE void operator()(Index i) const { y[i] = bias[i % out]; }
};

/// grad_bias[c] = Σ_r g[r, c], accumulated in T in row order (the CPU's loop).
template <class T>
struct ColumnSums {
  const T* g;
  T* grad_bias;
  Index n, out;
  Index size() const { return out; }
  QX_HOST_DEVICE void operator()(Index c) const {
    T s = T(0);
    for (Index r = 0; r < n; ++r) s += g[r * out + c];
    grad_bias[c] = s;
  }
};

}  // namespace backends::cuda
QX_NAMESPACE_END
