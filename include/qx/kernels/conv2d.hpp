// conv2d on raw NCHW memory, PyTorch semantics (cross-correlation, zero padding), by im2col + GEMM:
//   col (K = C_in·kH·kW, P = H_out·W_out):  col[(c,p,q), (i,j)] = x[c, i·s_h + p − pad_h, j·s_w + q − pad_w]
//   forward          y_n  (C_out, P) = W (C_out, K) · col_n (K, P) + b
//   backward_input   ∂col_n (K, P)   = Wᵀ · g_n, scattered back by col2im (sums overlapping taps)
//   backward_weight  ∂W (C_out, K)   = Σ_n g_n · col_nᵀ,   ∂b = Σ_{n,i,j} g
// Small images are batched into one GEMM (columns of several images side by side); blocks of images
// run in parallel, each thread with its own column buffer (allocated once per call).
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <type_traits>
#include <vector>

#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/shape.hpp"
#include "qx/kernels/constant_weights.hpp"
#include "qx/kernels/conv2d_shape.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/kernels/gemm.hpp"
#include "qx/kernels/prefetch.hpp"
#include "qx/kernels/tap_tiles.hpp"

#if QX_PACKED_GEMM
#include <immintrin.h>
#endif

QX_NAMESPACE_BEGIN
namespace kernels {

namespace detail {
#if defined(__AVX512F__)
/// Lane ℓ of the result = element index[ℓ] of v[0] … v[vectors − 1] laid end to end (1 ≤ vectors ≤ 4;
/// index < 16·vectors): one permutation for up to 32 elements, two and a blend on index bit 5 beyond.
inline __m512 select_lanes(const __m512 (&v)[4], Index vectors, __m512i index) {
  if (vectors == 1) return _mm512_permutexvar_ps(index, v[0]);
  const __m512 low = _mm512_permutex2var_ps(v[0], index, v[1]);
  if (vectors == 2) return low;
  const __m512 high = _mm512_permutex2var_ps(v[2], index, v[3]);
  return _mm512_mask_blend_ps(_mm512_test_epi32_mask(index, _mm512_set1_epi32(32)), low, high);
}
#endif

/**
 * Where a block's columns go, col[row, column] at col.column(column) + col.row(row), with col.run(column)
 * columns contiguous from there. ColumnRows is row-major with rows `ld` apart, what gemm reads (and
 * packs); ColumnPanels is already the packed GEMM's layout, panels of 64 columns each holding all K rows
 * (gemm_b_panels reads it as it is, which saves a copy of the whole buffer). A store must then not cross
 * a panel's edge: panels_fit says when every register store of im2col stays inside one.
 */
template <class T>
struct ColumnRows {
  T* data;
  Index ld;
  T* column(Index j) const { return data + j; }
  Index row(Index r) const { return r * ld; }
  Index run(Index j) const { return ld - j; }
};
struct ColumnPanels {
  float* data;
  Index k;
  float* column(Index j) const { return data + packed::panel_offset(k, 0, j); }
  static Index row(Index r) { return r * packed::nr; }
  static Index run(Index j) { return packed::nr - j % packed::nr; }
};

#if defined(__AVX512F__)
/**
 * im2col for rows whose 16-output chunks each read at most 64 consecutive columns (15·stride_w + kW ≤ 64:
 * every stride-1 or -2 layer of a ResNet, the stem included). Each output row is cut into chunks of 16
 * lanes; for chunk m the image row's window of 64 columns starting at b = 16·m·stride_w − pad_w is loaded
 * once into up to four registers and gives every horizontal tap q by one selection,
 *   out[16·m + j] = window[j·stride_w + q]   (lanes whose column b + j·stride_w + q is outside the row zeroed).
 * A row-by-row copy loads each image row kW times and ran at 12 ns per 16-float output row on 16×16
 * planes (each load waited on the column-buffer stores just issued); strided rows took a scalar loop.
 */
inline bool row_windows_apply(const Conv2dShape& s) { return 15 * s.stride_w + s.kw <= 64; }

template <class Layout>
void im2col_row_windows(const Conv2dShape& s, const float* x, const Layout& col, Index column0) {
  constexpr Index max_kw = 49;  // 15·stride_w + kW ≤ 64 with stride_w ≥ 1
  const Index oh = s.out_h(), ow = s.out_w(), chunks = (ow + 15) / 16;
  const __m512i strided = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(static_cast<std::int32_t>(s.stride_w)));  // j·stride_w
  parallel_for(
      0, s.c_in,
      [&](Index c) {
        PrefetchAhead next_channel(c + 1 < s.c_in ? x + (c + 1) * s.h * s.w : nullptr, s.h * s.w * Index{sizeof(float)},
                                   chunks * s.kh * oh);
        for (Index m = 0; m < chunks; ++m) {
          const Index base = 16 * m * s.stride_w - s.pad_w;
          // Vectors of the window that any tap reads inside the row (two suffice for a 16-wide row).
          const Index vectors = (std::min(15 * s.stride_w + s.kw, s.w - base) + 15) / 16;
          const __mmask16 outputs = lane_mask(0, std::min<Index>(16, ow - 16 * m));
          // Window lanes outside the row are loaded as zeros. A tap's column past the row may also lie
          // past the vectors loaded, where the selection wraps round to a lane inside: those lanes are
          // masked (columns before the row need no mask — they are zero lanes of the window).
          __mmask16 inside[4], before_end[max_kw];
          for (Index v = 0; v < 4; ++v)
            inside[v] = v < vectors ? lane_mask(std::clamp<Index>(-base - 16 * v, 0, 16),
                                                std::clamp<Index>(s.w - base - 16 * v, 0, 16))
                                    : __mmask16(0);
          const __m512i end = _mm512_set1_epi32(static_cast<std::int32_t>(s.w - base));
          for (Index q = 0; q < s.kw; ++q)
            before_end[q] = _mm512_cmplt_epi32_mask(
                _mm512_add_epi32(strided, _mm512_set1_epi32(static_cast<std::int32_t>(q))), end);
          for (Index p = 0; p < s.kh; ++p) {
            const Index tap_row = (c * s.kh + p) * s.kw;  // the rows of taps (c, p, 0 … kW−1)
            for (Index i = 0; i < oh; ++i) {
              next_channel.step();
              float* out = col.column(column0 + i * ow + 16 * m);
              const Index r = i * s.stride_h + p - s.pad_h;
              // A row outside the image reads nothing: its window is all zeros, so every tap stores zeros.
              const bool in_image = r >= 0 && r < s.h;
              const float* src = x + (c * s.h + std::clamp<Index>(r, 0, s.h - 1)) * s.w + base;
              __m512 window[4];
              for (Index v = 0; v < 4; ++v)  // columns outside the row are masked: never read
                window[v] = _mm512_maskz_loadu_ps(in_image ? inside[v] : __mmask16(0), src + 16 * v);
              for (Index q = 0; q < s.kw; ++q) {
                const __m512i index = _mm512_add_epi32(strided, _mm512_set1_epi32(static_cast<std::int32_t>(q)));
                _mm512_mask_storeu_ps(out + col.row(tap_row + q), outputs,
                                      _mm512_maskz_mov_ps(before_end[q], select_lanes(window, vectors, index)));
              }
            }
          }
        }
      },
      s.kh * s.kw * oh * ow);
}

/**
 * col2im for image rows of at most 32 floats and output rows of at most 16 (any stride): tap q sends
 * output lane j to row column j·stride_w + q − pad_w, distinct columns for distinct lanes, so its inverse
 * is a permutation too: row column 16·h + k ← output lane inverse[q][h][k]. Each image row is the sum,
 * over the (p, i) whose tap lands on it and over q, of the output rows permuted back, written once (no
 * read-add-write of x).
 */
struct ShortRowTaps {
  static constexpr Index max_kw = 16;
  static bool applies(const Conv2dShape& s) { return s.w <= 32 && s.out_w() <= 16 && s.kw <= max_kw; }
  explicit ShortRowTaps(const Conv2dShape& s) {
    for (Index q = 0; q < s.kw; ++q) {
      std::fill_n(inverse[q][0], 32, 0);
      inverse_valid[q][0] = inverse_valid[q][1] = 0;
      for (Index j = 0; j < s.out_w(); ++j) {
        const Index c = j * s.stride_w + q - s.pad_w;
        if (c < 0 || c >= s.w) continue;
        inverse[q][c / 16][c % 16] = static_cast<std::int32_t>(j);
        inverse_valid[q][c / 16] = static_cast<__mmask16>(inverse_valid[q][c / 16] | (1u << (c % 16)));
      }
    }
  }
  alignas(64) std::int32_t inverse[max_kw][2][16];
  __mmask16 inverse_valid[max_kw][2];
};

inline void col2im_short_rows(const Conv2dShape& s, const ShortRowTaps& taps, const float* col, Index ld, float* x) {
  const Index oh = s.out_h(), ow = s.out_w();
  const __mmask16 outputs = lane_mask(0, ow), low = lane_mask(0, std::min<Index>(16, s.w)),
                  high = lane_mask(0, std::max<Index>(0, s.w - 16));
  parallel_for(
      0, s.c_in,
      [&](Index c) {
        for (Index r = 0; r < s.h; ++r) {
          __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
          for (Index p = 0; p < s.kh; ++p) {
            const Index at = r + s.pad_h - p;  // = i·stride_h for the output row i reading image row r
            if (at < 0 || at % s.stride_h != 0 || at / s.stride_h >= oh) continue;
            const float* rows = col + (c * s.kh + p) * s.kw * ld + (at / s.stride_h) * ow;
            for (Index q = 0; q < s.kw; ++q) {
              const __m512 g = _mm512_maskz_loadu_ps(outputs, rows + q * ld);
              lo = _mm512_add_ps(
                  lo, _mm512_maskz_permutexvar_ps(taps.inverse_valid[q][0], _mm512_load_si512(taps.inverse[q][0]), g));
              hi = _mm512_add_ps(
                  hi, _mm512_maskz_permutexvar_ps(taps.inverse_valid[q][1], _mm512_load_si512(taps.inverse[q][1]), g));
            }
          }
          float* dst = x + (c * s.h + r) * s.w;
          _mm512_mask_storeu_ps(dst, low, lo);
          _mm512_mask_storeu_ps(dst + 16, high, hi);
        }
      },
      s.kh * s.kw * oh * ow);
}
#endif

#if QX_PACKED_AVX2
/// The lanes l of 8 with lo ≤ l < hi: a masked load's mask.
inline __m256i lanes_between(Index lo, Index hi) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lo)), lane),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), lane));
}

/// to[0, min(8, left)) ← v's first lanes (a masked store is slow on AMD's cores: the short end by scalars).
inline void store_row_part(float* to, Index left, __m256 v) {
  if (left >= 8) {
    _mm256_storeu_ps(to, v);
    return;
  }
  alignas(32) float part[8];
  _mm256_store_ps(part, v);
  for (Index l = 0; l < left; ++l) to[l] = part[l];
}
#endif

/**
 * col2im for rows of any length with stride_w 1 or 2, written as a gather: every image element is summed
 * from the taps that read it and stored once, with no zeroing pass and no read-add-write per tap (the
 * general loops' stride-2 scatter is scalar; the 7×7 stem's input gradient on 1 × 128² at batch 16 took
 * 2.20–2.43 ms with it and 1.89–2.03 with this, docs/kernels.md). With S = stride_w, the image columns
 * S·u + φ form phase φ, and tap q reaches phase φ = (q − pad_w) mod S at output column j = u − d, with
 * d = (q − pad_w − φ) / S, so
 *   x[r][S·u + φ] = Σ_{p: r + pad_h − p = i·stride_h, 0 ≤ i < H_out} Σ_{q in phase φ} col[(c, p, q)][i, u − d]
 *                   over 0 ≤ u − d < W_out:
 * each phase a sum of shifted output rows, a vector of columns at a time (16 with AVX-512, 8 with AVX2);
 * stride 2 then interleaves the two phases.
 */
struct RowGatherTaps {
  static constexpr Index max_k = 16;
  static bool applies(const Conv2dShape& s) { return (s.stride_w == 1 || s.stride_w == 2) && s.kh <= max_k && s.kw <= max_k; }
  /// The taps of s for columns of leading dimension ld.
  RowGatherTaps(const Conv2dShape& s, Index ld) : most((s.kh + s.stride_h - 1) / s.stride_h) {
    for (Index q = 0; q < s.kw; ++q) {
      phase[q] = ((q - s.pad_w) % s.stride_w + s.stride_w) % s.stride_w;
      shift[q] = (q - s.pad_w - phase[q]) / s.stride_w;
    }
    for (Index q = 0; q < s.kw; ++q)
      if (phase[q] == 0) by_phase[first_odd++] = q;
    for (Index q = 0, at = first_odd; q < s.kw; ++q)
      if (phase[q] == 1) by_phase[at++] = q;
    // Image row r is read by tap row p of output row i when i·stride_h = r + pad_h − p: the same rows for
    // every channel, so their offsets are worked out here once, not by a remainder and a division per
    // tap for every row of every channel.
    const Index oh = s.out_h();
    reading.assign(static_cast<std::size_t>(s.h), 0);
    readers.resize(static_cast<std::size_t>(s.h * most));
    for (Index r = 0; r < s.h; ++r) {
      Index& count = reading[static_cast<std::size_t>(r)];
      for (Index p = (r + s.pad_h) % s.stride_h; p < s.kh && p <= r + s.pad_h; p += s.stride_h) {
        const Index i = (r + s.pad_h - p) / s.stride_h;
        if (i < oh) readers[static_cast<std::size_t>(r * most + count++)] = p * s.kw * ld + i * s.out_w();
      }
    }
  }
  Index phase[max_k], shift[max_k];  // tap q's phase φ and d
  Index by_phase[max_k];             // the taps in order of phase: [0, first_odd) even, the rest odd
  Index first_odd = 0;
  Index most;                        // at most this many tap rows read one image row: ⌈kH / stride_h⌉
  std::vector<Index> reading;        // reading[r]: how many tap rows read image row r
  std::vector<Index> readers;        // readers[r·most + k]: the k-th one's offset from its channel's (c, 0, 0) row
};

/// Calls sum_row(dst, rows, reading) for each image row r of one channel, rows[0, reading) being the
/// output rows that read image row r — tap p of output row i with i·stride_h = r + pad_h − p, at that tap
/// row's first column: channel_col + readers' offset, channel_col being the channel's row (c, 0, 0) — and
/// dst the row of the channel's plane channel_x.
template <class SumRow>
void for_each_gathered_row_of(const Conv2dShape& s, const RowGatherTaps& taps, const float* channel_col, float* channel_x,
                              SumRow&& sum_row) {
  for (Index r = 0; r < s.h; ++r) {
    const float* rows[RowGatherTaps::max_k];
    const Index reading = taps.reading[static_cast<std::size_t>(r)];
    const Index* offsets = taps.readers.data() + r * taps.most;
    for (Index k = 0; k < reading; ++k) rows[k] = channel_col + offsets[k];
    sum_row(channel_x + r * s.w, static_cast<const float* const*>(rows), reading);
  }
}

/// The same for every channel of col (K, ld) and x, channels split over the threads.
template <class SumRow>
void for_each_gathered_row(const Conv2dShape& s, const RowGatherTaps& taps, const float* col, Index ld, float* x,
                           SumRow&& sum_row) {
  parallel_for(
      0, s.c_in,
      [&](Index c) { for_each_gathered_row_of(s, taps, col + c * s.kh * s.kw * ld, x + c * s.h * s.w, sum_row); },
      s.kh * s.kw * s.out_h() * s.out_w());
}

#if defined(__AVX512F__)
/// to[0, min(16, left)) ← v's first lanes: a plain store when all 16 fit. (With every store masked, the
/// input gradient of a 1×1 stride-2 layer on 56² planes measured 12.3–13.7 ms against the scalar loops'
/// 11.1, in a noisy hour; with this, level. Masking im2col's whole-vector stores later made no difference.)
inline void store_row_part(float* to, Index left, __m512 v) {
  if (left >= 16)
    _mm512_storeu_ps(to, v);
  else
    _mm512_mask_storeu_ps(to, lane_mask(0, left), v);
}

inline void col2im_row_gather(const Conv2dShape& s, const RowGatherTaps& taps, const float* col, Index ld, float* x) {
  const Index ow = s.out_w();
  const bool interleave = s.stride_w == 2;
  // Columns 2u (lanes 0..15 of the even phase) and 2u + 1 (of the odd one) in order: the first 16, the next 16.
  const __m512i first_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second_half = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for_each_gathered_row(s, taps, col, ld, x, [&](float* dst, const float* const* rows, Index reading) {
    for (Index u0 = 0; u0 * s.stride_w < s.w; u0 += 16) {
      __m512 sum[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      for (Index q = 0; q < s.kw; ++q) {
        const Index d = taps.shift[q];
        // Lanes l with 0 ≤ u0 + l − d < W_out; the others read nothing (a masked load does not fault).
        const __mmask16 reach = lane_mask(std::clamp<Index>(d - u0, 0, 16), std::clamp<Index>(d + ow - u0, 0, 16));
        __m512& to = sum[taps.phase[q]];
        for (Index k = 0; k < reading; ++k) to = _mm512_add_ps(to, _mm512_maskz_loadu_ps(reach, rows[k] + q * ld + u0 - d));
      }
      if (!interleave) {
        store_row_part(dst + u0, s.w - u0, sum[0]);
        continue;
      }
      const Index column = 2 * u0;
      store_row_part(dst + column, s.w - column, _mm512_permutex2var_ps(sum[0], first_half, sum[1]));
      if (column + 16 < s.w) store_row_part(dst + column + 16, s.w - column - 16, _mm512_permutex2var_ps(sum[0], second_half, sum[1]));
    }
  });
}
#elif QX_PACKED_AVX2
/// The AVX2 form of the gather above, 8 columns at a time: image row dst from the `reading` tap rows that
/// read it (their columns ld apart).
inline void gather_row(const Conv2dShape& s, const RowGatherTaps& taps, Index ld, float* dst, const float* const* rows,
                       Index reading) {
  const Index ow = s.out_w();
  const bool interleave = s.stride_w == 2;
  for (Index u0 = 0; u0 * s.stride_w < s.w; u0 += 8) {
    // One phase's sum of taps [from, to) of by_phase. Two sums in named registers, not an array indexed by
    // the tap's phase: that put them on the stack, and every add waited on the last one's store.
    auto phase_sum = [&](Index from, Index to) {
      __m256 sum = _mm256_setzero_ps();
      for (Index t = from; t < to; ++t) {
        const Index q = taps.by_phase[t], d = taps.shift[q];
        // Lanes l with 0 ≤ u0 + l − d < W_out; the others read nothing (a masked load does not fault).
        // Inside the row, where all eight are, a plain load.
        const Index lo = std::clamp<Index>(d - u0, 0, 8), hi = std::clamp<Index>(d + ow - u0, 0, 8);
        if (lo == 0 && hi == 8) {
          for (Index k = 0; k < reading; ++k) sum = _mm256_add_ps(sum, _mm256_loadu_ps(rows[k] + q * ld + u0 - d));
          continue;
        }
        const __m256i reach = lanes_between(lo, hi);
        for (Index k = 0; k < reading; ++k) sum = _mm256_add_ps(sum, _mm256_maskload_ps(rows[k] + q * ld + u0 - d, reach));
      }
      return sum;
    };
    const __m256 sum[2] = {phase_sum(0, taps.first_odd), interleave ? phase_sum(taps.first_odd, s.kw) : _mm256_setzero_ps()};
    if (!interleave) {
      store_row_part(dst + u0, s.w - u0, sum[0]);
      continue;
    }
    // Columns 2u and 2u + 1 in order: unpack within the 128-bit halves, then put the halves in place.
    const __m256 low = _mm256_unpacklo_ps(sum[0], sum[1]), high = _mm256_unpackhi_ps(sum[0], sum[1]);
    const Index column = 2 * u0;
    store_row_part(dst + column, s.w - column, _mm256_permute2f128_ps(low, high, 0x20));
    if (column + 8 < s.w) store_row_part(dst + column + 8, s.w - column - 8, _mm256_permute2f128_ps(low, high, 0x31));
  }
}

inline void col2im_row_gather(const Conv2dShape& s, const RowGatherTaps& taps, const float* col, Index ld, float* x) {
  for_each_gathered_row(s, taps, col, ld, x,
                        [&](float* dst, const float* const* rows, Index reading) { gather_row(s, taps, ld, dst, rows, reading); });
}

/// One channel's plane channel_x ← the gather of its tap rows, which start at channel_col (rows ld apart).
inline void col2im_channel_gather(const Conv2dShape& s, const RowGatherTaps& taps, const float* channel_col, Index ld,
                                  float* channel_x) {
  for_each_gathered_row_of(s, taps, channel_col, channel_x,
                           [&](float* dst, const float* const* rows, Index reading) { gather_row(s, taps, ld, dst, rows, reading); });
}

/**
 * A block's columns col (K, images·P) made piece by piece where a product reads them (gemm_b_made: an
 * implicit GEMM), never written whole: with AVX2 a strided layer's im2col wrote its column buffer (past
 * L2: 1.2 MB a block on resnet18's 32² layer) in a fifth of the forward pass and of the weight gradient,
 * and pack_b then read it back (docs/kernels.md, "Implicit GEMM").
 * A range of columns is cut into runs along output rows (b, i, from output column v0); tap (c, p, q) of
 * a run reads image row r = i·stride_h + p − pad_h from column v0·stride_w + q − pad_w with the stride,
 *   col[(c, p, q)][b·P + i·W_out + v] = x[b, c, r, v·stride_w + q − pad_w]   (0 outside the image),
 * eight outputs per vector: one load (stride 1) or the even lanes of two (stride 2), masked at the
 * row's ends (nothing read outside the row, zeros there). Each vector is stored whole, so a run may write up to 7 floats past its
 * end; the caller orders its runs so that what comes after overwrites them, and leaves 8 floats of slack
 * after its last.
 */
class ColumnMaker {
 public:
  static constexpr Index slack = 8;
  static_assert(slack <= packed::made_slack, "gemm_b_made's buffer must hold a piece's overshoot");
  /// Stride 1 or 2 along rows (every ResNet layer); other strides take im2col.
  static bool applies(const Conv2dShape& s) { return s.stride_w == 1 || s.stride_w == 2; }
  ColumnMaker(const Conv2dShape& s, const float* x) : s_(s), x_(x), ow_(s.out_w()), positions_(s.positions()) {}

  struct Run {
    Index at;      // the run's first column, relative to the range
    Index length;  // its columns
    Index image;   // where image b of the block starts in x
    Index row;     // i·stride_h − pad_h: the image row of tap p = 0
    Index column;  // v0·stride_w − pad_w: the image column of the first output at tap q = 0
  };
  /// The tap (c, p, q) of col's row k, and of the row after it (no divisions: these run per row).
  struct Tap {
    Index c, p, q;
  };
  Tap tap(Index k) const { return {k / (s_.kh * s_.kw), k / s_.kw % s_.kh, k % s_.kw}; }
  void next(Tap& t) const {
    if (++t.q < s_.kw) return;
    t.q = 0;
    if (++t.p < s_.kh) return;
    t.p = 0;
    ++t.c;
  }

  static constexpr Index max_runs = packed::nc > packed::kc ? packed::nc : packed::kc;
  /// Columns [j0, j0 + count) as runs (count ≤ max_runs), also cut where `cut` divides the column (panels).
  Index runs(Index j0, Index count, Index cut, Run* out) const {
    check(count <= max_runs, "ColumnMaker: ", count, " columns in one piece, at most ", max_runs);
    Index b = j0 / positions_, rest = j0 % positions_, i = rest / ow_, v = rest % ow_, made = 0;
    for (Index j = j0, end = j0 + count; j < end;) {
      const Index length = std::min({ow_ - v, end - j, cut - (j - j0) % cut});
      out[made++] = {j - j0, length, b * s_.c_in * s_.h * s_.w, i * s_.stride_h - s_.pad_h, v * s_.stride_w - s_.pad_w};
      j += length;
      if ((v += length) == ow_) {
        v = 0;
        if (++i == s_.out_h()) i = 0, ++b;
      }
    }
    return made;
  }

  /// to[t] = col[(c, p, q)][run.at + t] for t < run.length (the range's columns), in vectors of 8: up to
  /// 7 floats past the run are written too.
  void tap_run(const Tap& tap, const Run& run, float* to) const {
    const Index r = run.row + tap.p;
    if (r < 0 || r >= s_.h) {
      for (Index v = 0; v < run.length; v += 8) _mm256_storeu_ps(to + v, _mm256_setzero_ps());
      return;
    }
    const float* row = x_ + run.image + (tap.c * s_.h + r) * s_.w;
    const Index w = s_.w;
    // Output v reads row column start + stride·(v − v0); lanes outside [0, W) are loaded as zeros.
    Index start = run.column + tap.q;
    // Masked loads only at the row's ends: they cost several times a plain load on AMD's cores.
    auto load = [&](Index at) {
      return at >= 0 && at + 8 <= w ? _mm256_loadu_ps(row + at) : _mm256_maskload_ps(row + at, lanes_between(-at, w - at));
    };
    if (s_.stride_w == 1) {
      for (Index v = 0; v < run.length; v += 8, start += 8) _mm256_storeu_ps(to + v, load(start));
      return;
    }
    for (Index v = 0; v < run.length; v += 8, start += 16) {
      const __m256 low = load(start), high = load(start + 8);
      // [l0 l2 h0 h2 | l4 l6 h4 h6], then the 64-bit pairs in order: [l0 l2 l4 l6 h0 h2 h4 h6].
      const __m256 even = _mm256_shuffle_ps(low, high, _MM_SHUFFLE(2, 0, 2, 0));
      _mm256_storeu_ps(to + v, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0))));
    }
  }

  /// The forward pass's B: col's rows [k0, k0 + depth) × columns [j0, j0 + columns) (j0 a multiple of 64)
  /// in 64-column panels (panel jr at panels + jr·depth), zero past `columns`; 8 floats of slack after.
  void panels(Index j0, Index columns, Index k0, Index depth, float* panels) const {
    Run run[max_runs];
    const Index count = runs(j0, columns, packed::nr, run);
    // Panel by panel, tap row by tap row, run by run: a run's overshoot lands on the next run, the next
    // tap row or the next panel, each written after it.
    for (Index first = 0; first < count;) {
      const Index panel = run[first].at / packed::nr;
      Index last = first;
      while (last < count && run[last].at / packed::nr == panel) ++last;
      float* out = panels + panel * packed::nr * depth;
      const Index filled = std::min(packed::nr, columns - panel * packed::nr);
      Tap t = tap(k0);
      for (Index k = 0; k < depth; ++k, out += packed::nr, next(t)) {
        for (Index u = first; u < last; ++u) tap_run(t, run[u], out + (run[u].at - panel * packed::nr));
        std::fill(out + filled, out + packed::nr, 0.0f);
      }
      first = last;
    }
  }

  /// The weight gradient's B, colᵀ: rows (positions) [j0, j0 + depth) × columns (taps) [k0, k0 + taps) in
  /// 64-column panels, zero past `taps`; 64 tap rows made at a time into `rows` (64·depth + slack floats)
  /// and turned by register transposes.
  void transposed_panels(Index k0, Index taps, Index j0, Index depth, float* panels, float* rows) const {
    Run run[max_runs];
    const Index count = runs(j0, depth, depth, run);
    for (Index jr = 0; jr < taps; jr += packed::nr) {
      const Index width = std::min(packed::nr, taps - jr);
      Tap t = tap(k0 + jr);
      for (Index row = 0; row < width; ++row, next(t))
        for (Index u = 0; u < count; ++u) tap_run(t, run[u], rows + row * depth + run[u].at);
      float* panel = panels + jr * depth;
      packed::transpose(rows, width, depth, panel, packed::nr);
      if (width < packed::nr)
        for (Index d = 0; d < depth; ++d) std::fill(panel + d * packed::nr + width, panel + (d + 1) * packed::nr, 0.0f);
    }
  }

 private:
  Conv2dShape s_;
  const float* x_;
  Index ow_, positions_;
};

/// A thread's rows for ColumnMaker::transposed_panels, kept for later calls.
inline float* column_maker_rows() {
  thread_local packed::Buffer rows;
  return rows.get(packed::nr * packed::kc + ColumnMaker::slack);
}
#endif

/// col (K, P), rows `ld` apart, ← the receptive fields of image x (C_in, H, W), by loops over the valid
/// column range of each tap row (im2col_block takes the register paths first where they apply). Channels
/// are independent rows of col: called outside a parallel region (one image on all threads) they are
/// split over threads.
template <class T>
void im2col(const Conv2dShape& s, const T* x, T* col, Index ld) {
  const Index oh = s.out_h(), ow = s.out_w();
  parallel_for(
      0, s.c_in,
      [&](Index c) {
        for (Index p = 0; p < s.kh; ++p)
          for (Index q = 0; q < s.kw; ++q) {
            T* row = col + ((c * s.kh + p) * s.kw + q) * ld;
            // Columns j whose tap lands inside the image: 0 ≤ j·stride_w + q − pad_w < W.
            const Index j_lo = std::min(ow, std::max<Index>(0, (s.pad_w - q + s.stride_w - 1) / s.stride_w));
            const Index j_hi =
                std::max(j_lo, std::min(ow, s.w - 1 + s.pad_w - q < 0 ? 0 : (s.w - 1 + s.pad_w - q) / s.stride_w + 1));
            for (Index i = 0; i < oh; ++i) {
              const Index r = i * s.stride_h + p - s.pad_h;
              T* out = row + i * ow;
              // Clamped so the pointer stays inside x; a row outside the image is never read through it.
              const T* src = x + (c * s.h + std::clamp<Index>(r, 0, s.h - 1)) * s.w;
              const Index shift = q - s.pad_w;  // tap (i, j) is src[j·stride_w + shift]
              if (r < 0 || r >= s.h) {
                std::fill_n(out, ow, T(0));
                continue;
              }
              std::fill_n(out, j_lo, T(0));
              if (s.stride_w == 1)
                std::copy(src + j_lo + shift, src + j_hi + shift, out + j_lo);
              else
                for (Index j = j_lo; j < j_hi; ++j) out[j] = src[j * s.stride_w + shift];
              std::fill(out + j_hi, out + ow, T(0));
            }
          }
      },
      s.kh * s.kw * oh * ow);
}

/// x (C_in, H, W) ← Σ of col's taps (the adjoint of im2col; col's rows `ld` apart); x is assigned. The
/// general loops (col2im_block takes the register paths first). Each channel writes only its own plane,
/// so channels are split over threads outside a parallel region.
template <class T>
void col2im(const Conv2dShape& s, const T* col, Index ld, T* x) {
  const Index oh = s.out_h(), ow = s.out_w();
  parallel_for(
      0, s.c_in,
      [&](Index c) {
        std::fill_n(x + c * s.h * s.w, s.h * s.w, T(0));
        for (Index p = 0; p < s.kh; ++p)
          for (Index q = 0; q < s.kw; ++q) {
            const T* row = col + ((c * s.kh + p) * s.kw + q) * ld;
            // Columns j whose tap lands inside the image: 0 ≤ j·stride_w + q − pad_w < W.
            const Index j_lo = std::min(ow, std::max<Index>(0, (s.pad_w - q + s.stride_w - 1) / s.stride_w));
            const Index j_hi =
                std::max(j_lo, std::min(ow, s.w - 1 + s.pad_w - q < 0 ? 0 : (s.w - 1 + s.pad_w - q) / s.stride_w + 1));
            for (Index i = 0; i < oh; ++i) {
              const Index r = i * s.stride_h + p - s.pad_h;
              if (r < 0 || r >= s.h) continue;
              T* dst = x + (c * s.h + r) * s.w;
              const Index shift = q - s.pad_w;  // dst[j·stride_w + shift] receives tap (i, j)
              const T* in = row + i * ow;
              if (s.stride_w == 1) {  // contiguous: lets the compiler vectorise the adds
                T* d = dst + j_lo + shift;
                const T* g = in + j_lo;
                for (Index j = 0; j < j_hi - j_lo; ++j) d[j] += g[j];
              } else {
                for (Index j = j_lo; j < j_hi; ++j) dst[j * s.stride_w + shift] += in[j];
              }
            }
          }
      },
      s.kh * s.kw * oh * ow);
}

/// A 1×1 convolution with stride 1 and no padding: its im2col is the identity (K = C_in, P = H·W), so
/// one image's columns are the image itself and col2im is a plain assignment.
inline bool is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

/// Images per GEMM: enough columns (images · columns_per_image ≥ enough_columns) to keep the GEMM
/// efficient when an image has few (deep layers), within a scratch of about 4 M elements (16 MB in
/// float) per thread; blocks shared evenly among `block_threads` threads (1: the batch in as few blocks
/// as fit, for a caller whose threads share each block's work instead).
inline Index images_per_block(Index n, Index scratch_per_image, Index columns_per_image, Index enough_columns = 512,
                              Index block_threads = num_threads()) {
  constexpr Index budget = Index{1} << 22;
  Index b = std::max<Index>(1, budget / std::max<Index>(1, scratch_per_image));
  b = std::min(b, std::max<Index>(1, enough_columns / std::max<Index>(1, columns_per_image)));
  // Keep every thread busy with its own blocks rather than splitting one GEMM across threads.
  const Index threads = std::max<Index>(1, block_threads);
  b = std::min(std::min(b, std::max<Index>(1, (n + threads - 1) / threads)), std::max<Index>(1, n));
  // Equal shares: round the block count up to a multiple of the threads, then even out the blocks
  // (32 images in blocks of 10 would give one thread 20 images and the other 12).
  const Index blocks = std::max(threads, ((n + b - 1) / b + threads - 1) / threads * threads);
  return std::max<Index>(1, (n + blocks - 1) / blocks);
}
/// A convolution's blocks: one image each for a pointwise one, whose products then read the image and
/// write the output where they are — a block of several would copy its images into columns side by side
/// and back (im2col, gathering grad_y, col2im: a fifth of such a layer's passes on 14×14 planes), and
/// the weights are packed once per call either way (weight_packed_once).
inline Index images_per_block(const Conv2dShape& s) {
  return is_pointwise(s) ? 1 : images_per_block(s.n, s.patch() * s.positions(), s.positions());
}
/// Floats per image of a block of `block` images that rounding a matrix of `rows` rows up to whole
/// 64-column panels can add (at most 63 columns of each row, shared among the block's images).
inline Index panel_rounding(Index rows, Index block) { return (packed::nr * rows + block - 1) / block; }

/// Scratch per image of a block for the three passes: the columns (K·P) and the output or gathered
/// gradient (C_out·P), plus room to round either up to whole 64-column panels when a block's columns
/// may not fill them (P not a multiple of 64). The same size for all three, so the caching allocator
/// hands each pass the block the previous one returned.
inline Index scratch_per_image(const Conv2dShape& s, Index block) {
  const Index rounding = s.positions() % packed::nr == 0 ? 0 : panel_rounding(std::max(s.patch(), s.c_out), block);
  return (s.patch() + s.c_out) * s.positions() + rounding;
}

/// How for_each_block hands blocks to threads. `any_thread`: the blocks write disjoint outputs, so a thread
/// that is done takes the next block — two cores of a shared machine often run at different speeds, and
/// with a fixed share the faster one waits at the region's end (in a resnet18 attribution pass, 22 % of
/// the threads' idle time inside regions). `fixed`: thread t always gets the same blocks, what per-thread
/// partial sums need for a result that does not depend on timing (the weight gradients).
enum class BlockOrder { any_thread, fixed };

/**
 * Runs body(first_image, images, scratch, thread) over blocks of images. Blocks are spread over threads
 * when there are enough of them; otherwise they run one after another on the calling thread and the
 * loops inside (im2col, GEMM, col2im) parallelise. That second path must not sit inside an OpenMP
 * region, not even an inactive one (`if (false)`): libgomp gives a region nested in another a fresh team
 * of new threads instead of its pool, which cost a single image more than the second core gained.
 */
template <class T, class Body>
void for_each_block(Index n, Index block, Index per_image_scratch, Body&& body, BlockOrder order = BlockOrder::fixed) {
  const Index blocks = (n + block - 1) / block;
  const int threads = static_cast<int>(std::max<Index>(1, std::min<Index>(num_threads(), blocks)));
  bool parallel = false;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  parallel = threads > 1 && blocks >= num_threads() && !omp_in_parallel();
#endif
  // One buffer per thread for the whole call, from the cache, left uninitialised (every use writes
  // before it reads), all taken before the blocks start: blocks that go to whichever thread is free may
  // leave a thread without one in one call and not in the next, and a buffer taken only then would make
  // what the cache must hold depend on timing — a system allocation in a later training step.
  const Index scratch_size = per_image_scratch * block;
  std::vector<memory::Buffer<T>> scratch;
  scratch.reserve(static_cast<std::size_t>(parallel ? threads : 1));
  for (int t = 0; t < (parallel ? threads : 1); ++t) scratch.emplace_back(static_cast<std::size_t>(scratch_size));
  auto run = [&](Index k, int t) {
    const Index first = k * block;
    body(first, std::min(block, n - first), scratch[static_cast<std::size_t>(t)].data(), t);
  };
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  if (parallel) {
    if (order == BlockOrder::any_thread) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (Index k = 0; k < blocks; ++k) run(k, omp_get_thread_num());
    } else {
#pragma omp parallel for schedule(static) num_threads(threads)
      for (Index k = 0; k < blocks; ++k) run(k, omp_get_thread_num());
    }
    return;
  }
#endif
  for (Index k = 0; k < blocks; ++k) run(k, 0);
}

/**
 * Per-thread partial sums of one result of `size` elements: each thread adds into its own part (no two
 * threads write the same memory), and finish() adds the parts in thread order, so a weight gradient is
 * reproducible for a given thread count. Parts are not zeroed: a thread's first accumulation into its
 * part assigns instead of adding (begin() says which), which spares a pass of writes over every part —
 * 37.7 MB per thread for a 512-channel Winograd weight gradient. Part 0 is the caller's destination when
 * it gives one, so the sum lands there without a copy; another thread's part is taken from the caching
 * allocator when that thread begins, so a thread that gets no work (a batch that is one shared block)
 * costs no memory.
 */
template <class T>
class PerThreadSums {
 public:
  explicit PerThreadSums(Index size, T* destination = nullptr)
      : size_(size), destination_(destination), owned_(static_cast<std::size_t>(std::max(1, num_threads()))),
        parts_(owned_.size(), nullptr) {}
  struct Part {
    T* data;
    bool first;  // the thread's first use: every element must be assigned (β = 0), not added to
  };
  /// Thread `thread`'s part (threads call this concurrently, each with its own index).
  Part begin(int thread) {
    const auto t = static_cast<std::size_t>(thread);
    if (parts_[t]) return {parts_[t], false};
    parts_[t] = t == 0 && destination_ ? destination_ : (owned_[t] = memory::Buffer<T>(static_cast<std::size_t>(size_))).data();
    return {parts_[t], true};
  }
  /// Σ over the parts that were begun, in thread order, into part 0 (zero where none was); valid until this
  /// object goes.
  T* finish() {
    if (!parts_[0]) {  // no work reached thread 0: its part is zero
      T* zero = begin(0).data;
      parallel_for(0, size_, [&](Index i) { zero[i] = T(0); });
    }
    T* sum = parts_[0];
    for (std::size_t t = 1; t < parts_.size(); ++t)
      if (const T* part = parts_[t]) parallel_for(0, size_, [&](Index i) { sum[i] += part[i]; });
    return sum;
  }

 private:
  Index size_;
  T* destination_;
  std::vector<memory::Buffer<T>> owned_;
  std::vector<T*> parts_;  // null until its thread begins; each thread sets only its own entry
};

#if defined(__AVX512F__)
/**
 * Planes of at most 64 floats whose output positions fit one vector (H·W ≤ 64, P ≤ 16: a deep layer's
 * 2×2 to 8×8 planes, strided or not). Held in up to four registers, a plane gives each tap's output row
 * as one permutation of them with the padding lanes zeroed:
 *   im2col   row(c, t)[ℓ]  = plane_c[gather[t][ℓ]]                  (ℓ < P, tap inside the image; else 0)
 *   col2im   plane_c[m]    = Σ_t row(c, t)[scatter[t][m]]           (m reached by tap t; else nothing)
 * A tap maps distinct outputs to distinct inputs, so scatter[t] is gather[t]'s inverse on its image and
 * the adjoint needs no conflict handling. Per (channel, tap) this is one vector store instead of one
 * masked load and store per output row (im2col ran at 0.5–1.3 GB/s on these shapes).
 */
struct SmallPlaneTaps {
  static constexpr Index max_taps = 25;
  static bool applies(const Conv2dShape& s) {
    return s.h * s.w <= 64 && s.positions() <= 16 && s.kh * s.kw <= max_taps;
  }
  explicit SmallPlaneTaps(const Conv2dShape& s) : taps(s.kh * s.kw), plane(s.h * s.w), vectors((plane + 15) / 16) {
    for (Index t = 0; t < taps; ++t) {
      std::fill_n(gather[t], 16, 0);
      gather_mask[t] = 0;
      for (Index v = 0; v < 4; ++v) {
        std::fill_n(scatter[t][v], 16, 0);
        scatter_mask[t][v] = 0;
      }
      const Index p = t / s.kw, q = t % s.kw;
      for (Index i = 0; i < s.out_h(); ++i)
        for (Index j = 0; j < s.out_w(); ++j) {
          const Index r = i * s.stride_h + p - s.pad_h, c = j * s.stride_w + q - s.pad_w;
          if (r < 0 || r >= s.h || c < 0 || c >= s.w) continue;
          const Index lane = i * s.out_w() + j, m = r * s.w + c;
          gather[t][lane] = static_cast<std::int32_t>(m);
          gather_mask[t] = static_cast<__mmask16>(gather_mask[t] | (1u << lane));
          scatter[t][m / 16][m % 16] = static_cast<std::int32_t>(lane);
          scatter_mask[t][m / 16] = static_cast<__mmask16>(scatter_mask[t][m / 16] | (1u << (m % 16)));
        }
    }
  }
  /// Loads plane c (its lanes past H·W zero).
  void load(const float* plane_start, __m512 (&v)[4]) const {
    for (Index k = 0; k < 4; ++k)
      v[k] = k < vectors
                 ? _mm512_maskz_loadu_ps(lane_mask(0, std::min<Index>(16, plane - 16 * k)), plane_start + 16 * k)
                 : _mm512_setzero_ps();
  }
  /// Tap t's output row from the plane's vectors.
  __m512 row(Index t, const __m512 (&v)[4]) const {
    return _mm512_maskz_mov_ps(gather_mask[t], select_lanes(v, vectors, _mm512_load_si512(gather[t])));
  }

  Index taps, plane, vectors;
  alignas(64) std::int32_t gather[max_taps][16];
  alignas(64) std::int32_t scatter[max_taps][4][16];
  __mmask16 gather_mask[max_taps];
  __mmask16 scatter_mask[max_taps][4];
};

/// When SmallPlaneTaps applies to s: body(taps, output_lanes, b, c) for each image b of a block and
/// each input channel c (channels split over threads outside a parallel region), and true.
template <class Body>
bool for_each_small_plane(const Conv2dShape& s, Index images, Body&& body) {
  if (!SmallPlaneTaps::applies(s)) return false;
  const SmallPlaneTaps taps(s);
  const __mmask16 outputs = lane_mask(0, s.positions());
  for (Index b = 0; b < images; ++b)
    parallel_for(
        0, s.c_in, [&](Index c) { body(taps, outputs, b, c); }, taps.taps * s.positions());
  return true;
}
#endif

/// Columns rounded up to whole 64-column panels.
inline Index whole_panels(Index columns) { return (columns + packed::nr - 1) / packed::nr * packed::nr; }

/// The last panel's columns past `columns`, all `rows` of them: the micro-kernel computes them and never
/// stores them, but they must hold numbers (stale memory may be denormals, which slow the FMAs).
inline void zero_panel_tail(float* panels, Index rows, Index columns) {
  if (columns % packed::nr == 0) return;
  for (Index r = 0; r < rows; ++r) std::fill_n(panels + packed::panel_offset(rows, r, columns), packed::nr - columns % packed::nr, 0.0f);
}

#if defined(__AVX512F__)
/// The register paths of im2col for the images of a block, into either layout (image b's columns are
/// [b·P, (b+1)·P)); false, writing nothing, when neither applies.
template <class Layout>
bool im2col_block_registers(const Conv2dShape& s, const float* x, Index images, const Layout& col) {
  const Index p = s.positions();
  if (for_each_small_plane(s, images, [&](const SmallPlaneTaps& taps, __mmask16 outputs, Index b, Index c) {
        __m512 plane[4];
        taps.load(x + (b * s.c_in + c) * taps.plane, plane);
        float* out = col.column(b * p);
        for (Index t = 0; t < taps.taps; ++t)
          _mm512_mask_storeu_ps(out + col.row(c * taps.taps + t), outputs, taps.row(t, plane));
      }))
    return true;
  if (row_windows_apply(s)) {
    for (Index b = 0; b < images; ++b) im2col_row_windows(s, x + b * s.c_in * s.h * s.w, col, b * p);
    return true;
  }
  return false;
}

/// Whether the register im2col of s can write ColumnPanels: each store stays inside one 64-column panel.
/// A small plane stores P lanes at column b·P (inside when P divides 64); a row window stores at most 16
/// lanes at b·P + i·W_out + 16·m (inside when W_out is a multiple of 16, or divides 64).
inline bool panels_fit(const Conv2dShape& s) {
  if (SmallPlaneTaps::applies(s)) return 64 % s.positions() == 0;
  if (row_windows_apply(s)) return s.out_w() % 16 == 0 || 64 % s.out_w() == 0;
  return false;
}
#endif

/// col (K, ld) columns [b·P, (b+1)·P) ← image b's receptive fields, for the images of a block.
template <class T>
void im2col_block(const Conv2dShape& s, const T* x, Index images, T* col) {
  const Index p = s.positions(), ld = images * p;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    if (im2col_block_registers(s, x, images, ColumnRows<float>{col, ld})) return;
#endif
  for (Index b = 0; b < images; ++b) im2col(s, x + b * s.c_in * s.h * s.w, col + b * p, ld);
}

/// x of each image of a block ← col2im of its columns [b·P, (b+1)·P) of col (K, ld); assigned.
template <class T>
void col2im_block(const Conv2dShape& s, const T* col, Index images, T* x) {
  const Index p = s.positions(), ld = images * p;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (for_each_small_plane(s, images, [&](const SmallPlaneTaps& taps, __mmask16 outputs, Index b, Index c) {
          __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
          const T* rows = col + c * taps.taps * ld + b * p;
          for (Index t = 0; t < taps.taps; ++t) {
            const __m512 row = _mm512_maskz_loadu_ps(outputs, rows + t * ld);
            for (Index k = 0; k < taps.vectors; ++k)
              sum[k] = _mm512_add_ps(sum[k], _mm512_maskz_permutexvar_ps(taps.scatter_mask[t][k],
                                                                         _mm512_load_si512(taps.scatter[t][k]), row));
          }
          T* plane = x + (b * s.c_in + c) * taps.plane;
          for (Index k = 0; k < taps.vectors; ++k)
            _mm512_mask_storeu_ps(plane + 16 * k, lane_mask(0, std::min<Index>(16, taps.plane - 16 * k)), sum[k]);
        }))
      return;
    if (ShortRowTaps::applies(s)) {
      const ShortRowTaps taps(s);
      for (Index b = 0; b < images; ++b) col2im_short_rows(s, taps, col + b * p, ld, x + b * s.c_in * s.h * s.w);
      return;
    }
  }
#endif
#if QX_PACKED_GEMM
  // With AVX2, a 1×1 layer's scatter (one add per output, nothing overlapping) stays the general loops':
  // the gather, which visits every image row, measured slower there (best 0.55 against 0.47 ms, the input
  // gradient of 128 → 256 channels on 16², stride 2, batch 16).
  [[maybe_unused]] constexpr bool avx2 = QX_PACKED_AVX2;
  if constexpr (std::is_same_v<T, float>)
    if (RowGatherTaps::applies(s) && !(avx2 && s.kh == 1 && s.kw == 1)) {
      const RowGatherTaps taps(s, ld);
      for (Index b = 0; b < images; ++b) col2im_row_gather(s, taps, col + b * p, ld, x + b * s.c_in * s.h * s.w);
      return;
    }
#endif
  for (Index b = 0; b < images; ++b) col2im(s, col + b * p, ld, x + b * s.c_in * s.h * s.w);
}

/// The block's columns (K, images·P): the input itself for one image of a pointwise convolution, else
/// im2col into `col`.
template <class T>
const T* columns_of_block(const Conv2dShape& s, const T* x, Index images, T* col) {
  if (images == 1 && is_pointwise(s)) return x;
  im2col_block(s, x, images, col);
  return col;
}
/// col (C_out, images·P) ← grad_y of a block's images side by side (image b's columns [b·P, (b+1)·P)), in
/// either layout.
template <class T, class Layout>
void gather_gradients(const Conv2dShape& s, const T* grad_y, Index images, const Layout& col) {
  const Index p = s.positions();
  for (Index b = 0; b < images; ++b)
    for (Index o = 0; o < s.c_out; ++o) {
      const T* from = grad_y + (b * s.c_out + o) * p;
      for (Index j = b * p, end = (b + 1) * p; j < end;) {  // cut where the layout is not contiguous
        const Index run = std::min(end - j, col.run(j));
        std::copy_n(from, run, col.column(j) + col.row(o));
        from += run, j += run;
      }
    }
}

/// panels (C_out × whole_panels(images·P), 64-byte aligned) ← grad_y of a block's images as the GEMM's
/// 64-column B panels, the last panel's spare columns zero (the micro-kernel computes them; stale memory
/// could hold denormals).
inline void gather_gradient_panels(const Conv2dShape& s, const float* grad_y, Index images, float* panels) {
  gather_gradients(s, grad_y, images, ColumnPanels{panels, s.c_out});
  zero_panel_tail(panels, s.c_out, images * s.positions());
}

/// Whether the forward pass of a block writes its columns as panels (float with AVX-512, stores that fit
/// the panels): not when the columns are the input itself (one image, 1×1), nor when the GEMM would
/// compute the product transposed (few columns).
template <class T>
bool forward_in_panels([[maybe_unused]] const Conv2dShape& s, [[maybe_unused]] Index images) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    return panels_fit(s) && !(images == 1 && is_pointwise(s)) && !computes_transposed(s.c_out, images * s.positions());
#endif
  return false;
}

/// Whether a convolution's product C (m×n) whose columns run through a pass of their own on the way in
/// or out (made by ColumnMaker, gathered by col2im) is computed directly even where gemm would turn it:
/// when the direct product's 6×64 tiles cover at most 15 % more than the transposed one's. Turned, the
/// columns would be written whole, to memory, and read back (im2col, or col2im of ∂col).
inline bool direct_for_columns(Index m, Index n) {
  return !computes_transposed(m, n) || 20 * tile_area(m, n) <= 23 * tile_area(n, m);
}

/// Whether the forward pass of a block makes its columns where its product reads them (ColumnMaker,
/// gemm_b_made) instead of writing them whole by im2col: float with AVX2 (AVX-512's register paths write
/// them as panels), any layer but a pointwise one (whose one image is its own columns), when gemm would
/// compute the product directly — or, for a kernel wider than 1×1 (nine floats of columns per input
/// float), when direct_for_columns: the 3×3 stride-2 layers of resnet50 on 14² and 28² (blocks of 392
/// columns, 14 % more tiles) ran 5–20 % faster made than by im2col and the transposed product; its 1×1
/// stride-2 layers did not.
template <class T>
bool makes_columns([[maybe_unused]] const Conv2dShape& s, [[maybe_unused]] Index images) {
#if QX_PACKED_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (!ColumnMaker::applies(s) || is_pointwise(s)) return false;
    const Index m = s.c_out, n = images * s.positions();
    return s.kh * s.kw > 1 ? direct_for_columns(m, n) : !computes_transposed(m, n);
  }
#endif
  return false;
}

/// The same for the weight gradient's B, colᵀ, when gemm would multiply g · colᵀ by the packed kernel
/// directly (not by dot products of rows, nor transposed) — or would turn it, for a kernel wider than 1×1
/// whose block's columns are at least made_despite_turn_floats (2 MB, four times L2), which im2col would
/// write to memory for the turned product to read back. resnet50's stem (3 → 64, 7×7 on 224², one image
/// a block: 7.4 MB of columns; K = 147) ran 20 % faster made (batch 16, 2 threads, six alternating pairs
/// of runs: 53–68 → 43–51 ms) though its direct tiles cover 32 % more; resnet18's (1 → 64 on 128², 0.8 MB
/// of columns) measured level, and keeps the turned product.
constexpr Index made_despite_turn_floats = Index{1} << 19;
/// Images per block of the forward pass: images_per_block's, except one when that block's product makes
/// its columns (makes_columns) and its positions fill whole 64-column panels, at least 256 of them. The
/// product then writes the image's output where it belongs, while a block of several images writes it
/// to the scratch and copies it out. resnet18's 64 → 128 stride-2 layers on 32² → 16² (batch 32, 2
/// threads, no bias, alternating in one process) by one image a block: the 3×3 one 0.3–4.5 % faster, the
/// 1×1 one 12–13 % (1.12 → 0.98 ms, medians).
template <class T>
Index forward_images_per_block(const Conv2dShape& s) {
  const Index p = s.positions();
  return p % packed::nr == 0 && p >= 256 && makes_columns<T>(s, 1) ? 1 : images_per_block(s);
}

template <class T>
bool makes_weight_columns([[maybe_unused]] const Conv2dShape& s, [[maybe_unused]] Index images) {
#if QX_PACKED_AVX2
  if constexpr (std::is_same_v<T, float>)
    return ColumnMaker::applies(s) && !is_pointwise(s) && !dot::suits(false, true, s.c_out, s.patch(), images * s.positions()) &&
           (!computes_transposed(s.c_out, s.patch()) ||
            (s.kh * s.kw > 1 && s.patch() * images * s.positions() >= made_despite_turn_floats));
#endif
  return false;
}

/// Whether a block's product reads its B — the image in the forward pass, grad_y in the input gradient —
/// in place, row by row (gemm_b_rows), instead of copying it into panels: one image of a pointwise
/// convolution whose planes hold at least b_rows_positions positions (float with AVX-512). The copy is a
/// pass over the whole of B that long rows do not need; on 28×28 planes the two measured the same
/// (docs/kernels.md, "B read in place").
constexpr Index b_rows_positions = 2048;
template <class T>
bool reads_b_in_place([[maybe_unused]] const Conv2dShape& s, [[maybe_unused]] Index images) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) return images == 1 && is_pointwise(s) && s.positions() >= b_rows_positions;
#endif
  return false;
}

/// Whether the input gradient of a block makes ∂col group by group and gathers it into x while it is in
/// L2 (ColumnGradientGroups; float with AVX2): a kernel wider than 1×1 (a 1×1 kernel's col2im is a plain
/// scatter, kept), strides across of 1 or 2 (col2im's row gathers), a ∂col larger than L2 (512 KiB on
/// Zen 2 and 3), images of at most 512 positions (a chunk is whole images), and a product computed
/// directly (direct_for_columns). One image of resnet18's 128 → 256 layer on 16², whose ∂col (295 KB)
/// col2im reads from L2 anyway, took 9 % longer by groups (0.350 → 0.382 ms, medians of six); resnet50's
/// layer on 56² → 28² (784 positions, so chunks of 784 columns and groups of two channels) 7 % longer.
/// Its 512-channel layer on 14² → 7², blocks of eight images of 49 positions, which gemm turns, ran 15 %
/// faster by groups than turned (27.4 → 23.2 ms, batch 16) even with 14 % more tiles: turned, its ∂col
/// (7.2 MB a block) is transposed and then read back by col2im from memory.
template <class T>
bool gathers_by_groups([[maybe_unused]] const Conv2dShape& s, [[maybe_unused]] Index images) {
#if QX_PACKED_AVX2
  constexpr Index l2_floats = Index{1} << 17, most_positions = 512;
  if constexpr (std::is_same_v<T, float>)
    return RowGatherTaps::applies(s) && s.kh * s.kw > 1 && s.positions() <= most_positions &&
           s.patch() * images * s.positions() > l2_floats && direct_for_columns(s.patch(), images * s.positions());
#endif
  return false;
}

#if QX_PACKED_AVX2
/**
 * The input gradient of a block of images with ∂col (K, columns) never written whole (AVX2). col2im of a
 * strided layer read ∂col back from past L2 — 1.2 MB a block on resnet18's 32² layer — and, once its
 * gather was mended, spent most of its time (13 % of the pass) waiting on those loads. Here ∂col's rows
 * are made a group of channels at a time, each group's T·cg rows (T = kH·kW taps per channel) into a
 * buffer that stays in L2, and gathered into those channels' planes at once:
 *   for each chunk of the block's images (256 to 512 columns): grad_y of the chunk gathered as B's panels;
 *     for each group of channels [c0, c0 + cg): R = rows [T·c0, T·(c0 + cg)) of Wᵀ · B   (the GEMM's loop
 *       nest on those rows of A: ∂col of the group), then x[b, c] ← col2im of R's rows (c, ·, ·), c in the group.
 * Groups write disjoint planes, so one image's groups are split over the threads when its blocks are not.
 * A group starts at a row of A's packed panels: T·c0 a multiple of MR, c0 of 6 / gcd(T, 6).
 */
class ColumnGradientGroups {
 public:
  static constexpr Index chunk_columns = 256;   // a chunk's least columns, when it can: A's panels are read once a chunk
  static constexpr Index group_floats = 24576;  // R: at most 96 KiB, in L2 beside B and A's panels

  ColumnGradientGroups(const Conv2dShape& s, Index block)
      : s_(s), images_(images_per_chunk(s.positions(), block)), ld_(images_ * s.positions()), taps_(s, ld_) {
    const Index per_channel = s.kh * s.kw, unit = packed::mr / std::gcd(per_channel, packed::mr);
    channels_ = std::max(unit, group_floats / ld_ / per_channel / unit * unit);
    // One image on every thread: at least two groups per thread, so that a thread done early takes one.
    const Index blocks = (s.n + block - 1) / block, threads = num_threads();
    if (blocks < threads) channels_ = std::min(channels_, std::max(unit, (s.c_in + 2 * threads * unit - 1) / (2 * threads * unit) * unit));
    channels_ = std::min(channels_, s.c_in);
  }

  /// x (images, C_in, H, W) ← the input gradient of grad_y g (images, C_out, P), Wᵀ packed as `wt`; `scratch`
  /// holds the chunk's panels of g (at most C_out × whole_panels(images·P) floats).
  void operator()(const PackedA& wt, const float* g, Index images, float* x, float* scratch) const {
    const Conv2dShape& s = s_;
    const Index p = s.positions(), per_channel = s.kh * s.kw, plane = s.h * s.w;
    const Index groups = (s.c_in + channels_ - 1) / channels_;
    for (Index b0 = 0; b0 < images; b0 += images_) {
      const Index chunk = std::min(images_, images - b0), columns = chunk * p;
      gather_gradient_panels(s, g + b0 * s.c_out * p, chunk, scratch);
      parallel_for(
          0, groups,
          [&](Index group) {
            const Index c0 = group * channels_, count = std::min(channels_, s.c_in - c0);
            float* rows = group_rows().get(per_channel * channels_ * ld_);
            packed::gemm_b_panels_with(wt.slices(per_channel * c0), per_channel * count, columns, wt.depth, 1.0f, scratch, 0.0f,
                                       rows, ld_);
            for (Index b = 0; b < chunk; ++b)
              for (Index c = 0; c < count; ++c)
                col2im_channel_gather(s, taps_, rows + c * per_channel * ld_ + b * p, ld_,
                                      x + ((b0 + b) * s.c_in + c0 + c) * plane);
          },
          per_channel * channels_ * columns * s.c_out);
    }
  }

  Index images_per_chunk() const { return images_; }
  Index channels_per_group() const { return channels_; }

  /// Images per chunk, of P positions each, in a block of `block`: at least chunk_columns columns and at
  /// most twice that where the block allows, the count whose columns waste least of their 64-column
  /// panels — one image of 196 positions fills 196 of 256 columns, two fill 392 of 448.
  static Index images_per_chunk(Index p, Index block) {
    const Index least = std::min(block, std::max<Index>(1, (chunk_columns + p - 1) / p));
    const Index most = std::min(block, std::max(least, 2 * chunk_columns / p));
    Index best = least;
    // waste(i)/(i·p) < waste(best)/(best·p), multiplied out
    auto waste = [&](Index images) { return whole_panels(images * p) - images * p; };
    for (Index images = least + 1; images <= most; ++images)
      if (waste(images) * best < waste(best) * images) best = images;
    return best;
  }

 private:
  /// A thread's buffer for R, kept for later calls.
  static packed::Buffer& group_rows() {
    thread_local packed::Buffer rows;
    return rows;
  }
  Conv2dShape s_;
  Index images_, ld_, channels_ = 1;
  RowGatherTaps taps_;
};
#endif

/// Whether the weight gradient is one product for the whole batch, ∂W = g · colᵀ with colᵀ made where
/// the product reads it, its columns of ∂W shared by the threads (float with AVX2), instead of blocks of
/// images whose products each thread adds into its own copy of ∂W (PerThreadSums). A copy past L2 costs
/// passes over memory — another thread's first write of it, the pass that adds it — and each thread
/// packs its blocks' g again for every 384 columns of ∂W. Taken when colᵀ is made (makes_weight_columns),
/// ∂W is at least 2 MB (four times L2), grad_y gathered (C_out × N·P) fits the blocks' scratch budget,
/// and ∂W's columns split evenly over the threads (ThreadSplit::even: K = 576, nine panels split five to
/// four, ran 15 % slower). 2 threads, the two ways alternating in one process, medians of 20–30 calls:
/// resnet18's 512-channel layer on 4² (9.4 MB) 16.0 → 15.2 ms at batch 32, its stride-2 layer on 8² → 4²
/// 8.46 → 7.87; resnet50's stride-2 layers on 28² → 14² 26.2 → 25.4 and 14² → 7² 24.2 → 23.0 at batch 16.
/// Smaller ∂W measured level or up to 3 % slower (resnet18's 1.2 MB on 16² → 8², resnet50's 0.6 MB on 56²).
constexpr Index one_product_least_floats = Index{1} << 19, one_product_most_floats = Index{1} << 22;
#if QX_TAP_TILES
/// Whether tap tiles cover C_out output channels with strips of TapTiles::lanes wasting at most an eighth
/// of the tiles' work: always with AVX2's strips of 16 (as measured), with AVX-512's of 64 from 57
/// channels (a 16- or 32-channel layer would compute four or two times its work).
inline bool tap_tiles_cover(Index c_out) {
  const Index padded = (c_out + TapTiles::lanes - 1) / TapTiles::lanes * TapTiles::lanes;
  return TapTiles::lanes == 16 || 8 * padded <= 9 * c_out;
}
#endif

/// Whether the forward pass runs by tap tiles (kernels/tap_tiles.hpp; float with AVX2 or AVX-512): for a
/// kernel wider than one tap, at least 16 input channels and planes of at least tap_tiles_least_positions
/// outputs — with AVX2 where its columns would be made (ColumnMaker), with AVX-512 where they would be
/// written as panels. On smaller planes, and stems (one or three channels), it ran 5–20 % slower: a block
/// holds more images and each chunk of taps adds into a yᵀ past L2. The limit: AVX2 (Zen 3) 196 —
/// resnet18's 16² and 8² outputs and resnet50's 7² slower; AVX-512 (Zen 5, L2 of 1 MiB) 49 — resnet18's
/// 8² outputs 14 % faster, its 4² 7 % slower, resnet50's 7² 7 % faster (docs/kernels.md, "Tap tiles on
/// AVX-512").
#if defined(__AVX512F__)
constexpr Index tap_tiles_least_positions = 49;
#else
constexpr Index tap_tiles_least_positions = 196;
#endif
template <class T>
bool forward_by_tap_tiles([[maybe_unused]] const Conv2dShape& s) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    return s.kh * s.kw > 1 && s.c_in >= 16 && s.positions() >= tap_tiles_least_positions && tap_tiles_cover(s.c_out) &&
           TapTiles(s).offsets_fit(images_per_block(s));
#elif QX_PACKED_AVX2
  if constexpr (std::is_same_v<T, float>)
    return s.kh * s.kw > 1 && s.c_in >= 16 && s.positions() >= tap_tiles_least_positions &&
           makes_columns<T>(s, images_per_block(s)) && TapTiles(s).offsets_fit(images_per_block(s));
#endif
  return false;
}

/// Whether the weight gradient runs by tap tiles (kernels/tap_tiles.hpp; float with AVX2 or AVX-512): for a
/// kernel wider than one tap whose ∂W is at most tap_tiles_most_floats (4 MB) — with AVX2 where colᵀ would
/// be made, with AVX-512 where im2col would write it. Blocks of images as the columns', each thread adding
/// into its own ∂Wᵀ; larger ∂W ran 7 % slower that way than as one product with AVX2 (resnet18's
/// 512-channel layers, 9.4 MB) and 0–18 % slower than im2col's with AVX-512, and pointwise strided layers
/// level or slower.
constexpr Index tap_tiles_most_floats = Index{1} << 20;
template <class T>
bool weight_gradient_by_tap_tiles([[maybe_unused]] const Conv2dShape& s) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    return s.kh * s.kw > 1 && s.c_out * s.patch() <= tap_tiles_most_floats && tap_tiles_cover(s.c_out) &&
           TapTiles(s).offsets_fit(images_per_block(s));
#elif QX_PACKED_AVX2
  if constexpr (std::is_same_v<T, float>)
    return s.kh * s.kw > 1 && s.c_out * s.patch() <= tap_tiles_most_floats && makes_weight_columns<T>(s, images_per_block(s)) &&
           TapTiles(s).offsets_fit(images_per_block(s));
#endif
  return false;
}

/// Whether the input gradient runs by tap tiles, phase by phase of the stride (kernels/tap_tiles.hpp,
/// PhaseTiles; float with AVX-512): a strided kernel wider than one tap, at least 16 output channels (the
/// tiles' chunks), input channels the strips cover (tap_tiles_cover) and phases of at least 49 positions an
/// image (tap_tiles_least_positions; resnet18's 8² → 4² layer, 16 a phase, measured level). Against im2col
/// and col2im, 2 threads: resnet50's strided 3×3 layers 15–24 % faster, resnet18's 16 % on 16², level on
/// 32². With AVX2 (measured on Zen 5 built for x86-64-v3) level to 7 % slower than ColumnGradientGroups:
/// not taken there (docs/kernels.md, "Tap tiles on AVX-512").
template <class T>
bool input_gradient_by_tap_tiles([[maybe_unused]] const Conv2dShape& s) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (s.kh * s.kw == 1 || s.stride_h * s.stride_w == 1 || s.c_out < 16 || !tap_tiles_cover(s.c_in)) return false;
    if ((s.h / s.stride_h) * (s.w / s.stride_w) < tap_tiles_least_positions) return false;
    return PhaseTiles(s).offsets_fit(images_per_block(s));
  }
#endif
  return false;
}

#if QX_TAP_TILES
/// ∂x (N, C_in, H, W) by tap tiles, phase by phase (input_gradient_by_tap_tiles; assigned): the phases'
/// strips of Wᵀ made once, then blocks of images as the other input gradients', any thread taking the next.
inline void input_gradient_by_phases(const Conv2dShape& s, const float* grad_y, const float* weight, float* grad_x) {
  const PhaseTiles tiles(s);
  const Index block = images_per_block(s);
  memory::Buffer<float> turned(static_cast<std::size_t>(s.c_out * s.kh * s.kw * tiles.c_padded)),
      strips(static_cast<std::size_t>(tiles.strip_floats));
  phase_strips(s, tiles, weight, turned.data(), strips.data());
  for_each_block<float>(
      s.n, block, std::max(scratch_per_image(s, block), tiles.scratch_per_image(s)),
      [&](Index first, Index images, float* scratch, int) {
        input_gradient_tap_tiles(s, tiles, grad_y + first * s.c_out * s.positions(), images, strips.data(), scratch,
                                 grad_x + first * s.c_in * s.h * s.w);
      },
      BlockOrder::any_thread);
}
#endif

template <class T>
bool weight_gradient_in_one_product([[maybe_unused]] const Conv2dShape& s) {
#if QX_PACKED_AVX2
  if constexpr (std::is_same_v<T, float>)
    return !weight_gradient_by_tap_tiles<T>(s) && makes_weight_columns<T>(s, s.n) && s.c_out * s.patch() >= one_product_least_floats &&
           s.c_out * s.n * s.positions() <= one_product_most_floats && ThreadSplit(s.c_out, s.patch(), num_threads()).even();
#endif
  return false;
}

#if QX_PACKED_AVX2
/// ∂W (C_out, K) = g · colᵀ over the whole batch (weight_gradient_in_one_product; assigned): g (C_out,
/// N·P) gathered and packed as A once, colᵀ made block by block by the loop nest, ∂W's columns split over
/// the threads. Each element is summed by one thread in one order, whatever the thread count.
inline void weight_gradient_one_product(const Conv2dShape& s, const float* x, const float* grad_y, float* grad_weight) {
  const Index depth = s.n * s.positions(), k = s.patch();
  memory::Buffer<float> rows(static_cast<std::size_t>(s.c_out * depth));
  gather_gradients(s, grad_y, s.n, ColumnRows<float>{rows.data(), depth});
  const PackedMatrix g(false, rows.data(), depth, s.c_out, depth);
  const ColumnMaker maker(s, x);
  gemm_b_made(
      g.view, k, 1.0f,
      [&](Index k0, Index taps, Index j0, Index positions, float* to) {
        maker.transposed_panels(k0, taps, j0, positions, to, column_maker_rows());
      },
      0.0f, grad_weight, k);
}
#endif

/// Whether the input gradient of a block gathers grad_y as panels (float with the packed GEMM): when it
/// gathers at all (one image's grad_y is used in place), and the GEMM would not compute the product
/// transposed.
template <class T>
bool gradients_in_panels([[maybe_unused]] const Conv2dShape& s, [[maybe_unused]] Index images) {
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) return images > 1 && !computes_transposed(s.patch(), images * s.positions());
#endif
  return false;
}

/// The call's weights packed once for its products, each pointer null when they pack what they need
/// themselves (always when float products go to Eigen): `a`, op(W) as A for the products gemm computes directly; `b`,
/// op(W)ᵀ as B panels for those it computes transposed (few columns: 14×14 and 7×7 planes), which
/// gemm_transposed multiplies.
struct PackedWeight {
  std::shared_ptr<const PackedMatrix> a;
  std::shared_ptr<const PackedPanels> b;
};

#if QX_PACKED_GEMM

/// op(W) (rows × depth; W stored (C_out, K) row-major) packed for the whole call where it pays. When W is
/// declared constant in the calling thread's ConstantWeights registry (nn::WeightCache's folded weights:
/// kept from call to call, per layer — the layout does not depend on the batch), whichever form some
/// block uses. Otherwise `a` when some block — a whole one or the shorter last one — multiplies panels
/// (in_panels(images)) or reads its B in place (reads_b_in_place, the same for both passes): those
/// products take A packed; or when at least two blocks multiply it directly — each block's product would
/// pack it again (a resnet50 layer on 28×28 planes runs blocks of one image, 16 packs of W per batch of
/// 16); and `b` when at least two blocks compute their product transposed (gemm's choice for few columns,
/// except where in_panels: those multiply directly). A single product packs its operands on its own
/// threads, faster than one packing thread.
template <class InPanels>
PackedWeight weight_packed_once(const Conv2dShape& s, Index block, InPanels&& in_panels, bool trans, const float* weight,
                                Index rows, Index depth) {
  const Index whole = s.n / block, last = s.n % block, p = s.positions();
  const auto packed_a_product = [&](Index images) { return in_panels(images) || reads_b_in_place<float>(s, images); };
  const bool panels = packed_a_product(block) || (last && packed_a_product(last));
  const auto turned = [&](Index images) { return computes_transposed(rows, images * p) && !in_panels(images); };
  const Index direct = (!turned(block) ? whole : 0) + (last && !turned(last) ? 1 : 0);
  const Index transposed = whole + (last ? 1 : 0) - direct;
  auto pack_a = [&] { return std::make_shared<const PackedMatrix>(trans, weight, s.patch(), rows, depth); };
  auto pack_b = [&] { return std::make_shared<const PackedPanels>(!trans, weight, s.patch(), depth, rows); };
  PackedWeight packed;
  if (ConstantWeights* constant = ConstantWeights::active()) {
    Conv2dShape any_batch = s;
    any_batch.n = 0;
    if (panels || direct > 0)
      packed.a = constant->derived<PackedMatrix>(weight, any_batch, trans ? Derived::packed_weight_transposed : Derived::packed_weight,
                                                 pack_a);
    if (transposed > 0)
      packed.b = constant->derived<PackedPanels>(weight, any_batch, trans ? Derived::weight_panels_transposed : Derived::weight_panels,
                                                 pack_b);
  }
  if (!packed.a && (panels || direct >= 2)) packed.a = pack_a();
  if (!packed.b && transposed >= 2) packed.b = pack_b();
  return packed;
}
#endif

/// out (rows × n) = op(W) (rows × depth) · B (depth × n), B and out of leading dimension n: by the call's
/// op(W)ᵀ packed once (`packed.b`) when gemm computes this product transposed, or by op(W) packed once
/// (`packed.a`) when it does not — reading B in place when `b_rows` (reads_b_in_place), else packing it —;
/// otherwise (that form null) by gemm, which packs what it needs.
template <class T>
void weight_product([[maybe_unused]] const PackedWeight& packed, bool trans, Index rows, Index n, Index depth, const T* weight,
                    const T* b, T* out, [[maybe_unused]] bool b_rows = false) {
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) {
    const bool transposed = computes_transposed(rows, n);
    if (packed.b && transposed) {
      gemm_transposed(*packed.b, n, b, n, out, n);
      return;
    }
    if (packed.a && !transposed) {
#if defined(__AVX512F__)
      if (b_rows) gemm_b_rows(packed.a->view, n, 1.0f, b, n, 0.0f, out, n);
      else
#endif
        gemm(packed.a->view, false, n, 1.0f, b, n, 0.0f, out, n);
      return;
    }
  }
#endif
  gemm(trans, false, rows, n, depth, T(1), weight, trans ? rows : depth, b, n, T(0), out, n);
}
}  // namespace detail

/// y (N, C_out, H_out, W_out) = stage(conv(x (N, C_in, H, W), weight (C_out, C_in, kH, kW)) + bias (C_out, nullable))
/// (stage: the optional residual add and ReLU of functors.hpp, applied as each output is stored)
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y, const ConvOutputStage<T>& stage = {}) {
  const Index k = s.patch(), p = s.positions(), block = detail::forward_images_per_block<T>(s);
  // The backward passes' scratch, whatever this pass's blocks: the caching allocator then hands each pass
  // the buffer the one before returned.
  const Index shared = detail::images_per_block(s), per_image = detail::scratch_per_image(s, shared) * shared / block;
  // to[i] = stage(from[i] + bias[o]) over one output plane; the loop without a stage stays a plain add.
  auto store_plane = [&](T* to, const T* from, Index o) {
    const T add = bias ? bias[o] : T(0);
    const Index at = to - y;
    if (stage.active())
      for (Index i = 0; i < p; ++i) to[i] = stage(from[i] + add, at + i);
    else
      for (Index i = 0; i < p; ++i) to[i] = from[i] + add;
  };
#if QX_TAP_TILES
  if constexpr (std::is_same_v<T, float>)
    if (detail::forward_by_tap_tiles<T>(s)) {
      const detail::TapTiles tiles(s);
      // W as strips of TapTiles::lanes output channels
      memory::Buffer<float> strips(static_cast<std::size_t>(tiles.c_padded * k));
      detail::transpose_into_strips(weight, s.c_out, k, k, tiles.c_padded, strips.data(), k);
      detail::for_each_block<float>(
          s.n, shared, std::max(detail::scratch_per_image(s, shared), tiles.forward_scratch_per_image(s)),
          [&](Index first, Index images, float* scratch, int) {
            float* dst = y + first * s.c_out * p;
            detail::forward_tap_tiles(s, tiles, x + first * s.c_in * s.h * s.w, images, strips.data(), scratch, dst);
            if (bias || stage.active())
              for (Index plane = 0; plane < images * s.c_out; ++plane) store_plane(dst + plane * p, dst + plane * p, plane % s.c_out);
          },
          detail::BlockOrder::any_thread);
      return;
    }
#endif
  detail::PackedWeight packed;  // W packed once where the blocks' products use it (as A, or Wᵀ as B)
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>)
    packed = detail::weight_packed_once(
        s, block, [&](Index images) { return detail::forward_in_panels<T>(s, images) || detail::makes_columns<T>(s, images); },
        false, weight, s.c_out, k);
#endif
  // Scratch: the columns (rows or panels), then the block's output (C_out·P) before it is scattered to NCHW.
  detail::for_each_block<T>(s.n, block, per_image, [&](Index first, Index images, T* scratch, int) {
    const Index ld = images * p;
    const T* image = x + first * s.c_in * s.h * s.w;
    const bool panels = detail::forward_in_panels<T>(s, images);
    T* dst = y + first * s.c_out * p;  // one image's (C_out, P) is already NCHW: written in place, no copy
    T* out = images == 1 ? dst : scratch + k * (panels ? detail::whole_panels(ld) : ld);
    if (panels) {
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        detail::im2col_block_registers(s, image, images, detail::ColumnPanels{scratch, k});
        detail::zero_panel_tail(scratch, k, ld);
        gemm_b_panels(packed.a->view, ld, 1.0f, scratch, 0.0f, out, ld);
      }
#endif
    } else if (detail::makes_columns<T>(s, images)) {
#if QX_PACKED_AVX2
      if constexpr (std::is_same_v<T, float>) {
        const detail::ColumnMaker maker(s, image);
        gemm_b_made(
            packed.a->view, ld, 1.0f,
            [&](Index j0, Index columns, Index k0, Index depth, float* to) { maker.panels(j0, columns, k0, depth, to); },
            0.0f, out, ld);
      }
#endif
    } else {
      detail::weight_product(packed, false, s.c_out, ld, k, weight, detail::columns_of_block(s, image, images, scratch), out,
                             detail::reads_b_in_place<T>(s, images));
    }
    if (images == 1) {  // the product is already in place: only the bias and the stage are left
      if (bias || stage.active()) parallel_for(0, s.c_out, [&](Index o) { store_plane(dst + o * p, dst + o * p, o); }, p);
      return;
    }
    for (Index b = 0; b < images; ++b)
      for (Index o = 0; o < s.c_out; ++o) store_plane(y + ((first + b) * s.c_out + o) * p, out + o * ld + b * p, o);
  }, detail::BlockOrder::any_thread);
}

/// grad_x (N, C_in, H, W) = the adjoint of conv2d applied to grad_y; assigned.
template <class T>
void conv2d_backward_input(const Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  const Index k = s.patch(), p = s.positions(), block = detail::images_per_block(s);
#if QX_TAP_TILES
  if constexpr (std::is_same_v<T, float>)
    if (detail::input_gradient_by_tap_tiles<T>(s)) {
      detail::input_gradient_by_phases(s, grad_y, weight, grad_x);
      return;
    }
#endif
  detail::PackedWeight packed;  // Wᵀ packed once where the blocks' products use it (as A, or W as B)
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>)
    packed = detail::weight_packed_once(
        s, block, [&](Index images) { return detail::gradients_in_panels<T>(s, images) || detail::gathers_by_groups<T>(s, images); },
        true, weight, k, s.c_out);
#endif
#if QX_PACKED_AVX2
  std::optional<detail::ColumnGradientGroups> by_groups;  // made once for the call when some block uses it
  if constexpr (std::is_same_v<T, float>)
    if (detail::gathers_by_groups<T>(s, block) || (s.n % block && detail::gathers_by_groups<T>(s, s.n % block)))
      by_groups.emplace(s, block);
#endif
  // Scratch: several images' grad_y gathered (rows, or panels: one copy instead of a gather and a pack),
  // then the columns' gradient ∂col (K, ld).
  detail::for_each_block<T>(s.n, block, detail::scratch_per_image(s, block), [&](Index first, Index images, T* scratch, int) {
    const Index ld = images * p;
#if QX_PACKED_AVX2
    if constexpr (std::is_same_v<T, float>)
      if (detail::gathers_by_groups<T>(s, images)) {
        (*by_groups)(packed.a->view, grad_y + first * s.c_out * p, images, grad_x + first * s.c_in * s.h * s.w, scratch);
        return;
      }
#endif
    const bool panels = detail::gradients_in_panels<T>(s, images);
    const T* g = grad_y + first * s.c_out * p;  // one image's (C_out, P) is used in place
    T* col = scratch;
    if (images > 1) {
      if (!panels) detail::gather_gradients(s, g, images, detail::ColumnRows<T>{scratch, ld});
#if QX_PACKED_GEMM
      if constexpr (std::is_same_v<T, float>)
        if (panels) detail::gather_gradient_panels(s, g, images, scratch);
#endif
      g = scratch;  // panels start the buffer: 64-byte aligned
      col = scratch + s.c_out * (panels ? detail::whole_panels(ld) : ld);
    }
    T* x = grad_x + first * s.c_in * s.h * s.w;
    T* product = images == 1 && detail::is_pointwise(s) ? x : col;  // col2im of a 1×1 would copy
    if (panels) {
#if QX_PACKED_GEMM
      if constexpr (std::is_same_v<T, float>) gemm_b_panels(packed.a->view, ld, 1.0f, g, 0.0f, product, ld);
#endif
    } else {
      detail::weight_product(packed, true, k, ld, s.c_out, weight, g, product, detail::reads_b_in_place<T>(s, images));
    }
    if (product == col) detail::col2im_block(s, col, images, x);
  }, detail::BlockOrder::any_thread);
}

/// grad_bias (C_out) = Σ_{n,i,j} grad_y[n, o, i, j]; assigned. Shared by every convolution algorithm.
template <class T>
void conv2d_backward_bias(const Conv2dShape& s, const T* grad_y, T* grad_bias) {
  const Index p = s.positions();
  parallel_for(
      0, s.c_out,
      [&](Index o) {
        double sum = 0;
        for (Index b = 0; b < s.n; ++b)
          sum += lane_sum<T>(p, [&](Index i) { return grad_y[(b * s.c_out + o) * p + i]; });
        grad_bias[o] = static_cast<T>(sum);
      },
      s.n * p);
}

/// grad_weight (C_out, C_in, kH, kW) = Σ_n g_n · col_nᵀ and grad_bias (C_out, nullable) = Σ g; assigned.
template <class T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  const Index k = s.patch(), p = s.positions();
  if (detail::weight_gradient_in_one_product<T>(s)) {
#if QX_PACKED_AVX2
    if constexpr (std::is_same_v<T, float>) detail::weight_gradient_one_product(s, x, grad_y, grad_weight);
#endif
    if (grad_bias) conv2d_backward_bias(s, grad_y, grad_bias);
    return;
  }
#if QX_TAP_TILES
  if constexpr (std::is_same_v<T, float>) {
    if (detail::weight_gradient_by_tap_tiles<T>(s)) {
      const detail::TapTiles tiles(s);
      detail::PerThreadSums<float> transposed(tiles.k_padded * tiles.c_padded);  // ∂Wᵀ per thread
      const Index block = detail::images_per_block(s);
      // The other passes' scratch when it is the larger (it is for 3×3 kernels): the caching allocator then
      // hands each pass the buffer the one before returned.
      detail::for_each_block<float>(
          s.n, block, std::max(detail::scratch_per_image(s, block), tiles.weight_scratch_per_image(s)),
          [&](Index first, Index images, float* scratch, int t) {
            const auto part = transposed.begin(t);
            detail::weight_gradient_tap_tiles(s, tiles, x + first * s.c_in * s.h * s.w, grad_y + first * s.c_out * p,
                                              images, scratch, part.data, !part.first);
          });
      detail::untranspose_weights(s, tiles, transposed.finish(), grad_weight);
      if (grad_bias) conv2d_backward_bias(s, grad_y, grad_bias);
      return;
    }
  }
#endif
  detail::PerThreadSums<T> partial(s.c_out * k, grad_weight);  // ∂W per thread, thread 0's in place
  const Index block = detail::images_per_block(s);
  detail::for_each_block<T>(
      s.n, block, detail::scratch_per_image(s, block), [&](Index first, Index images, T* scratch, int t) {
        const Index ld = images * p;
        const T* image = x + first * s.c_in * s.h * s.w;
        const bool make = detail::makes_weight_columns<T>(s, images);
        const T* col = make ? nullptr : detail::columns_of_block(s, image, images, scratch);
        const T* g = grad_y + first * s.c_out * p;  // one image's (C_out, P) is used in place
        if (images > 1) {
          detail::gather_gradients(s, g, images, detail::ColumnRows<T>{scratch + k * ld, ld});
          g = scratch + k * ld;
        }
        const auto part = partial.begin(t);
        const T beta = part.first ? T(0) : T(1);
        if (make) {
#if QX_PACKED_AVX2
          if constexpr (std::is_same_v<T, float>) {
            const detail::ColumnMaker maker(s, image);
            // g packed once per block: packed per slice, the loop nest would pack it again for every block
            // of 384 taps (three times for K = 1152).
            const PackedMatrix packed_g(false, g, ld, s.c_out, ld);
            gemm_b_made(
                packed_g.view, k, 1.0f,
                [&](Index k0, Index taps, Index j0, Index depth, float* to) {
                  maker.transposed_panels(k0, taps, j0, depth, to, detail::column_maker_rows());
                },
                beta, part.data, k);
          }
#endif
          return;
        }
        // A stem's K = 49 or 147 columns: gemm computes this product transposed (kernels/gemm.hpp).
        gemm(false, true, s.c_out, k, ld, T(1), g, ld, col, ld, beta, part.data, k);
      });
  partial.finish();
  if (grad_bias) conv2d_backward_bias(s, grad_y, grad_bias);
}

}  // namespace kernels
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_KERNELS_CONV2D(instance, T) \
  instance void conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*, const ConvOutputStage<T>&); \
  instance void conv2d_backward_input<T>(const Conv2dShape&, const T*, const T*, T*); \
  instance void conv2d_backward_weight<T>(const Conv2dShape&, const T*, const T*, T*, T*); \
  instance void conv2d_backward_bias<T>(const Conv2dShape&, const T*, T*);
QX_DECLARE_INSTANCES(kernels, QX_INSTANCES_KERNELS_CONV2D)
#undef QX_INSTANCES_KERNELS_CONV2D
