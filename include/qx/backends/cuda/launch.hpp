// How every qx CUDA kernel is launched, and how the CPU test suite runs the very same kernel bodies.
// A kernel is a struct holding pointers and sizes with `QX_HOST_DEVICE void operator()(Index i) const`
// for one output index i ∈ [0, size()). On the GPU, `run_grid_stride` (below) is the body of one
// generic __global__ function (qx_cuda.cu); on the CPU, `launch_on_host` executes the same function for
// every (block, thread) of the same grid, in order — so the index arithmetic, the bounds and the
// grid-stride tail of the GPU code are exercised by an ordinary g++ build (docs/cuda.md).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// A one-dimensional launch: `grid` blocks of `block` threads.
struct LaunchShape {
  unsigned grid = 1, block = 1;
};

/// Threads per block of every qx kernel, and a cap on the grid: past it each thread strides over
/// several indices (a grid-stride loop), so any size launches with one grid.
inline constexpr unsigned threads_per_block = 256;
inline constexpr unsigned max_blocks = 65535;

/// The launch of `n` independent indices: ⌈n / 256⌉ blocks, at most max_blocks.
inline LaunchShape launch_shape(Index n) {
  const Index blocks = (std::max<Index>(n, 1) + threads_per_block - 1) / threads_per_block;
  return {static_cast<unsigned>(std::min<Index>(blocks, max_blocks)), threads_per_block};
}

/// The work of thread `thread` of block `block`: indices i = block·block_dim + thread + k·grid·block_dim < n.
template <class Kernel>
QX_HOST_DEVICE void run_grid_stride(const Kernel& kernel, Index n, unsigned block, unsigned thread, LaunchShape shape) {
  const Index stride = static_cast<Index>(shape.grid) * shape.block;
  for (Index i = static_cast<Index>(block) * shape.block + thread; i < n; i += stride) kernel(i);
}

/// Runs `kernel` over [0, kernel.size()) on the calling thread, block by block and thread by thread,
/// exactly as the GPU grid `shape` would (the tests pass small odd shapes to reach the stride tail).
template <class Kernel>
void launch_on_host(const Kernel& kernel, LaunchShape shape) {
  const Index n = kernel.size();
  for (unsigned b = 0; b < shape.grid; ++b)
    for (unsigned t = 0; t < shape.block; ++t) run_grid_stride(kernel, n, b, t, shape);
}
template <class Kernel>
void launch_on_host(const Kernel& kernel) {
  launch_on_host(kernel, launch_shape(kernel.size()));
}

/// The geometry of an op from planes of (h, w) to planes of (oh, ow) — pooling, resizing — and where an
/// NCHW flat index lands in it.
struct PlaneMap {
  Index planes, h, w, oh, ow;
  struct At {
    Index plane, row, col;
  };
  Index outputs() const { return planes * oh * ow; }
  Index inputs() const { return planes * h * w; }
  QX_HOST_DEVICE At output_at(Index o) const { return {o / (oh * ow), (o / ow) % oh, o % ow}; }
  QX_HOST_DEVICE At input_at(Index e) const { return {e / (h * w), (e / w) % h, e % w}; }
};

/// Runs `kernel` over [0, kernel.size()) on the GPU, on qx's stream (core/cuda.hpp), with
/// launch_shape's grid; asynchronous. Defined in kernels.cu, compiled by nvcc, for every kernel of
/// backends/cuda/ in float and double (a kernel missing from its list is a link error, not a run-time one).
#if defined(QX_USE_CUDA) && QX_USE_CUDA
template <class Kernel>
void launch_on_device(const Kernel& kernel);
#else
template <class Kernel>
void launch_on_device(const Kernel&) {
  fail("CUDA kernel launch: qx was built without CUDA (configure with -DQX_USE_CUDA=ON)");
}
#endif

}  // namespace backends::cuda
QX_NAMESPACE_END
