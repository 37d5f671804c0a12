// CUDA kernels of the bilinear resize (ops/interpolate.hpp has the formula; the taps are
// kernels::bilinear_tap, shared with the CPU op). Backward is a gather: each input element sums, over
// the outputs whose taps reach it, in the CPU's order, the same weighted terms the CPU scatters.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/kernels/functors.hpp"

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// y (planes, oh, ow) from x (planes, h, w), one output element per index.
template <class T>
struct BilinearForward {
  const T* x;
  T* y;
  PlaneMap map;
  Index size() const { return map.outputs(); }
  QX_HOST_DEVICE void operator()(Index o) const {
    const PlaneMap::At at = map.output_at(o);
    const Index w = map.w;
    const T* src = x + at.plane * map.h * w;
    const kernels::BilinearTap a = kernels::bilinear_tap(at.row, map.h, map.oh), b = kernels::bilinear_tap(at.col, w, map.ow);
    y[o] = static_cast<T>(a.l0 * (b.l0 * src[a.i0 * w + b.i0] + b.l1 * src[a.i0 * w + b.i1]) +
                          a.l1 * (b.l0 * src[a.i1 * w + b.i0] + b.l1 * src[a.i1 * w + b.i1]));
  }
};

/// The outputs along one axis whose taps can reach input index r: s ∈ (r − 1, r + 1] ⇔
/// d ∈ ((r − ½)·out/in − ½, (r + 1½)·out/in − ½], widened by one on each side against rounding.
QX_HOST_DEVICE inline void bilinear_sources(Index r, Index in, Index out, Index& lo, Index& hi) {
  const double ratio = static_cast<double>(out) / static_cast<double>(in);
  lo = static_cast<Index>((static_cast<double>(r) - 0.5) * ratio - 0.5) - 1;
  hi = static_cast<Index>((static_cast<double>(r) + 1.5) * ratio - 0.5) + 1;
  lo = lo < 0 ? 0 : lo;
  hi = hi > out - 1 ? out - 1 : hi;
}

/// grad_x (planes, h, w) = Σ g·weight over the taps that read each input element; assigned.
template <class T>
struct BilinearBackward {
  const T* grad_y;
  T* grad_x;
  PlaneMap map;
  Index size() const { return map.inputs(); }
  QX_HOST_DEVICE void operator()(Index e) const {
    const PlaneMap::At at = map.input_at(e);
    const Index r = at.row, c = at.col, h = map.h, w = map.w, oh = map.oh, ow = map.ow;
    const T* g = grad_y + at.plane * oh * ow;
    Index i_lo, i_hi, j_lo, j_hi;
    bilinear_sources(r, h, oh, i_lo, i_hi);
    bilinear_sources(c, w, ow, j_lo, j_hi);
    T sum = T(0);
    for (Index i = i_lo; i <= i_hi; ++i) {
      const kernels::BilinearTap a = kernels::bilinear_tap(i, h, oh);
      if (a.i0 != r && a.i1 != r) continue;
      for (Index j = j_lo; j <= j_hi; ++j) {
        const kernels::BilinearTap b = kernels::bilinear_tap(j, w, ow);
        const T v = g[i * ow + j];
        // The CPU's four terms in its order, each counted when it lands on (r, c).
        if (a.i0 == r && b.i0 == c) sum += static_cast<T>(a.l0 * b.l0) * v;
        if (a.i0 == r && b.i1 == c) sum += static_cast<T>(a.l0 * b.l1) * v;
        if (a.i1 == r && b.i0 == c) sum += static_cast<T>(a.l1 * b.l0) * v;
        if (a.i1 == r && b.i1 == c) sum += static_cast<T>(a.l1 * b.l1) * v;
      }
    }
    grad_x[e] = sum;
  }
};

}  // namespace backends::cuda
QX_NAMESPACE_END
