// The packed float GEMM (kernels/gemm_packed.hpp) against a naive triple loop in double, on sizes whose
// edges are not multiples of the 6×64 register tile and that cross the KC/NC block boundaries, for the
// native micro-kernel (AVX-512's 6×64, or AVX2's four 6×16 strips, when compiled in) and the portable one that shares its packing and blocking; and
// the dot-product kernel for A·Bᵀ (kernels/gemm_dot.hpp) the same way.
#include <doctest/doctest.h>

#include "../test_threads.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/random.hpp"
#include "qx/kernels/gemm.hpp"
#include "qx/kernels/gemm_dot.hpp"
#include "qx/kernels/gemm_packed.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

using qx::Index;

namespace {
struct Case {
  Index m, n, k;
};
// 1×1, tile edges (5, 7, 63, 65 …), depth beyond one KC slice (257, 600), width beyond one NC block (800);
// last panels of 1 (13, 37), 2 (2, 8, 128), 3 (147) and 4 (64) rows — AVX2 computes those of at most two
// rows by a kernel of its own, in strips of 32 columns, which widths 36 (100 = 64 + 36) and 49 end inside.
const Case cases[] = {{1, 1, 1},      {5, 63, 7},    {7, 65, 3},    {6, 64, 256}, {13, 130, 257}, {37, 45, 29},
                      {64, 800, 600}, {147, 70, 40}, {2, 1000, 9},  {8, 49, 20},  {128, 100, 300}};

/// multiply(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) against the naive loop in double.
template <class Multiply>
void check_product(bool ta, bool tb, const Case& cs, float beta, Multiply&& multiply) {
  qx::Rng rng(11);
  const Index m = cs.m, n = cs.n, k = cs.k, pad = 5;
  const Index lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  std::vector<float> a(static_cast<std::size_t>((ta ? k : m) * lda)), b(static_cast<std::size_t>((tb ? n : k) * ldb));
  std::vector<float> c(static_cast<std::size_t>(m * ldc));
  for (auto& v : a) v = static_cast<float>(rng.uniform(-1, 1));
  for (auto& v : b) v = static_cast<float>(rng.uniform(-1, 1));
  // β = 0 must not read C: fill it with NaN, which would poison any read.
  for (auto& v : c) v = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(rng.uniform(-1, 1));
  const std::vector<float> c0 = c;
  const float alpha = 1.25f;
  multiply(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
  double worst = 0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < ldc; ++j) {
      const double got = c[static_cast<std::size_t>(i * ldc + j)];
      if (j >= n) {  // padding columns of C are never written
        const float before = c0[static_cast<std::size_t>(i * ldc + j)];
        CHECK((std::isnan(before) ? std::isnan(got) : got == before));
        continue;
      }
      double s = 0, scale = 0;
      for (Index p = 0; p < k; ++p) {
        const double x = double(ta ? a[p * lda + i] : a[i * lda + p]) * double(tb ? b[j * ldb + p] : b[p * ldb + j]);
        s += x;
        scale += std::abs(x);
      }
      double expected = alpha * s;
      if (beta != 0.0f) expected += beta * double(c0[static_cast<std::size_t>(i * ldc + j)]);
      worst = std::max(worst, std::abs(got - expected) / (1.0 + alpha * scale));
    }
  CHECK_MESSAGE(worst <= 1e-6, "m ", m, " n ", n, " k ", k, " ta ", ta, " tb ", tb, " beta ", beta, ": worst ", worst);
}

template <bool Portable>
void check_against_naive(bool ta, bool tb, const Case& cs, float beta) {
  check_product(ta, tb, cs, beta, [](auto... args) { qx::kernels::detail::packed::gemm_packed<Portable>(args...); });
}
}  // namespace

TEST_CASE("packed gemm, portable micro-kernel, matches the naive loop on awkward sizes") {
  for (const auto& cs : cases)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, -0.5f}) check_against_naive<true>(ta, tb, cs, beta);
}

#if QX_PACKED_GEMM
// With AVX2 the tile's columns are four strips of 16 (two of 32 for a tile of at most two rows): widths 63,
// 65, 45, 70, 100 and 1000 (15·64 + 40) end a tile inside a strip, 1 and 7 inside the first.
TEST_CASE("packed gemm, native micro-kernel (AVX-512 or AVX2), matches the naive loop on awkward sizes") {
  for (const auto& cs : cases)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, -0.5f, 1.0f}) check_against_naive<false>(ta, tb, cs, beta);
}
#endif

#if defined(__AVX512F__)
// A·Bᵀ as dot products of rows (kernels/gemm_dot.hpp): every register tile shape (1–8 rows of A × 1–3
// rows of B), depths around the 16-float vector and the 512-float chunk, and the sizes gemm sends there.
TEST_CASE("gemm as dot products of rows (A·Bᵀ) matches the naive loop") {
  const Case dot_cases[] = {{1, 1, 1},   {7, 2, 15},   {8, 3, 16},    {9, 4, 17},     {16, 144, 512},
                            {17, 49, 513}, {3, 5, 1100}, {32, 31, 200}, {5, 7, 0}};
  for (const auto& cs : dot_cases)
    for (float beta : {0.0f, -0.5f, 1.0f})
      check_product(false, true, cs, beta, [](bool, bool, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                                              const float* b, Index ldb, float beta_, float* c, Index ldc) {
        qx::kernels::detail::dot::gemm_dot(m, n, k, alpha, a, lda, b, ldb, beta_, c, ldc);
      });
  // Through gemm's dispatch (kernels::gemm sends small-C, deep A·Bᵀ products here), split over two threads.
  const qx_test::ThreadCount two(2);
  for (const auto& cs : {Case{16, 144, 2048}, Case{32, 49, 1024}, Case{16, 600, 300}}) {
    REQUIRE(qx::kernels::detail::dot::suits(false, true, cs.m, cs.n, cs.k));  // else gemm would not come here
    check_product(false, true, cs, 0.0f, [](auto... args) { qx::kernels::gemm(args...); });
  }
}
#endif

#if QX_PACKED_GEMM
// A product of few columns is computed as Cᵀ and transposed into C (kernels/gemm.hpp): whole 16×16
// (AVX-512) or 8×8 (AVX2) blocks by a register transpose, the edges element by element, β applied on
// the way.
TEST_CASE("gemm computed transposed copies Ct into C exactly, with and without beta") {
  const Case transposed_cases[] = {{64, 49, 100}, {96, 33, 70}, {48, 40, 300}, {64, 49, 2000}};
  for (const auto& cs : transposed_cases) {
    REQUIRE(qx::kernels::detail::computes_transposed(cs.m, cs.n));  // else this test would test nothing new
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, -0.5f}) check_product(ta, tb, cs, beta, [](auto... args) { qx::kernels::gemm(args...); });
  }
}
#endif

namespace {
/// gemm_b_panels against the naive loop: B (k×n) written into the panel layout by panel_offset, the last
/// panel's spare columns zero as the contract asks.
template <bool Portable>
void check_b_panels(bool ta, const Case& cs, float beta, bool a_packed = false) {
  namespace packed = qx::kernels::detail::packed;
  qx::Rng rng(13);
  const Index m = cs.m, n = cs.n, k = cs.k, lda = (ta ? m : k) + 3, ldc = n + 2;
  const Index columns = (n + packed::nr - 1) / packed::nr * packed::nr;
  std::vector<float> a(static_cast<std::size_t>((ta ? k : m) * lda)), b(static_cast<std::size_t>(k * n)), c(static_cast<std::size_t>(m * ldc));
  qx::memory::Buffer<float> panels(static_cast<std::size_t>(k * columns));  // 64-byte aligned, as the kernel needs
  std::fill_n(panels.data(), k * columns, 0.0f);
  for (auto& v : a) v = static_cast<float>(rng.uniform(-1, 1));
  for (auto& v : b) v = static_cast<float>(rng.uniform(-1, 1));
  for (Index p = 0; p < k; ++p)
    for (Index j = 0; j < n; ++j) panels.data()[packed::panel_offset(k, p, j)] = b[p * n + j];
  for (auto& v : c) v = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(rng.uniform(-1, 1));
  const std::vector<float> c0 = c;
  if (a_packed) {
#if QX_PACKED_GEMM
    const qx::kernels::PackedMatrix a_whole(ta, a.data(), lda, m, k);
    qx::kernels::gemm_b_panels(a_whole.view, n, 1.25f, panels.data(), beta, c.data(), ldc);
#endif
  } else {
    packed::gemm_b_panels<Portable>(ta, m, n, k, 1.25f, a.data(), lda, panels.data(), beta, c.data(), ldc);
  }
  double worst = 0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * ldc + j);
      if (j >= n) {
        CHECK((std::isnan(c0[at]) ? std::isnan(c[at]) : c[at] == c0[at]));
        continue;
      }
      double s = 0, scale = 0;
      for (Index p = 0; p < k; ++p) {
        const double x = double(ta ? a[p * lda + i] : a[i * lda + p]) * b[p * n + j];
        s += x, scale += std::abs(x);
      }
      const double expected = 1.25 * s + (beta != 0.0f ? beta * double(c0[at]) : 0.0);
      worst = std::max(worst, std::abs(c[at] - expected) / (1.0 + 1.25 * scale));
    }
  CHECK_MESSAGE(worst <= 1e-6, "m ", m, " n ", n, " k ", k, " ta ", ta, " beta ", beta, " A packed ", a_packed, ": worst ", worst);
}
}  // namespace

TEST_CASE("gemm on B already in panels matches the naive loop (both micro-kernels, A packed or not)") {
  for (const auto& cs : cases)
    for (bool ta : {false, true})
      for (float beta : {0.0f, -0.5f}) {
        check_b_panels<true>(ta, cs, beta);
#if QX_PACKED_GEMM
        check_b_panels<false>(ta, cs, beta);
        check_b_panels<false>(ta, cs, beta, /*a_packed=*/true);  // A packed once (kernels::PackedA)
#endif
      }
}

#if QX_PACKED_GEMM
// B made block by block by a producer (gemm_b_made, an implicit GEMM's form): the producer is asked for
// every block of B once per slice of depth, each block within one NC × KC tile, starting at a whole panel
// of C's columns; what it writes, and nothing else, reaches C — its whole-vector overshoot into the
// buffer's slack included (it writes made_slack NaNs past the panels). Both forms (A packed once, A
// packed per slice from op(A)), one and two threads (C split by rows or by columns).
TEST_CASE("gemm on B made block by block matches the naive loop and asks for each block once") {
  namespace packed = qx::kernels::detail::packed;
  for (const int threads : {1, 2}) {
    const qx_test::ThreadCount count(threads);
    for (const auto& cs : cases)
      for (bool ta : {false, true})
        for (float beta : {0.0f, -0.5f})
          for (bool a_packed : {false, true}) {
            CAPTURE(threads);
            CAPTURE(a_packed);
            check_product(ta, false, cs, beta, [&](bool, bool, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                                                  const float* b, Index ldb, float beta_, float* c, Index ldc) {
              // How often each element of B was made (one thread: once; two threads may each make all of B
              // when they split C by rows, so only the contract is checked there).
              std::vector<int> asked(static_cast<std::size_t>(n * k), 0);
              std::atomic<bool> contract{true};
              auto make = [&](Index j0, Index columns, Index p0, Index depth, float* panels) {
                if (!(j0 % packed::nr == 0 && columns > 0 && columns <= packed::nc && depth > 0 && depth <= packed::kc &&
                      j0 + columns <= n && p0 + depth <= k))
                  contract = false;
                for (Index jr = 0; jr < (columns + packed::nr - 1) / packed::nr * packed::nr; jr += packed::nr)
                  for (Index p = 0; p < depth; ++p)
                    for (Index j = 0; j < packed::nr; ++j) {
                      const Index column = j0 + jr + j;
                      panels[jr * depth + p * packed::nr + j] = jr + j < columns ? b[(p0 + p) * ldb + column] : 0.0f;
                      if (jr + j < columns && threads == 1) ++asked[static_cast<std::size_t>((p0 + p) * n + column)];
                    }
                const Index used = (columns + packed::nr - 1) / packed::nr * packed::nr * depth;
                std::fill_n(panels + used, packed::made_slack, std::numeric_limits<float>::quiet_NaN());
              };
              if (a_packed) {
                const qx::kernels::PackedMatrix a_whole(ta, a, lda, m, k);
                qx::kernels::gemm_b_made(a_whole.view, n, alpha, make, beta_, c, ldc);
              } else {
                qx::kernels::gemm_b_made(ta, m, n, k, alpha, a, lda, make, beta_, c, ldc);
              }
              CHECK(contract.load());
              if (threads == 1) CHECK(std::all_of(asked.begin(), asked.end(), [](int times) { return times == 1; }));
            });
          }
  }
}

namespace {
/// Where element (i, p) of op(A) (m×k) belongs in pack_a_whole's layout, written from the layout's
/// definition (KC slices one after the other, each MR panels of MR·depth floats, row fastest): the
/// oracle the library's walk and packing are checked against.
Index packed_a_index(Index m, Index k, Index i, Index p) {
  namespace packed = qx::kernels::detail::packed;
  const Index pc = p / packed::kc * packed::kc, depth = std::min(packed::kc, k - pc);
  return pc * packed::padded_rows(m) + i / packed::mr * packed::mr * depth + (p - pc) * packed::mr + i % packed::mr;
}
}  // namespace

// op(A) packed once and reused (kernels::PackedA): pack_a_whole's layout agrees with the layout's formula
// and with PackedAWalk (what a producer writing A packed uses), and both products on a packed A match the
// naive loop, split over two threads by rows and by columns.
TEST_CASE("gemm on A packed once matches the naive loop, and the packed layout is the one producers write") {
  namespace packed = qx::kernels::detail::packed;
  for (const auto& cs : cases)
    for (bool ta : {false, true}) {
      qx::Rng rng(17);
      const Index m = cs.m, k = cs.k, lda = (ta ? m : k) + 3;
      std::vector<float> a(static_cast<std::size_t>((ta ? k : m) * lda));
      for (auto& v : a) v = static_cast<float>(rng.uniform(-1, 1));
      const qx::kernels::PackedMatrix whole(ta, a.data(), lda, m, k);
      // The walk a producer writing A packed uses: from position 0, every position's (row, column) is
      // where the layout's formula puts that element, and pack_a_whole has A's element there (zero on padding
      // rows); started anywhere, it continues the same sequence.
      const Index size = packed::packed_a_size(m, k);
      packed::PackedAWalk walk(m, k, 0);
      bool consistent = true;
      for (Index q = 0; q < size; ++q, walk.advance()) {
        const Index i = walk.row(), p = walk.column();
        const float stored = whole.storage.data()[q];
        if (i >= m) consistent = consistent && i < packed::padded_rows(m) && stored == 0.0f;
        else consistent = consistent && packed_a_index(m, k, i, p) == q && stored == (ta ? a[p * lda + i] : a[i * lda + p]);
        if (q % 97 == 5) {
          const packed::PackedAWalk from_here(m, k, q);
          consistent = consistent && from_here.row() == i && from_here.column() == p;
        }
      }
      CHECK_MESSAGE(consistent, "m ", m, " k ", k, " ta ", ta);

      for (bool tb : {false, true})
        for (float beta : {0.0f, -0.5f})
          check_product(ta, tb, cs, beta, [](bool ta_, bool tb_, Index m_, Index n_, Index k_, float alpha, const float* a_, Index lda_,
                                             const float* b_, Index ldb_, float beta_, float* c_, Index ldc_) {
            const qx::kernels::PackedMatrix a_packed(ta_, a_, lda_, m_, k_);
            qx::kernels::gemm(a_packed.view, tb_, n_, alpha, b_, ldb_, beta_, c_, ldc_);
          });
    }
  // Large enough to be split over threads (two, whatever the machine has): by rows (m ≥ n, blocks of rows
  // at multiples of 48) and by columns.
  const qx_test::ThreadCount two(2);
  for (const auto& cs : {Case{300, 70, 300}, Case{64, 900, 300}})
    check_product(false, false, cs, 0.0f, [](bool, bool, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                                              const float* b, Index ldb, float beta, float* c, Index ldc) {
      const qx::kernels::PackedMatrix a_packed(false, a, lda, m, k);
      qx::kernels::gemm(a_packed.view, false, n, alpha, b, ldb, beta, c, ldc);
    });
}
#endif

#if defined(__AVX512F__)
// B read in place (kernels::gemm_b_rows): whole 64-column tiles and a row's last tile under a mask, depth
// over several KC slices (β on the first only), on one thread and split over two by rows and columns.
// B's copy ends with its last row's n-th column: a read past it is out of bounds, which the sanitized
// build reports (a masked load reads nothing under its zero lanes).
TEST_CASE("gemm reading B in place matches the naive loop and reads nothing past a row") {
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    const qx_test::ThreadCount count(threads);
    for (const auto& cs : {cases[0], cases[1], cases[2], cases[3], cases[4], cases[5], cases[6], cases[7], cases[8],
                           Case{300, 70, 300}, Case{64, 2300, 64}})
      for (float beta : {0.0f, -0.5f})
        check_product(false, false, cs, beta, [](bool, bool, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                                                 const float* b, Index ldb, float beta_, float* c, Index ldc) {
          const std::vector<float> exact(b, b + (k - 1) * ldb + n);
          const qx::kernels::PackedMatrix a_packed(false, a, lda, m, k);
          qx::kernels::gemm_b_rows(a_packed.view, n, alpha, exact.data(), ldb, beta_, c, ldc);
        });
  }
}
#endif

// A read in place (kernels::detail::packed::gemm_a_rows): whole six-row panels broadcast from A's rows, a
// last panel of 1–5 rows packed, op(B) either way, depth over several KC slices and width over NC blocks;
// by the native micro-kernel (AVX-512, or AVX2's strips) where there is one, and the portable one that
// shares the loop nest. A's copy ends with its last row's k-th element: a read past it is out of bounds,
// which the sanitized build reports. gemm_packed's choice of it (reads_a_in_place) is what the native
// cases above cover.
namespace {
template <bool Portable>
void check_a_in_place() {
  for (const auto& cs : {cases[0], cases[1], cases[2], cases[3], cases[4], cases[5], cases[6], cases[7], cases[8], cases[9],
                         cases[10], Case{300, 70, 600}})
    for (bool tb : {false, true})
      for (float beta : {0.0f, -0.5f})
        check_product(false, tb, cs, beta, [](bool, bool tb_, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                                              const float* b, Index ldb, float beta_, float* c, Index ldc) {
          const std::vector<float> exact(a, a + (m - 1) * lda + k);
          qx::kernels::detail::packed::gemm_a_rows<Portable>(tb_, m, n, k, alpha, exact.data(), lda, b, ldb, beta_, c, ldc);
        });
}
}  // namespace

TEST_CASE("gemm reading A in place matches the naive loop and reads nothing past A") {
  CHECK(qx::kernels::detail::packed::reads_a_in_place(64, 196));
  CHECK(qx::kernels::detail::packed::reads_a_in_place(1024, 3136));
  CHECK_FALSE(qx::kernels::detail::packed::reads_a_in_place(256, 196));
  check_a_in_place<true>();
#if QX_PACKED_GEMM
  check_a_in_place<false>();
#endif
}

TEST_CASE("packed gemm with k = 0 scales C by beta, and zeroes it for beta = 0 without reading it") {
  std::vector<float> c = {1.0f, 2.0f, 3.0f, 4.0f};
  qx::kernels::detail::packed::gemm_packed(false, false, 2, 2, 0, 1.0f, nullptr, 0, nullptr, 0, 2.0f, c.data(), 2);
  CHECK(c == std::vector<float>{2.0f, 4.0f, 6.0f, 8.0f});
  c.assign(4, std::numeric_limits<float>::quiet_NaN());
  qx::kernels::detail::packed::gemm_packed(false, false, 2, 2, 0, 1.0f, nullptr, 0, nullptr, 0, 0.0f, c.data(), 2);
  CHECK(c == std::vector<float>(4, 0.0f));
}
