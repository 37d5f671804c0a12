// Direct 3×3 stride-1 convolution with padding 1 for narrow layers (few channels), on NCHW memory:
//   y[n, o, i, j] = b[o] + Σ_c Σ_{p,q < 3} w[o, c, p, q] · x[n, c, i + p − 1, j + q − 1]   (zero outside),
// its input gradient, the same sum with the filters transposed and flipped:
//   ∂x[n, c, i, j] = Σ_o Σ_{p,q < 3} w[o, c, 2 − p, 2 − q] · ∂y[n, o, i + p − 1, j + q − 1],
// and its weight gradient, a sum over the batch and the plane:
//   ∂w[o, c, p, q] = Σ_{n,i,j} ∂y[n, o, i, j] · x[n, c, i + p − 1, j + q − 1],   ∂b[o] = Σ_{n,i,j} ∂y[n, o, i, j].
// Why: at 16 channels im2col's product has C_out = 16 rows and a depth of 144, so most of the GEMM's
// register tile is idle and the column buffer is 9× the input; here each output vector (16 consecutive
// outputs of a row) is accumulated in registers for 8 output channels at once, reading the input
// straight from a zero-padded copy (one pass), so every FMA is useful. docs/kernels.md has the numbers.
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/conv2d.hpp"
#include "qx/kernels/conv2d_shape.hpp"
#include "qx/kernels/direct_tiles.hpp"
#include "qx/kernels/functors.hpp"

#include <algorithm>
#include <cstring>

QX_NAMESPACE_BEGIN
namespace kernels {
namespace direct3x3 {

/// Output channels accumulated together: 8 channels × 3 vectors = 24 accumulators, with the 3 input
/// vectors of a tap, in AVX-512's 32 registers (kernels/direct_tiles.hpp).
inline constexpr Index channel_block = direct::channel_block;

/// Whether the direct kernel computes shape `s`: 3×3, stride 1, padding 1, rows a multiple of 16
/// outputs, output channels a multiple of 8 (the input gradient needs the same of the input channels).
inline bool applies(const Conv2dShape& s) {
  return s.kh == 3 && s.kw == 3 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 1 && s.pad_w == 1 &&
         s.w % lanes == 0 && s.h > 0 && s.c_out % channel_block == 0 && s.c_in % channel_block == 0;
}

namespace detail {
/// Copies one H × W plane into (H + 2) × (W + 2) with a zero border.
template <class T>
void pad_plane(const T* from, Index h, Index w, T* to) {
  const Index wp = w + 2;
  std::fill_n(to, wp, T(0));
  for (Index i = 0; i < h; ++i) {
    T* row = to + (i + 1) * wp;
    row[0] = T(0);
    std::memcpy(row + 1, from + i * w, static_cast<std::size_t>(w) * sizeof(T));
    row[w + 1] = T(0);
  }
  std::fill_n(to + (h + 1) * wp, wp, T(0));
}

/// Copies the (N, C, H, W) planes into (N, C, H + 2, W + 2) with a zero border, planes in parallel.
template <class T>
void pad_planes(const T* x, Index planes, Index h, Index w, T* padded) {
  parallel_for(0, planes, [&](Index p) { pad_plane(x + p * h * w, h, w, padded + p * (h + 2) * (w + 2)); }, h * w);
}

/**
 * acc[o][v] = Σ_c Σ_taps filters[c][tap][o] · input vector v shifted by the tap, for `Vectors` output
 * vectors whose first outputs sit at `origin[v]` in the padded planes (the tap (0, 0) corner).
 */
template <int Vectors, class T>
inline void accumulate(const T* padded, Index channels, Index plane_padded, Index wp, const T* filters, const Index* origin,
                       LaneVector<T> (&acc)[channel_block][Vectors]) {
  for (Index c = 0; c < channels; ++c) {
    const T* plane = padded + c * plane_padded;
    const T* taps = filters + c * 9 * channel_block;
    for (int p = 0; p < 3; ++p)
      for (int q = 0; q < 3; ++q) {
        LaneVector<T> in[Vectors];
        for (int v = 0; v < Vectors; ++v) std::memcpy(&in[v], plane + origin[v] + p * wp + q, sizeof(in[v]));
        const T* tap = taps + (p * 3 + q) * channel_block;
        for (int o = 0; o < channel_block; ++o)
          for (int v = 0; v < Vectors; ++v) acc[o][v] += tap[o] * in[v];
      }
  }
}

/**
 * acc[o][q] += Σ over the plane's output vectors of ∂y_o · (the input rows shifted by q): one input
 * channel and tap row against 8 output channels' gradients g, interleaved as [vector][o][16]; `rows`
 * is the padded plane from tap row p on.
 */
template <class T>
inline void correlate(const T* rows, const T* g, Index h, Index w, Index wp, LaneVector<T> (&acc)[channel_block][3]) {
  for (Index i = 0; i < h; ++i)
    for (Index j = 0; j < w; j += lanes) {
      LaneVector<T> in[3];
      for (int q = 0; q < 3; ++q) std::memcpy(&in[q], rows + i * wp + j + q, sizeof(in[q]));
      const T* gv_at = g + (i * w + j) * channel_block;
      for (int o = 0; o < channel_block; ++o) {
        LaneVector<T> gv;
        std::memcpy(&gv, gv_at + o * lanes, sizeof(gv));
        for (int q = 0; q < 3; ++q) acc[o][q] += gv * in[q];
      }
    }
}

/**
 * out (N, C_out, H, W) = the convolution of `input` (N, C_in, H, W) with the filters
 * filter(o, c, tap), tap = 3p + q; store(image, o, at, value) writes the 16 outputs of channel o that
 * start at element `at` of its plane. The input is copied once with a zero border; the tiles, the filters'
 * packing and the loop over them are direct::for_each_tile's (kernels/direct_tiles.hpp).
 */
template <class T, class Filter, class Store>
void convolve(const T* input, Index n, Index c_in, Index c_out, Index h, Index w, Filter&& filter, Store&& store) {
  const Index wp = w + 2, plane_padded = (h + 2) * wp;
  memory::Buffer<T> padded_buffer(static_cast<std::size_t>(n * c_in * plane_padded));
  pad_planes(input, n * c_in, h, w, padded_buffer.data());
  const memory::Buffer<T> filters = direct::pack_filters<T>(c_out, c_in, 9, filter);
  const T* padded = padded_buffer.data();
  direct::for_each_tile<T>(
      n, c_in, c_out, 9, h * w / lanes, filters.data(),
      [&](Index v, Index& at, Index& origin) {
        at = v * lanes;  // row at / w, column at % w: the tap (0, 0) is padded (row, column)
        origin = (at / w) * wp + at % w;
      },
      [&]<int Vectors>(Index image, const T* block_filters, const Index* origin, LaneVector<T> (&acc)[channel_block][Vectors]) {
        accumulate<Vectors>(padded + image * c_in * plane_padded, c_in, plane_padded, wp, block_filters, origin, acc);
      },
      store);
}
}  // namespace detail

/// y = conv2d(x, weight) + bias, then the output stage; assigned. Requires applies(s).
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y, const ConvOutputStage<T>& stage = {}) {
  const Index plane = s.h * s.w;
  detail::convolve(
      x, s.n, s.c_in, s.c_out, s.h, s.w, [&](Index o, Index c, Index tap) { return weight[(o * s.c_in + c) * 9 + tap]; },
      [&](Index image, Index o, Index at, const LaneVector<T>& value) {
        direct::store_staged(y, y + (image * s.c_out + o) * plane + at, value, bias ? bias[o] : T(0), stage);
      });
}

/// grad_x = the adjoint of conv2d applied to grad_y — a convolution of grad_y with the filters transposed
/// (input and output channels swapped) and flipped (tap 8 − tap); assigned. Requires applies(s).
template <class T>
void conv2d_backward_input(const Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  const Index plane = s.h * s.w;
  detail::convolve(
      grad_y, s.n, s.c_out, s.c_in, s.h, s.w,
      [&](Index c, Index o, Index tap) { return weight[(o * s.c_in + c) * 9 + 8 - tap]; },
      [&](Index image, Index c, Index at, const LaneVector<T>& value) {
        std::memcpy(grad_x + (image * s.c_in + c) * plane + at, &value, sizeof(value));
      });
}

/**
 * grad_weight (and grad_bias when not null) of the convolution; assigned. Requires applies(s).
 * The images are shared among threads (kernels::detail::for_each_block, one image per block); each
 * thread keeps, for every (output-channel block, input channel, tap row), the 8 × 3 products' 16-lane
 * partial sums in its part of a PerThreadSums between images: per output vector it loads 8 vectors of
 * ∂y and 3 shifted vectors of the padded input for 24 FMAs. The parts and lanes are summed once at the
 * end, in a fixed order, so a thread count gives one result.
 */
template <class T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  const Index wp = s.w + 2, plane_padded = (s.h + 2) * wp, plane = s.h * s.w, vectors = plane / lanes;
  const Index blocks = s.c_out / channel_block, groups = blocks * s.c_in * 3;  // (block, c, p)
  constexpr Index group_size = channel_block * 3 * lanes;                       // [o][q][lane]
  kernels::detail::PerThreadSums<T> partial(groups * group_size);
  // Scratch per image: its padded input planes, then one block's gradient planes interleaved by vector.
  kernels::detail::for_each_block<T>(
      s.n, 1, s.c_in * plane_padded + channel_block * plane, [&](Index image, Index, T* scratch, int thread) {
        T* padded = scratch;
        T* interleaved = scratch + s.c_in * plane_padded;
        for (Index c = 0; c < s.c_in; ++c)
          detail::pad_plane(x + (image * s.c_in + c) * plane, s.h, s.w, padded + c * plane_padded);
        const auto part = partial.begin(thread);  // first: this image's sums are assigned
        for (Index block = 0; block < blocks; ++block) {
          // [vector][o][16]: the 8 loads of an output vector read 512 consecutive bytes. Read in place,
          // planes 4 KB apart (32 × 32) fell into the same L1 sets and the kernel ran at a quarter of the
          // peak.
          const T* g_planes = grad_y + (image * s.c_out + block * channel_block) * plane;
          for (Index v = 0; v < vectors; ++v)
            for (Index o = 0; o < channel_block; ++o)
              std::memcpy(interleaved + (v * channel_block + o) * lanes, g_planes + o * plane + v * lanes,
                          lanes * sizeof(T));
          for (Index c = 0; c < s.c_in; ++c)
            for (Index p = 0; p < 3; ++p) {
              LaneVector<T> acc[channel_block][3] = {};
              detail::correlate(padded + c * plane_padded + p * wp, interleaved, s.h, s.w, wp, acc);
              T* group = part.data + ((block * s.c_in + c) * 3 + p) * group_size;
              for (int o = 0; o < channel_block; ++o)
                for (int q = 0; q < 3; ++q) {
                  LaneVector<T> sum = acc[o][q];
                  if (!part.first) {
                    LaneVector<T> before;
                    std::memcpy(&before, group + (o * 3 + q) * lanes, sizeof(before));
                    sum += before;
                  }
                  std::memcpy(group + (o * 3 + q) * lanes, &sum, sizeof(sum));
                }
            }
        }
      });
  // ∂w[block·8 + o, c, p, q] = Σ_lanes total[(block, c, p)][o][q]
  const T* total = partial.finish();
  parallel_for(0, groups, [&](Index gi) {
    const Index block = gi / (s.c_in * 3), c = (gi / 3) % s.c_in, p = gi % 3;
    for (Index o = 0; o < channel_block; ++o)
      for (Index q = 0; q < 3; ++q) {
        const T* lane = total + gi * group_size + (o * 3 + q) * lanes;
        T sum = T(0);
        for (int l = 0; l < lanes; ++l) sum += lane[l];
        grad_weight[((block * channel_block + o) * s.c_in + c) * 9 + p * 3 + q] = sum;
      }
  }, group_size);
  if (grad_bias) kernels::conv2d_backward_bias(s, grad_y, grad_bias);
}

}  // namespace direct3x3
}  // namespace kernels
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_KERNELS_DIRECT_CONV3X3(instance, T) \
  instance void direct3x3::conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*, const ConvOutputStage<T>&); \
  instance void direct3x3::conv2d_backward_input<T>(const Conv2dShape&, const T*, const T*, T*); \
  instance void direct3x3::conv2d_backward_weight<T>(const Conv2dShape&, const T*, const T*, T*, T*);
QX_DECLARE_INSTANCES(kernels, QX_INSTANCES_KERNELS_DIRECT_CONV3X3)
#undef QX_INSTANCES_KERNELS_DIRECT_CONV3X3
