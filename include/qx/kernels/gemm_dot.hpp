// C = α·A·Bᵀ + β·C for a small C and a long depth, as dot products of rows (AVX-512, float):
//   C[i][j] = α · Σ_p A[i][p] · B[j][p] + β · C[i][j],   A (m×k, lda), B (n×k, ldb), both row-major.
// A convolution's weight gradient is this product: ∂W (C_out × K) = g (C_out × P) · colᵀ, where g's and
// col's rows are contiguous along the P positions. The packed kernel (gemm_packed.hpp) needs colᵀ's
// rows, a transposing copy of col, and rounds C up to its 6 × 64 tile; for C_out = 16 and K = 144 it
// computes 18 × 192 to keep 16 × 144 (67 %). Here the lanes run along the depth: no packing, no padding
// of C; the price is a horizontal sum per element of C and chunk of depth. docs/kernels.md has the numbers.
#pragma once
#include "qx/config.hpp"
#include "qx/core/shape.hpp"
#include "qx/kernels/gemm_packed.hpp"  // lane_mask

#include <algorithm>
#include <array>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

QX_NAMESPACE_BEGIN
namespace kernels {
namespace detail {
namespace dot {

#if defined(__AVX512F__)
constexpr Index rows_a = 8;    // rows of A per register tile
constexpr Index rows_b = 3;    // rows of B per register tile: 24 accumulators, 11 loads per 24 FMAs
constexpr Index depth = 512;   // depth of one chunk: a tile's 8 rows of A (16 KiB) stay in L1

/// The sums of eight vectors, in order: (Σ v[0], …, Σ v[7]), by a transposing tree of adds (24 shuffles
/// and adds, against 8 × 8 for eight separate horizontal sums).
inline __m256 sum_eight(const __m512* v) {
  __m512 pairs[4], quads[2];
  for (int j = 0; j < 4; ++j)  // within each 128-bit lane: (v2j, v2j+1, v2j, v2j+1) partial sums
    pairs[j] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]), _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]));
  for (int j = 0; j < 2; ++j) {  // within each 128-bit lane: (v4j, …, v4j+3) partial sums
    const __m512d lo = _mm512_castps_pd(pairs[2 * j]), hi = _mm512_castps_pd(pairs[2 * j + 1]);
    quads[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi)), _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi)));
  }
  // Lanes L0..L3 of quads[0] hold v0..v3, of quads[1] v4..v7: add L0+L1 and L2+L3, then the two halves.
  const __m512 halves = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // halves: (q0 L0+L1, q0 L2+L3, q1 L0+L1, q1 L2+L3)
  const __m512 both = _mm512_add_ps(halves, _mm512_shuffle_f32x4(halves, halves, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_castps512_ps256(_mm512_shuffle_f32x4(both, both, _MM_SHUFFLE(2, 0, 2, 0)));
}

/// One register tile over one chunk: sums[r·C + c] = Σ_{p<len} A[r][p]·B[c][p] for R ≤ 8 rows of A and
/// C ≤ 3 rows of B (sums has room for 24); the last partial vector of depth is read under a mask.
template <int R, int C>
void tile_sums(const float* a, Index lda, const float* b, Index ldb, Index len, float* sums) {
  // Accumulator r·C + c, padded with zeros to whole groups of eight for sum_eight.
  constexpr int count = R * C, groups = (count + 7) / 8;
  __m512 acc[groups * 8];
  for (int i = 0; i < groups * 8; ++i) acc[i] = _mm512_setzero_ps();
  // The main loop and the masked tail are written out (not one lambda called twice): GCC then keeps the
  // accumulators in registers instead of storing them every step.
  Index p = 0;
  for (; p + 16 <= len; p += 16) {
    __m512 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_loadu_ps(b + c * ldb + p);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_loadu_ps(a + r * lda + p);
      for (int c = 0; c < C; ++c) acc[r * C + c] = _mm512_fmadd_ps(av, bv[c], acc[r * C + c]);
    }
  }
  if (p < len) {
    const __mmask16 mask = lane_mask(0, len - p);
    __m512 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_maskz_loadu_ps(mask, b + c * ldb + p);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_maskz_loadu_ps(mask, a + r * lda + p);
      for (int c = 0; c < C; ++c) acc[r * C + c] = _mm512_fmadd_ps(av, bv[c], acc[r * C + c]);
    }
  }
  for (int g = 0; g < groups; ++g) _mm256_storeu_ps(sums + 8 * g, sum_eight(acc + 8 * g));
}

using TileSums = void (*)(const float*, Index, const float*, Index, Index, float*);
/// tile_sums<R, C> for every edge tile: entry (R − 1)·3 + (C − 1).
template <std::size_t... I>
constexpr std::array<TileSums, sizeof...(I)> tile_sums_table(std::index_sequence<I...>) {
  return {&tile_sums<static_cast<int>(I / rows_b) + 1, static_cast<int>(I % rows_b) + 1>...};
}
inline constexpr auto tile_sums_by_shape = tile_sums_table(std::make_index_sequence<rows_a * rows_b>{});
#endif

/**
 * Whether C (m×n) = α·op(A)·op(B) + β·C goes here rather than to the packed kernel: A·Bᵀ (both operands'
 * rows along the depth), a C with at most 32 rows or columns, and depth enough (≥ 128) to pay for the
 * horizontal sums. Measured (docs/kernels.md, "A·Bᵀ as dot products of rows"): level with the packed
 * kernel on hot caches, 1.3-1.7× faster inside the convolution's weight gradient of 16-channel layers;
 * a bound of 64 was slower on the 64-channel layers. (Without AVX-512 such products go to Eigen.)
 */
inline bool suits(bool trans_a, bool trans_b, Index m, Index n, Index k) {
  return !trans_a && trans_b && k >= 128 && std::min(m, n) <= 32;
}

#if defined(__AVX512F__)
/// C (m×n) = α·A·Bᵀ + β·C on the calling thread; β = 0 never reads C.
inline void gemm_dot(Index m, Index n, Index k, float alpha, const float* a, Index lda, const float* b, Index ldb,
                     float beta, float* c, Index ldc) {
  if (k == 0) {
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  for (Index p0 = 0; p0 < k; p0 += depth) {
    const Index len = std::min(depth, k - p0);
    const bool first = p0 == 0;
    for (Index i0 = 0; i0 < m; i0 += rows_a) {
      const int rows = static_cast<int>(std::min(rows_a, m - i0));
      for (Index j0 = 0; j0 < n; j0 += rows_b) {
        const int cols = static_cast<int>(std::min(rows_b, n - j0));
        float sums[rows_a * rows_b];
        tile_sums_by_shape[(rows - 1) * rows_b + cols - 1](a + i0 * lda + p0, lda, b + j0 * ldb + p0, ldb, len, sums);
        for (int r = 0; r < rows; ++r)
          for (int col = 0; col < cols; ++col) {
            const float sum = alpha * sums[r * cols + col];
            float& out = c[(i0 + r) * ldc + j0 + col];
            if (!first) out += sum;
            else out = beta == 0.0f ? sum : sum + beta * out;
          }
      }
    }
  }
}
#endif

}  // namespace dot
}  // namespace detail
}  // namespace kernels
QX_NAMESPACE_END
