// CUDA kernels of conv2d by im2col + GEMM (kernels/conv2d.hpp has the formulas; the GEMM is cuBLAS,
// backends/cuda/gemm.hpp). col2im is written as a gather — each input element sums the column taps that
// read it — so no two threads write one address and no atomics are needed; the bias gradient is one
// thread per output channel summing with kernels::lane_sum, as the CPU does.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/gemm.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/core/cuda.hpp"
#include "qx/kernels/conv2d_shape.hpp"
#include "qx/kernels/functors.hpp"

QX_NAMESPACE_BEGIN
namespace backends::cuda {

/// col (K, images·P), rows `images·P` apart ← the receptive fields of `images` images x (C_in, H, W):
///   col[(c,p,q), b·P + (i,j)] = x[b, c, i·s_h + p − pad_h, j·s_w + q − pad_w], 0 outside the image.
template <class T>
struct Im2col {
  kernels::Conv2dShape s;
  const T* x;
  T* col;
  Index images;
  Index size() const { return s.patch() * images * s.positions(); }
  QX_HOST_DEVICE void operator()(Index i) const {
    const Index p_all = s.positions(), ld = images * p_all, ow = s.out_w();
    const Index row = i / ld, column = i % ld, b = column / p_all, pos = column % p_all;
    const Index c = row / (s.kh * s.kw), p = (row / s.kw) % s.kh, q = row % s.kw;
    const Index r = (pos / ow) * s.stride_h + p - s.pad_h, cc = (pos % ow) * s.stride_w + q - s.pad_w;
    const bool inside = r >= 0 && r < s.h && cc >= 0 && cc < s.w;
    col[i] = inside ? x[((b * s.c_in + c) * s.h + r) * s.w + cc] : T(0);
  }
};

/// x (images, C_in, H, W) ← Σ of col's taps (the adjoint of Im2col, same col layout); assigned.
/// Element (b, c, r, w) gathers the taps (p, q) with r = i·s_h + p − pad_h, w = j·s_w + q − pad_w.
template <class T>
struct Col2im {
  kernels::Conv2dShape s;
  const T* col;
  T* x;
  Index images;
  Index size() const { return images * s.c_in * s.h * s.w; }
  QX_HOST_DEVICE void operator()(Index e) const {
    const Index oh = s.out_h(), ow = s.out_w();
    const Index p_all = oh * ow, ld = images * p_all;
    const Index cc = e % s.w, r = (e / s.w) % s.h, c = (e / (s.w * s.h)) % s.c_in, b = e / (s.w * s.h * s.c_in);
    T sum = T(0);
    for (Index p = 0; p < s.kh; ++p) {
      const Index ti = r + s.pad_h - p;  // = i·s_h
      if (ti < 0 || ti % s.stride_h != 0 || ti / s.stride_h >= oh) continue;
      for (Index q = 0; q < s.kw; ++q) {
        const Index tj = cc + s.pad_w - q;
        if (tj < 0 || tj % s.stride_w != 0 || tj / s.stride_w >= ow) continue;
        sum += col[((c * s.kh + p) * s.kw + q) * ld + b * p_all + (ti / s.stride_h) * ow + tj / s.stride_w];
      }
    }
    x[e] = sum;
  }
};

/// y[b, o, :] = stage(y[b, o, :] + bias[o]) (bias nullable; stage: kernels::ConvOutputStage, the CPU's
/// store), one element of y (N, C_out, P) per index.
template <class T>
struct FinishConvOutput {
  T* y;
  const T* bias;
  kernels::ConvOutputStage<T> stage;
  Index n, channels, plane;
  Index size() const { return n * channels * plane; }
  QX_HOST_DEVICE void operator()(Index i) const {
    const T biased = bias ? y[i] + bias[(i / plane) % channels] : y[i];
    y[i] = stage(biased, i);
  }
};

/// grad_bias[o] = Σ_{b, k} g[b, o, k] over g (N, C, P), one channel per index: the sum of
/// kernels::conv2d_backward_bias (and of ∂b of a linear layer, with P = 1).
template <class T>
struct ChannelSums {
  const T* g;
  T* out;
  Index n, channels, plane;
  Index size() const { return channels; }
  QX_HOST_DEVICE void operator()(Index o) const {
    double sum = 0;
    for (Index b = 0; b < n; ++b) {
      const T* gs = g + (b * channels + o) * plane;
      sum += kernels::lane_sum<T>(plane, [&](Index k) { return gs[k]; });
    }
    out[o] = static_cast<T>(sum);
  }
};

// The convolution on device memory, image by image: one (K, P) column buffer, one GEMM per image (the
// formulas of kernels/conv2d.hpp). Host code; on the GPU every step is queued on qx's stream. `Exec` is
// GpuExecutor (gemm.hpp) except in the CPU tests.

/// y (N, C_out, H_out, W_out) = stage(conv(x, weight) + bias (nullable))
template <class T, class Exec = GpuExecutor>
void conv2d_forward(const kernels::Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y,
                    const kernels::ConvOutputStage<T>& stage = {}) {
  const Index k = s.patch(), p = s.positions();
  typename Exec::template Buffer<T> col(static_cast<std::size_t>(k * p));
  for (Index b = 0; b < s.n; ++b) {
    Exec::launch(Im2col<T>{s, x + b * s.c_in * s.h * s.w, col.data(), 1});
    Exec::gemm(false, false, s.c_out, p, k, T(1), weight, k, col.data(), p, T(0), y + b * s.c_out * p, p);
  }
  if (bias || stage.active()) Exec::launch(FinishConvOutput<T>{y, bias, stage, s.n, s.c_out, p});
}

/// grad_x = the adjoint of conv2d applied to grad_y; assigned.
template <class T, class Exec = GpuExecutor>
void conv2d_backward_input(const kernels::Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  const Index k = s.patch(), p = s.positions();
  typename Exec::template Buffer<T> col(static_cast<std::size_t>(k * p));
  for (Index b = 0; b < s.n; ++b) {
    Exec::gemm(true, false, k, p, s.c_out, T(1), weight, k, grad_y + b * s.c_out * p, p, T(0), col.data(), p);
    Exec::launch(Col2im<T>{s, col.data(), grad_x + b * s.c_in * s.h * s.w, 1});
  }
}

/// grad_weight = Σ_n g_n · col_nᵀ (nullable) and grad_bias = Σ g (nullable); assigned.
template <class T, class Exec = GpuExecutor>
void conv2d_backward_weight(const kernels::Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  const Index k = s.patch(), p = s.positions();
  if (grad_weight) {
    typename Exec::template Buffer<T> col(static_cast<std::size_t>(k * p));
    for (Index b = 0; b < s.n; ++b) {
      Exec::launch(Im2col<T>{s, x + b * s.c_in * s.h * s.w, col.data(), 1});
      Exec::gemm(false, true, s.c_out, k, p, T(1), grad_y + b * s.c_out * p, p, col.data(), p, b == 0 ? T(0) : T(1), grad_weight, k);
    }
  }
  if (grad_bias) Exec::launch(ChannelSums<T>{grad_y, grad_bias, s.n, s.c_out, p});
}

}  // namespace backends::cuda
QX_NAMESPACE_END
