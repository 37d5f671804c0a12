// Row-major GEMM: C = α·op(A)·op(B) + β·C, op(X) = X or Xᵀ, with leading dimensions as in BLAS
// (row-major: lda is the distance between rows). float with AVX-512: qx's packed kernel
// (kernels/gemm_packed.hpp), or dot products of rows for a small C of a deep A·Bᵀ (kernels/gemm_dot.hpp,
// a narrow layer's weight gradient); float with AVX2 + FMA: the packed kernel's AVX2 micro-kernel (Eigen
// for that small C); double, or neither: Eigen's blocked GEMM through maps. Split over threads
// by qx; β = 0 means C's previous contents are ignored (may be uninitialised).
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/shape.hpp"

#include "qx/kernels/gemm_dot.hpp"
#include "qx/kernels/gemm_packed.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <type_traits>
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#include <omp.h>
#endif

QX_NAMESPACE_BEGIN
namespace kernels {
namespace detail {
template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using Map = Eigen::Map<RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// The area of the packed kernel's 6×64 tiles that cover C (m×n), padding included: what the product
/// computes.
inline Index tile_area(Index m, Index n) {
  auto padded = [](Index extent, Index unit) { return (extent + unit - 1) / unit * unit; };
  return padded(m, packed::mr) * padded(n, packed::nr);
}
/**
 * Whether the packed kernel computes C (m×n) better as its transpose Cᵀ = op(B)ᵀ·op(A)ᵀ. Its register
 * tile is 6 rows × 64 columns: a product of few columns (a 7×7 image's 49 positions, 14×14's 196, a
 * Winograd block of 32 tiles) fills little of the last tile, while its transpose puts them on the 6-row
 * side. Chosen by the padded tile area, transposed when 10 % smaller: the transposed product packs its
 * operands the other way and moves C once more, so near-equal areas keep the direct product.
 */
inline bool computes_transposed(Index m, Index n) { return 10 * tile_area(n, m) < 9 * tile_area(m, n); }

#if QX_PACKED_GEMM
/// C (m×n) = α·op(A)·op(B) + β·C by the packed kernel, as Cᵀ = α·op(B)ᵀ·op(A)ᵀ into a thread's scratch and
/// then transposed into C when computes_transposed says so.
inline void gemm_packed_oriented(bool trans_a, bool trans_b, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                                 const float* b, Index ldb, float beta, float* c, Index ldc) {
  if (!computes_transposed(m, n)) {
    packed::gemm_packed(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // op(B)ᵀ is B read the other way: stored k×n untransposed, it is an n×k operand "transposed".
  float* ct = packed::c_buffer().get(m * n);  // Cᵀ (n×m)
  packed::gemm_packed(!trans_b, !trans_a, n, m, k, alpha, b, ldb, a, lda, 0.0f, ct, m);
  if (beta == 0.0f) {  // C = Cᵀᵀ, never read
    packed::transpose(ct, n, m, c, ldc);
    return;
  }
  // C = Cᵀᵀ + β·C, 16 rows of C per pass: 16 consecutive reads of a Cᵀ row are one cache line.
  constexpr Index block = 16;
  for (Index i0 = 0; i0 < m; i0 += block) {
    const Index i1 = std::min(m, i0 + block);
    for (Index j = 0; j < n; ++j)
      for (Index i = i0; i < i1; ++i) c[i * ldc + j] = ct[j * m + i] + beta * c[i * ldc + j];
  }
}
#endif

/// One block of C: rows [r0, r0 + rows) and columns [c0, c0 + cols), computed on this thread by the packed
/// kernel, the dot-product kernel or Eigen (see the top of this file).
template <class T>
void gemm_block(bool trans_a, bool trans_b, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb, T beta, T* c,
                Index ldc, Index r0, Index rows, Index c0, Index cols) {
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) {
    if (!dot::suits(trans_a, trans_b, rows, cols, k)) {
      gemm_packed_oriented(trans_a, trans_b, rows, cols, k, alpha, trans_a ? a + r0 : a + r0 * lda, lda,
                           trans_b ? b + c0 * ldb : b + c0, ldb, beta, c + r0 * ldc + c0, ldc);
      return;
    }
    // A small C of a deep A·Bᵀ (a narrow layer's weight gradient): dot products of rows with AVX-512;
    // with AVX2 Eigen's, below — the packed kernel would transpose all of B for a tile it fills little of
    // (the stem's weight gradient took twice as long).
#if defined(__AVX512F__)
    dot::gemm_dot(rows, cols, k, alpha, a + r0 * lda, lda, b + c0 * ldb, ldb, beta, c + r0 * ldc + c0, ldc);
    return;
#endif
  }
#endif
  Map<T> cm(c + r0 * ldc + c0, rows, cols, Eigen::OuterStride<>(ldc));
  if (k == 0) {
    if (beta == T(0)) cm.setZero(); else cm *= beta;
    return;
  }
  // op(A) rows [r0, r0 + rows): A's rows (no transpose) or A's columns (transpose).
  const ConstMap<T> am(trans_a ? a + r0 : a + r0 * lda, trans_a ? k : rows, trans_a ? rows : k, Eigen::OuterStride<>(lda));
  const ConstMap<T> bm(trans_b ? b + c0 * ldb : b + c0, trans_b ? cols : k, trans_b ? k : cols, Eigen::OuterStride<>(ldb));
  auto product = [&](const auto& lhs, const auto& rhs) {
    if (beta == T(0)) {
      cm.noalias() = alpha * (lhs * rhs);
    } else {
      if (beta != T(1)) cm *= beta;
      cm.noalias() += alpha * (lhs * rhs);
    }
  };
  if (!trans_a && !trans_b) product(am, bm);
  else if (trans_a && !trans_b) product(am.transpose(), bm);
  else if (!trans_a && trans_b) product(am, bm.transpose());
  else product(am.transpose(), bm.transpose());
}
}  // namespace detail

namespace detail {
/// How split_over_threads cuts C (m×n) among `threads`: along its columns when there are as many as rows,
/// into `parts` shares of `chunk` (the last one shorter), each a multiple of the register tiles (Eigen's,
/// qx's 6×64).
struct ThreadSplit {
  bool columns;
  Index extent, unit, parts, chunk;
  ThreadSplit(Index m, Index n, Index threads)
      : columns(n >= m), extent(columns ? n : m), unit(columns ? 64 : 48),
        parts(std::max<Index>(1, std::min<Index>(threads, (extent + unit - 1) / unit))),
        chunk(((extent + parts - 1) / parts + unit - 1) / unit * unit) {}
  /// Whether the largest share is at most 5 % over an equal one (nine 64-column panels on two threads
  /// are not: one gets five).
  bool even() const { return 20 * parts * chunk <= 21 * extent; }
};

/**
 * Runs block(r0, rows, c0, cols) over C (m×n): called outside a parallel region with enough work, one
 * block of rows or of columns per thread (ThreadSplit); otherwise one block, the whole of C, on the
 * calling thread.
 */
template <class Block>
void split_over_threads(Index m, Index n, Index k, Block&& block) {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  const int threads = omp_get_max_threads();
  if (threads > 1 && !omp_in_parallel() && m * n * std::max<Index>(k, 1) >= (Index{1} << 18)) {
    const ThreadSplit split(m, n, threads);
#pragma omp parallel num_threads(static_cast<int>(split.parts))
    {
      const Index t = omp_get_thread_num();
      const Index begin = std::min(split.extent, t * split.chunk), end = std::min(split.extent, begin + split.chunk);
      if (end > begin) {
        if (split.columns) block(Index{0}, m, begin, end - begin);
        else block(begin, end - begin, Index{0}, n);
      }
    }
    return;
  }
#endif
  block(Index{0}, m, Index{0}, n);
}
}  // namespace detail

/**
 * C (m×n) = α·op(A)·op(B) + β·C with op(A) m×k and op(B) k×n, all row-major.
 * Called outside a parallel region with enough work, C is split into one block of rows or columns per
 * thread, each computed by a single-threaded kernel (qx's packed one, or Eigen's): Eigen's own OpenMP
 * GEMM synchronises its threads by spinning, which costs more than it gains on convolution-sized products.
 */
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
          T beta, T* c, Index ldc) {
  if (m == 0 || n == 0) return;
  detail::split_over_threads(m, n, k, [&](Index r0, Index rows, Index c0, Index cols) {
    detail::gemm_block(trans_a, trans_b, k, alpha, a, lda, b, ldb, beta, c, ldc, r0, rows, c0, cols);
  });
}

struct PackedA;       // defined with the packed GEMM only (QX_PACKED_GEMM): with Eigen no product takes A packed
struct PackedMatrix;  // (its storage)
struct PackedPanels;  // nor B

#if QX_PACKED_GEMM
/**
 * op(A) (m×k) in float already in the micro-kernel's panels (detail::packed::pack_a_whole's layout,
 * walked in storage order by PackedAWalk), for products that reuse it: a convolution's weights
 * across its blocks of images, a Winograd point's transformed filters across its blocks of tiles.
 * Packing A per product cost as much as a sixth of such a product when its B has few columns (a Winograd
 * block has 128). A view: the panels belong to the caller.
 */
struct PackedA {
  const float* panels;
  Index rows, depth;
  /// Slices of rows [r0, ·) for the loop nest (r0 a multiple of the register tile's rows).
  auto slices(Index r0) const { return detail::packed::packed_a_slice(panels, rows, r0); }
};

/// op(A) (m×k) packed whole into a buffer from the cache, and its view.
struct PackedMatrix {
  memory::Buffer<float> storage;
  PackedA view;
  PackedMatrix(bool trans, const float* a, Index lda, Index m, Index k)
      : storage(static_cast<std::size_t>(detail::packed::packed_a_size(m, k))), view{storage.data(), m, k} {
    detail::packed::pack_a_whole(trans, a, lda, m, k, storage.data());
  }
  std::size_t bytes() const { return storage.size() * sizeof(float); }
};

/// op(B) (k×n) packed whole in 64-column panels (detail::packed::panel_offset's layout, the last panel zero
/// past n), for products that reuse it as their B: a convolution's weights, transposed, in the products
/// gemm computes transposed (gemm_transposed).
struct PackedPanels {
  memory::Buffer<float> storage;
  Index depth, columns;
  PackedPanels(bool trans, const float* b, Index ldb, Index k, Index n)
      : storage(static_cast<std::size_t>((n + detail::packed::nr - 1) / detail::packed::nr * detail::packed::nr * k)),
        depth(k), columns(n) {
    detail::packed::pack_b(trans, b, ldb, 0, k, 0, n, storage.data());
  }
  std::size_t bytes() const { return storage.size() * sizeof(float); }
};

/**
 * C (m×n) = A·B with A's transpose already packed (`at`, k×m panels; B k×n, row-major, ldb), computed as
 * Cᵀ = Bᵀ·Aᵀ: the orientation computes_transposed picks for few columns, without packing Aᵀ again for
 * every B — a convolution multiplies the same weights for every block of images. Split over threads as
 * gemm splits Cᵀ; each thread transposes its block of Cᵀ into C.
 */
inline void gemm_transposed(const PackedPanels& at, Index n, const float* b, Index ldb, float* c, Index ldc) {
  const Index m = at.columns, k = at.depth;
  if (m == 0 || n == 0) return;
  detail::split_over_threads(n, m, k, [&](Index r0, Index rows, Index c0, Index cols) {
    float* ct = detail::packed::c_buffer().get(rows * cols);
    detail::packed::gemm_b_panels(true, rows, cols, k, 1.0f, b + r0, ldb,
                                  at.storage.data() + detail::packed::panel_offset(k, 0, c0), 0.0f, ct, cols);
    detail::packed::transpose(ct, rows, cols, c + c0 * ldc + r0, ldc);
  });
}

/// C (m×n) = α·A·op(B) + β·C with A (m×k) packed; split over threads as gemm splits.
inline void gemm(const PackedA& a, bool trans_b, Index n, float alpha, const float* b, Index ldb, float beta, float* c,
                 Index ldc) {
  if (a.rows == 0 || n == 0) return;
  detail::split_over_threads(a.rows, n, a.depth, [&](Index r0, Index rows, Index c0, Index cols) {
    detail::packed::gemm_packed_with(a.slices(r0), trans_b, rows, cols, a.depth, alpha, trans_b ? b + c0 * ldb : b + c0, ldb,
                                     beta, c + r0 * ldc + c0, ldc);
  });
}

/**
 * C (m×n) = α·A·B + β·C in float with A packed and B already packed in panels of 64 columns
 * (detail::packed::panel_offset; the last panel zero past n): both operands written packed by their
 * producers (a convolution's weights, its im2col). Split over threads as gemm splits: a block of columns
 * starts at a whole panel.
 */
inline void gemm_b_panels(const PackedA& a, Index n, float alpha, const float* b_panels, float beta, float* c, Index ldc) {
  if (a.rows == 0 || n == 0) return;
  detail::split_over_threads(a.rows, n, a.depth, [&](Index r0, Index rows, Index c0, Index cols) {
    detail::packed::gemm_b_panels_with(a.slices(r0), rows, cols, a.depth, alpha,
                                       b_panels + detail::packed::panel_offset(a.depth, 0, c0), beta, c + r0 * ldc + c0, ldc);
  });
}

namespace detail {
/// gemm_b_made's split over threads: each thread's block of C (rows [r0, ·), columns [c0, ·)) by the loop
/// nest with A's slices from a_slices(r0, rows) and B made by make_b with columns of C.
template <class ASlices, class MakeB>
void gemm_b_made_split(Index m, Index n, Index k, ASlices&& a_slices, float alpha, MakeB&& make_b, float beta, float* c,
                       Index ldc) {
  if (m == 0 || n == 0) return;
  split_over_threads(m, n, k, [&](Index r0, Index rows, Index c0, Index cols) {
    packed::gemm_b_made_with(
        a_slices(r0, rows), rows, cols, k, alpha,
        [&](Index jc, Index columns, Index pc, Index depth, float* panels) { make_b(c0 + jc, columns, pc, depth, panels); },
        beta, c + r0 * ldc + c0, ldc);
  });
}
}  // namespace detail

/**
 * C (m×n) = α·A·B + β·C in float with A packed and B made block by block where the micro-kernel reads it
 * (detail::packed::gemm_b_made_with): make_b(j0, columns, p0, depth, panels) writes B's rows
 * [p0, p0 + depth) × columns [j0, j0 + columns) — j0 a column of C — into 64-column panels, zero past
 * `columns`. Split over threads as gemm splits, each thread making the columns of its own block.
 */
template <class MakeB>
void gemm_b_made(const PackedA& a, Index n, float alpha, MakeB&& make_b, float beta, float* c, Index ldc) {
  detail::gemm_b_made_split(a.rows, n, a.depth, [&](Index r0, Index) { return a.slices(r0); }, alpha, make_b, beta, c, ldc);
}

/// The same with op(A) (m×k, float) packed slice by slice as the loop nest reaches it (a product that does
/// not reuse its A).
template <class MakeB>
void gemm_b_made(bool trans_a, Index m, Index n, Index k, float alpha, const float* a, Index lda, MakeB&& make_b, float beta,
                 float* c, Index ldc) {
  detail::gemm_b_made_split(
      m, n, k,
      [&](Index r0, Index rows) { return detail::packed::a_packed_per_slice(trans_a, trans_a ? a + r0 : a + r0 * lda, lda, rows); },
      alpha, make_b, beta, c, ldc);
}

#endif

#if defined(__AVX512F__)
/**
 * C (m×n) = α·A·B + β·C in float with A packed and B (k×n, row-major, ldb) read in place, unpacked
 * (detail::packed::gemm_b_rows_with): for a B whose rows are long enough that copying it into panels
 * costs more than reading its rows strided — a pointwise convolution on large planes (docs/kernels.md,
 * "B read in place"). Split over threads as gemm splits.
 */
inline void gemm_b_rows(const PackedA& a, Index n, float alpha, const float* b, Index ldb, float beta, float* c, Index ldc) {
  if (a.rows == 0 || n == 0) return;
  detail::split_over_threads(a.rows, n, a.depth, [&](Index r0, Index rows, Index c0, Index cols) {
    detail::packed::gemm_b_rows_with(a.slices(r0), rows, cols, a.depth, alpha, b + c0, ldb, beta, c + r0 * ldc + c0, ldc);
  });
}
#endif

}  // namespace kernels
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_KERNELS_GEMM(instance, T) \
  instance void gemm<T>(bool, bool, Index, Index, Index, T, const T*, Index, const T*, Index, T, T*, Index);
QX_DECLARE_INSTANCES(kernels, QX_INSTANCES_KERNELS_GEMM)
#undef QX_INSTANCES_KERNELS_GEMM
