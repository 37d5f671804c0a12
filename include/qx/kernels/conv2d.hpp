// conv2d on raw NCHW memory, PyTorch semantics (cross-correlation, zero padding), by im2col + GEMM:
//   col (K = C_in·kH·kW, P = H_out·W_out):  col[(c,p,q), (i,j)] = x[c, i·s_h + p − pad_h, j·s_w + q − pad_w]
//   forward          y_n  (C_out, P) = W (C_out, K) · col_n (K, P) + b
//   backward_input   ∂col_n (K, P)   = Wᵀ · g_n, scattered back by col2im (sums overlapping taps)
//   backward_weight  ∂W (C_out, K)   = Σ_n g_n · col_nᵀ,   ∂b = Σ_{n,i,j} g
// Small images are batched into one GEMM (columns of several images side by side); blocks of images
// run in parallel, each thread with its own column buffer (allocated once per call).
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/shape.hpp"
#include "qx/kernels/conv2d_shape.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/kernels/gemm.hpp"

#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

QX_NAMESPACE_BEGIN
namespace kernels {

namespace detail {
#if defined(__AVX512F__)
/// Lanes [lo, hi) of a 16-lane mask (0 ≤ lo ≤ hi ≤ 16).
inline __mmask16 lane_mask(Index lo, Index hi) {
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}
#endif

/// Whether a row of outputs fits one AVX-512 vector of T with stride 1: then im2col and col2im move a
/// row with one masked load and one masked store instead of a fill, a copy call and a fill (deep layers:
/// a 4×4 plane's rows are 4 floats, and per-row calls made im2col run at 2.5 GB/s).
template <class T>
bool narrow_rows(const Conv2dShape& s) {
#if defined(__AVX512F__)
  return std::is_same_v<T, float> && s.out_w() <= 16 && s.stride_w == 1;
#else
  return false;
#endif
}

/// col (K, P), rows `ld` apart, ← the receptive fields of image x (C_in, H, W). Channels are independent
/// rows of col: called outside a parallel region (one image on all threads) they are split over threads.
template <class T>
void im2col(const Conv2dShape& s, const T* x, T* col, Index ld) {
  const Index oh = s.out_h(), ow = s.out_w();
  [[maybe_unused]] const bool narrow = narrow_rows<T>(s);  // read by the AVX-512 path only
  parallel_for(0, s.c_in, [&](Index c) {
    for (Index p = 0; p < s.kh; ++p)
      for (Index q = 0; q < s.kw; ++q) {
        T* row = col + ((c * s.kh + p) * s.kw + q) * ld;
        // Columns j whose tap lands inside the image: 0 ≤ j·stride_w + q − pad_w < W.
        const Index j_lo = std::min(ow, std::max<Index>(0, (s.pad_w - q + s.stride_w - 1) / s.stride_w));
        const Index j_hi = std::max(j_lo, std::min(ow, s.w - 1 + s.pad_w - q < 0 ? 0 : (s.w - 1 + s.pad_w - q) / s.stride_w + 1));
        for (Index i = 0; i < oh; ++i) {
          const Index r = i * s.stride_h + p - s.pad_h;
          T* out = row + i * ow;
          // Clamped so the pointer stays inside x; a row outside the image is never read through it.
          const T* src = x + (c * s.h + std::clamp<Index>(r, 0, s.h - 1)) * s.w;
          const Index shift = q - s.pad_w;  // tap (i, j) is src[j·stride_w + shift]
#if defined(__AVX512F__)
          if constexpr (std::is_same_v<T, float>) {
            if (narrow) {  // lanes outside [j_lo, j_hi) are neither read nor kept: zeros
              const __mmask16 taps = r < 0 || r >= s.h ? __mmask16(0) : lane_mask(j_lo, j_hi);
              _mm512_mask_storeu_ps(out, lane_mask(0, ow), _mm512_maskz_loadu_ps(taps, src + shift));
              continue;
            }
          }
#endif
          if (r < 0 || r >= s.h) {
            std::fill_n(out, ow, T(0));
            continue;
          }
          std::fill_n(out, j_lo, T(0));
          if (s.stride_w == 1) std::copy(src + j_lo + shift, src + j_hi + shift, out + j_lo);
          else
            for (Index j = j_lo; j < j_hi; ++j) out[j] = src[j * s.stride_w + shift];
          std::fill(out + j_hi, out + ow, T(0));
        }
      }
  }, s.kh * s.kw * oh * ow);
}

/// x (C_in, H, W) ← Σ of col's taps (the adjoint of im2col; col's rows `ld` apart); x is assigned. Each
/// channel writes only its own plane, so channels are split over threads outside a parallel region.
template <class T>
void col2im(const Conv2dShape& s, const T* col, Index ld, T* x) {
  const Index oh = s.out_h(), ow = s.out_w();
  [[maybe_unused]] const bool narrow = narrow_rows<T>(s);  // read by the AVX-512 path only
  parallel_for(0, s.c_in, [&](Index c) {
    std::fill_n(x + c * s.h * s.w, s.h * s.w, T(0));
    for (Index p = 0; p < s.kh; ++p)
      for (Index q = 0; q < s.kw; ++q) {
        const T* row = col + ((c * s.kh + p) * s.kw + q) * ld;
        // Columns j whose tap lands inside the image: 0 ≤ j·stride_w + q − pad_w < W.
        const Index j_lo = std::min(ow, std::max<Index>(0, (s.pad_w - q + s.stride_w - 1) / s.stride_w));
        const Index j_hi = std::max(j_lo, std::min(ow, s.w - 1 + s.pad_w - q < 0 ? 0 : (s.w - 1 + s.pad_w - q) / s.stride_w + 1));
        for (Index i = 0; i < oh; ++i) {
          const Index r = i * s.stride_h + p - s.pad_h;
          if (r < 0 || r >= s.h) continue;
          T* dst = x + (c * s.h + r) * s.w;
          const Index shift = q - s.pad_w;  // dst[j·stride_w + shift] receives tap (i, j)
          const T* in = row + i * ow;
#if defined(__AVX512F__)
          if constexpr (std::is_same_v<T, float>) {
            if (narrow) {  // one masked read-add-write of the taps' lanes [j_lo, j_hi)
              const __mmask16 taps = lane_mask(j_lo, j_hi);
              const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(taps, dst + shift), _mm512_maskz_loadu_ps(taps, in));
              _mm512_mask_storeu_ps(dst + shift, taps, sum);
              continue;
            }
          }
#endif
          if (s.stride_w == 1) {  // contiguous: lets the compiler vectorise the adds
            T* d = dst + j_lo + shift;
            const T* g = in + j_lo;
            for (Index j = 0; j < j_hi - j_lo; ++j) d[j] += g[j];
          } else {
            for (Index j = j_lo; j < j_hi; ++j) dst[j * s.stride_w + shift] += in[j];
          }
        }
      }
  }, s.kh * s.kw * oh * ow);
}

/// Images per GEMM: enough columns (images · columns_per_image ≥ enough_columns) to keep the GEMM
/// efficient when an image has few (deep layers), within a scratch of about 4 M elements (16 MB in
/// float) per thread.
inline Index images_per_block(Index n, Index scratch_per_image, Index columns_per_image, Index enough_columns = 512) {
  constexpr Index budget = Index{1} << 22;
  Index b = std::max<Index>(1, budget / std::max<Index>(1, scratch_per_image));
  b = std::min(b, std::max<Index>(1, enough_columns / std::max<Index>(1, columns_per_image)));
  // Keep every thread busy with its own blocks rather than splitting one GEMM across threads.
  const Index threads = std::max<Index>(1, num_threads());
  b = std::min(std::min(b, std::max<Index>(1, (n + threads - 1) / threads)), std::max<Index>(1, n));
  // Equal shares: round the block count up to a multiple of the threads, then even out the blocks
  // (32 images in blocks of 10 would give one thread 20 images and the other 12).
  const Index blocks = std::max(threads, ((n + b - 1) / b + threads - 1) / threads * threads);
  return std::max<Index>(1, (n + blocks - 1) / blocks);
}
inline Index images_per_block(const Conv2dShape& s) { return images_per_block(s.n, s.patch() * s.positions(), s.positions()); }

/**
 * Runs body(first_image, images, scratch, thread) over blocks of images. Blocks are spread over threads
 * when there are enough of them; otherwise they run one after another on the calling thread and the
 * loops inside (im2col, GEMM, col2im) parallelise. That second path must not sit inside an OpenMP
 * region, not even an inactive one (`if (false)`): libgomp gives a region nested in another a fresh team
 * of new threads instead of its pool, which cost a single image more than the second core gained.
 */
template <class T, class Body>
void for_each_block(Index n, Index block, Index per_image_scratch, Body&& body) {
  const Index blocks = (n + block - 1) / block;
  const int threads = static_cast<int>(std::max<Index>(1, std::min<Index>(num_threads(), blocks)));
  // One buffer per thread for the whole call, from the cache, left uninitialised (every use writes
  // before it reads).
  const Index scratch_size = per_image_scratch * block;
  std::vector<memory::Buffer<T>> scratch(static_cast<std::size_t>(threads));
  auto run = [&](Index k, int t) {
    auto& buffer = scratch[static_cast<std::size_t>(t)];
    if (!buffer.data()) buffer = memory::Buffer<T>(static_cast<std::size_t>(scratch_size));
    const Index first = k * block;
    body(first, std::min(block, n - first), buffer.data(), t);
  };
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  if (threads > 1 && blocks >= num_threads() && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (Index k = 0; k < blocks; ++k) run(k, omp_get_thread_num());
    return;
  }
#endif
  for (Index k = 0; k < blocks; ++k) run(k, 0);
}

/**
 * Per-thread partial sums of one result of `size` elements, zeroed: each thread adds into its own part
 * (no two threads write the same memory), and total() adds the parts in a fixed order, so a weight
 * gradient is reproducible for a given thread count. Parts come from the caching allocator.
 */
template <class T>
class PerThreadSums {
 public:
  explicit PerThreadSums(Index size) : size_(size) {
    for (int t = 0; t < std::max(1, num_threads()); ++t) {
      parts_.emplace_back(static_cast<std::size_t>(size));
      std::fill_n(parts_.back().data(), size, T(0));
    }
  }
  T* operator[](int thread) { return parts_[static_cast<std::size_t>(thread)].data(); }
  /// Σ over the threads' parts, in part 0 (valid until this object goes).
  const T* total() {
    T* sum = parts_[0].data();
    for (std::size_t t = 1; t < parts_.size(); ++t) {
      const T* part = parts_[t].data();
      parallel_for(0, size_, [&](Index i) { sum[i] += part[i]; });
    }
    return sum;
  }

 private:
  Index size_;
  std::vector<memory::Buffer<T>> parts_;
};

/// col (K, ld) columns [b·P, (b+1)·P) ← image b's receptive fields, for the images of a block.
template <class T>
void im2col_block(const Conv2dShape& s, const T* x, Index images, T* col) {
  const Index p = s.positions(), ld = images * p;
  for (Index b = 0; b < images; ++b) im2col(s, x + b * s.c_in * s.h * s.w, col + b * p, ld);
}

/// A 1×1 convolution with stride 1 and no padding: its im2col is the identity (K = C_in, P = H·W), so
/// one image's columns are the image itself and col2im is a plain assignment.
inline bool is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

/// The block's columns (K, images·P): the input itself for one image of a pointwise convolution, else
/// im2col into `col`.
template <class T>
const T* columns_of_block(const Conv2dShape& s, const T* x, Index images, T* col) {
  if (images == 1 && is_pointwise(s)) return x;
  im2col_block(s, x, images, col);
  return col;
}
}  // namespace detail

/// y (N, C_out, H_out, W_out) = conv(x (N, C_in, H, W), weight (C_out, C_in, kH, kW)) + bias (C_out, nullable)
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y) {
  const Index k = s.patch(), p = s.positions();
  // Per image: the columns (K·P) and the block's output (C_out·P) before it is scattered to NCHW.
  detail::for_each_block<T>(s.n, detail::images_per_block(s), k * p + s.c_out * p, [&](Index first, Index images, T* scratch, int) {
    const Index ld = images * p;
    T* out = scratch + k * ld;
    const T* col = detail::columns_of_block(s, x + first * s.c_in * s.h * s.w, images, scratch);
    if (images == 1) {  // one image's (C_out, P) is already NCHW: write it in place, no copy
      T* dst = y + first * s.c_out * p;
      gemm(false, false, s.c_out, p, k, T(1), weight, k, col, p, T(0), dst, p);
      if (bias)
        parallel_for(0, s.c_out, [&](Index o) {
          for (Index i = 0; i < p; ++i) dst[o * p + i] += bias[o];
        }, p);
      return;
    }
    gemm(false, false, s.c_out, ld, k, T(1), weight, k, col, ld, T(0), out, ld);
    for (Index b = 0; b < images; ++b)
      for (Index o = 0; o < s.c_out; ++o) {
        T* dst = y + ((first + b) * s.c_out + o) * p;
        const T* src = out + o * ld + b * p;
        const T add = bias ? bias[o] : T(0);
        for (Index i = 0; i < p; ++i) dst[i] = src[i] + add;
      }
  });
}

/// grad_x (N, C_in, H, W) = the adjoint of conv2d applied to grad_y; assigned.
template <class T>
void conv2d_backward_input(const Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  const Index k = s.patch(), p = s.positions();
  detail::for_each_block<T>(s.n, detail::images_per_block(s), k * p + s.c_out * p, [&](Index first, Index images, T* scratch, int) {
    const Index ld = images * p;
    T* col = scratch;
    const T* g = grad_y + first * s.c_out * p;  // one image's (C_out, P) is used in place
    if (images > 1) {  // (C_out, images·P) gathered from grad_y
      T* gathered = scratch + k * ld;
      for (Index b = 0; b < images; ++b)
        for (Index o = 0; o < s.c_out; ++o) std::copy_n(grad_y + ((first + b) * s.c_out + o) * p, p, gathered + o * ld + b * p);
      g = gathered;
    }
    if (images == 1 && detail::is_pointwise(s)) {  // col2im would copy: write the product in place
      gemm(true, false, k, ld, s.c_out, T(1), weight, k, g, ld, T(0), grad_x + first * s.c_in * s.h * s.w, ld);
      return;
    }
    gemm(true, false, k, ld, s.c_out, T(1), weight, k, g, ld, T(0), col, ld);
    for (Index b = 0; b < images; ++b) detail::col2im(s, col + b * p, ld, grad_x + (first + b) * s.c_in * s.h * s.w);
  });
}

/// grad_bias (C_out) = Σ_{n,i,j} grad_y[n, o, i, j]; assigned. Shared by every convolution algorithm.
template <class T>
void conv2d_backward_bias(const Conv2dShape& s, const T* grad_y, T* grad_bias) {
  const Index p = s.positions();
  parallel_for(0, s.c_out, [&](Index o) {
    double sum = 0;
    for (Index b = 0; b < s.n; ++b) sum += lane_sum<T>(p, [&](Index i) { return grad_y[(b * s.c_out + o) * p + i]; });
    grad_bias[o] = static_cast<T>(sum);
  }, s.n * p);
}

/// grad_weight (C_out, C_in, kH, kW) = Σ_n g_n · col_nᵀ and grad_bias (C_out, nullable) = Σ g; assigned.
template <class T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  const Index k = s.patch(), p = s.positions();
  detail::PerThreadSums<T> partial(s.c_out * k);  // ∂W per thread
  detail::for_each_block<T>(s.n, detail::images_per_block(s), k * p + s.c_out * p, [&](Index first, Index images, T* scratch, int t) {
    const Index ld = images * p;
    const T* col = detail::columns_of_block(s, x + first * s.c_in * s.h * s.w, images, scratch);
    const T* g = grad_y + first * s.c_out * p;  // one image's (C_out, P) is used in place
    if (images > 1) {
      T* gathered = scratch + k * ld;
      for (Index b = 0; b < images; ++b)
        for (Index o = 0; o < s.c_out; ++o) std::copy_n(grad_y + ((first + b) * s.c_out + o) * p, p, gathered + o * ld + b * p);
      g = gathered;
    }
    // A stem's K = 49 or 147 columns: gemm computes this product transposed (kernels/gemm.hpp).
    gemm(false, true, s.c_out, k, ld, T(1), g, ld, col, ld, T(1), partial[t], k);
  });
  std::copy_n(partial.total(), s.c_out * k, grad_weight);
  if (grad_bias) conv2d_backward_bias(s, grad_y, grad_bias);
}

}  // namespace kernels
QX_NAMESPACE_END
