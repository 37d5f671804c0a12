// Packed single-precision GEMM with a register tile of 6 rows × 64 columns of C (AVX-512: 24 zmm
// accumulators; AVX2 + FMA: four strips of 6×16, 12 ymm each), row-major: C = α·op(A)·op(B) + β·C as in
// kernels/gemm.hpp, which dispatches here for float when __AVX512F__, or __AVX2__ and __FMA__, are
// defined. Blocking follows Goto/BLIS; the parameters and why are in docs/kernels.md. β = 0 never reads
// C (it may be uninitialised).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/// 1 when the packed GEMM's micro-kernel is the 256-bit one (AVX2 + FMA without AVX-512): the same panels
/// and loop nest, the 6×64 tile computed as four strips of 6×16.
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define QX_PACKED_AVX2 1
#else
#define QX_PACKED_AVX2 0
#endif
/// 1 when float products go to the packed GEMM (AVX-512, or AVX2 + FMA); 0 when they go to Eigen.
#if defined(__AVX512F__) || QX_PACKED_AVX2
#define QX_PACKED_GEMM 1
#else
#define QX_PACKED_GEMM 0
#endif

QX_NAMESPACE_BEGIN
namespace kernels {
namespace detail {
#if defined(__AVX512F__)
/// Lanes [lo, hi) of a 16-lane mask (0 ≤ lo ≤ hi ≤ 16); the kernels' edge loads and stores use it.
inline __mmask16 lane_mask(Index lo, Index hi) {
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}
#endif

namespace packed {

constexpr Index mr = 6;    // rows of C per micro-tile: broadcast operand (A), 6·KC floats stay in L1
constexpr Index nr = 64;   // columns of C per micro-tile: 4 zmm of B per k step
constexpr Index kc = 256;  // depth of one packed slice
#if QX_PACKED_AVX2
constexpr Index nc = 384;  // columns of one packed B block: KC·NC·4 B = 384 KiB, resident in L2 (512 KiB on Zen 2/3)
#else
constexpr Index nc = 768;  // columns of one packed B block: KC·NC·4 B = 768 KiB, resident in L2 (1 MiB)
#endif

/// A thread's packing buffers, 64-byte aligned, grown on demand and kept for later calls (no allocation
/// in steady state).
struct Buffer {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data;
  Index capacity = 0;
  float* get(Index n) {
    if (n > capacity) {
      const std::size_t bytes = (static_cast<std::size_t>(n) * sizeof(float) + 63) / 64 * 64;
      float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) fail("gemm: cannot allocate a packing buffer of ", bytes, " bytes");
      data.reset(p);
      capacity = n;
    }
    return data.get();
  }
};
inline Buffer& a_buffer() {
  thread_local Buffer b;
  return b;
}
inline Buffer& b_buffer() {
  thread_local Buffer b;
  return b;
}
inline Buffer& c_buffer() {  // a transposed product's result (kernels/gemm.hpp)
  thread_local Buffer b;
  return b;
}

#if defined(__AVX512F__)
/// out[p·6 + r] = row r's element p for p < 16 (rows lda apart): 16 depths of a 6-row panel of A from its
/// rows, by two-source permutes — output vector j takes lane l from row (16j + l) % 6, element
/// (16j + l) / 6; each pair of rows fills its lanes by one permute, merged under a mask — instead of
/// 96 scalar moves.
inline void interleave_six_rows(const float* src, Index lda, float* out) {
  struct Tables {
    alignas(64) std::int32_t index[6][3][16];
    __mmask16 lanes[6][3];
  };
  static constexpr Tables tables = [] {  // built at compile time: no guard on this hot path
    Tables t{};
    for (int j = 0; j < 6; ++j)
      for (int l = 0; l < 16; ++l) {
        const int q = 16 * j + l, p = q / 6, r = q % 6;
        t.index[j][r / 2][l] = (r % 2) * 16 + p;  // the pair's first row is the permute's first source
        t.lanes[j][r / 2] = static_cast<__mmask16>(t.lanes[j][r / 2] | (1u << l));
      }
    return t;
  }();
  __m512 row[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) row[r] = _mm512_loadu_ps(src + r * lda);
#pragma GCC unroll 6
  for (int j = 0; j < 6; ++j) {
    __m512 v = _mm512_permutex2var_ps(row[0], _mm512_load_si512(tables.index[j][0]), row[1]);
    v = _mm512_mask_mov_ps(v, tables.lanes[j][1], _mm512_permutex2var_ps(row[2], _mm512_load_si512(tables.index[j][1]), row[3]));
    v = _mm512_mask_mov_ps(v, tables.lanes[j][2], _mm512_permutex2var_ps(row[4], _mm512_load_si512(tables.index[j][2]), row[5]));
    _mm512_storeu_ps(out + 16 * j, v);
  }
}
#endif

#if defined(__AVX512F__)
/// panel[p·6 + r] = src[p·lda + r] for p < k, r < rows (≤ 6), zeros for r ≥ rows: six columns of a
/// row-major matrix as one micro-panel. Eight depths at a time are 48 contiguous floats of the panel,
/// put together from the eight rows' six floats by permutes and written by three full stores (scalar
/// moves took twice as long, a masked load and store of six floats per depth a fifth longer).
inline void pack_six_columns(const float* src, Index lda, Index rows, Index k, float* panel) {
  // 48 floats = L0[0..5] L1[0..5] L2[0..5] … L7[0..5], as three vectors of 16
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 20, 21, 0, 0, 0, 0);
  const __m512i then2 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3);
  const __m512i second = _mm512_setr_epi32(4, 5, 16, 17, 18, 19, 20, 21, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i then45 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 16, 17);
  const __m512i third = _mm512_setr_epi32(2, 3, 4, 5, 16, 17, 18, 19, 20, 21, 0, 0, 0, 0, 0, 0);
  const __m512i then7 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5);
  const __mmask16 from = lane_mask(0, rows);
  Index p = 0;
  for (; p + 8 <= k; p += 8) {
    __m512 row[8];
    for (int q = 0; q < 8; ++q) row[q] = _mm512_maskz_loadu_ps(from, src + (p + q) * lda);
    __m512 v0 = _mm512_permutex2var_ps(row[0], first, row[1]);
    v0 = _mm512_mask_permutexvar_ps(v0, 0xF000, then2, row[2]);
    __m512 v1 = _mm512_permutex2var_ps(row[2], second, row[3]);
    v1 = _mm512_mask_blend_ps(0xFF00, v1, _mm512_permutex2var_ps(row[4], then45, row[5]));
    __m512 v2 = _mm512_permutex2var_ps(row[5], third, row[6]);
    v2 = _mm512_mask_permutexvar_ps(v2, 0xFC00, then7, row[7]);
    _mm512_storeu_ps(panel + p * mr, v0);
    _mm512_storeu_ps(panel + p * mr + 16, v1);
    _mm512_storeu_ps(panel + p * mr + 32, v2);
  }
  for (; p < k; ++p) _mm512_mask_storeu_ps(panel + p * mr, lane_mask(0, mr), _mm512_maskz_loadu_ps(from, src + p * lda));
}
#endif

#if QX_PACKED_AVX2
/// out[p·6 + r] = row r's element p for p < 8, r < rows (≤ 6; rows lda apart), zero for r ≥ rows: 8 depths
/// of a 6-row panel of A, by the 8×8 register transpose of the rows and zero rows; column p, whose lanes
/// 6 and 7 are zero, is stored whole at out + 6p (the next column's store covers the two extra floats)
/// and the last one as 4 + 2. Scalar moves — 48 loads and 48 stores per 8 depths — took 7 % of resnet18's
/// 64 → 128 stride-2 weight gradient on 32², whose A, ∂y, is packed block by block.
inline void interleave_six_rows(const float* src, Index lda, Index rows, float* out) {
  __m256 r[mr];
  for (Index i = 0; i < mr; ++i) r[i] = i < rows ? _mm256_loadu_ps(src + i * lda) : _mm256_setzero_ps();
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]), t2 = _mm256_unpacklo_ps(r[2], r[3]),
               t3 = _mm256_unpackhi_ps(r[2], r[3]), t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
               u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, zero, 0x44), u5 = _mm256_shuffle_ps(t4, zero, 0xEE),
               u6 = _mm256_shuffle_ps(t5, zero, 0x44), u7 = _mm256_shuffle_ps(t5, zero, 0xEE);
  _mm256_storeu_ps(out, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(out + 6, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(out + 12, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(out + 18, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(out + 30, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(out + 36, _mm256_permute2f128_ps(u2, u6, 0x31));
  const __m256 last = _mm256_permute2f128_ps(u3, u7, 0x31);
  _mm_storeu_ps(out + 42, _mm256_castps256_ps128(last));
  _mm_storel_pi(reinterpret_cast<__m64*>(out + 46), _mm256_extractf128_ps(last, 1));
}
#endif

/// Packs op(A) rows [i0, i0+m) × depth [p0, p0+k) into micro-panels of MR rows: panel[(k)·MR + r],
/// rows past m zero-filled so the micro-kernel never branches on them.
inline void pack_a(bool trans, const float* a, Index lda, Index i0, Index m, Index p0, Index k, float* out) {
#if defined(__AVX512F__)
  if (trans) {
    for (Index ir = 0; ir < m; ir += mr) pack_six_columns(a + p0 * lda + i0 + ir, lda, std::min(mr, m - ir), k, out + ir * k);
    return;
  }
#endif
  for (Index ir = 0; ir < m; ir += mr) {
    const Index rows = std::min(mr, m - ir);
    float* panel = out + ir * k;
    if (!trans) {
      // Read the MR rows in step (MR sequential streams) so the panel is written contiguously.
      const float* src = a + (i0 + ir) * lda + p0;
#if QX_PACKED_AVX2
      Index p = 0;
      for (; p + 8 <= k; p += 8) interleave_six_rows(src + p, lda, rows, panel + p * mr);
      for (; p < k; ++p)
        for (Index r = 0; r < rows; ++r) panel[p * mr + r] = src[r * lda + p];
#else
      if (rows == mr) {
        Index p = 0;
#if defined(__AVX512F__)
        for (; p + 16 <= k; p += 16) interleave_six_rows(src + p, lda, panel + p * mr);
#endif
        for (; p < k; ++p)
          for (Index r = 0; r < mr; ++r) panel[p * mr + r] = src[r * lda + p];
      } else {
        for (Index p = 0; p < k; ++p)
          for (Index r = 0; r < rows; ++r) panel[p * mr + r] = src[r * lda + p];
      }
#endif
    } else {
      const float* src = a + p0 * lda + i0 + ir;
      if (rows == mr) {  // a fixed 6-float copy the compiler inlines (a memcpy call per k step cost ~10 %)
        for (Index p = 0; p < k; ++p)
          for (Index r = 0; r < mr; ++r) panel[p * mr + r] = src[p * lda + r];
      } else {
        for (Index p = 0; p < k; ++p)
          for (Index r = 0; r < rows; ++r) panel[p * mr + r] = src[p * lda + r];
      }
    }
    if (rows < mr)
      for (Index p = 0; p < k; ++p)
        for (Index r = rows; r < mr; ++r) panel[p * mr + r] = 0.0f;
  }
}

#if defined(__AVX512F__)
/// out[t·ld_out + i] = in[i·ld_in + t] for a 16×16 block (the usual unpack / shuffle / lane-shuffle
/// sequence: 64 shuffles instead of 256 scalar moves).
inline void transpose_16x16(const float* in, Index ld_in, float* out, Index ld_out) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(in + i * ld_in);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + i * ld_out, r[i]);
}

#endif

#if QX_PACKED_AVX2
/// out[t·ld_out + i] = in[i·ld_in + t] for an 8×8 block (unpack / shuffle / lane-permute: 24 shuffles
/// instead of 64 scalar moves).
inline void transpose_8x8(const float* in, Index ld_in, float* out, Index ld_out) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * ld_in);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    r[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + i * ld_out, t[i]);
}
#endif

#if QX_PACKED_GEMM
/// The register transpose of the build's vector width: `square` × `square` floats (16 with AVX-512, 8 with
/// AVX2), what transpose and pack_b's transposed copy move whole blocks by.
#if defined(__AVX512F__)
constexpr Index square = 16;
inline void transpose_square(const float* in, Index ld_in, float* out, Index ld_out) {
  transpose_16x16(in, ld_in, out, ld_out);
}
#else
constexpr Index square = 8;
inline void transpose_square(const float* in, Index ld_in, float* out, Index ld_out) {
  transpose_8x8(in, ld_in, out, ld_out);
}
#endif

/// to (columns × rows, leading dimension ld_to) = fromᵀ for from (rows × columns, leading dimension
/// ld_from): register transposes of whole square blocks, the edges element by element.
inline void transpose(const float* from, Index ld_from, Index rows, Index columns, float* to, Index ld_to) {
  const Index whole_rows = rows / square * square, whole_columns = columns / square * square;
  for (Index i = 0; i < whole_rows; i += square)
    for (Index j = 0; j < whole_columns; j += square) transpose_square(from + i * ld_from + j, ld_from, to + j * ld_to + i, ld_to);
  for (Index i = 0; i < rows; ++i)
    for (Index j = i < whole_rows ? whole_columns : 0; j < columns; ++j) to[j * ld_to + i] = from[i * ld_from + j];
}
/// The same for a from whose rows are contiguous (ld_from = columns).
inline void transpose(const float* from, Index rows, Index columns, float* to, Index ld_to) {
  transpose(from, columns, rows, columns, to, ld_to);
}
#endif

/// Packs op(B) depth [p0, p0+k) × columns [j0, j0+n) into micro-panels of NR columns: panel[p·NR + c],
/// columns past n zero-filled.
inline void pack_b(bool trans, const float* b, Index ldb, Index p0, Index k, Index j0, Index n, float* out) {
  for (Index jr = 0; jr < n; jr += nr) {
    const Index cols = std::min(nr, n - jr);
    float* panel = out + jr * k;
    if (!trans) {
      const float* src = b + p0 * ldb + j0 + jr;
#if defined(__AVX512F__)
      // Four zmm per row, masked past n (zeros): GCC inlines a variable-length memcpy as a loop of 8-byte
      // moves, which made this copy a third of the packing time of a Winograd GEMM.
      __mmask16 mask[4];
      for (int v = 0; v < 4; ++v) mask[v] = lane_mask(0, std::clamp<Index>(cols - 16 * v, 0, 16));
      for (Index p = 0; p < k; ++p, src += ldb)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) _mm512_storeu_ps(panel + p * nr + 16 * v, _mm512_maskz_loadu_ps(mask[v], src + 16 * v));
#else
      for (Index p = 0; p < k; ++p, src += ldb) {
        std::memcpy(panel + p * nr, src, sizeof(float) * std::size_t(cols));
        if (cols < nr) std::memset(panel + p * nr + cols, 0, sizeof(float) * std::size_t(nr - cols));
      }
#endif
    } else {
      // B is stored (n, k): read NR rows of it in step (NR sequential streams, each cache line used 16
      // times) so the writes are contiguous; column-at-a-time writes with stride NR were slower.
      const float* src = b + (j0 + jr) * ldb + p0;
      Index p_done = 0, c_done = 0;  // depths and columns the register transposes covered
#if QX_PACKED_GEMM
      // Whole square blocks, also in a partial panel (a weight gradient of K = 49 columns has three).
      p_done = k / square * square;
      c_done = cols / square * square;
      for (Index cb = 0; cb < c_done; cb += square)
        for (Index pb = 0; pb < p_done; pb += square) transpose_square(src + cb * ldb + pb, ldb, panel + pb * nr + cb, nr);
#endif
      for (Index p = 0; p < k; ++p) {
        float* dst = panel + p * nr;
        for (Index c = p < p_done ? c_done : 0; c < cols; ++c) dst[c] = src[c * ldb + p];
        for (Index c = cols; c < nr; ++c) dst[c] = 0.0f;
      }
    }
  }
}

/// Where the micro-kernel's B comes from: a packed panel (NR floats per k step, aligned, zero past the
/// last column, the next steps prefetched), or op(B)'s own rows, ldb apart, read in place (gemm_b_rows):
/// a whole 64-column tile, or a row's last tile of fewer columns under a mask, which reads nothing past
/// the row.
enum class BTile { panel, rows, rows_masked };
/// Where the micro-kernel's A comes from: a packed panel (MR floats per k step), or A's own six rows, lda
/// apart, read in place (gemm_a_rows: each row's k steps contiguous).
enum class ATile { panel, rows };

#if defined(__AVX512F__)
/// C tile (rows ≤ MR, cols ≤ NR) = α·Σ_p a[p·MR + r]·b[p·ldb + c] + β·C (A in place: a[r·lda + p]): 24
/// accumulators, one FMA per (row, zmm) per k step; the A element is broadcast straight from memory. ldb
/// is NR for a panel. Never inlined: inlined into a large caller (a program's own function calling the
/// GEMM once), GCC 12 kept the accumulators on the stack — 63 against 165 GFLOP/s on one thread.
template <BTile From = BTile::panel, ATile AFrom = ATile::panel>
[[gnu::noinline]] inline void micro_kernel(Index k, const float* a, const float* b, Index ldb, float* c, Index ldc,
                                           Index rows, Index cols, float alpha, float beta, [[maybe_unused]] Index lda = 0) {
  __m512 acc[mr][4];
#pragma GCC unroll 6
  for (int r = 0; r < mr; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
  __mmask16 mask[4];
  for (int v = 0; v < 4; ++v) mask[v] = lane_mask(0, std::clamp<Index>(cols - 16 * v, 0, 16));
  for (Index p = 0; p < k; ++p) {
    __m512 bv[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      if constexpr (From == BTile::panel) bv[v] = _mm512_load_ps(b + 16 * v);
      else if constexpr (From == BTile::rows) bv[v] = _mm512_loadu_ps(b + 16 * v);
      else bv[v] = _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
    }
    if constexpr (From == BTile::panel) _mm_prefetch(reinterpret_cast<const char*>(b + 8 * nr), _MM_HINT_T0);
#pragma GCC unroll 6
    for (int r = 0; r < mr; ++r) {
      const __m512 av = _mm512_set1_ps(AFrom == ATile::panel ? a[r] : a[r * lda]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
    a += AFrom == ATile::panel ? mr : 1;
    b += From == BTile::panel ? nr : ldb;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (Index r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      if (!mask[v]) continue;
      __m512 out = _mm512_mul_ps(va, acc[r][v]);
      if (beta != 0.0f) out = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], row + 16 * v), out);
      _mm512_mask_storeu_ps(row + 16 * v, mask[v], out);
    }
  }
}
#endif

#if QX_PACKED_AVX2
/// Stores a strip of 16 columns of C's rows [0, rows) from its accumulators: C = α·acc + β·C, only the
/// first `width` columns (a partial tile's last strip goes through a buffer, never touching C past them).
inline void store_strip_avx2(const __m256 (*acc)[2], Index rows, Index width, float alpha, float beta, float* c, Index ldc) {
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (width == 16) {
    for (Index r = 0; r < rows; ++r) {
      float* row = c + r * ldc;
      __m256 lo = _mm256_mul_ps(va, acc[r][0]), hi = _mm256_mul_ps(va, acc[r][1]);
      if (beta != 0.0f) {
        lo = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), lo);
        hi = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8), hi);
      }
      _mm256_storeu_ps(row, lo);
      _mm256_storeu_ps(row + 8, hi);
    }
    return;
  }
  alignas(32) float tile[16];
  for (Index r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
    _mm256_store_ps(tile, _mm256_mul_ps(va, acc[r][0]));
    _mm256_store_ps(tile + 8, _mm256_mul_ps(va, acc[r][1]));
    for (Index j = 0; j < width; ++j) row[j] = beta != 0.0f ? tile[j] + beta * row[j] : tile[j];
  }
}

/// The AVX2 micro-kernel with micro_kernel's contract for a packed panel of B: C tile (rows ≤ MR, cols ≤
/// NR) = α·Σ_p a[p·MR + r]·b[p·NR + c] + β·C (A in place: a[r·lda + p]), the 64 columns as four strips of
/// 16 — 12 ymm accumulators, two loads of B and six broadcasts of A per k step, within AVX2's 16
/// registers. Each strip walks the whole depth: A's panel (6·KC floats) is read from L1 four times, each
/// line of B once.
template <ATile AFrom = ATile::panel>
inline void micro_kernel_avx2_six(Index k, const float* a, const float* b, float* c, Index ldc, Index rows, Index cols,
                                  float alpha, float beta, [[maybe_unused]] Index lda = 0) {
  // Where row r's element of step p is, from the step's start: packed, r; in place, r·lda.
  const Index row_step = AFrom == ATile::panel ? 1 : lda;
  for (Index strip = 0; strip < nr && strip < cols; strip += 16) {
    // Twelve named accumulators: with an array GCC 12 kept one in memory (a store and a reload on the
    // FMA chain every k step, half the speed).
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float* pa = a;
    const float* pb = b + strip;
    for (Index p = 0; p < k; ++p, pa += AFrom == ATile::panel ? mr : 1, pb += nr) {
      const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
      _mm_prefetch(reinterpret_cast<const char*>(pb + 8 * nr), _MM_HINT_T0);
      __m256 av = _mm256_broadcast_ss(pa);
      c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
      av = _mm256_broadcast_ss(pa + row_step);
      c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
      av = _mm256_broadcast_ss(pa + 2 * row_step);
      c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
      av = _mm256_broadcast_ss(pa + 3 * row_step);
      c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
      av = _mm256_broadcast_ss(pa + 4 * row_step);
      c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
      av = _mm256_broadcast_ss(pa + 5 * row_step);
      c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
    }
    const __m256 acc[mr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    store_strip_avx2(acc, rows, std::min<Index>(16, cols - strip), alpha, beta, c + strip, ldc);
  }
}

/// The same for a tile of at most two rows (the last panel of a matrix of 6·i + 2 rows: 128 = 21·6 + 2,
/// resnet18's 128-channel products), by strips of 32 columns: eight accumulators, so that one FMA's
/// four-cycle latency is covered — strips of 16 would leave four chains and half the FMA rate, and the
/// six-row kernel spends two thirds of its FMAs on zero rows. The tile then costs about 0.6 of a six-row
/// one (alone on one thread: 48–57 GFLOP/s counted on its two rows, against 90–98 for six) instead of all
/// of it. Each row's sums are added in the same order as by the six-row kernel: the same bits.
inline void micro_kernel_avx2_two(Index k, const float* a, const float* b, float* c, Index ldc, Index rows, Index cols,
                                  float alpha, float beta) {
  for (Index strip = 0; strip < nr && strip < cols; strip += 32) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    const float* pa = a;
    const float* pb = b + strip;
    for (Index p = 0; p < k; ++p, pa += mr, pb += nr) {
      const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8), b2 = _mm256_load_ps(pb + 16),
                   b3 = _mm256_load_ps(pb + 24);
      _mm_prefetch(reinterpret_cast<const char*>(pb + 8 * nr), _MM_HINT_T0);
      __m256 av = _mm256_broadcast_ss(pa);
      c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
      c02 = _mm256_fmadd_ps(av, b2, c02), c03 = _mm256_fmadd_ps(av, b3, c03);
      av = _mm256_broadcast_ss(pa + 1);
      c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
      c12 = _mm256_fmadd_ps(av, b2, c12), c13 = _mm256_fmadd_ps(av, b3, c13);
    }
    const __m256 left[2][2] = {{c00, c01}, {c10, c11}}, right[2][2] = {{c02, c03}, {c12, c13}};
    store_strip_avx2(left, rows, std::min<Index>(16, cols - strip), alpha, beta, c + strip, ldc);
    if (cols > strip + 16) store_strip_avx2(right, rows, std::min<Index>(16, cols - strip - 16), alpha, beta, c + strip + 16, ldc);
  }
}

/// The AVX2 micro-kernel for a tile of `rows` rows: micro_kernel_avx2_two for at most two of a packed
/// panel, else the six-row one (A read in place is always six rows: a shorter last panel is packed).
template <ATile AFrom = ATile::panel>
inline void micro_kernel_avx2(Index k, const float* a, const float* b, float* c, Index ldc, Index rows, Index cols, float alpha,
                              float beta, Index lda = 0) {
  if (AFrom == ATile::panel && rows <= 2) micro_kernel_avx2_two(k, a, b, c, ldc, rows, cols, alpha, beta);
  else micro_kernel_avx2_six<AFrom>(k, a, b, c, ldc, rows, cols, alpha, beta, lda);
}
#endif

/// The portable micro-kernel with the same contract (packed panels in, masked tile out), so the packing
/// and blocking logic is testable on any machine.
template <ATile AFrom = ATile::panel>
inline void micro_kernel_portable(Index k, const float* a, const float* b, float* c, Index ldc, Index rows, Index cols,
                                  float alpha, float beta, [[maybe_unused]] Index lda = 0) {
  float acc[mr][nr] = {};
  for (Index p = 0; p < k; ++p)
    for (Index r = 0; r < mr; ++r)
      for (Index j = 0; j < nr; ++j) acc[r][j] += (AFrom == ATile::panel ? a[p * mr + r] : a[r * lda + p]) * b[p * nr + j];
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < cols; ++j) {
      float& dst = c[r * ldc + j];
      dst = beta != 0.0f ? alpha * acc[r][j] + beta * dst : alpha * acc[r][j];
    }
}

/// Rows of a packed op(A): m rounded up to whole MR panels (the last panel's extra rows are zero).
constexpr Index padded_rows(Index m) { return (m + mr - 1) / mr * mr; }

/// One micro-tile of C from B's packed panel and A's packed panel (AFrom = panel) or six rows lda apart
/// (rows): the instruction set's micro-kernel, or the portable one.
template <bool Portable, ATile AFrom = ATile::panel>
void tile_product(Index depth, const float* a, Index lda, const float* b, float* tile, Index ldc, Index rows, Index cols,
                  float alpha, float beta) {
#if defined(__AVX512F__)
  if constexpr (!Portable) micro_kernel<BTile::panel, AFrom>(depth, a, b, nr, tile, ldc, rows, cols, alpha, beta, lda);
  else
#elif QX_PACKED_AVX2
  if constexpr (!Portable) micro_kernel_avx2<AFrom>(depth, a, b, tile, ldc, rows, cols, alpha, beta, lda);
  else
#endif
    micro_kernel_portable<AFrom>(depth, a, b, tile, ldc, rows, cols, alpha, beta, lda);
}

/// A KC slice of a row-major A read where it is (a_rows_in_place): panel ir (ir < full_rows) is the six
/// rows from first + ir·lda, each row's k steps contiguous; the rows past full_rows, fewer than MR, packed
/// as one panel at last_panel (reading them in place would run past A).
struct ARows {
  const float* first;
  Index lda, full_rows;
  const float* last_panel;
};

/**
 * Goto's loop nest over C (m×n, k ≥ 1) on the calling thread:
 *   for each NC block of columns, for each KC slice: B's panels for it (KC×NC, L2); A's panels for it;
 *   for each MR panel of A (L1), for each NR panel of B: micro-kernel.
 * The A panel is reused across the whole B block, which is read from L2 once per panel of A.
 * a_slice(pc, depth) returns A's MR panels of slice pc (rows [0, m), panel ir at ir·depth) — packed into
 * a buffer by gemm_packed, or already packed whole (packed_a_slice) — or an ARows, A's rows read in place
 * (a_rows_in_place). b_block(jc, ncols, pc, depth) returns where the block's panels are: {first, stride},
 * panel jr (a multiple of NR) at first + jr·stride — packed into a buffer by gemm_packed, or already in
 * place for gemm_b_panels.
 */
template <bool Portable, class ASlice, class BBlock>
void loop_nest(Index m, Index n, Index k, float alpha, float beta, float* c, Index ldc, ASlice&& a_slice, BBlock&& b_block) {
  for (Index jc = 0; jc < n; jc += nc) {
    const Index ncols = std::min(nc, n - jc);
    for (Index pc = 0; pc < k; pc += kc) {
      const Index depth = std::min(kc, k - pc);
      const float slice_beta = pc == 0 ? beta : 1.0f;
      const auto [pb, panel_stride] = b_block(jc, ncols, pc, depth);
      const auto pa = a_slice(pc, depth);
      for (Index ir = 0; ir < m; ir += mr) {
        for (Index jr = 0; jr < ncols; jr += nr) {
          float* tile = c + ir * ldc + jc + jr;
          const float* panel_b = pb + jr * panel_stride;
          const Index rows = std::min(mr, m - ir), cols = std::min(nr, ncols - jr);
          if constexpr (std::is_same_v<std::remove_cv_t<decltype(pa)>, ARows>) {
            if (ir < pa.full_rows)
              tile_product<Portable, ATile::rows>(depth, pa.first + ir * pa.lda, pa.lda, panel_b, tile, ldc, rows, cols,
                                                  alpha, slice_beta);
            else
              tile_product<Portable>(depth, pa.last_panel, 0, panel_b, tile, ldc, rows, cols, alpha, slice_beta);
          } else {
            tile_product<Portable>(depth, pa + ir * depth, 0, panel_b, tile, ldc, rows, cols, alpha, slice_beta);
          }
        }
      }
    }
  }
}

/// A's panels packed on demand, slice by slice, into the thread's buffer (what a product that does not
/// reuse its A does).
inline auto a_packed_per_slice(bool trans_a, const float* a, Index lda, Index m) {
  float* pa = a_buffer().get(padded_rows(m) * kc);
  return [=](Index pc, Index depth) {
    pack_a(trans_a, a, lda, 0, m, pc, depth, pa);
    return static_cast<const float*>(pa);
  };
}

/// A (m×k, row-major, lda) read where it is, slice by slice (an ARows): only a last panel of fewer than MR
/// rows is packed, into the thread's buffer.
inline auto a_rows_in_place(const float* a, Index lda, Index m) {
  const Index full_rows = m / mr * mr;
  float* last_panel = full_rows < m ? a_buffer().get(mr * kc) : nullptr;
  return [=](Index pc, Index depth) {
    if (last_panel) pack_a(false, a, lda, full_rows, m - full_rows, pc, depth, last_panel);
    return ARows{a + pc, lda, full_rows, last_panel};
  };
}

/// Floats of op(A) (m×k) packed whole by pack_a_whole.
constexpr Index packed_a_size(Index m, Index k) { return padded_rows(m) * k; }

/// Packs op(A) (m×k) whole, for products that reuse it: KC slice pc (depth d) at out + pc·padded_rows(m),
/// laid out as pack_a lays one slice out (MR panel ir at ir·d).
inline void pack_a_whole(bool trans, const float* a, Index lda, Index m, Index k, float* out) {
  for (Index pc = 0; pc < k; pc += kc) pack_a(trans, a, lda, 0, m, pc, std::min(kc, k - pc), out + pc * padded_rows(m));
}

/**
 * pack_a_whole's layout walked in storage order from position q, for a producer that writes op(A) packed
 * (contiguous stores) instead of packing it afterwards: row() and column() of the current position
 * (row() ≥ m on the last panel's padding rows, which must be zero), advance() to the next — slice by
 * slice, panel by panel, depth by depth, row by row.
 */
class PackedAWalk {
 public:
  PackedAWalk(Index m, Index k, Index q) : k_(k), padded_(padded_rows(m)) {
    pc_ = q / (kc * padded_) * kc;
    depth_ = std::min(kc, k - pc_);
    const Index within_slice = q - pc_ * padded_;
    row0_ = within_slice / (mr * depth_) * mr;
    p_ = pc_ + within_slice % (mr * depth_) / mr;
    r_ = within_slice % mr;
  }
  Index row() const { return row0_ + r_; }
  Index column() const { return p_; }
  void advance() {
    if (++r_ < mr) return;
    r_ = 0;
    if (++p_ < pc_ + depth_) return;
    p_ = pc_;
    if ((row0_ += mr) < padded_) return;
    row0_ = 0;
    pc_ += depth_;
    depth_ = std::min(kc, k_ - pc_);
    p_ = pc_;
  }

 private:
  Index k_, padded_, pc_, depth_, row0_, p_, r_;
};

/// The slices of rows [r0, r0 + ·) of an op(A) of `rows` rows packed whole (r0 a multiple of MR).
inline auto packed_a_slice(const float* a_packed, Index rows, Index r0) {
  return [=](Index pc, Index depth) { return a_packed + pc * padded_rows(rows) + r0 * depth; };
}

/// C (m×n) = α·A·op(B) + β·C on the calling thread, A's panels from a_slice (loop_nest): the loop nest
/// with B packed per block.
template <bool Portable = false, class ASlice>
void gemm_packed_with(ASlice&& a_slice, bool trans_b, Index m, Index n, Index k, float alpha, const float* b, Index ldb,
                      float beta, float* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) c[i * ldc + j] = beta != 0.0f ? beta * c[i * ldc + j] : 0.0f;
    return;
  }
  float* pb = b_buffer().get(kc * nc);
  loop_nest<Portable>(m, n, k, alpha, beta, c, ldc, a_slice, [&](Index jc, Index ncols, Index pc, Index depth) {
    pack_b(trans_b, b, ldb, pc, depth, jc, ncols, pb);
    return std::pair<const float*, Index>{pb, depth};
  });
}

/**
 * C (m×n) = α·A·op(B) + β·C on the calling thread with A (m×k, row-major, lda) read where it is: the
 * micro-kernel broadcasts from six rows' streams instead of a packed panel; op(B) is packed block by block
 * as by gemm_packed, whose loop order this keeps — so the sums are the packed product's, bit for bit.
 */
template <bool Portable = false>
void gemm_a_rows(bool trans_b, Index m, Index n, Index k, float alpha, const float* a, Index lda, const float* b, Index ldb,
                 float beta, float* c, Index ldc) {
  gemm_packed_with<Portable>(a_rows_in_place(a, lda, m), trans_b, m, n, k, alpha, b, ldb, beta, c, ldc);
}

/// Whether gemm_packed reads a row-major A in place (gemm_a_rows) rather than packing it: when each packed
/// element would serve few tiles of B (n ≤ 128 columns: two) or the depth is long (k ≥ 512). A weight
/// gradient ∂W = ∂y·colᵀ packed all of ∂y, a pass over memory as long as the product's reads, for one or
/// two tiles. Alternating in one process, 2 threads, batch 16 (docs/kernels.md, "A read in place"):
/// AVX-512, resnet50's pointwise weight gradients on 56² 7–20 % faster, on 28² 2–8 %, the Winograd ones
/// of 64 and 128 channels 2–9 %; 1×1 256 → 1024 on 14² (n = 256, k = 196) 3–4 % slower, so packed where
/// k < 512 and n > 128. AVX2 (its strips read the six rows four times a tile, from L1): resnet50's
/// pointwise weight gradients of 64 → 64 and 64 → 256 on 56² and those on 28² 3–10 % faster, the Winograd
/// ones of 64 and 128 channels 1–5 %, level on 256 → 64 and 256 → 128 on 56².
inline bool reads_a_in_place(Index n, Index k) { return n <= 2 * nr || k >= 512; }

/// C (m×n) = α·op(A)·op(B) + β·C on the calling thread: op(B) packed as the loop nest reaches it, op(A) too
/// or, with a native micro-kernel, a row-major A read in place where reads_a_in_place says.
template <bool Portable = false>
void gemm_packed(bool trans_a, bool trans_b, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                 const float* b, Index ldb, float beta, float* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
  if (QX_PACKED_GEMM && !Portable && !trans_a && k > 0 && reads_a_in_place(n, k))
    gemm_a_rows<Portable>(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    gemm_packed_with<Portable>(a_packed_per_slice(trans_a, a, lda, m), trans_b, m, n, k, alpha, b, ldb, beta, c, ldc);
}

/// Offset of op(B)[row, column] in the panel layout of a k-row B: panels of NR columns, each k × NR
/// row-major (what pack_b produces per KC slice, here for the whole depth at once).
constexpr Index panel_offset(Index k, Index row, Index column) { return (column / nr) * k * nr + row * nr + column % nr; }

/**
 * C (m×n) = α·A·B + β·C with B (k×n) already in the panel layout of panel_offset, the columns of the
 * last panel past n zero, and A's panels from a_slice: the loop nest without pack_b, for a producer that
 * writes B packed (a convolution's im2col) instead of writing it row-major for pack_b to copy. A KC
 * slice of a panel is the contiguous rows [pc, pc + KC) of it, which is what the micro-kernel reads
 * (aligned loads: the panels must start on a 64-byte boundary, as qx's buffers do).
 */
template <bool Portable = false, class ASlice>
void gemm_b_panels_with(ASlice&& a_slice, Index m, Index n, Index k, float alpha, const float* b_panels, float beta,
                        float* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
  check(k > 0, "gemm_b_panels: depth ", k, " must be positive");
  check(reinterpret_cast<std::uintptr_t>(b_panels) % 64 == 0, "gemm_b_panels: the panels must be 64-byte aligned");
  // Block jc's slice pc starts at panel_offset(k, pc, jc); its panels are k·NR apart.
  loop_nest<Portable>(m, n, k, alpha, beta, c, ldc, a_slice, [&](Index jc, Index, Index pc, Index) {
    return std::pair<const float*, Index>{b_panels + panel_offset(k, pc, jc), k};
  });
}

/// gemm_b_panels_with, op(A) packed as the loop nest reaches it.
template <bool Portable = false>
void gemm_b_panels(bool trans_a, Index m, Index n, Index k, float alpha, const float* a, Index lda, const float* b_panels,
                   float beta, float* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
  gemm_b_panels_with<Portable>(a_packed_per_slice(trans_a, a, lda, m), m, n, k, alpha, b_panels, beta, c, ldc);
}

/**
 * C (m×n) = α·A·B + β·C with B made where the micro-kernel reads it, block by block: make_b(jc, columns,
 * pc, depth, panels) writes B's rows [pc, pc + depth) × columns [jc, jc + columns) into panels of NR
 * columns (panel jr at panels + jr·depth, its columns past `columns` zero; it may overwrite made_slack
 * floats past the panels), here the thread's packing buffer, which stays in L2. An implicit GEMM: a convolution's columns made from the image block by block
 * are never written whole to memory and read back for pack_b (docs/kernels.md, "Implicit GEMM").
 */
constexpr Index made_slack = 16;  // floats after the panels that make_b may overwrite (whole-vector stores)
template <bool Portable = false, class ASlice, class MakeB>
void gemm_b_made_with(ASlice&& a_slice, Index m, Index n, Index k, float alpha, MakeB&& make_b, float beta, float* c,
                      Index ldc) {
  if (m <= 0 || n <= 0) return;
  check(k > 0, "gemm_b_made: depth ", k, " must be positive");
  float* pb = b_buffer().get(kc * nc + made_slack);
  loop_nest<Portable>(m, n, k, alpha, beta, c, ldc, a_slice, [&](Index jc, Index ncols, Index pc, Index depth) {
    make_b(jc, ncols, pc, depth, pb);
    return std::pair<const float*, Index>{pb, depth};
  });
}

#if defined(__AVX512F__)
/**
 * C (m×n) = α·A·B + β·C with A's panels from a_slice and B (k×n, row-major, leading dimension ldb) read
 * where it is — no packing of B (a pointwise convolution's image or gradient, whose rows are long):
 *   for each KC slice, for each 64-column tile of B (the slice's rows, ≤ 64 KiB, stay in L1/L2),
 *     for each MR panel of A: micro-kernel on the tile's rows, ldb apart.
 * BLIS's order rather than loop_nest's: the tile of B, read from memory once, serves every panel of A,
 * and the next tile's lines are requested a few per panel while this one is used. The last tile of a
 * row is read under a mask, never past n.
 */
template <class ASlice>
void gemm_b_rows_with(ASlice&& a_slice, Index m, Index n, Index k, float alpha, const float* b, Index ldb, float beta,
                      float* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
  check(k > 0, "gemm_b_rows: depth ", k, " must be positive");
  const Index panels = (m + mr - 1) / mr;
  for (Index pc = 0; pc < k; pc += kc) {
    const Index depth = std::min(kc, k - pc);
    const float slice_beta = pc == 0 ? beta : 1.0f;
    const float* pa = a_slice(pc, depth);
    for (Index jr = 0; jr < n; jr += nr) {
      const Index cols = std::min(nr, n - jr);
      const float* tile_b = b + pc * ldb + jr;
      // The next tile's depth × 4 lines, spread over this tile's panels of A (issued after panel q: the
      // first ⌊(q + 1)·lines / panels⌋).
      const float* next = jr + nr < n ? tile_b + nr : nullptr;
      const Index lines = next ? depth * 4 : 0;
      Index issued = 0;
      for (Index ir = 0, q = 0; ir < m; ir += mr, ++q) {
        for (const Index upto = (q + 1) * lines / panels; issued < upto; ++issued)
          _mm_prefetch(reinterpret_cast<const char*>(next + (issued / 4) * ldb + (issued % 4) * 16), _MM_HINT_T0);
        const Index rows = std::min(mr, m - ir);
        float* tile = c + ir * ldc + jr;
        if (cols == nr)
          micro_kernel<BTile::rows>(depth, pa + ir * depth, tile_b, ldb, tile, ldc, rows, cols, alpha, slice_beta);
        else
          micro_kernel<BTile::rows_masked>(depth, pa + ir * depth, tile_b, ldb, tile, ldc, rows, cols, alpha, slice_beta);
      }
    }
  }
}
#endif

}  // namespace packed
}  // namespace detail
}  // namespace kernels
QX_NAMESPACE_END
