// conv2d on raw NCHW memory, PyTorch semantics (cross-correlation, zero padding), by im2col + GEMM:
//   col (K = C_in·kH·kW, P = H_out·W_out):  col[(c,p,q), (i,j)] = x[c, i·s_h + p − pad_h, j·s_w + q − pad_w]
//   forward          y_n  (C_out, P) = W (C_out, K) · col_n (K, P) + b
//   backward_input   ∂col_n (K, P)   = Wᵀ · g_n, scattered back by col2im (sums overlapping taps)
//   backward_weight  ∂W (C_out, K)   = Σ_n g_n · col_nᵀ,   ∂b = Σ_{n,i,j} g
// Images are processed in parallel, each thread with its own column buffer (allocated once per call).
#pragma once
#include "qx/config.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/shape.hpp"
#include "qx/kernels/gemm.hpp"

#include <algorithm>
#include <vector>

QX_NAMESPACE_BEGIN
namespace kernels {

/// The sizes of one convolution; out_h/out_w follow PyTorch's floor rule.
struct Conv2dShape {
  Index n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w;
  Index out_h() const { return (h + 2 * pad_h - kh) / stride_h + 1; }
  Index out_w() const { return (w + 2 * pad_w - kw) / stride_w + 1; }
  Index patch() const { return c_in * kh * kw; }  // K
  Index positions() const { return out_h() * out_w(); }  // P
};

namespace detail {
/// col (K, P) ← the receptive fields of image x (C_in, H, W).
template <class T>
void im2col(const Conv2dShape& s, const T* x, T* col) {
  const Index oh = s.out_h(), ow = s.out_w();
  for (Index c = 0; c < s.c_in; ++c)
    for (Index p = 0; p < s.kh; ++p)
      for (Index q = 0; q < s.kw; ++q) {
        T* row = col + ((c * s.kh + p) * s.kw + q) * oh * ow;
        for (Index i = 0; i < oh; ++i) {
          const Index r = i * s.stride_h + p - s.pad_h;
          T* out = row + i * ow;
          if (r < 0 || r >= s.h) {
            std::fill_n(out, ow, T(0));
            continue;
          }
          const T* src = x + (c * s.h + r) * s.w;
          for (Index j = 0; j < ow; ++j) {
            const Index cc = j * s.stride_w + q - s.pad_w;
            out[j] = (cc >= 0 && cc < s.w) ? src[cc] : T(0);
          }
        }
      }
}

/// x (C_in, H, W) ← Σ of col's taps (the adjoint of im2col); x is assigned.
template <class T>
void col2im(const Conv2dShape& s, const T* col, T* x) {
  const Index oh = s.out_h(), ow = s.out_w();
  std::fill_n(x, s.c_in * s.h * s.w, T(0));
  for (Index c = 0; c < s.c_in; ++c)
    for (Index p = 0; p < s.kh; ++p)
      for (Index q = 0; q < s.kw; ++q) {
        const T* row = col + ((c * s.kh + p) * s.kw + q) * oh * ow;
        for (Index i = 0; i < oh; ++i) {
          const Index r = i * s.stride_h + p - s.pad_h;
          if (r < 0 || r >= s.h) continue;
          T* dst = x + (c * s.h + r) * s.w;
          const T* in = row + i * ow;
          for (Index j = 0; j < ow; ++j) {
            const Index cc = j * s.stride_w + q - s.pad_w;
            if (cc >= 0 && cc < s.w) dst[cc] += in[j];
          }
        }
      }
}

inline bool is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

/// Runs body(image, thread_scratch) for every image, images spread over threads.
template <class T, class Body>
void for_each_image(const Conv2dShape& s, Index scratch_size, Body&& body) {
  const int threads = std::max<int>(1, std::min<Index>(num_threads(), s.n));
  std::vector<std::vector<T>> scratch(static_cast<std::size_t>(threads));
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
  for (Index b = 0; b < s.n; ++b) {
    int t = 0;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
    t = omp_get_thread_num();
#endif
    auto& buffer = scratch[static_cast<std::size_t>(t)];
    if (static_cast<Index>(buffer.size()) < scratch_size) buffer.resize(static_cast<std::size_t>(scratch_size));
    body(b, buffer.data(), t);
  }
}
}  // namespace detail

/// y (N, C_out, H_out, W_out) = conv(x (N, C_in, H, W), weight (C_out, C_in, kH, kW)) + bias (C_out, nullable)
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y) {
  const Index k = s.patch(), p = s.positions();
  const bool pointwise = detail::is_pointwise(s);
  detail::for_each_image<T>(s, pointwise ? 0 : k * p, [&](Index b, T* col, int) {
    const T* xb = x + b * s.c_in * s.h * s.w;
    T* yb = y + b * s.c_out * p;
    if (!pointwise) detail::im2col(s, xb, col);
    if (bias) {
      for (Index o = 0; o < s.c_out; ++o) std::fill_n(yb + o * p, p, bias[o]);
    }
    gemm(false, false, s.c_out, p, k, T(1), weight, k, pointwise ? xb : col, p, bias ? T(1) : T(0), yb, p);
  });
}

/// grad_x (N, C_in, H, W) = the adjoint of conv2d applied to grad_y; assigned.
template <class T>
void conv2d_backward_input(const Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  const Index k = s.patch(), p = s.positions();
  const bool pointwise = detail::is_pointwise(s);
  detail::for_each_image<T>(s, pointwise ? 0 : k * p, [&](Index b, T* col, int) {
    T* gxb = grad_x + b * s.c_in * s.h * s.w;
    const T* gyb = grad_y + b * s.c_out * p;
    gemm(true, false, k, p, s.c_out, T(1), weight, k, gyb, p, T(0), pointwise ? gxb : col, p);
    if (!pointwise) detail::col2im(s, col, gxb);
  });
}

/// grad_weight (C_out, C_in, kH, kW) = Σ_n g_n · col_nᵀ and grad_bias (C_out, nullable) = Σ g; assigned.
template <class T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  const Index k = s.patch(), p = s.positions();
  const bool pointwise = detail::is_pointwise(s);
  const int threads = std::max<int>(1, std::min<Index>(num_threads(), s.n));
  // Per-thread partial sums of ∂W, reduced at the end: no two threads write the same memory.
  std::vector<std::vector<T>> partial(static_cast<std::size_t>(threads), std::vector<T>(static_cast<std::size_t>(s.c_out * k), T(0)));
  detail::for_each_image<T>(s, pointwise ? 0 : k * p, [&](Index b, T* col, int t) {
    const T* xb = x + b * s.c_in * s.h * s.w;
    const T* gyb = grad_y + b * s.c_out * p;
    if (!pointwise) detail::im2col(s, xb, col);
    gemm(false, true, s.c_out, k, p, T(1), gyb, p, pointwise ? xb : col, p, T(1), partial[static_cast<std::size_t>(t)].data(), k);
  });
  std::copy(partial[0].begin(), partial[0].end(), grad_weight);
  for (std::size_t t = 1; t < partial.size(); ++t)
    for (Index i = 0; i < s.c_out * k; ++i) grad_weight[i] += partial[t][static_cast<std::size_t>(i)];
  if (grad_bias) {
    for (Index o = 0; o < s.c_out; ++o) {
      T sum = 0;
      for (Index b = 0; b < s.n; ++b) {
        const T* g = grad_y + (b * s.c_out + o) * p;
        for (Index i = 0; i < p; ++i) sum += g[i];
      }
      grad_bias[o] = sum;
    }
  }
}

}  // namespace kernels
QX_NAMESPACE_END
