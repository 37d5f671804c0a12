// CUDA kernels of max_pool2d and adaptive_avg_pool2d (ops/pooling.hpp has the semantics). Forward is one
// output element per index; backward is a gather, one input element per index summing the outputs that
// route to it in the CPU's order (ascending output index), so no atomics are needed.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/kernels/functors.hpp"

QX_NAMESPACE_BEGIN
namespace backends::cuda {

QX_HOST_DEVICE inline Index pool_min(Index a, Index b) { return a < b ? a : b; }
QX_HOST_DEVICE inline Index pool_max(Index a, Index b) { return a < b ? b : a; }
/// max_pool2d's scan rule: a value replaces the best so far when it is greater, or NaN (so the first
/// maximum in scan order wins a tie, and a NaN propagates). Also the CPU path's (ops/pooling.hpp).
template <class T>
QX_HOST_DEVICE bool pool_takes(T value, T best) {
  return value > best || value != value;
}

/// y and argmax (flat index in the input plane) of the window of each output element; the first maximum
/// in scan order wins, a NaN wins, the window is clipped to the image (padding is −∞).
template <class T>
struct MaxPoolForward {
  const T* x;
  T* y;
  Index* argmax;
  PlaneMap map;
  Index kernel, stride, padding;
  Index size() const { return map.outputs(); }
  QX_HOST_DEVICE void operator()(Index o) const {
    const PlaneMap::At at = map.output_at(o);
    const Index w = map.w;
    const T* src = x + at.plane * map.h * w;
    const Index r0 = pool_max(0, at.row * stride - padding), r1 = pool_min(map.h, at.row * stride - padding + kernel);
    const Index c0 = pool_max(0, at.col * stride - padding), c1 = pool_min(w, at.col * stride - padding + kernel);
    Index best_at = r0 * w + c0;
    T best = src[best_at];
    for (Index r = r0; r < r1; ++r)
      for (Index c = c0; c < c1; ++c) {
        const T v = src[r * w + c];
        if (pool_takes(v, best)) {
          best = v;
          best_at = r * w + c;
        }
      }
    y[o] = best;
    argmax[o] = best_at;
  }
};

/// grad_x[p, r, c] = Σ of g over the outputs of plane p whose argmax is (r, c). map.planes may count
/// replicas of the gradient; replica plane p used the forward's argmax of plane p mod forward_planes.
template <class T>
struct MaxPoolBackward {
  const T* grad_y;
  const Index* argmax;
  T* grad_x;
  PlaneMap map;
  Index forward_planes, kernel, stride, padding;
  Index size() const { return map.inputs(); }
  QX_HOST_DEVICE void operator()(Index e) const {
    const PlaneMap::At at = map.input_at(e);
    const Index oh = map.oh, ow = map.ow;
    // Outputs whose window [i·s − pad, i·s − pad + k) holds row r: ⌈(r + pad − k + 1)/s⌉ ≤ i ≤ ⌊(r + pad)/s⌋.
    const Index i0 = pool_max(0, (at.row + padding - kernel + stride) / stride), i1 = pool_min(oh - 1, (at.row + padding) / stride);
    const Index j0 = pool_max(0, (at.col + padding - kernel + stride) / stride), j1 = pool_min(ow - 1, (at.col + padding) / stride);
    const Index* arg = argmax + (at.plane % forward_planes) * oh * ow;
    const T* g = grad_y + at.plane * oh * ow;
    T sum = T(0);
    for (Index i = i0; i <= i1; ++i)
      for (Index j = j0; j <= j1; ++j)
        if (arg[i * ow + j] == at.row * map.w + at.col) sum += g[i * ow + j];
    grad_x[e] = sum;
  }
};


/// y = the mean of each output cell, one output element per index.
template <class T>
struct AdaptiveAvgPoolForward {
  const T* x;
  T* y;
  PlaneMap map;
  Index size() const { return map.outputs(); }
  QX_HOST_DEVICE void operator()(Index o) const {
    const PlaneMap::At at = map.output_at(o);
    const T* src = x + at.plane * map.h * map.w;
    const Index r0 = kernels::adaptive_start(at.row, map.oh, map.h), r1 = kernels::adaptive_end(at.row, map.oh, map.h);
    const Index c0 = kernels::adaptive_start(at.col, map.ow, map.w), c1 = kernels::adaptive_end(at.col, map.ow, map.w);
    T s = 0;
    for (Index r = r0; r < r1; ++r)
      for (Index c = c0; c < c1; ++c) s += src[r * map.w + c];
    y[o] = s / static_cast<T>((r1 - r0) * (c1 - c0));
  }
};

/// grad_x[p, r, c] = Σ over the cells holding (r, c) of g/|cell|; map.planes may count replicas.
template <class T>
struct AdaptiveAvgPoolBackward {
  const T* grad_y;
  T* grad_x;
  PlaneMap map;
  Index size() const { return map.inputs(); }
  QX_HOST_DEVICE void operator()(Index e) const {
    const PlaneMap::At at = map.input_at(e);
    const T* g = grad_y + at.plane * map.oh * map.ow;
    T sum = T(0);
    for (Index i = 0; i < map.oh; ++i) {
      const Index r0 = kernels::adaptive_start(i, map.oh, map.h), r1 = kernels::adaptive_end(i, map.oh, map.h);
      if (at.row < r0 || at.row >= r1) continue;
      for (Index j = 0; j < map.ow; ++j) {
        const Index c0 = kernels::adaptive_start(j, map.ow, map.w), c1 = kernels::adaptive_end(j, map.ow, map.w);
        if (at.col < c0 || at.col >= c1) continue;
        sum += g[i * map.ow + j] / static_cast<T>((r1 - r0) * (c1 - c0));
      }
    }
    grad_x[e] = sum;
  }
};

}  // namespace backends::cuda
QX_NAMESPACE_END
