// Which algorithm computes each pass of a convolution — im2col + GEMM (kernels/conv2d.hpp), Winograd
// F(4×4, 3×3) (kernels/winograd.hpp), the direct 3×3 kernel for narrow layers (kernels/direct_conv3x3.hpp)
// or the direct stem kernel (kernels/direct_stem.hpp) — and the three passes that dispatch on it (what
// ops::conv2d calls). The choice is measured per shape and pass; docs/kernels.md has the numbers behind
// each rule.
#pragma once
#include "qx/config.hpp"
#include "qx/kernels/conv2d.hpp"
#include "qx/kernels/direct_conv3x3.hpp"
#include "qx/kernels/direct_stem.hpp"
#include "qx/kernels/winograd.hpp"

#include <algorithm>
#include <atomic>

QX_NAMESPACE_BEGIN
namespace kernels {

/// How conv2d computes a convolution: `automatic` picks per shape (below); the others force one
/// algorithm where it applies (tests and benchmarks compare them this way).
enum class Conv2dAlgorithm { automatic, im2col_gemm, winograd, direct };

namespace detail {
inline std::atomic<Conv2dAlgorithm>& conv2d_algorithm_setting() {
  static std::atomic<Conv2dAlgorithm> setting{Conv2dAlgorithm::automatic};
  return setting;
}
}  // namespace detail

/// Sets the convolution algorithm for the whole process (default `automatic`).
inline void set_conv2d_algorithm(Conv2dAlgorithm algorithm) { detail::conv2d_algorithm_setting() = algorithm; }
inline Conv2dAlgorithm conv2d_algorithm() { return detail::conv2d_algorithm_setting(); }

/// The three passes of a convolution, each of which may pick its own algorithm.
enum class ConvPass { forward, input_gradient, weight_gradient };

/**
 * Whether pass `pass` of shape `s` runs by a direct kernel, on AVX-512 builds under `automatic`:
 * - the direct 3×3 kernel (kernels/direct_conv3x3.hpp), for shapes it takes (3×3, stride 1, padding 1,
 *   rows of 16k outputs, channels of 8k): the forward pass and input gradient of layers of at most 32
 *   input and output channels, the weight gradient of layers of at most 16. Measured against the faster
 *   of im2col and Winograd, batch 32, 2 threads: forward and input gradient 2.2–2.6× at 16 channels on
 *   32×32 planes, 1.9–2.0× on 16×16, 1.4–1.7× at 32 channels, slower than Winograd from 64; weight
 *   gradient 1.3× at 16 channels on 32×32, 1.05–1.1× on 16×16, 0.7× at 32 channels;
 * - the direct stem kernel (kernels/direct_stem.hpp), for the forward pass of the stride-2 layers of at
 *   most 4 input channels it takes (output rows of 16k, output channels of 8k): against im2col, batch 16
 *   or 32, 2 threads, 1.3–1.4× on resnet50's 7×7 stem (3 × 224²) and 1.0–1.2× on resnet18's (1 × 128²).
 * docs/kernels.md has the numbers.
 */
inline bool runs_direct(const Conv2dShape& s, ConvPass pass = ConvPass::forward) {
  const bool stem = pass == ConvPass::forward && direct_stem::applies(s);
  if (!direct3x3::applies(s) && !stem) return false;
  switch (conv2d_algorithm()) {
    case Conv2dAlgorithm::direct: return true;
    case Conv2dAlgorithm::automatic: break;
    default: return false;
  }
#if defined(__AVX512F__)
  if (stem) return true;
  const Index widest = std::max(s.c_in, s.c_out);
  return widest <= (pass == ConvPass::weight_gradient ? 16 : 32);
#else
  (void)pass;
  return false;  // its 24 accumulators are AVX-512's registers; with 16 registers they would spill
#endif
}

/**
 * Whether pass `pass` of a convolution of shape `s` runs by Winograd F(4×4, 3×3): 3×3 stride 1, and
 * under `automatic` where its 36 GEMMs are large enough to beat im2col:
 * - at least 48 tiles in the batch (the GEMMs' column count when the batch is one block: one 28×28
 *   image has 49 tiles and runs 1.5× faster, two 14×14 images have 32 and run 1.7× slower — a GEMM of
 *   few columns wastes most of a 64-column register tile);
 * - at least 32 input and output channels (measured 1.3–2.1× per pass from 32 channels);
 * - or, for the weight gradient only, 16–31 channels on planes of at least 64 tiles (32×32): im2col's
 *   weight gradient is then a product of only C_out rows over a depth of N·H·W, and Winograd ran it
 *   1.4–1.8× faster on 32×32 and 64×64 planes; on 16×16 planes, and for the other two passes at 16
 *   channels, im2col was as fast or faster (AVX-512);
 * - or, with AVX2 + FMA (no direct kernel there), every pass from 16 channels: 16 → 16 on 16×16 planes,
 *   batch 32, 2 threads, ran 1.4× (forward, input gradient) and 1.75× (weight gradient) faster than
 *   im2col, on 32×32 1.3–1.7×, and the main job's training step 6 % faster;
 * - or, with the packed GEMM (AVX-512, or AVX2 + FMA), for the forward pass and the input gradient,
 *   fewer than 48 tiles but at least 8192 channel-tiles (min(C_in, C_out) · tiles: 512 channels on 16
 *   tiles, 256 on 32). The batch is then one block whose products the threads share, with the filters
 *   transformed straight into the GEMM's B panels (kernels/winograd.hpp): 512 → 512 channels on 4×4
 *   planes, batch 32, ran 1.9× faster than im2col on 2 threads with AVX-512 and 1.5–1.6× with AVX2,
 *   batch 16 1.4–1.5× and 1.3×; 256 channels on 16 tiles and anything on fewer were slower. The weight
 *   gradient of so few tiles stays im2col's (Winograd's sums 36 products per filter).
 * Passes that runs_direct takes are not Winograd's. docs/kernels.md has the measurements.
 */
inline bool runs_winograd(const Conv2dShape& s, ConvPass pass = ConvPass::forward) {
  switch (conv2d_algorithm()) {
    case Conv2dAlgorithm::im2col_gemm:
    case Conv2dAlgorithm::direct: return false;
    case Conv2dAlgorithm::winograd: return winograd::applies(s);
    case Conv2dAlgorithm::automatic: break;
  }
  if (runs_direct(s, pass)) return false;
  if (!winograd::applies(s)) return false;
  const winograd::Tiling tiling(s);
  const Index tiles = s.n * tiling.per_image(), channels = std::min(s.c_in, s.c_out);
  if (tiles < 48) {
#if QX_PACKED_GEMM
    return pass != ConvPass::weight_gradient && channels * tiles >= 8192;
#else
    return false;  // the filters' B panels are the packed GEMM's
#endif
  }
  if (channels >= 32) return true;
#if QX_PACKED_AVX2
  if (channels >= 16) return true;
#endif
  return pass == ConvPass::weight_gradient && channels >= 16 && tiling.per_image() >= 64;
}

/// The three passes by the algorithm runs_direct and runs_winograd pick for the shape (what ops::conv2d
/// calls); im2col + GEMM otherwise.
template <class T>
void conv2d_forward_auto(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y, const ConvOutputStage<T>& stage = {}) {
  if (runs_direct(s)) {
    if (direct_stem::applies(s)) direct_stem::conv2d_forward(s, x, weight, bias, y, stage);  // stride 2
    else direct3x3::conv2d_forward(s, x, weight, bias, y, stage);                            // stride 1
  } else if (runs_winograd(s)) winograd::conv2d_forward(s, x, weight, bias, y, stage);
  else conv2d_forward(s, x, weight, bias, y, stage);
}
template <class T>
void conv2d_backward_input_auto(const Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  if (runs_direct(s, ConvPass::input_gradient)) direct3x3::conv2d_backward_input(s, grad_y, weight, grad_x);
  else if (runs_winograd(s, ConvPass::input_gradient)) winograd::conv2d_backward_input(s, grad_y, weight, grad_x);
  else conv2d_backward_input(s, grad_y, weight, grad_x);
}
template <class T>
void conv2d_backward_weight_auto(const Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  if (runs_direct(s, ConvPass::weight_gradient)) direct3x3::conv2d_backward_weight(s, x, grad_y, grad_weight, grad_bias);
  else if (runs_winograd(s, ConvPass::weight_gradient))
    winograd::conv2d_backward_weight(s, x, grad_y, grad_weight, grad_bias);
  else conv2d_backward_weight(s, x, grad_y, grad_weight, grad_bias);
}

}  // namespace kernels
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_KERNELS_CONV2D_ALGORITHM(instance, T) \
  instance void conv2d_forward_auto<T>(const Conv2dShape&, const T*, const T*, const T*, T*, const ConvOutputStage<T>&); \
  instance void conv2d_backward_input_auto<T>(const Conv2dShape&, const T*, const T*, T*); \
  instance void conv2d_backward_weight_auto<T>(const Conv2dShape&, const T*, const T*, T*, T*);
QX_DECLARE_INSTANCES(kernels, QX_INSTANCES_KERNELS_CONV2D_ALGORITHM)
#undef QX_INSTANCES_KERNELS_CONV2D_ALGORITHM
