// The kernels against naive reference loops in double, kept as the oracle: GEMM in all four transpose
// combinations with leading dimensions larger than the matrix, and conv2d forward / backward_input /
// backward_weight over strides, paddings, 1×1 and 7×7 kernels, odd channel counts and non-square images.
#include <doctest/doctest.h>

#include "qx/core/random.hpp"
#include "qx/kernels/conv2d.hpp"
#include "qx/kernels/gemm.hpp"
#include "qx/kernels/conv2d_algorithm.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/kernels/prefetch.hpp"
#include "../test_threads.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

using qx::Index;
using qx::kernels::Conv2dShape;

namespace {
template <class T>
std::vector<T> random_vector(std::size_t n, qx::Rng& rng) {
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(rng.uniform(-1, 1));
  return v;
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-11;
}

template <class T>
void expect_near(const std::vector<T>& actual, const std::vector<double>& expected, const char* what,
                 double tol = tolerance<T>()) {
  REQUIRE(actual.size() == expected.size());
  double worst = 0;
  for (std::size_t i = 0; i < actual.size(); ++i)
    worst = std::max(worst, std::abs(actual[i] - expected[i]) / (1.0 + std::abs(expected[i])));
  CHECK_MESSAGE(worst <= tol, what, ": worst relative error ", worst);
}

// Naive conv loops in double: y = conv(x, w) + b, and the two adjoints.
struct NaiveConv {
  Conv2dShape s;
  template <class F>
  void each(F&& f) const {
    for (Index b = 0; b < s.n; ++b)
      for (Index o = 0; o < s.c_out; ++o)
        for (Index i = 0; i < s.out_h(); ++i)
          for (Index j = 0; j < s.out_w(); ++j)
            for (Index c = 0; c < s.c_in; ++c)
              for (Index p = 0; p < s.kh; ++p)
                for (Index q = 0; q < s.kw; ++q) {
                  const Index r = i * s.stride_h + p - s.pad_h, cc = j * s.stride_w + q - s.pad_w;
                  if (r < 0 || r >= s.h || cc < 0 || cc >= s.w) continue;
                  f(((b * s.c_in + c) * s.h + r) * s.w + cc, ((o * s.c_in + c) * s.kh + p) * s.kw + q,
                    ((b * s.c_out + o) * s.out_h() + i) * s.out_w() + j);
                }
  }
};
}  // namespace

TEST_CASE_TEMPLATE("gemm matches the naive triple loop for every transpose combination", T, float, double) {
  qx::Rng rng(5);
  struct Sizes {
    Index m, n, k;
  };
  // The second product has few columns: the packed kernel computes it transposed (Cᵀ = op(B)ᵀ·op(A)ᵀ).
  const Sizes sizes[] = {{37, 45, 29}, {150, 20, 70}};
  CHECK_FALSE(qx::kernels::detail::computes_transposed(sizes[0].m, sizes[0].n));
  CHECK(qx::kernels::detail::computes_transposed(sizes[1].m, sizes[1].n));
  const Index pad = 3;
  for (const Sizes z : sizes)
    for (const T beta : {T(-0.5), T(0)})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const Index m = z.m, n = z.n, k = z.k;
          CAPTURE(m);
          CAPTURE(beta);
          CAPTURE(ta);
          CAPTURE(tb);
          const Index lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
          auto a = random_vector<T>(static_cast<std::size_t>((ta ? k : m) * lda), rng);
          auto b = random_vector<T>(static_cast<std::size_t>((tb ? n : k) * ldb), rng);
          auto c = random_vector<T>(static_cast<std::size_t>(m * ldc), rng);
          if (beta == T(0)) std::fill(c.begin(), c.end(), std::numeric_limits<T>::quiet_NaN());  // β = 0 never reads C
          std::vector<double> expected(c.begin(), c.end());
          const T alpha = T(0.75);
          for (Index i = 0; i < m; ++i)
            for (Index j = 0; j < n; ++j) {
              double s = 0;
              for (Index p = 0; p < k; ++p)
                s += double(ta ? a[p * lda + i] : a[i * lda + p]) * double(tb ? b[j * ldb + p] : b[p * ldb + j]);
              expected[i * ldc + j] = alpha * s + (beta == T(0) ? 0.0 : beta * double(c[i * ldc + j]));
            }
          const std::vector<T> before = c;
          qx::kernels::gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          // C's m×n block against the loop; the padding columns past n must be left as they were.
          std::vector<double> got(c.begin(), c.end());
          for (Index i = 0; i < m; ++i)
            for (Index j = n; j < ldc; ++j) {
              const std::size_t at = static_cast<std::size_t>(i * ldc + j);
              CHECK(std::memcmp(&c[at], &before[at], sizeof(T)) == 0);
              got[at] = expected[at] = 0.0;
            }
          expect_near(got, expected, "gemm", tolerance<T>());
        }
}

namespace {
/// Runs the three passes of one convolution algorithm against the naive loops on `shapes`, with the
/// relative tolerance `tol` (the algorithm's declared accuracy).
template <class T, class Forward, class BackwardInput, class BackwardWeight>
void check_conv(const std::vector<Conv2dShape>& shapes, Forward forward, BackwardInput backward_input,
                BackwardWeight backward_weight, double tol) {
  qx::Rng rng(9);
  for (const auto& s : shapes) {
    CAPTURE(s.kh);
    CAPTURE(s.stride_h);
    CAPTURE(s.pad_h);
    CAPTURE(s.n);
    const auto x = random_vector<T>(static_cast<std::size_t>(s.n * s.c_in * s.h * s.w), rng);
    const auto w = random_vector<T>(static_cast<std::size_t>(s.c_out * s.patch()), rng);
    const auto bias = random_vector<T>(static_cast<std::size_t>(s.c_out), rng);
    const auto gy = random_vector<T>(static_cast<std::size_t>(s.n * s.c_out * s.positions()), rng);
    NaiveConv naive{s};
    std::vector<double> y_ref(gy.size()), gx_ref(x.size(), 0.0), gw_ref(w.size(), 0.0), gb_ref(bias.size(), 0.0);
    for (std::size_t i = 0; i < y_ref.size(); ++i) y_ref[i] = bias[(i / static_cast<std::size_t>(s.positions())) % bias.size()];
    naive.each([&](Index xi, Index wi, Index yi) {
      y_ref[yi] += double(w[wi]) * x[xi];
      gx_ref[xi] += double(w[wi]) * gy[yi];
      gw_ref[wi] += double(x[xi]) * gy[yi];
    });
    for (std::size_t i = 0; i < gy.size(); ++i) gb_ref[(i / static_cast<std::size_t>(s.positions())) % bias.size()] += gy[i];

    std::vector<T> y(gy.size()), gx(x.size(), T(7)), gw(w.size(), T(7)), gb(bias.size(), T(7));
    forward(s, x.data(), w.data(), bias.data(), y.data(), {});
    expect_near(y, y_ref, "forward", tol);
    // The output stage done in the store: relu(y + residual), relu(y) alone, y + residual alone.
    const auto residual = random_vector<T>(gy.size(), rng);
    for (const auto& combination : {std::pair{true, true}, std::pair{false, true}, std::pair{true, false}}) {
      const bool with_residual = combination.first, relu = combination.second;  // not a structured binding: CAPTURE's lambda
      CAPTURE(with_residual);
      CAPTURE(relu);
      std::vector<double> staged(y_ref.size());
      for (std::size_t i = 0; i < staged.size(); ++i) {
        const double v = y_ref[i] + (with_residual ? double(residual[i]) : 0.0);
        staged[i] = relu ? std::max(v, 0.0) : v;
      }
      std::vector<T> z(gy.size(), T(7));
      forward(s, x.data(), w.data(), bias.data(), z.data(), qx::kernels::ConvOutputStage<T>{with_residual ? residual.data() : nullptr, relu});
      expect_near(z, staged, "forward with the output stage", tol);
    }
    backward_input(s, gy.data(), w.data(), gx.data());
    expect_near(gx, gx_ref, "backward_input (assigns, not accumulates)", tol);
    backward_weight(s, x.data(), gy.data(), gw.data(), gb.data());
    expect_near(gw, gw_ref, "backward_weight", tol);
    expect_near(gb, gb_ref, "backward_bias", tol);
  }
}
}  // namespace

TEST_CASE_TEMPLATE("conv2d kernels match the naive loops", T, float, double) {
  const std::vector<Conv2dShape> shapes = {
      {2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1},    // 3×3 same padding, non-square
      {2, 5, 9, 8, 4, 3, 3, 2, 2, 1, 1},    // stride 2
      {3, 7, 5, 6, 9, 1, 1, 1, 1, 0, 0},    // 1×1 (the pointwise path)
      {1, 8, 24, 24, 6, 1, 1, 1, 1, 0, 0},  // 1×1, one image per block: columns are the input itself
      {2, 6, 7, 7, 3, 1, 1, 2, 2, 0, 0},    // 1×1 stride 2 (downsample)
      {2, 3, 23, 19, 4, 7, 7, 2, 2, 3, 3},  // the 7×7 stride-2 stem
      {2, 1, 21, 18, 64, 7, 7, 2, 2, 3, 3}, // the stem on one channel: ∂W (64 × 49) computed transposed
      {1, 2, 6, 5, 3, 3, 2, 1, 2, 0, 2},    // asymmetric kernel, stride and padding
      {7, 20, 5, 4, 24, 3, 3, 1, 1, 1, 1},  // several images per GEMM block, blocks over threads
      {9, 70, 6, 6, 67, 3, 3, 1, 1, 1, 1},  // channels not multiples of the 6×64 tile, K > one KC slice
      // Planes held in registers (H·W ≤ 64, P ≤ 16): one to four vectors, strided, 25 taps.
      {5, 64, 4, 4, 8, 3, 3, 1, 1, 1, 1},   // 4×4 → 4×4, one vector
      {6, 16, 2, 2, 8, 3, 3, 1, 1, 1, 1},   // 2×2 → 2×2
      {3, 9, 8, 8, 5, 3, 3, 2, 2, 1, 1},    // 8×8 stride 2 → 4×4: four vectors
      {2, 4, 6, 7, 3, 3, 3, 2, 2, 1, 1},    // 42 elements: three vectors, P = 12
      {2, 3, 4, 4, 4, 5, 5, 1, 1, 2, 2},    // 25 taps
      // Rows of at most 32 (W_out ≤ 16): one-chunk windows (im2col), rows in registers (col2im).
      {3, 4, 16, 16, 6, 3, 3, 1, 1, 1, 1},  // 16×16, stride 1
      {2, 5, 16, 16, 4, 3, 3, 2, 2, 1, 1},  // 16×16 stride 2
      {2, 3, 27, 30, 4, 3, 3, 2, 2, 1, 1},  // rows of 30: two vectors
      {2, 3, 20, 29, 3, 5, 5, 2, 2, 2, 2},  // 5×5, padding 2
      // Longer rows: chunks of 16 outputs, each from a window of up to 64 columns (im2col); col2im by
      // row gathers for strides 1 and 2, by the general loops for stride 3.
      {2, 3, 40, 36, 4, 3, 3, 1, 1, 1, 1},  // three chunks, the last partial
      {2, 3, 9, 30, 5, 3, 3, 1, 1, 1, 1},   // rows of 30, outputs of 30: two chunks
      {2, 3, 5, 31, 4, 3, 3, 1, 1, 1, 1},   // the last chunk's window is one vector; its last tap wraps
      {2, 3, 9, 64, 4, 3, 3, 2, 2, 1, 1},   // stride 2, two full chunks
      {2, 2, 36, 40, 3, 3, 3, 3, 3, 1, 1},  // stride 3
      {2, 1, 40, 38, 8, 7, 7, 2, 2, 3, 3},  // a stem on rows of 38
      // A window wider than 64 columns (15·stride + kW > 64): the general loops.
      {2, 2, 30, 70, 3, 7, 7, 4, 4, 3, 3},
      // The forward's columns written straight into the GEMM's 64-column panels (AVX-512, float):
      {1, 15, 32, 32, 64, 3, 3, 1, 1, 1, 1},  // one image: panels split over threads, K over one KC slice (15
                                              // channels: tap tiles take the forward pass from 16)
      {1, 8, 8, 8, 200, 3, 3, 1, 1, 1, 1},    // one image, more rows than columns: rows split over threads
      {4, 6, 16, 16, 70, 3, 3, 2, 2, 1, 1},   // W_out = 8 (divides 64), several images per block
      // col2im's row gathers on long rows: stride 2 across only, one tap per row, so only the odd image
      // columns are reached, and the first and last outputs fall in the padding; stride 2 down only; a
      // 1×1 stride-2 shortcut on rows of 40.
      {2, 2, 7, 45, 3, 3, 1, 1, 2, 0, 1},
      {2, 2, 9, 50, 3, 3, 3, 2, 1, 1, 1},
      {2, 3, 6, 40, 4, 1, 1, 2, 2, 0, 0},
  };
#if defined(__AVX512F__)
  // Shapes that take the panel path: P dividing 64 in registers, W_out dividing 64, W_out a multiple of
  // 16 (padded last panels among them: 3 images of P = 4 make 12 columns); and some that do not.
  for (const Index at : {1, 4, 7, 8, 10, 11, 12, 14, 15, 16, 22, 26, 27, 28})
    CHECK_MESSAGE(qx::kernels::detail::panels_fit(shapes[static_cast<std::size_t>(at)]), "shape ", at);
  for (const Index at : {0, 2, 5, 13, 17, 18, 20, 25}) CHECK_FALSE(qx::kernels::detail::panels_fit(shapes[static_cast<std::size_t>(at)]));
  // The long rows reach col2im's row gathers (not the rows in registers); strides 3 and 4 the general loops.
  for (const Index at : {19, 20, 21, 22, 24, 29, 30, 31}) {
    const Conv2dShape& s = shapes[static_cast<std::size_t>(at)];
    CHECK_MESSAGE((!qx::kernels::detail::ShortRowTaps::applies(s) && qx::kernels::detail::RowGatherTaps::applies(s)), "shape ", at);
  }
  for (const Index at : {23, 25}) CHECK_FALSE(qx::kernels::detail::RowGatherTaps::applies(shapes[static_cast<std::size_t>(at)]));
#endif
  // Both orientations of the ∂W product (C_out × K) are exercised: the packed GEMM computes the stem's
  // transposed.
  CHECK(qx::kernels::detail::computes_transposed(shapes[6].c_out, shapes[6].patch()));
  CHECK_FALSE(qx::kernels::detail::computes_transposed(shapes[9].c_out, shapes[9].patch()));
  check_conv<T>(shapes, qx::kernels::conv2d_forward<T>, qx::kernels::conv2d_backward_input<T>,
                qx::kernels::conv2d_backward_weight<T>, tolerance<T>());
}

TEST_CASE("per-thread sums: a part's first use assigns, the sum lands in the destination, unused parts add nothing") {
  const qx_test::ThreadCount count(3);  // threads 0 and 2 add, thread 1 never begins (with OpenMP)
  const int last = qx::num_threads() - 1;
  constexpr Index size = 5;
  // Stale values where the parts will be: a part is not zeroed, so a first use that added would show them.
  std::vector<double> destination(size, 1e9);
  {
    qx::kernels::detail::PerThreadSums<double> sums(size, destination.data());
    const auto add = [&](int thread, double value) {
      const auto part = sums.begin(thread);
      for (Index i = 0; i < size; ++i) part.data[i] = (part.first ? 0.0 : part.data[i]) + value * double(i + 1);
      return part.first;
    };
    CHECK(add(0, 1.0));        // thread 0's part is the destination itself
    CHECK_FALSE(add(0, 2.0));  // its second use adds
    if (last > 0) CHECK(add(last, 10.0));  // the threads between never begin: their parts add nothing
    CHECK(sums.begin(0).data == destination.data());
    REQUIRE(sums.finish() == destination.data());
  }
  const double per_element = last > 0 ? 13.0 : 3.0;
  for (Index i = 0; i < size; ++i) CHECK(destination[static_cast<std::size_t>(i)] == per_element * double(i + 1));
  // Thread 0 began nothing (no work reached it): its part counts as zero, not as the destination's stale values.
  std::vector<double> stale(size, 1e9);
  qx::kernels::detail::PerThreadSums<double> others(size, stale.data());
  if (last > 0) {
    const auto part = others.begin(last);
    REQUIRE(part.first);
    for (Index i = 0; i < size; ++i) part.data[i] = 4.0;
  }
  REQUIRE(others.finish() == stale.data());
  for (const double v : stale) CHECK(v == (last > 0 ? 4.0 : 0.0));
  // Without a destination the sum is in an owned part; no part begun at all is zero.
  qx::kernels::detail::PerThreadSums<double> none(size);
  const double* zero = none.finish();
  for (Index i = 0; i < size; ++i) CHECK(zero[i] == 0.0);
}

TEST_CASE_TEMPLATE("plane_lane_sums adds every term of every plane once, and its prefetch runs ahead across planes", T,
                   float, double) {
  qx::Rng rng(11);
  // Planes shorter than a group, one group, groups and a tail (7×7, 14×14), across one and several images.
  for (const Index plane : {Index{5}, Index{16}, Index{49}, Index{196}}) {
    for (const Index planes : {Index{1}, Index{3}}) {
      const Index stride = 3 * plane;  // the channel's planes lie apart, as in NCHW with three channels
      const auto data = random_vector<T>(static_cast<std::size_t>(planes * stride), rng);
      Index steps = 0;
      const auto sums = qx::kernels::plane_lane_sums<T, 2>(
          planes, plane,
          [&](Index b, Index k) {
            const T v = data[static_cast<std::size_t>(b * stride + k)];
            return std::array<T, 2>{v, v * v};
          },
          [&](Index b, Index k) {
            CHECK(k % 16 == 0);
            CHECK(k + 16 <= plane);
            CHECK(b < planes);
            ++steps;
          });
      double sum = 0, squares = 0;
      for (Index b = 0; b < planes; ++b)
        for (Index k = 0; k < plane; ++k) {
          const double v = static_cast<double>(data[static_cast<std::size_t>(b * stride + k)]);
          sum += v;
          squares += v * v;
        }
      const double eps = std::is_same_v<T, float> ? 1e-5 : 1e-12;
      CHECK(sums[0] == doctest::Approx(sum).epsilon(eps));
      CHECK(sums[1] == doctest::Approx(squares).epsilon(eps));
      CHECK(steps == planes * (plane / 16));
      // The prefetch cursor: at the group (b, k), `ahead` elements further along the planes laid end to
      // end, as an offset from the channel's start; nothing past the last plane.
      for (const Index ahead : {Index{16}, Index{100}, Index{1024}}) {
        qx::kernels::detail::ChannelAhead<T, 1> prefetch({data.data()}, stride, planes, plane, ahead);
        for (Index b = 0; b < planes; ++b)
          for (Index k = 0; k + 16 <= plane; k += 16) {
            prefetch(b, k);
            const Index along = b * plane + k + ahead;
            const Index expected = along / plane < planes ? along / plane * stride + along % plane : -1;
            CHECK(prefetch.last_prefetched() == expected);
          }
      }
    }
  }
  // Empty planes (an input of zero height): no term, no step, nothing prefetched, no division by zero.
  const auto none = qx::kernels::plane_lane_sums<T, 1>(
      3, 0, [](Index, Index) { return std::array<T, 1>{T(1)}; }, [](Index, Index) { FAIL("a step over an empty plane"); });
  CHECK(none[0] == 0.0);
  qx::kernels::detail::ChannelAhead<T, 1> empty({nullptr}, 0, 3, 0, 1024);
  empty(0, 0);
  CHECK(empty.last_prefetched() == -1);
}

TEST_CASE("a convolution's blocks find every thread's scratch taken before the first of them runs") {
  // Blocks go to whichever thread is free, so a thread may get none in one call and some in the next; a
  // buffer it took only then would be a request the cache had not seen in earlier calls — a training step
  // after the first asking the system for memory (tests/nn's caching-allocator test, under load).
  const qx_test::ThreadCount count(2);
  constexpr Index per_image = Index{1} << 16;  // 256 KiB of float per block: a cached size
  const std::size_t before = qx::memory::stats().in_use_bytes;
  std::vector<std::size_t> in_use(6, 0);
  qx::kernels::detail::for_each_block<float>(
      6, 1, per_image, [&](Index first, Index, float*, int) { in_use[static_cast<std::size_t>(first)] = qx::memory::stats().in_use_bytes; },
      qx::kernels::detail::BlockOrder::any_thread);
  const auto threads = static_cast<std::size_t>(qx::num_threads());  // 2 with OpenMP, else 1
  for (const std::size_t bytes : in_use) CHECK(bytes >= before + threads * per_image * sizeof(float));
  CHECK(qx::memory::stats().in_use_bytes == before);
}

TEST_CASE_TEMPLATE("conv2d packs its weights once for blocks of one image or few columns, and reads large pointwise images in place", T,
                   float, double) {
  // Large planes run blocks of one image; their products do not take panels, and each one would pack
  // W (forward) or Wᵀ (input gradient) again. Float with AVX-512 packs it once per call instead. A
  // pointwise convolution with ≥ 2,048 positions per image also reads its image (forward) and grad_y
  // (input gradient) in place instead of packing them, W packed once even for a single image: 46×47
  // ends each row with a tile of 50 columns (read under a mask), 300 input channels make two KC slices
  // of depth in the forward product and 300 rows in the input gradient's.
  const std::vector<Conv2dShape> shapes = {
      {4, 48, 30, 30, 40, 1, 1, 1, 1, 0, 0},   // 1×1 on 30×30: four blocks of one image
      {3, 16, 40, 38, 24, 3, 3, 2, 2, 1, 1},   // 3×3 stride 2, W_out = 19: three blocks of one image
      {2, 300, 46, 47, 13, 1, 1, 1, 1, 0, 0},  // 1×1, 2,162 positions: B in place
  };
  const std::vector<Conv2dShape> one_image = {{1, 20, 48, 48, 70, 1, 1, 1, 1, 0, 0}};  // in place, columns split over threads
  const std::vector<Conv2dShape> few_columns = {{5, 128, 7, 7, 128, 1, 1, 1, 1, 0, 0}};  // products computed transposed
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    const qx_test::ThreadCount count(threads);
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
      namespace kd = qx::kernels::detail;
      const std::vector<float> w(static_cast<std::size_t>(300 * 70), 0.5f);
      for (const auto& s : shapes) {
        const Index block = kd::images_per_block(s);
        REQUIRE(block == 1);
        CHECK(kd::reads_b_in_place<float>(s, block) == (s.c_in == 300));
        const auto forward_panels = [&](Index images) { return kd::forward_in_panels<float>(s, images); };
        const auto gradient_panels = [&](Index images) { return kd::gradients_in_panels<float>(s, images); };
        REQUIRE_FALSE(forward_panels(block));
        REQUIRE_FALSE(gradient_panels(block));
        const auto forward = kd::weight_packed_once(s, block, forward_panels, false, w.data(), s.c_out, s.patch());
        const auto gradient = kd::weight_packed_once(s, block, gradient_panels, true, w.data(), s.patch(), s.c_out);
        REQUIRE(forward.a != nullptr);
        REQUIRE(gradient.a != nullptr);
        CHECK(forward.b == nullptr);  // no product computed transposed
        CHECK(gradient.b == nullptr);
      }
      // One image is one product: its GEMM packs its own slices on its threads.
      Conv2dShape one = shapes[0];
      one.n = 1;
      REQUIRE_FALSE(kd::weight_packed_once(one, 1, [&](Index images) { return kd::forward_in_panels<float>(one, images); },
                                           false, w.data(), one.c_out, one.patch()).a != nullptr);
      // …unless it reads its image in place: that product takes W packed.
      const Conv2dShape& large = one_image[0];
      REQUIRE(kd::reads_b_in_place<float>(large, 1));
      REQUIRE(kd::weight_packed_once(large, 1, [&](Index images) { return kd::forward_in_panels<float>(large, images); },
                                     false, w.data(), large.c_out, large.patch()).a != nullptr);
      // Products of few columns are computed transposed, op(W) their B: packed once as panels instead
      // (five blocks of one pointwise image, 49 columns; 128 rows in both passes), and not as A.
      const Conv2dShape& few = few_columns[0];
      const Index block = kd::images_per_block(few);
      REQUIRE(block == 1);
      REQUIRE(qx::kernels::detail::computes_transposed(128, 49));
      for (const bool trans : {false, true}) {
        const auto none = [](Index) { return false; };
        const auto packed = kd::weight_packed_once(few, block, none, trans, w.data(), 128, 128);
        CHECK(packed.a == nullptr);
        REQUIRE(packed.b != nullptr);
        CHECK(packed.b->depth == 128);
        CHECK(packed.b->columns == 128);
        Conv2dShape single = few;  // one image: a single product, which packs its own operands
        single.n = 1;
        CHECK(kd::weight_packed_once(single, 1, none, trans, w.data(), 128, 128).b == nullptr);
      }
      CHECK_FALSE(kd::reads_b_in_place<float>(shapes[2], 2));                           // a block of two images
      CHECK_FALSE(kd::reads_b_in_place<float>({1, 8, 48, 48, 8, 3, 3, 1, 1, 1, 1}, 1));  // not pointwise
    }
#endif
    for (const auto& tested : {shapes, one_image, few_columns})
      check_conv<T>(tested, qx::kernels::conv2d_forward<T>, qx::kernels::conv2d_backward_input<T>,
                    qx::kernels::conv2d_backward_weight<T>, tolerance<T>());
  }
}

TEST_CASE_TEMPLATE("Winograd F(4x4, 3x3) matches the naive loops on 3x3 stride-1 convolutions", T, float, double) {
  namespace wino = qx::kernels::winograd;
  const std::vector<Conv2dShape> shapes = {
      {2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1},     // same padding, non-square, outputs not multiples of 4
      {1, 6, 8, 8, 4, 3, 3, 1, 1, 0, 0},     // no padding: 6×6 output, partial tiles
      {3, 7, 13, 5, 9, 3, 3, 1, 1, 1, 1},    // odd channels, several images per block
      {9, 70, 6, 6, 67, 3, 3, 1, 1, 1, 1},   // channels not multiples of the 6×64 tile
      {1, 32, 17, 17, 16, 3, 3, 1, 1, 2, 2}, // padding 2, one image
      {2, 5, 30, 29, 6, 3, 3, 1, 1, 1, 1},   // 64 tiles per image: products of whole column tiles
      {1, 3, 40, 36, 4, 3, 3, 1, 1, 1, 1},   // 90 tiles, a partial lane group
      {1, 62, 32, 30, 62, 3, 3, 1, 1, 1, 1}, // 64 tiles; float: filters packed for the GEMMs, rows not a multiple of 6
      {32, 48, 4, 4, 80, 3, 3, 1, 1, 1, 1},  // one tile per image, 32 in one block: float's products transposed
                                             // with whole 16×16 blocks, 80 columns of filters in two panels
      {2, 320, 4, 4, 448, 3, 3, 1, 1, 1, 1}, // float: transformed filters over 16 MB, written by streaming stores
      {2, 3, 9, 66, 5, 3, 3, 1, 1, 1, 1},    // 17 tiles per row: float's gather and scatter cut a row into runs
                                             // of 7, 7 and 3, runs that begin inside a lane group and cross images
      {2, 4, 10, 37, 3, 3, 3, 1, 1, 2, 2},   // padding 2, runs of 7 and 3: rows and columns two windows share
      {3, 5, 11, 35, 7, 3, 3, 1, 1, 0, 0},   // no padding, runs of 7 and 2
  };
  for (const auto& s : shapes) CHECK(wino::applies(s));
#if QX_PACKED_GEMM
  // Float's GEMMs (with the packed GEMM: AVX-512, or AVX2 + FMA) take the transformed filters packed once
  // (both orientations): as their A for 62 → 62 channels on 64 tiles and 70 → 67 on 36, as their B for
  // 48 → 80 on 32 (gemm computes those products transposed). Few tiles make the whole batch one block, its
  // 36 products shared by the threads: 9 images of 4 tiles (blocks of 5 images would have had 20 columns),
  // 32 of one tile. With AVX-512 the windows are gathered and scattered by rows on planes of 2 or more
  // tiles per row: all shapes but those of 4×4 planes.
  if constexpr (std::is_same_v<T, float>) {
#if defined(__AVX512F__)
    for (const auto& s : shapes) CHECK(wino::detail::tiles_by_rows(wino::Tiling(s).tiles_w) == (s.w > 4));
#endif
    const std::vector<float> w(static_cast<std::size_t>(320 * 448 * 9), 0.5f);
    for (bool transpose : {false, true}) {
      REQUIRE(wino::detail::TransformedFilters<float>(shapes[7], w.data(), transpose).packed);
      REQUIRE(wino::detail::TransformedFilters<float>(shapes[3], w.data(), transpose).packed);
      for (std::size_t k : {8, 9}) {
        const wino::detail::TransformedFilters<float> u(shapes[k], w.data(), transpose);
        REQUIRE(u.b_panels);
        REQUIRE_FALSE(u.packed);
      }
      // 320 × 448 filters in whole 64-column panels, 36 points, 4 bytes: 20.6 MB, past the streaming bound.
      const wino::detail::TransformedFilters<float> big(shapes[9], w.data(), transpose);
      REQUIRE(wino::points * big.size() * 4 == 36 * 320 * 448 * 4);
      REQUIRE(wino::points * big.size() * 4 > wino::detail::streamed_filter_bytes);
    }
    REQUIRE(wino::detail::images_per_tile_block(shapes[3], wino::Tiling(shapes[3])) == 9);
    REQUIRE(wino::detail::images_per_tile_block(shapes[8], wino::Tiling(shapes[8])) == 32);
  }
#endif
  CHECK_FALSE(wino::applies({1, 3, 8, 8, 4, 3, 3, 2, 2, 1, 1}));
  CHECK_FALSE(wino::applies({1, 3, 8, 8, 4, 1, 1, 1, 1, 0, 0}));
  // The transforms amplify rounding: float's declared tolerance is 4× im2col's (measured worst here
  // 1e-6 to 4e-6, docs/kernels.md); double stays at double's.
  check_conv<T>(shapes, wino::conv2d_forward<T>, wino::conv2d_backward_input<T>, wino::conv2d_backward_weight<T>,
                std::is_same_v<T, float> ? 4e-4 : 1e-11);
}

TEST_CASE_TEMPLATE("Winograd keeps the transformed filters of a weight declared constant, and only those", T, float, double) {
  namespace wino = qx::kernels::winograd;
  using qx::kernels::ConstantWeights;
  const Conv2dShape s{3, 7, 13, 5, 9, 3, 3, 1, 1, 1, 1};
  const auto size = [](Index n) { return static_cast<std::size_t>(n); };
  qx::Rng rng(3);
  const auto x = random_vector<T>(size(s.n * s.c_in * s.h * s.w), rng), w = random_vector<T>(size(s.c_out * s.c_in * 9), rng);
  const auto g = random_vector<T>(size(s.n * s.c_out * s.positions()), rng);
  std::vector<T> y_plain(g.size()), gx_plain(x.size());
  wino::conv2d_forward<T>(s, x.data(), w.data(), nullptr, y_plain.data());
  wino::conv2d_backward_input<T>(s, g.data(), w.data(), gx_plain.data());
  auto run = [&] {  // both passes, each result the uncached one bit for bit
    std::vector<T> y(g.size()), gx(x.size());
    wino::conv2d_forward<T>(s, x.data(), w.data(), nullptr, y.data());
    wino::conv2d_backward_input<T>(s, g.data(), w.data(), gx.data());
    CHECK(std::memcmp(y.data(), y_plain.data(), sizeof(T) * y.size()) == 0);
    CHECK(std::memcmp(gx.data(), gx_plain.data(), sizeof(T) * gx.size()) == 0);
  };
  ConstantWeights constant;
  {
    const ConstantWeights::Scope active(constant);
    run();  // not declared: a parameter the caller may change; nothing is kept
    CHECK(constant.stats().values == 0);
    constant.declare(w.data());
    run();
    CHECK(constant.stats().values == 2);  // the forward pass's U_ξ and the input gradient's U_ξᵀ
    CHECK(constant.stats().made == 2);
    CHECK(constant.stats().bytes >= size(2 * wino::points * s.c_in * s.c_out) * sizeof(T));
    run();
    CHECK(constant.stats().made == 2);
    CHECK(constant.stats().reuses == 2);
    const Conv2dShape more_images{4, 7, 13, 5, 9, 3, 3, 1, 1, 1, 1};  // another shape: another entry
    const auto x4 = random_vector<T>(size(4 * s.c_in * s.h * s.w), rng);
    std::vector<T> y4(size(4 * s.c_out * s.positions()));
    wino::conv2d_forward<T>(more_images, x4.data(), w.data(), nullptr, y4.data());
    CHECK(constant.stats().values == 3);
  }
  run();  // no registry active on this thread: nothing is looked up
  CHECK(constant.stats().reuses == 2);
  constant.forget(w.data());
  CHECK(constant.stats().values == 0);
  CHECK(constant.stats().bytes == 0);
}

TEST_CASE_TEMPLATE("im2col convolutions keep the packed weights of a weight declared constant", T, float, double) {
  using qx::kernels::ConstantWeights;
  const auto size = [](Index n) { return static_cast<std::size_t>(n); };
  // Two threads share a single image's product: the last shape's forward product is computed transposed
  // (64 rows, 98 columns) and split by its 98 rows of Cᵀ, the second's by the columns.
  const qx_test::ThreadCount count(2);
  for (const Conv2dShape& s : {Conv2dShape{2, 5, 9, 8, 4, 3, 3, 2, 2, 1, 1}, Conv2dShape{1, 70, 6, 6, 67, 3, 3, 2, 2, 1, 1},
                               Conv2dShape{1, 48, 7, 14, 64, 1, 1, 1, 1, 0, 0}}) {
    CAPTURE(s.c_in);
    qx::Rng rng(4);
    const auto x = random_vector<T>(size(s.n * s.c_in * s.h * s.w), rng), w = random_vector<T>(size(s.c_out * s.patch()), rng);
    const auto g = random_vector<T>(size(s.n * s.c_out * s.positions()), rng);
    auto run = [&] {
      std::pair<std::vector<T>, std::vector<T>> out{std::vector<T>(g.size()), std::vector<T>(x.size())};
      qx::kernels::conv2d_forward<T>(s, x.data(), w.data(), nullptr, out.first.data());
      qx::kernels::conv2d_backward_input<T>(s, g.data(), w.data(), out.second.data());
      return out;
    };
    const auto plain = run();
    ConstantWeights constant;
    const ConstantWeights::Scope active(constant);
    constant.declare(w.data());
    for (int call = 0; call < 2; ++call) {
      const auto kept = run();
      CHECK(std::memcmp(kept.first.data(), plain.first.data(), sizeof(T) * g.size()) == 0);
      CHECK(std::memcmp(kept.second.data(), plain.second.data(), sizeof(T) * x.size()) == 0);
    }
#if defined(__AVX512F__)
    // Float: W packed for the forward pass and Wᵀ for the input gradient, once — as the A of a product
    // gemm computes directly, as B panels (the other operand, transposed) of one it computes transposed:
    // 4 rows × 20 columns forward (direct) and 45 × 20 in the input gradient (transposed), 67 × 9 and 630 × 9
    // (both transposed), 64 × 98 (transposed) and 48 × 98 (direct).
    // Worked out by hand (A: rows rounded up to 6, B: rows rounded up to 64 columns, times the depth):
    // (6·45 + 64·4)·4, (128·630 + 640·67)·4 and (64·48 + 48·64)·4 bytes.
    const std::size_t expected_bytes = s.c_out == 4 ? 2'104 : s.c_out == 67 ? 494'080 : 24'576;
    if constexpr (std::is_same_v<T, float>) {
      CHECK(qx::kernels::detail::computes_transposed(s.c_out, s.positions()) == (s.c_out != 4));
      CHECK(constant.stats().bytes == expected_bytes);
    }
    CHECK(constant.stats().made == (std::is_same_v<T, float> ? 2u : 0u));
    CHECK(constant.stats().reuses == (std::is_same_v<T, float> ? 2u : 0u));
#endif
  }
}

TEST_CASE_TEMPLATE("the direct 3x3 kernel matches the naive loops (forward with the output stage, both gradients)", T,
                   float, double) {
  namespace direct = qx::kernels::direct3x3;
  const std::vector<Conv2dShape> shapes = {
      {2, 8, 5, 16, 8, 3, 3, 1, 1, 1, 1},    // 5 vectors per plane: one tile of 3, one of 2
      {1, 16, 3, 32, 24, 3, 3, 1, 1, 1, 1},  // two vectors per row; 3 output-channel blocks
      {3, 24, 4, 16, 16, 3, 3, 1, 1, 1, 1},  // 4 vectors: a tile of 3 and one of 1
      {1, 8, 1, 48, 16, 3, 3, 1, 1, 1, 1},   // one row: every tap row but the middle one is padding
  };
  for (const auto& s : shapes) CHECK(direct::applies(s));
  CHECK_FALSE(direct::applies({1, 8, 16, 16, 8, 3, 3, 2, 2, 1, 1}));   // stride 2
  CHECK_FALSE(direct::applies({1, 8, 16, 16, 8, 3, 3, 1, 1, 0, 0}));   // no padding
  CHECK_FALSE(direct::applies({1, 8, 16, 8, 8, 3, 3, 1, 1, 1, 1}));    // rows of 8
  CHECK_FALSE(direct::applies({1, 8, 16, 16, 12, 3, 3, 1, 1, 1, 1}));  // 12 output channels
  CHECK_FALSE(direct::applies({1, 4, 16, 16, 8, 3, 3, 1, 1, 1, 1}));   // 4 input channels (the input gradient's outputs)
  CHECK_FALSE(direct::applies({1, 8, 16, 16, 8, 1, 1, 1, 1, 0, 0}));   // 1×1
  // The same products as im2col's, summed in another order: im2col's tolerance.
  check_conv<T>(shapes, direct::conv2d_forward<T>, direct::conv2d_backward_input<T>, direct::conv2d_backward_weight<T>,
                tolerance<T>());
}

TEST_CASE_TEMPLATE("the direct stem kernel matches the naive loops (forward with the output stage)", T, float, double) {
  namespace stem = qx::kernels::direct_stem;
  const std::vector<Conv2dShape> shapes = {
      {2, 3, 21, 32, 16, 7, 7, 2, 2, 3, 3},  // a 7×7 stem: 11 output vectors, tiles of 3 and a last one of 2
      {1, 1, 64, 64, 8, 7, 7, 2, 2, 3, 3},   // one channel, two vectors per row: tiles span rows
      {3, 4, 10, 63, 24, 5, 4, 2, 2, 1, 2},  // 5×4 taps, padding (1, 2), an odd width, 3 channel blocks
      {2, 2, 9, 34, 8, 3, 3, 2, 2, 0, 0},    // no padding: the last column of the image is read by no tap
      {2, 3, 8, 31, 8, 1, 1, 2, 2, 0, 0},    // 1×1: one phase only
  };
  for (const auto& s : shapes) CHECK(stem::applies(s));
  CHECK_FALSE(stem::applies({1, 3, 32, 32, 8, 7, 7, 1, 1, 3, 3}));   // stride 1
  CHECK_FALSE(stem::applies({1, 5, 64, 64, 8, 7, 7, 2, 2, 3, 3}));   // 5 input channels
  CHECK_FALSE(stem::applies({1, 3, 40, 40, 8, 7, 7, 2, 2, 3, 3}));   // rows of 20 outputs
  CHECK_FALSE(stem::applies({1, 3, 64, 64, 12, 7, 7, 2, 2, 3, 3}));  // 12 output channels
  // Its gradients are im2col's; the forward's products are im2col's summed in another order.
  check_conv<T>(shapes, stem::conv2d_forward<T>, qx::kernels::conv2d_backward_input<T>,
                qx::kernels::conv2d_backward_weight<T>, tolerance<T>());
}

TEST_CASE_TEMPLATE("the convolution algorithm is chosen per shape and pass", T, float, double) {
  using qx::kernels::ConvPass;
  using qx::kernels::runs_direct;
  using qx::kernels::runs_winograd;
  REQUIRE(qx::kernels::conv2d_algorithm() == qx::kernels::Conv2dAlgorithm::automatic);
  const Conv2dShape narrow_32{32, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1}, narrow_16{32, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1};
  const Conv2dShape wide{32, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1}, few_tiles{2, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1};
  const Conv2dShape deep_4x4{32, 512, 4, 4, 512, 3, 3, 1, 1, 1, 1}, fewer_tiles{4, 256, 8, 8, 256, 3, 3, 1, 1, 1, 1};
  const Conv2dShape eight{32, 8, 32, 32, 8, 3, 3, 1, 1, 1, 1}, strided{32, 16, 32, 32, 16, 3, 3, 2, 2, 1, 1};
  [[maybe_unused]] const Conv2dShape mid_32{32, 24, 32, 32, 24, 3, 3, 1, 1, 1, 1};
  [[maybe_unused]] const Conv2dShape odd_rows{32, 16, 32, 40, 16, 3, 3, 1, 1, 1, 1};  // checked with AVX-512 only
  const std::vector<ConvPass> passes = {ConvPass::forward, ConvPass::input_gradient, ConvPass::weight_gradient};
#if defined(__AVX512F__)
  // The direct kernel: every pass at 16 channels, forward and input gradient up to 32.
  for (ConvPass pass : passes) {
    CHECK(runs_direct(narrow_32, pass));
    CHECK(runs_direct(narrow_16, pass));
    CHECK(runs_direct(eight, pass));
    CHECK_FALSE(runs_winograd(narrow_32, pass));
    CHECK_FALSE(runs_winograd(narrow_16, pass));
  }
  CHECK(runs_direct(mid_32, ConvPass::forward));
  CHECK(runs_direct(mid_32, ConvPass::input_gradient));
  CHECK_FALSE(runs_direct(mid_32, ConvPass::weight_gradient));
  // The stems of resnet18 on 1×128² and resnet50 on 3×224²: the direct stem kernel, forward only.
  for (const Conv2dShape& stem : {Conv2dShape{32, 1, 128, 128, 64, 7, 7, 2, 2, 3, 3}, Conv2dShape{16, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3}}) {
    CHECK(runs_direct(stem, ConvPass::forward));
    CHECK_FALSE(runs_direct(stem, ConvPass::input_gradient));
    CHECK_FALSE(runs_direct(stem, ConvPass::weight_gradient));
  }
  // 16–31 channels on 32×32 planes: Winograd's weight gradient where the direct kernel does not take it.
  CHECK(runs_winograd(mid_32, ConvPass::weight_gradient));
  CHECK(runs_winograd(odd_rows, ConvPass::weight_gradient));  // rows of 40: not the direct kernel's
  CHECK_FALSE(runs_winograd(odd_rows, ConvPass::forward));
#elif QX_PACKED_AVX2
  // No direct kernel: Winograd takes every pass from 16 channels.
  for (ConvPass pass : passes) {
    CHECK_FALSE(runs_direct(narrow_32, pass));
    CHECK(runs_winograd(narrow_32, pass));
    CHECK(runs_winograd(narrow_16, pass));
  }
#else
  for (ConvPass pass : passes) CHECK_FALSE(runs_direct(narrow_32, pass));
  CHECK_FALSE(runs_winograd(narrow_32, ConvPass::forward));
  CHECK_FALSE(runs_winograd(narrow_32, ConvPass::input_gradient));
  CHECK(runs_winograd(narrow_32, ConvPass::weight_gradient));
  for (ConvPass pass : passes) CHECK_FALSE(runs_winograd(narrow_16, pass));  // 16 tiles per image
#endif
#if QX_PACKED_GEMM
  // Fewer than 48 tiles, with the packed GEMM (AVX-512, or AVX2 + FMA): forward and input gradient from
  // 8192 channel-tiles (32 tiles of 256 and of 512 channels), the weight gradient never.
  for (const Conv2dShape& s : {few_tiles, deep_4x4}) {
    CHECK(runs_winograd(s, ConvPass::forward));
    CHECK(runs_winograd(s, ConvPass::input_gradient));
    CHECK_FALSE(runs_winograd(s, ConvPass::weight_gradient));
  }
#else
  for (ConvPass pass : passes) {
    CHECK_FALSE(runs_winograd(few_tiles, pass));
    CHECK_FALSE(runs_winograd(deep_4x4, pass));
  }
#endif
  for (ConvPass pass : passes) {
    CHECK_FALSE(runs_direct(wide, pass));
    CHECK_FALSE(runs_direct(strided, pass));
    CHECK(runs_winograd(wide, pass));
    CHECK_FALSE(runs_winograd(fewer_tiles, pass));  // 16 tiles of 256 channels
    CHECK_FALSE(runs_winograd(eight, pass));
    CHECK_FALSE(runs_winograd(strided, pass));
  }
  // The passes as ops::conv2d calls them, one shape per mix: with AVX-512 the direct forward and input
  // gradient with a Winograd weight gradient, and all three by im2col (17 output channels); with AVX2 all
  // by Winograd (16 channels and more); otherwise im2col but for the first shape's weight gradient.
  const std::vector<Conv2dShape> mixed = {{1, 24, 32, 32, 24, 3, 3, 1, 1, 1, 1}, {3, 16, 16, 16, 17, 3, 3, 1, 1, 1, 1}};
  CHECK(runs_winograd(mixed[0], ConvPass::weight_gradient));
  check_conv<T>(mixed, qx::kernels::conv2d_forward_auto<T>, qx::kernels::conv2d_backward_input_auto<T>,
                qx::kernels::conv2d_backward_weight_auto<T>, std::is_same_v<T, float> ? 4e-4 : 1e-11);
}

#if QX_TAP_TILES
namespace {
/// conv2d's three passes against the naive loops on `shapes`, on one thread and on two.
void check_conv_on_one_and_two_threads(const std::vector<Conv2dShape>& shapes) {
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    const qx_test::ThreadCount count(threads);
    check_conv<float>(shapes, qx::kernels::conv2d_forward<float>, qx::kernels::conv2d_backward_input<float>,
                      qx::kernels::conv2d_backward_weight<float>, tolerance<float>());
  }
}
}  // namespace
#endif

#if QX_PACKED_AVX2
namespace {
/// col (K × N·P) of the block x, from im2col's definition: col[(c, p, q)][b·P + i·W_out + j] = x[b, c,
/// i·stride_h + p − pad_h, j·stride_w + q − pad_w], zero outside the image.
std::vector<float> naive_columns(const Conv2dShape& s, const std::vector<float>& x) {
  const Index ld = s.n * s.positions();
  std::vector<float> col(static_cast<std::size_t>(s.patch() * ld), 0.0f);
  for (Index b = 0; b < s.n; ++b)
    for (Index c = 0; c < s.c_in; ++c)
      for (Index p = 0; p < s.kh; ++p)
        for (Index q = 0; q < s.kw; ++q)
          for (Index i = 0; i < s.out_h(); ++i)
            for (Index j = 0; j < s.out_w(); ++j) {
              const Index r = i * s.stride_h + p - s.pad_h, cc = j * s.stride_w + q - s.pad_w;
              if (r < 0 || r >= s.h || cc < 0 || cc >= s.w) continue;
              col[static_cast<std::size_t>(((c * s.kh + p) * s.kw + q) * ld + b * s.positions() + i * s.out_w() + j)] =
                  x[static_cast<std::size_t>(((b * s.c_in + c) * s.h + r) * s.w + cc)];
            }
  return col;
}

/// Whether `made` holds expected(column, row) for the first `width` columns of `depth` rows in the packed
/// GEMM's 64-column panels (panel_offset's layout).
template <class Expected>
bool panels_hold(const std::vector<float>& made, Index width, Index depth, Expected&& expected) {
  for (Index j = 0; j < width; ++j)
    for (Index r = 0; r < depth; ++r)
      if (made[static_cast<std::size_t>(qx::kernels::detail::packed::panel_offset(depth, r, j))] != expected(j, r)) return false;
  return true;
}
}  // namespace

// The implicit GEMM of AVX2 builds (kernels/conv2d.hpp, ColumnMaker): the pieces of the column matrix it
// makes for the forward product (panels of col) and the weight gradient's (panels of colᵀ) are those of
// im2col's definition, for every range the loop nest asks for and for ranges that start and end inside
// output rows and panels; a piece's whole-vector stores stay within ColumnMaker::slack floats past it.
// Then the passes that make their columns this way against the naive loops.
TEST_CASE("AVX2's implicit GEMM makes im2col's columns piece by piece, and its passes match the naive loops") {
  namespace kd = qx::kernels::detail;
  namespace packed = kd::packed;
  const std::vector<Conv2dShape> shapes = {
      {3, 64, 32, 32, 70, 3, 3, 2, 2, 1, 1},   // resnet18's first strided layer: rows of 16, K = 576 in three slices
      {2, 5, 17, 13, 70, 3, 3, 2, 2, 1, 1},    // rows of 7: runs cross the panels' edges; odd plane sizes
      {4, 8, 15, 15, 130, 7, 7, 2, 2, 3, 3},   // 7×7 stride 2, padding 3: whole output rows in the padding
      {3, 128, 16, 16, 64, 1, 1, 2, 2, 0, 0},  // 1×1 stride 2
      {2, 16, 9, 31, 70, 3, 3, 1, 1, 1, 1},    // stride 1, rows of 31: the masked loads at both ends
      {2, 24, 6, 40, 66, 3, 1, 2, 1, 1, 0},    // a 3×1 kernel, stride 2 down and 1 across
      {1, 64, 32, 32, 128, 3, 3, 2, 2, 1, 1},  // one image: the product split over threads
      {4, 40, 14, 14, 109, 3, 3, 2, 2, 1, 1},  // rows of 7; blocks of two images, whose product gemm would turn
      {1, 3, 150, 150, 64, 7, 7, 2, 2, 3, 3},  // a stem whose weight gradient gemm would turn: 147 × 5,625 columns
  };
  qx::Rng rng(21);
  for (const auto& s : shapes) {
    INFO("kernel ", s.kh, "x", s.kw, ", ", s.c_in, " channels of ", s.h, "x", s.w);
    const auto x = random_vector<float>(static_cast<std::size_t>(s.n * s.c_in * s.h * s.w), rng);
    const auto col = naive_columns(s, x);
    const Index ld = s.n * s.positions(), k = s.patch();
    const kd::ColumnMaker maker(s, x.data());
    constexpr float untouched = -7.0f;  // what the buffer holds past a piece's slack
    // (j0, columns, k0, depth): the loop nest's blocks, and pieces starting and ending mid-row.
    std::vector<std::array<Index, 4>> pieces;
    for (Index j0 = 0; j0 < ld; j0 += packed::nc)
      for (Index k0 = 0; k0 < k; k0 += packed::kc) pieces.push_back({j0, std::min(packed::nc, ld - j0), k0, std::min(packed::kc, k - k0)});
    pieces.push_back({64, std::min<Index>(ld - 64, 100), std::min<Index>(5, k - 1), std::min<Index>(17, k - std::min<Index>(5, k - 1))});
    for (const auto& piece : pieces) {  // not a structured binding: CAPTURE's lambda (clang 14)
      const Index j0 = piece[0], columns = piece[1], k0 = piece[2], depth = piece[3];
      if (columns <= 0) continue;
      CAPTURE(j0);
      CAPTURE(k0);
      const Index width = (columns + packed::nr - 1) / packed::nr * packed::nr;
      std::vector<float> made(static_cast<std::size_t>(width * depth + kd::ColumnMaker::slack + 8), untouched);
      maker.panels(j0, columns, k0, depth, made.data());
      const bool same = panels_hold(made, width, depth, [&](Index j, Index r) {
        return j < columns ? col[static_cast<std::size_t>((k0 + r) * ld + j0 + j)] : 0.0f;
      });
      CHECK_MESSAGE(same, "forward panels of columns [", j0, ", +", columns, ") rows [", k0, ", +", depth, ")");
      for (Index e = width * depth + kd::ColumnMaker::slack; e < static_cast<Index>(made.size()); ++e) CHECK(made[static_cast<std::size_t>(e)] == untouched);
    }
    // colᵀ: rows are positions, columns taps (the weight gradient's B).
    std::vector<float> rows(static_cast<std::size_t>(packed::nr * packed::kc + kd::ColumnMaker::slack));
    for (const auto& piece : std::vector<std::array<Index, 4>>{{std::min(k, packed::nc), 0, 0, std::min(ld, packed::kc)},
                                                               {std::min<Index>(k - 3, 70), 3, 5, std::min<Index>(ld - 5, 37)}}) {
      const Index taps = piece[0], k0 = piece[1], j0 = piece[2], depth = piece[3];
      CAPTURE(k0);
      CAPTURE(j0);
      const Index width = (taps + packed::nr - 1) / packed::nr * packed::nr;
      std::vector<float> made(static_cast<std::size_t>(width * depth + 8), untouched);
      maker.transposed_panels(k0, taps, j0, depth, made.data(), rows.data());
      const bool same = panels_hold(made, width, depth, [&](Index t, Index r) {
        return t < taps ? col[static_cast<std::size_t>((k0 + t) * ld + j0 + r)] : 0.0f;
      });
      CHECK_MESSAGE(same, "weight-gradient panels of taps [", k0, ", +", taps, ") positions [", j0, ", +", depth, ")");
      for (Index e = width * depth; e < static_cast<Index>(made.size()); ++e) CHECK(made[static_cast<std::size_t>(e)] == untouched);
    }
    // Every shape here makes its columns in both passes, in blocks of up to two images (what two threads
    // give them).
    CHECK(kd::makes_columns<float>(s, std::min<Index>(s.n, 2)));
    CHECK(kd::makes_weight_columns<float>(s, std::min<Index>(s.n, 2)));
  }
  // A product gemm would compute transposed is made when its direct tiles cover at most 15 % more and
  // the kernel is wider than 1×1 (resnet50's 3×3 stride-2 layer on 14² in blocks of 8 images, what two
  // threads give a batch of 16: 14 % more), and its weights are then packed for the direct product only.
  const Conv2dShape deep{16, 512, 14, 14, 512, 3, 3, 2, 2, 1, 1};
  REQUIRE(kd::computes_transposed(512, 8 * 49));
  CHECK(kd::makes_columns<float>(deep, 8));
  REQUIRE(kd::computes_transposed(109, 2 * 49));  // the last shape above
  {
    const std::vector<float> w(static_cast<std::size_t>(deep.c_out * deep.patch()), 0.5f);
    const auto packed = kd::weight_packed_once(deep, 8, [&](Index images) { return kd::makes_columns<float>(deep, images); },
                                               false, w.data(), deep.c_out, deep.patch());
    CHECK(packed.a != nullptr);
    CHECK(packed.b == nullptr);
  }
  // Not made: a pointwise layer (its image is its columns), a transposed product of a 1×1 kernel or of
  // few columns (one image of 49), stride 3, a weight gradient of a narrow layer (dot-shaped) or of a stem
  // on one channel (transposed).
  CHECK_FALSE(kd::makes_columns<float>({2, 8, 16, 16, 8, 1, 1, 1, 1, 0, 0}, 1));
  CHECK_FALSE(kd::makes_columns<float>({16, 512, 14, 14, 1024, 1, 1, 2, 2, 0, 0}, 8));
  CHECK_FALSE(kd::makes_columns<float>({1, 512, 14, 14, 512, 3, 3, 2, 2, 1, 1}, 1));
  CHECK_FALSE(kd::makes_columns<float>({2, 2, 36, 40, 3, 3, 3, 3, 3, 1, 1}, 2));
  CHECK_FALSE(kd::makes_weight_columns<float>({4, 16, 32, 32, 16, 3, 3, 2, 2, 1, 1}, 2));
  CHECK_FALSE(kd::makes_weight_columns<float>({32, 1, 128, 128, 64, 7, 7, 2, 2, 3, 3}, 1));
  // A weight gradient gemm would turn is made when the kernel is wider than 1×1 and the block's columns
  // are at least 2 MB: resnet50's stem, one image of 147 × 12,544 (not resnet18's above, 49 × 4,096, nor
  // a 1×1 kernel's 200 × 3,136).
  REQUIRE(kd::computes_transposed(64, 147));
  REQUIRE(kd::computes_transposed(64, 200));
  CHECK(kd::makes_weight_columns<float>({16, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3}, 1));
  CHECK_FALSE(kd::makes_weight_columns<float>({1, 200, 112, 112, 64, 1, 1, 2, 2, 0, 0}, 1));
  // The forward pass takes one image a block, whose product writes the output in place, when the columns
  // are made and an image's positions are whole panels, at least 256 (the first shape above, 16² out):
  // not on 8² out (64), nor on 14² (196, not whole panels), whose blocks hold several images.
  const Conv2dShape out16{32, 64, 32, 32, 128, 3, 3, 2, 2, 1, 1}, out8{32, 128, 16, 16, 256, 3, 3, 2, 2, 1, 1},
      out14{16, 256, 28, 28, 256, 3, 3, 2, 2, 1, 1};
  REQUIRE(kd::images_per_block(out16) > 1);
  CHECK(kd::forward_images_per_block<float>(out16) == 1);
  CHECK(kd::forward_images_per_block<float>(shapes.front()) == 1);
  REQUIRE(kd::images_per_block(out8) > 1);
  CHECK(kd::forward_images_per_block<float>(out8) == kd::images_per_block(out8));
  REQUIRE(kd::images_per_block(out14) > 1);
  CHECK(kd::forward_images_per_block<float>(out14) == kd::images_per_block(out14));
  check_conv_on_one_and_two_threads(shapes);
}

// The input gradient of AVX2 builds that makes ∂col a group of channels at a time and gathers each group
// into x while it is in L2 (kernels/conv2d.hpp, ColumnGradientGroups): the plan's groups start at a row
// of A's packed panels and its chunks hold whole images; which shapes take it; then the pass against the
// naive loops on shapes with several chunks (the last one short), several groups (the last one short),
// one group, a depth over one KC slice, one image whose groups are split over the threads, and kernels
// of 9, 49, 25 and 3 taps.
TEST_CASE("AVX2's input gradient makes the columns' gradient a group of channels at a time, and matches the naive loops") {
  namespace kd = qx::kernels::detail;
  // Each ∂col (K × images·P) larger than L2, and P ≤ 512: what the path is for.
  const std::vector<Conv2dShape> shapes = {
      {3, 64, 32, 32, 70, 3, 3, 2, 2, 1, 1},   // resnet18's first strided layer: chunks of one image of 256 columns
      {1, 64, 32, 32, 128, 3, 3, 2, 2, 1, 1},  // one image: its groups over the threads
      {5, 80, 16, 16, 300, 3, 3, 2, 2, 1, 1},  // P = 64: chunks of four images (one thread: 4 + 1); depth 300, two KC slices
      {2, 9, 40, 40, 4, 7, 7, 2, 2, 3, 3},     // 49 taps: groups of six channels, the second of three
      {2, 100, 40, 24, 66, 3, 1, 2, 1, 1, 0},  // a 3×1 kernel, stride 2 down and 1 across
      {2, 32, 16, 31, 20, 3, 3, 1, 1, 1, 1},   // stride 1, rows of 31
      {40, 20, 8, 8, 40, 5, 5, 2, 2, 2, 2},    // 25 taps, P = 16: chunks of 16 images (blocks of 20: 16 + 4)
      {16, 64, 14, 14, 16, 3, 3, 2, 2, 1, 1},  // P = 49: blocks of eight images, 392 columns, a product gemm turns
  };
  for (const auto& s : shapes) {
    INFO("kernel ", s.kh, "x", s.kw, ", ", s.n, " images of ", s.c_in, " channels of ", s.h, "x", s.w);
    for (const int threads : {1, 2}) {  // the naive-loop comparison below runs whole blocks that take the path
      CAPTURE(threads);
      const qx_test::ThreadCount count(threads);
      CHECK(kd::gathers_by_groups<float>(s, kd::images_per_block(s)));
    }
    const Index block = kd::images_per_block(s), taps = s.kh * s.kw;
    const kd::ColumnGradientGroups plan(s, block);
    const Index chunk = plan.images_per_chunk(), channels = plan.channels_per_group();
    CHECK(chunk >= 1);
    CHECK(chunk <= block);
    CHECK((chunk * s.positions() <= 2 * kd::ColumnGradientGroups::chunk_columns ||
           chunk * s.positions() < kd::ColumnGradientGroups::chunk_columns + s.positions()));
    CHECK(channels >= 1);
    CHECK(channels <= s.c_in);
    CHECK(((taps * channels) % qx::kernels::detail::packed::mr == 0 || channels == s.c_in));
  }
  REQUIRE(kd::computes_transposed(shapes[7].patch(), 8 * 49));  // the last shape: gemm alone would turn its blocks
  // Chunks of at least 256 columns where the block has them, at most 512, wasting the least of their last
  // 64-column panel: P = 196 → two images (392 of 448 columns), P = 49 → nine (441 of 448).
  CHECK(kd::ColumnGradientGroups::images_per_chunk(196, 8) == 2);
  CHECK(kd::ColumnGradientGroups::images_per_chunk(49, 16) == 9);
  CHECK(kd::ColumnGradientGroups::images_per_chunk(64, 8) == 4);
  CHECK(kd::ColumnGradientGroups::images_per_chunk(256, 3) == 1);
  CHECK(kd::ColumnGradientGroups::images_per_chunk(784, 16) == 1);
  CHECK(kd::ColumnGradientGroups::images_per_chunk(16, 21) == 16);
  CHECK(kd::ColumnGradientGroups::images_per_chunk(16, 5) == 5);
  // The shapes above reach what they are there for, whatever the thread count.
  CHECK(kd::ColumnGradientGroups(shapes[0], 3).images_per_chunk() == 1);
  CHECK(kd::ColumnGradientGroups(shapes[0], 3).channels_per_group() < 64);
  CHECK(kd::ColumnGradientGroups(shapes[2], 5).images_per_chunk() == 4);
  CHECK(kd::ColumnGradientGroups(shapes[3], 2).channels_per_group() == 6);
  CHECK(kd::ColumnGradientGroups(shapes[6], 20).images_per_chunk() == 16);
  // Which blocks take it. Not: a 1×1 kernel (col2im a plain scatter), stride 3 across, one image of 49
  // positions on a deep layer (resnet50's 512-channel layer on 14²: gemm turns its product, whose direct
  // tiles cover 64 / 54 of the turned ones), a ∂col that fits L2 (one image of 1,152 × 64), images of more
  // than 512 positions (resnet50's 128-channel layer on 56²). Yes: eight images of that 1,152 × 64, and
  // eight of the 512-channel layer on 14² (gemm would turn it too, but direct its tiles cover only 448 / 396).
  struct Rule {
    Conv2dShape shape;
    Index images;
    bool by_groups;
  };
  for (const Rule& rule : {Rule{{16, 256, 56, 56, 512, 1, 1, 2, 2, 0, 0}, 1, false}, Rule{{2, 64, 72, 80, 3, 3, 3, 3, 3, 1, 1}, 2, false},
                           Rule{{1, 512, 14, 14, 512, 3, 3, 2, 2, 1, 1}, 1, false}, Rule{{1, 128, 16, 16, 256, 3, 3, 2, 2, 1, 1}, 1, false},
                           Rule{{16, 128, 56, 56, 128, 3, 3, 2, 2, 1, 1}, 1, false}, Rule{{8, 128, 16, 16, 256, 3, 3, 2, 2, 1, 1}, 8, true},
                           Rule{{16, 512, 14, 14, 512, 3, 3, 2, 2, 1, 1}, 8, true}}) {
    INFO(rule.shape.c_in, " channels of ", rule.shape.h, "x", rule.shape.w, ", kernel ", rule.shape.kh, ", ", rule.images, " images");
    CHECK(kd::gathers_by_groups<float>(rule.shape, rule.images) == rule.by_groups);
  }
  check_conv_on_one_and_two_threads(shapes);
}

// The weight gradient of AVX2 builds as one product for the whole batch (kernels/conv2d.hpp,
// weight_gradient_one_product): which shapes take it, the even split it needs, then the pass against the
// naive loops on one and two threads — a ∂W whose columns end inside a panel, stride 2 on odd planes, and
// a depth (images × positions) over one KC slice with rows of A that do not fill the last register tile.
// Each element of ∂W is summed by one thread in one order, so one and two threads give the same bits.
TEST_CASE("AVX2's weight gradient of a large ∂W is one product whose columns the threads share, and matches the naive loops") {
  namespace kd = qx::kernels::detail;
  const std::vector<Conv2dShape> shapes = {
      {3, 1000, 9, 7, 128, 3, 3, 2, 2, 1, 1},  // K = 9,000: 140 panels and 40 columns; P = 5 × 4
      {48, 620, 2, 3, 190, 3, 3, 1, 1, 1, 1},  // 190 rows of A (31 tiles and 4 rows); depth 288, two KC slices
  };
  for (const auto& s : shapes) {
    INFO(s.n, " images of ", s.c_in, " channels of ", s.h, "x", s.w, " → ", s.c_out);
    REQUIRE(s.c_out * s.patch() > kd::tap_tiles_most_floats);  // smaller ones go to tap tiles
    for (const int threads : {1, 2}) {
      CAPTURE(threads);
      const qx_test::ThreadCount count(threads);
      CHECK(kd::weight_gradient_in_one_product<float>(s));
    }
  }
  // The split of C's columns over two threads: even for 72 or 141 panels, not for nine (five and four);
  // rows, in units of 48, when there are more rows than columns.
  CHECK(kd::ThreadSplit(512, 4608, 2).even());
  CHECK(kd::ThreadSplit(64, 9000, 2).even());
  CHECK_FALSE(kd::ThreadSplit(128, 576, 2).even());
  CHECK(kd::ThreadSplit(128, 576, 2).chunk == 320);
  CHECK_FALSE(kd::ThreadSplit(960, 64, 2).columns);
  CHECK(kd::ThreadSplit(960, 64, 2).chunk == 480);
  // Which take it, on two threads. Yes: resnet18's 512-channel layer on 4² (∂W of 9.4 MB). Not: its 64 →
  // 128 stride-2 layer on 32² (∂W of 0.3 MB: tap tiles), stride 3 (no made columns), a gathered grad_y
  // over the budget (520 images of that 4² layer), a ∂W of 4.3 MB whose 1,800 columns (29 panels) split
  // fifteen to fourteen.
  {
    const qx_test::ThreadCount count(2);
    CHECK(kd::weight_gradient_in_one_product<float>({32, 512, 4, 4, 512, 3, 3, 1, 1, 1, 1}));
    CHECK_FALSE(kd::weight_gradient_in_one_product<float>({32, 64, 32, 32, 128, 3, 3, 2, 2, 1, 1}));
    CHECK_FALSE(kd::weight_gradient_in_one_product<float>({8, 512, 12, 12, 512, 3, 3, 3, 3, 1, 1}));
    CHECK_FALSE(kd::weight_gradient_in_one_product<float>({520, 512, 4, 4, 512, 3, 3, 1, 1, 1, 1}));
    REQUIRE_FALSE(kd::weight_gradient_by_tap_tiles<float>({4, 200, 8, 8, 600, 3, 3, 1, 1, 1, 1}));
    CHECK_FALSE(kd::weight_gradient_in_one_product<float>({4, 200, 8, 8, 600, 3, 3, 1, 1, 1, 1}));
  }
  check_conv_on_one_and_two_threads(shapes);
  // The same bits on one thread and on two.
  qx::Rng rng(4);
  for (const auto& s : shapes) {
    const auto x = random_vector<float>(static_cast<std::size_t>(s.n * s.c_in * s.h * s.w), rng);
    const auto gy = random_vector<float>(static_cast<std::size_t>(s.n * s.c_out * s.positions()), rng);
    std::vector<float> one(static_cast<std::size_t>(s.c_out * s.patch())), two(one.size()), bias(static_cast<std::size_t>(s.c_out));
    {
      const qx_test::ThreadCount count(1);
      qx::kernels::conv2d_backward_weight<float>(s, x.data(), gy.data(), one.data(), bias.data());
    }
    {
      const qx_test::ThreadCount count(2);
      qx::kernels::conv2d_backward_weight<float>(s, x.data(), gy.data(), two.data(), bias.data());
    }
    CHECK(one == two);
  }
}

#endif

// The forward pass and weight gradient by tap tiles (kernels/tap_tiles.hpp; AVX2's strips of 16 channels,
// AVX-512's of 64): which shapes take them, the zero border and the strips they read, then the passes
// against the naive loops on one and two threads — output channels that end inside a strip and inside an
// 8-row transpose, more than one group of 128 channels, K not a multiple of the tile's 6 taps, positions not
// a multiple of 8 or of 6, stride 1 and 2, a 5×5 kernel whose taps take two chunks of 16 channels, no
// padding with image columns no tap reads, a 3×1 kernel. Output channel counts are chosen to end inside a
// strip on both instruction sets.
#if QX_TAP_TILES
TEST_CASE("The forward pass and weight gradient by tap tiles read the image in place, and match the naive loops") {
  namespace kd = qx::kernels::detail;
  constexpr Index lanes = kd::TapTiles::lanes;
  // AVX2 takes the tiles where colᵀ would be made (the product not turned): the last two shapes' C_out is
  // then 24 and 66 (ending inside a strip of 16), with AVX-512 57 and 124 (inside a strip of 64).
  const Index narrow_out = lanes == 16 ? 24 : 57, wide_out = lanes == 16 ? 66 : 124;
  const std::vector<Conv2dShape> shapes = {
      {3, 13, 9, 11, 123, 3, 3, 2, 2, 1, 1},  // C_out 123: strips of 16 (7, one of 11) or 64 (one, one of 59); K = 117
      {4, 64, 16, 16, 128, 3, 3, 2, 2, 1, 1},  // resnet18's strided layer's shape: one group of 128 channels
      {3, 20, 8, 8, 250, 3, 3, 2, 2, 1, 1},    // two groups, the second of 122 channels
      {2, 7, 10, 9, 60, 3, 3, 1, 1, 1, 1},     // stride 1
      {2, 5, 12, 12, 62, 5, 5, 2, 2, 2, 2},    // 5×5, padding 2
      {5, 9, 7, 12, narrow_out, 3, 3, 2, 2, 0, 0},  // no padding: x's last column is read by no tap
      {2, 24, 6, 40, wide_out, 3, 1, 2, 1, 1, 0},   // 3×1, stride 2 down and 1 across
  };
  // The forward pass's: planes of at least tap_tiles_least_positions outputs (196 with AVX2).
  const std::vector<Conv2dShape> forward = {
      {2, 16, 28, 30, 59, 3, 3, 2, 2, 1, 1},   // 14 × 15 outputs, C_out 59
      {1, 17, 32, 28, 250, 5, 5, 2, 2, 2, 2},  // 16 × 14 (224: a last tile of 2 positions); K = 425, two chunks
      {2, 24, 20, 20, 60, 3, 3, 1, 1, 1, 1},   // stride 1
      {3, 64, 32, 32, 128, 3, 3, 2, 2, 1, 1},  // resnet18's stride-2 layer on 32²
  };
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    const qx_test::ThreadCount count(threads);
    for (const auto& s : shapes) {
      INFO(s.n, " images of ", s.c_in, " channels of ", s.h, "x", s.w, " → ", s.c_out, ", kernel ", s.kh, "x", s.kw);
      CHECK(kd::weight_gradient_by_tap_tiles<float>(s));
      CHECK_FALSE(kd::weight_gradient_in_one_product<float>(s));
    }
    for (const auto& s : forward) {
      INFO("forward: ", s.c_in, " channels of ", s.h, "x", s.w, " → ", s.c_out, ", kernel ", s.kh, "x", s.kw);
      CHECK(kd::forward_by_tap_tiles<float>(s));
    }
    // The forward pass not: 16 outputs a plane (resnet18's 256 → 512 layer), a stem of 3 channels, a 1×1
    // kernel, double.
    CHECK_FALSE(kd::forward_by_tap_tiles<float>({32, 256, 8, 8, 512, 3, 3, 2, 2, 1, 1}));
    CHECK_FALSE(kd::forward_by_tap_tiles<float>({16, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3}));
    CHECK_FALSE(kd::forward_by_tap_tiles<float>({3, 128, 32, 32, 64, 1, 1, 2, 2, 0, 0}));
    CHECK_FALSE(kd::forward_by_tap_tiles<double>(forward[0]));
    // The weight gradient not: a 1×1 kernel (strided pointwise layers keep their columns), a ∂W past 4 MB
    // (resnet18's 512-channel layer), double.
    CHECK_FALSE(kd::weight_gradient_by_tap_tiles<float>({3, 128, 16, 16, 64, 1, 1, 2, 2, 0, 0}));
    CHECK_FALSE(kd::weight_gradient_by_tap_tiles<float>({32, 512, 4, 4, 512, 3, 3, 1, 1, 1, 1}));
    CHECK_FALSE(kd::weight_gradient_by_tap_tiles<double>(shapes[1]));
    // AVX-512's strips of 64 would waste more than an eighth of the work on 56 channels or fewer; AVX2's
    // strips of 16 are taken whatever C_out.
    const Conv2dShape narrow{4, 32, 32, 32, 56, 3, 3, 2, 2, 1, 1};
    CHECK(kd::tap_tiles_cover(57));
    CHECK(kd::tap_tiles_cover(56) == (lanes == 16));
    CHECK(kd::weight_gradient_by_tap_tiles<float>(narrow) == (lanes == 16));
    CHECK(kd::forward_by_tap_tiles<float>(narrow) == (lanes == 16));
  }
  // The block's pieces against their definitions: x̄ holds x with zeros around it, gᵀ holds g by strips of
  // `lanes` channels (zero past C_out).
  qx::Rng rng(8);
  for (const auto& s : {shapes[0], shapes[5]}) {
    INFO(s.c_in, " channels of ", s.h, "x", s.w, " → ", s.c_out);
    const kd::TapTiles tiles(s);
    const auto x = random_vector<float>(static_cast<std::size_t>(s.n * s.c_in * s.h * s.w), rng);
    const auto g = random_vector<float>(static_cast<std::size_t>(s.n * s.c_out * s.positions()), rng);
    std::vector<float> padded(static_cast<std::size_t>(s.n * tiles.image), -1.0f);
    kd::pad_images(s, tiles, x.data(), s.n, padded.data());
    bool same = true;
    for (Index plane = 0; plane < s.n * s.c_in; ++plane)
      for (Index r = 0; r < tiles.hp; ++r)
        for (Index c = 0; c < tiles.wp; ++c) {
          const Index row = r - s.pad_h, column = c - s.pad_w;
          const float expected = row >= 0 && row < s.h && column >= 0 && column < s.w
                                     ? x[static_cast<std::size_t>((plane * s.h + row) * s.w + column)]
                                     : 0.0f;
          same = same && padded[static_cast<std::size_t>(plane * tiles.plane + r * tiles.wp + c)] == expected;
        }
    CHECK_MESSAGE(same, "the zero-bordered images");
    const Index depth = s.n * s.positions();
    std::vector<float> transposed(static_cast<std::size_t>(tiles.c_padded * depth), -1.0f);
    kd::transpose_gradients(s, tiles, g.data(), s.n, transposed.data());
    same = true;
    for (Index o = 0; o < tiles.c_padded; ++o)
      for (Index d = 0; d < depth; ++d) {
        const Index b = d / s.positions(), j = d % s.positions();
        const float expected = o < s.c_out ? g[static_cast<std::size_t>((b * s.c_out + o) * s.positions() + j)] : 0.0f;
        const Index at = o / lanes * depth * lanes + d * lanes + o % lanes;
        same = same && transposed[static_cast<std::size_t>(at)] == expected;
      }
    CHECK_MESSAGE(same, "the gradient's strips");
  }
  check_conv_on_one_and_two_threads(shapes);
  check_conv_on_one_and_two_threads(forward);
}
// The input gradient by tap tiles, phase by phase of the stride (kernels/tap_tiles.hpp, PhaseTiles): the
// phases' layout against its definition, then the pass, called directly on both instruction sets (AVX-512
// builds take it in conv2d_backward_input; AVX2 builds do not), against the naive loops on one and two
// threads — input channels ending inside a strip, two chunks of taps, odd planes, stride 3 with a 5×5
// kernel, a kernel smaller than its stride (phases no tap reads), no padding, stride 2 down and 1 across.
TEST_CASE("The input gradient by tap tiles, phase by phase of the stride, matches the naive loops") {
  namespace kd = qx::kernels::detail;
  const std::vector<Conv2dShape> shapes = {
      {3, 123, 9, 11, 40, 3, 3, 2, 2, 1, 1},  // C_in 123; K of a 2×2 phase 160: two chunks of 144 taps
      {2, 64, 16, 16, 128, 3, 3, 2, 2, 1, 1},  // resnet18's strided layer's shape
      {2, 60, 13, 14, 20, 5, 5, 3, 3, 2, 2},   // stride 3, 5×5
      {2, 62, 12, 13, 16, 2, 2, 4, 4, 0, 0},   // 2×2 at stride 4: 12 of 16 phases read by no tap
      {2, 57, 9, 9, 24, 3, 3, 2, 2, 0, 0},     // no padding
      {2, 124, 10, 9, 32, 3, 1, 2, 1, 1, 0},   // stride 2 down, 1 across
      {1, 70, 8, 7, 17, 3, 3, 2, 2, 1, 1},     // odd width: a row's last element alone
  };
  // Each input position lies in exactly one phase, at the place phase_of gives.
  for (const auto& s : shapes) {
    INFO(s.c_in, " channels of ", s.h, "x", s.w, ", kernel ", s.kh, "x", s.kw, ", stride ", s.stride_h, "x", s.stride_w);
    const kd::PhaseTiles tiles(s);
    REQUIRE(tiles.phases.size() == static_cast<std::size_t>(s.stride_h * s.stride_w));
    Index covered = 0;
    bool placed = true;
    for (const auto& phase : tiles.phases) {
      covered += phase.down.count * phase.across.count;
      CHECK(phase.k == s.c_out * phase.down.taps * phase.across.taps);
    }
    CHECK(covered == s.h * s.w);
    for (Index y = 0; y < s.h; ++y)
      for (Index x = 0; x < s.w; ++x) {
        Index i = -1, v = -1;
        const auto& phase = tiles.phase_of(s, y, x, i, v);
        placed = placed && i >= 0 && i < phase.down.count && v >= 0 && v < phase.across.count &&
                 s.stride_h * (phase.down.lo + i) + phase.down.r - s.pad_h == y &&
                 s.stride_w * (phase.across.lo + v) + phase.across.r - s.pad_w == x;
      }
    CHECK_MESSAGE(placed, "every position in its phase");
    CHECK(kd::input_gradient_by_tap_tiles<float>(s) ==
          (kd::TapTiles::lanes == 64 && kd::tap_tiles_cover(s.c_in) && s.h / s.stride_h * (s.w / s.stride_w) >= 49));
  }
  // Taken with AVX-512 (resnet50's strided layer on 14², 49 positions a phase) or not: planes of 16 positions a
  // phase, a stride of 1, a 1×1 kernel, 8 output channels, double.
  const bool avx512 = kd::TapTiles::lanes == 64;
  CHECK(kd::input_gradient_by_tap_tiles<float>({16, 512, 14, 14, 512, 3, 3, 2, 2, 1, 1}) == avx512);
  CHECK_FALSE(kd::input_gradient_by_tap_tiles<float>({32, 256, 8, 8, 512, 3, 3, 2, 2, 1, 1}));
  CHECK_FALSE(kd::input_gradient_by_tap_tiles<float>({4, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1}));
  CHECK_FALSE(kd::input_gradient_by_tap_tiles<float>({4, 64, 32, 32, 128, 1, 1, 2, 2, 0, 0}));
  CHECK_FALSE(kd::input_gradient_by_tap_tiles<float>({4, 64, 32, 32, 8, 3, 3, 2, 2, 1, 1}));
  CHECK_FALSE(kd::input_gradient_by_tap_tiles<double>({16, 512, 14, 14, 512, 3, 3, 2, 2, 1, 1}));
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    const qx_test::ThreadCount count(threads);
    check_conv<float>(
        shapes, qx::kernels::conv2d_forward<float>,
        [](const Conv2dShape& s, const float* gy, const float* w, float* gx) { kd::input_gradient_by_phases(s, gy, w, gx); },
        qx::kernels::conv2d_backward_weight<float>, tolerance<float>());
  }
  if (avx512) check_conv_on_one_and_two_threads({{2, 64, 28, 28, 64, 3, 3, 2, 2, 1, 1}});  // through conv2d_backward_input
}
#endif
