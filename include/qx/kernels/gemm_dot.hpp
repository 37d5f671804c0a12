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

#include <algorithm>

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

/// The sums of eight vectors, in order: (Σ v0, …, Σ v7), by a transposing tree of adds (24 shuffles
/// and adds, against 8 × 8 for eight separate horizontal sums).
inline __m256 sum_eight(const __m512 (&v)[8]) {
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

/// One register tile over one chunk: s[r][c] = Σ_{p<len} A[r][p]·B[c][p] for R ≤ 8 rows of A and C ≤ 3
/// rows of B; the last partial vector of depth is read under a mask.
template <int R, int C>
void tile_sums(const float* a, Index lda, const float* b, Index ldb, Index len, float (&s)[rows_a][rows_b]) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  // The main loop and the masked tail are written out (not one lambda called twice): GCC then keeps the
  // accumulators in registers instead of storing them every step.
  Index p = 0;
  for (; p + 16 <= len; p += 16) {
    __m512 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_loadu_ps(b + c * ldb + p);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_loadu_ps(a + r * lda + p);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(av, bv[c], acc[r][c]);
    }
  }
  if (p < len) {
    const auto mask = static_cast<__mmask16>((1u << (len - p)) - 1);
    __m512 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_maskz_loadu_ps(mask, b + c * ldb + p);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_maskz_loadu_ps(mask, a + r * lda + p);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(av, bv[c], acc[r][c]);
    }
  }
  // The tile's R·C accumulators in row order, padded with zeros to whole groups of eight, summed eight
  // at a time.
  constexpr int count = R * C, groups = (count + 7) / 8;
  __m512 all[groups * 8];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) all[r * C + c] = acc[r][c];
  for (int i = count; i < groups * 8; ++i) all[i] = _mm512_setzero_ps();
  float sums[groups * 8];
  for (int g = 0; g < groups; ++g) {
    __m512 group[8];
    for (int i = 0; i < 8; ++i) group[i] = all[g * 8 + i];
    _mm256_storeu_ps(sums + 8 * g, sum_eight(group));
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) s[r][c] = sums[r * C + c];
}

template <int R>
void tile_sums_rows(int cols, const float* a, Index lda, const float* b, Index ldb, Index len, float (&s)[rows_a][rows_b]) {
  switch (cols) {
    case 1: tile_sums<R, 1>(a, lda, b, ldb, len, s); break;
    case 2: tile_sums<R, 2>(a, lda, b, ldb, len, s); break;
    default: tile_sums<R, 3>(a, lda, b, ldb, len, s); break;
  }
}

inline void tile_sums_any(int rows, int cols, const float* a, Index lda, const float* b, Index ldb, Index len,
                          float (&s)[rows_a][rows_b]) {
  switch (rows) {
    case 1: tile_sums_rows<1>(cols, a, lda, b, ldb, len, s); break;
    case 2: tile_sums_rows<2>(cols, a, lda, b, ldb, len, s); break;
    case 3: tile_sums_rows<3>(cols, a, lda, b, ldb, len, s); break;
    case 4: tile_sums_rows<4>(cols, a, lda, b, ldb, len, s); break;
    case 5: tile_sums_rows<5>(cols, a, lda, b, ldb, len, s); break;
    case 6: tile_sums_rows<6>(cols, a, lda, b, ldb, len, s); break;
    case 7: tile_sums_rows<7>(cols, a, lda, b, ldb, len, s); break;
    default: tile_sums_rows<8>(cols, a, lda, b, ldb, len, s); break;
  }
}

/**
 * Whether C (m×n) = α·op(A)·op(B) + β·C goes here rather than to the packed kernel: A·Bᵀ (both operands'
 * rows along the depth), a C with at most 32 rows or columns, and depth enough (≥ 128) to pay for the
 * horizontal sums. Measured on one thread (docs/kernels.md, "Weight gradients of narrow layers"): 1.5-1.8×
 * the packed kernel for 16 × 144 × 512 and 16 × 49 × 1024 (the narrow model's weight gradients), still
 * ahead at 32 × 288 and 64 × 288, behind from 64 × 576 on.
 */
inline bool suits(bool trans_a, bool trans_b, Index m, Index n, Index k) {
  return !trans_a && trans_b && k >= 128 && std::min(m, n) <= 32;
}

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
        float s[rows_a][rows_b];
        tile_sums_any(rows, cols, a + i0 * lda + p0, lda, b + j0 * ldb + p0, ldb, len, s);
        for (int r = 0; r < rows; ++r)
          for (int col = 0; col < cols; ++col) {
            float& out = c[(i0 + r) * ldc + j0 + col];
            if (!first) out += alpha * s[r][col];
            else out = beta == 0.0f ? alpha * s[r][col] : alpha * s[r][col] + beta * out;
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
