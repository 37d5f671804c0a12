// Direct stride-2 convolution for layers of few input channels (a ResNet's stem), forward pass, on NCHW
// memory:
//   y[n, o, i, j] = b[o] + Σ_c Σ_{p < kH, q < kW} w[o, c, p, q] · x_pad[n, c, 2i + p, 2j + q]
// with x_pad the input inside a zero border of pad_h rows and pad_w columns. Split by column parity,
//   x_pad[r][2u + φ] = phase_φ[r][u],   so   x_pad[2i + p][2j + q] = phase_{q mod 2}[2i + p][j + ⌊q/2⌋]:
// the 16 consecutive outputs j … j + 15 of a row read, for tap (p, q), 16 consecutive values of one
// phase row — one unaligned load, which 8 output channels' broadcast weights then multiply.
// Why: im2col turns a 3-channel 7×7 stem into a GEMM of depth 147 over a column buffer 49/4 times the
// input (7.4 MB per 224² image), written once and packed again; PyTorch (oneDNN) ran it 2.5× faster. Here
// the input is read from two phase planes that stay in L2 (0.6 MB per 3×224² image), every FMA is useful,
// and nothing is packed but the filters (a few KB). docs/kernels.md has the numbers.
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
namespace direct_stem {

/// Output channels accumulated together (8 channels × 3 vectors: kernels/direct_tiles.hpp).
inline constexpr Index channel_block = direct::channel_block;
/// Input channels it takes: the layers whose im2col product is shallow (C_in·kH·kW of at most 4·49).
inline constexpr Index max_channels = 4;

/// Whether the kernel computes shape `s`: stride 2 both ways, at most 4 input channels, output channels
/// a multiple of 8, output rows a multiple of 16.
inline bool applies(const Conv2dShape& s) {
  return s.stride_h == 2 && s.stride_w == 2 && s.c_in >= 1 && s.c_in <= max_channels && s.c_out % channel_block == 0 &&
         s.out_h() > 0 && s.out_w() > 0 && s.out_w() % lanes == 0;
}

namespace detail {
/// The phase planes' geometry: rows of x_pad that some tap reads, and columns per phase row.
struct PhaseGeometry {
  Index rows, columns;
  explicit PhaseGeometry(const Conv2dShape& s)
      : rows(2 * (s.out_h() - 1) + s.kh), columns(s.out_w() + (s.kw - 1) / 2) {}
  /// Floats per input channel: rows × the two phases × columns.
  Index per_channel() const { return rows * 2 * columns; }
};

/// to[r][φ][u] = x_pad[r][2u + φ] of one H × W plane, for the rows and columns `g` holds (zero outside x).
template <class T>
void split_plane(const Conv2dShape& s, const PhaseGeometry& g, const T* plane, T* to) {
  for (Index r = 0; r < g.rows; ++r) {
    const Index source_row = r - s.pad_h;
    for (Index phase = 0; phase < 2; ++phase) {
      T* row = to + (r * 2 + phase) * g.columns;
      if (source_row < 0 || source_row >= s.h) {
        std::fill_n(row, g.columns, T(0));
        continue;
      }
      // Columns u whose 2u + φ − pad_w lies in [0, W).
      const Index first = std::clamp<Index>((s.pad_w - phase + 1) / 2, 0, g.columns);
      const Index last = std::clamp<Index>((s.w + s.pad_w - phase + 1) / 2, first, g.columns);
      const T* src = plane + source_row * s.w;
      std::fill_n(row, first, T(0));
      for (Index u = first; u < last; ++u) row[u] = src[2 * u + phase - s.pad_w];
      std::fill(row + last, row + g.columns, T(0));
    }
  }
}
}  // namespace detail

/// y = conv2d(x, weight) + bias, then the output stage; assigned. Requires applies(s).
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y, const ConvOutputStage<T>& stage = {}) {
  const detail::PhaseGeometry g(s);
  const Index oh = s.out_h(), ow = s.out_w(), taps = s.kh * s.kw, row_vectors = ow / lanes;
  memory::Buffer<T> phases(static_cast<std::size_t>(s.n * s.c_in * g.per_channel()));
  parallel_for(0, s.n * s.c_in, [&](Index plane) {
    detail::split_plane(s, g, x + plane * s.h * s.w, phases.data() + plane * g.per_channel());
  }, g.per_channel());
  const memory::Buffer<T> filters =
      direct::pack_filters<T>(s.c_out, s.c_in, taps, [&](Index o, Index c, Index tap) { return weight[(o * s.c_in + c) * taps + tap]; });
  const Index phase_row = 2 * g.columns, plane_out = oh * ow;
  direct::for_each_tile<T>(
      s.n, s.c_in, s.c_out, taps, oh * row_vectors, filters.data(),
      [&](Index v, Index& at, Index& origin) {  // output (i, j …): tap (0, 0) at phase row 2i, column j
        const Index i = v / row_vectors, j = v % row_vectors * lanes;
        at = i * ow + j;
        origin = 2 * i * phase_row + j;
      },
      [&]<int Vectors>(Index image, const T* block_filters, const Index* origin, LaneVector<T> (&acc)[channel_block][Vectors]) {
        const T* image_phases = phases.data() + image * s.c_in * g.per_channel();
        for (Index c = 0; c < s.c_in; ++c) {
          const T* plane = image_phases + c * g.per_channel();
          const T* channel_filters = block_filters + c * taps * channel_block;
          for (Index p = 0; p < s.kh; ++p)
            for (Index q = 0; q < s.kw; ++q) {
              // Tap (p, q): row 2i + p, phase q mod 2, column j + ⌊q/2⌋.
              const Index shift = p * phase_row + (q & 1) * g.columns + (q >> 1);
              LaneVector<T> in[Vectors];
              for (int v = 0; v < Vectors; ++v) std::memcpy(&in[v], plane + origin[v] + shift, sizeof(in[v]));
              const T* tap = channel_filters + (p * s.kw + q) * channel_block;
              for (int o = 0; o < channel_block; ++o)
                for (int v = 0; v < Vectors; ++v) acc[o][v] += tap[o] * in[v];
            }
        }
      },
      [&](Index image, Index o, Index at, const LaneVector<T>& value) {
        direct::store_staged(y, y + (image * s.c_out + o) * plane_out + at, value, bias ? bias[o] : T(0), stage);
      });
}

}  // namespace direct_stem
}  // namespace kernels
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_KERNELS_DIRECT_STEM(instance, T) \
  instance void direct_stem::conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*, const ConvOutputStage<T>&);
QX_DECLARE_INSTANCES(kernels, QX_INSTANCES_KERNELS_DIRECT_STEM)
#undef QX_INSTANCES_KERNELS_DIRECT_STEM
