// conv2d for 3×3 kernels with stride 1 by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016), the three passes side by side. Per 6×6
// input tile d (overlapping by 2), 3×3 filter g and 4×4 output tile Y:
//   U = G g Gᵀ,  V = Bᵀ d B,  M = U ⊙ V  summed over input channels,  Y = Aᵀ M A.
// The sum over channels is, for each of the 36 positions ξ of the 6×6 transform domain, one GEMM:
//   forward          M_ξ (C_out × tiles) = U_ξ (C_out × C_in) · V_ξ (C_in × tiles)
//   backward_input   ∂V_ξ = U_ξᵀ · ∂M_ξ  with ∂M = A ∂Y Aᵀ, then ∂d = B ∂V Bᵀ added back into the tiles
//   backward_weight  ∂U_ξ = Σ_tiles ∂M_ξ · V_ξᵀ, then ∂g = Gᵀ ∂U G
// 36 products of C_out·C_in per 16 outputs instead of 144: 4× fewer multiplications than a direct or
// im2col convolution, at the price of rounding (docs/kernels.md gives the measured error and where qx
// uses it). Semantics are PyTorch's cross-correlation with zero padding, as in kernels/conv2d.hpp.
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/constant_weights.hpp"
#include "qx/kernels/conv2d.hpp"
#include "qx/kernels/functors.hpp"
#include "qx/kernels/gemm.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

QX_NAMESPACE_BEGIN
namespace kernels {
namespace winograd {

inline constexpr int m = 4;           // outputs per tile side
inline constexpr int r = 3;           // filter side
inline constexpr int t = m + r - 1;   // input tile side (6)
inline constexpr int points = t * t;  // 36 positions of the transform domain

// The transforms for interpolation points 0, ±1, ±2 and ∞.
inline constexpr double bt[t][t] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
inline constexpr double g[t][r] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
inline constexpr double at[m][t] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

/// A constant matrix's transpose, for the adjoint transforms.
template <int R, int C>
constexpr std::array<std::array<double, R>, C> transposed(const double (&a)[R][C]) {
  std::array<std::array<double, R>, C> out{};
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) out[j][i] = a[i][j];
  return out;
}
inline constexpr auto b = transposed(bt);  // B  (6×6)
inline constexpr auto gt = transposed(g);  // Gᵀ (3×6)
inline constexpr auto a = transposed(at);  // A  (6×4)

// Tiles are transformed `lanes` (16) at a time: one transform-domain element of 16 tiles side by side is
// one kernels::LaneVector (v[lane] is tile `lane`'s), so every sandwich is vector arithmetic.

/// out(i, j) = Σ_k L[i][k]·in(k, j) for i < R, k < C, j < J, where element (k, j) of `in` is
/// in[k·InK + j·InJ] and (i, j) of `out` is out[i·OutI + j·OutJ]. Fully unrolled over the constant L
/// (whose zero entries are skipped) with compile-time strides. RowsOuter picks the loop order that keeps
/// the reused operand in registers (measured: the first product of a sandwich wants L's rows outside,
/// the second the columns of `in`).
template <int R, int C, int J, int InK, int InJ, int OutI, int OutJ, bool RowsOuter, const auto& L, class V>
inline void left_multiply(const V* in, V* out) {
  using Scalar = std::remove_cvref_t<decltype(std::declval<V>()[0])>;
  auto element = [&](int i, int j) {
    V sum{};
#pragma GCC unroll 8
    for (int k = 0; k < C; ++k) {
      if (L[i][k] == 0) continue;
      sum += static_cast<Scalar>(L[i][k]) * in[k * InK + j * InJ];
    }
    out[i * OutI + j * OutJ] = sum;
  };
  if constexpr (RowsOuter) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < J; ++j) element(i, j);
  } else {
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j)
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) element(i, j);
  }
}

/// out (R×R) = L · in (C×C) · Lᵀ for a constant L (R×C, a template argument: its zeros and values are
/// known when compiling, whether or not the call is inlined), row-major, on `lanes` tiles at once:
/// tmp = L·in, then out = (L·tmpᵀ)ᵀ.
template <int R, int C, const auto& L, class V>
inline void sandwich(const V* in, V* out) {
  V tmp[R * C];
  left_multiply<R, C, C, C, 1, C, 1, true, L>(in, tmp);
  left_multiply<R, C, R, 1, C, 1, R, false, L>(tmp, out);
}

/// dst[0, count) ← lanes [0, count) of v, for 0 < count ≤ lanes: one vector store, masked when the group
/// is short (a copy of a run-time length compiles to `rep movs`, whose start-up costs more than the copy).
template <class T>
inline void store_first_lanes(const LaneVector<T>& v, Index count, T* dst) {
  if (count == lanes) {
    std::memcpy(dst, &v, sizeof v);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << count) - 1), v);
    return;
  }
#endif
  for (Index lane = 0; lane < count; ++lane) dst[lane] = v[lane];
}

/// v ← src[0, count) in its first lanes, zero in the others (0 < count ≤ lanes).
template <class T>
inline void load_first_lanes(const T* src, Index count, LaneVector<T>& v) {
  if (count == lanes) {
    std::memcpy(&v, src, sizeof v);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), src);
    return;
  }
#endif
  v = LaneVector<T>{};
  for (Index lane = 0; lane < count; ++lane) v[lane] = src[lane];
}

/// Where a batch's tiles are: tiles_h × tiles_w per image, 4×4 outputs each; column c of the
/// transform-domain matrices is tile c of the block (image-major, then row, then column).
struct Tiling {
  Index out_h, out_w, tiles_h, tiles_w;
  explicit Tiling(const Conv2dShape& s)
      : out_h(s.out_h()), out_w(s.out_w()), tiles_h((s.out_h() + m - 1) / m), tiles_w((s.out_w() + m - 1) / m) {}
  Index per_image() const { return tiles_h * tiles_w; }
  struct Tile {
    Index image, ty, tx;
  };
  Tile locate(Index column) const {
    const Index within = column % per_image();
    return {column / per_image(), within / tiles_w, within % tiles_w};
  }
  /// The tile of the next column (no division: the lane loops call this once per lane).
  void advance(Tile& tile) const {
    if (++tile.tx < tiles_w) return;
    tile.tx = 0;
    if (++tile.ty < tiles_h) return;
    tile.ty = 0;
    ++tile.image;
  }
};

/// True for the convolutions this file computes: 3×3, stride 1 (any padding).
inline bool applies(const Conv2dShape& s) { return s.kh == r && s.kw == r && s.stride_h == 1 && s.stride_w == 1; }

namespace detail {
/// Calls body(first_column, count) for the groups of up to `lanes` consecutive columns of [0, columns).
template <class Body>
void for_each_lane_group(Index columns, Body&& body) {
  for (Index first = 0; first < columns; first += lanes) body(first, std::min<Index>(lanes, columns - first));
}

/// Transformed filters larger than this (bytes) are written by streaming stores (transform_filters).
inline constexpr Index streamed_filter_bytes = Index{16} << 20;

/// U (36, size) ← (G g Gᵀ)_ξ of every filter g of weight (C_out, C_in, 3, 3), 16 positions of U at a time
/// so that the stores are contiguous: filter_at(q) walks positions [q, ·) and gives, position by position,
/// the filter o·C_in + c stored there (or −1: a padding position, stored as zero).
template <class T, class FilterAt>
void transform_filters(const T* weight, Index size, T* u, FilterAt&& filter_at) {
  // U larger than the caches goes to memory whatever we do; streaming stores skip reading each line
  // before overwriting it (a third of the traffic; 512 → 512 channels have 37.7 MB of U). Every whole
  // lane group's 36 destinations are then 64-byte aligned: u is, and so is each point's start.
  [[maybe_unused]] const bool stream = std::is_same_v<T, float> && points * size * Index{sizeof(T)} > streamed_filter_bytes &&
                                       size % lanes == 0 && reinterpret_cast<std::uintptr_t>(u) % 64 == 0;
  parallel_for(0, (size + lanes - 1) / lanes, [&](Index group) {
    LaneVector<T> in[r * r], out[points];
    const Index first = group * lanes, count = std::min<Index>(lanes, size - first);
    auto filters = filter_at(first);
    for (Index lane = 0; lane < lanes; ++lane, filters.advance()) {
      const Index f = lane < count ? filters.filter() : -1;
      for (int e = 0; e < r * r; ++e) in[e][lane] = f < 0 ? T(0) : weight[f * r * r + e];
    }
    sandwich<t, r, g>(in, out);
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>)
      if (stream && count == lanes) {
        for (int xi = 0; xi < points; ++xi) _mm512_stream_ps(u + xi * size + first, out[xi]);
        return;
      }
#endif
    for (int xi = 0; xi < points; ++xi) store_first_lanes(out[xi], count, u + xi * size + first);
  }, lanes * points * r * t);
#if defined(__AVX512F__)
  if (stream) _mm_sfence();  // the streamed lines reach memory before the GEMMs read them
#endif
}

#if defined(__AVX512F__)
/// Whether the windows of a plane of this many tiles per row are gathered and scattered by rows
/// (gather_windows, scatter_add_windows, store_tiles): a run is at most a tile row long, and with one tile
/// per row (4×4 planes) each lane is a run of its own, a full set of permutations — measured no faster
/// than the scalar lane loops (docs/kernels.md, "Windows by rows").
inline bool tiles_by_rows(Index tiles_w) { return tiles_w >= 2; }

/// Lanes of a 16-float vector loaded at column `from` of a row of `width` columns that lie inside it.
inline __mmask16 columns_inside(Index from, Index width) {
  return kernels::detail::lane_mask(std::clamp<Index>(-from, 0, 16), std::clamp<Index>(width - from, 0, 16));
}

/// Calls body(lane, run, tile) for the runs of a lane group (lanes [0, count) are the tiles first, first + 1,
/// …): maximal stretches of at most max_run consecutive tiles of one tile row, `lane` the run's first lane and
/// `tile` its first tile.
template <class Body>
inline void for_each_run(const Tiling& tiling, Index first, Index count, Index max_run, Body&& body) {
  auto tile = tiling.locate(first);
  for (Index lane = 0; lane < count;) {
    const Index run = std::min({max_run, count - lane, tiling.tiles_w - tile.tx});
    body(lane, run, tile);
    lane += run;
    for (Index k = 0; k < run; ++k) tiling.advance(tile);
  }
}

/**
 * d[Side·Side] ← the Side×Side windows of channel c of the group's tiles (lane ℓ < count is tile first + ℓ;
 * zero outside the plane and in lanes ≥ count), by vectors instead of one scalar per lane and element.
 * The group is cut into runs of consecutive tiles of one tile row. A run of n tiles reads, in each window
 * row, the 4(n − 1) + Side columns from its first tile's: at most 32 for n ≤ max_run, two masked loads
 * (columns outside the plane read as zero). Element (i, j) of lane ℓ of a run starting at lane ℓ₀ is
 * column 4(ℓ − ℓ₀) + j of window row i: one permutation of the two vectors, blended into the run's lanes.
 */
template <int Side>
inline void gather_windows(const Tiling& tiling, const float* planes, Index channels, Index c, Index height, Index width,
                           Index pad_h, Index pad_w, Index first, Index count, LaneVector<float>* d) {
  constexpr Index max_run = (32 - Side) / m + 1;  // 7 tiles for the 6×6 input windows, 8 for 4×4 ones
  const __m512i four_lanes = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60);
  for_each_run(tiling, first, count, max_run, [&](Index lane, Index run, const Tiling::Tile& tile) {
    const __mmask16 run_lanes = kernels::detail::lane_mask(lane, lane + run);
    const float* plane = planes + (tile.image * channels + c) * height * width;
    const Index col0 = tile.tx * m - pad_w;
    const __mmask16 inside_low = columns_inside(col0, width);
    const __mmask16 inside_high = (run - 1) * m + Side > 16 ? columns_inside(col0 + 16, width) : __mmask16{0};
    const __m512i column_of_lane = _mm512_sub_epi32(four_lanes, _mm512_set1_epi32(static_cast<int>(m * lane)));
    for (int i = 0; i < Side; ++i) {
      const Index row = tile.ty * m - pad_h + i;
      if (row < 0 || row >= height) {  // a padding row: zero (the first run writes every lane, later runs keep them)
        if (lane == 0)
          for (int j = 0; j < Side; ++j) d[i * Side + j] = (LaneVector<float>)_mm512_setzero_ps();
        continue;
      }
      const float* src = plane + row * width + col0;
      _mm_prefetch(reinterpret_cast<const char*>(src + height * width), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(src + height * width + 16), _MM_HINT_T0);
      // Whole vectors load unmasked: on AMD's cores a masked load costs several plain ones.
      auto load = [](__mmask16 inside, const float* from) {
        return inside == 0xFFFF ? _mm512_loadu_ps(from) : _mm512_maskz_loadu_ps(inside, from);
      };
      const __m512 low = load(inside_low, src), high = load(inside_high, src + 16);
      for (int j = 0; j < Side; ++j) {
        const __m512i column = _mm512_add_epi32(column_of_lane, _mm512_set1_epi32(j));
        const __m512 picked = _mm512_permutex2var_ps(low, column, high);
        __m512& element = reinterpret_cast<__m512&>(d[i * Side + j]);
        element = lane == 0 ? _mm512_maskz_mov_ps(run_lanes, picked) : _mm512_mask_mov_ps(element, run_lanes, picked);
      }
    }
  });
}

/**
 * The adjoint of gather_windows<6> (the input gradient's scatter): adds dd[36]'s lanes ℓ < count, the
 * 6×6 windows of tiles first + ℓ, into channel c of `planes` where they lie inside. Per run and window
 * row, the run's lanes are laid along the 32 columns from its first tile's by one permutation per window
 * column j (lane ℓ₀ + k goes to column 4k + j: injective for each j), the six summed — the windows'
 * overlapping columns add here — and the row is read, added to and written back once, by two vectors.
 */
inline void scatter_add_windows(const Tiling& tiling, const LaneVector<float>* dd, Index channels, Index c, Index height,
                                Index width, Index pad_h, Index pad_w, Index first, Index count, float* planes) {
  constexpr Index max_run = (32 - t) / m + 1;
  const __m512i columns = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for_each_run(tiling, first, count, max_run, [&](Index lane, Index run, const Tiling::Tile& tile) {
    float* plane = planes + (tile.image * channels + c) * height * width;
    const Index col0 = tile.tx * m - pad_w;
    const __mmask16 inside_low = columns_inside(col0, width);
    const __mmask16 inside_high = (run - 1) * m + t > 16 ? columns_inside(col0 + 16, width) : __mmask16{0};
    // Column x (of the 32) takes lane ℓ₀ + (x − j)/4 for window column j, when x − j ∈ {0, 4, …, 4(run − 1)}.
    __m512i from_low[t], from_high[t];
    __mmask16 takes_low[t], takes_high[t];
    const std::uint32_t every_fourth = 0x11111111u & static_cast<std::uint32_t>((std::uint64_t{1} << (m * run)) - 1);
    const __m512i first_lane = _mm512_set1_epi32(static_cast<int>(lane));
    for (int j = 0; j < t; ++j) {
      const __m512i low_minus_j = _mm512_sub_epi32(columns, _mm512_set1_epi32(j));
      from_low[j] = _mm512_add_epi32(_mm512_srai_epi32(low_minus_j, 2), first_lane);
      from_high[j] = _mm512_add_epi32(_mm512_srai_epi32(_mm512_add_epi32(low_minus_j, _mm512_set1_epi32(16)), 2), first_lane);
      const std::uint32_t takes = every_fourth << j;
      takes_low[j] = static_cast<__mmask16>(takes & 0xFFFF);
      takes_high[j] = static_cast<__mmask16>(takes >> 16);
    }
    for (int i = 0; i < t; ++i) {
      const Index row = tile.ty * m - pad_h + i;
      if (row < 0 || row >= height) continue;
      __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
      for (int j = 0; j < t; ++j) {
        const __m512 values = (__m512)dd[i * t + j];
        low = _mm512_add_ps(low, _mm512_maskz_permutexvar_ps(takes_low[j], from_low[j], values));
        high = _mm512_add_ps(high, _mm512_maskz_permutexvar_ps(takes_high[j], from_high[j], values));
      }
      float* dst = plane + row * width + col0;
      _mm512_mask_storeu_ps(dst, inside_low, _mm512_add_ps(_mm512_maskz_loadu_ps(inside_low, dst), low));
      if (inside_high)
        _mm512_mask_storeu_ps(dst + 16, inside_high, _mm512_add_ps(_mm512_maskz_loadu_ps(inside_high, dst + 16), high));
    }
  });
}

/**
 * The forward pass's store by rows: out[16] holds the 4×4 output tiles of lanes ℓ < count (tiles first + ℓ
 * of the block whose output channel o starts at `planes`; bias added); each is written where it lies
 * inside the plane, through the output stage (residual offsets count from `origin`, the whole output).
 * Per run of at most 8 tiles of one tile row (32 columns) and tile row i, column x of the run's row is
 * lane ℓ₀ + ⌊x/4⌋ of out[4i + x mod 4]: four permutations merged, stored as two vectors.
 */
inline void store_tiles(const Tiling& tiling, const LaneVector<float>* out, Index channels, Index o, Index first,
                        Index count, float* planes, const float* origin, const ConvOutputStage<float>& stage) {
  constexpr Index max_run = 32 / m;
  const __m512i quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  constexpr __mmask16 column_j[m] = {0x1111, 0x2222, 0x4444, 0x8888};  // the columns x with x mod 4 = j
  for_each_run(tiling, first, count, max_run, [&](Index lane, Index run, const Tiling::Tile& tile) {
    float* plane = planes + (tile.image * channels + o) * tiling.out_h * tiling.out_w;
    const Index col0 = tile.tx * m, columns = std::min(m * run, tiling.out_w - col0);
    const __mmask16 store_low = kernels::detail::lane_mask(0, std::min<Index>(16, columns));
    const __mmask16 store_high = kernels::detail::lane_mask(0, std::clamp<Index>(columns - 16, 0, 16));
    const __m512i from_low = _mm512_add_epi32(quarter, _mm512_set1_epi32(static_cast<int>(lane)));
    const __m512i from_high = _mm512_add_epi32(from_low, _mm512_set1_epi32(4));
    for (int i = 0; i < m; ++i) {
      const Index row = tile.ty * m + i;
      if (row >= tiling.out_h) break;
      __m512 low = _mm512_permutexvar_ps(from_low, (__m512)out[i * m]);
      __m512 high = _mm512_permutexvar_ps(from_high, (__m512)out[i * m]);
      for (int j = 1; j < m; ++j) {
        low = _mm512_mask_permutexvar_ps(low, column_j[j], from_low, (__m512)out[i * m + j]);
        high = _mm512_mask_permutexvar_ps(high, column_j[j], from_high, (__m512)out[i * m + j]);
      }
      float* dst = plane + row * tiling.out_w + col0;
      if (stage.residual) {
        const float* residual = stage.residual + (dst - origin);
        low = _mm512_add_ps(low, _mm512_maskz_loadu_ps(store_low, residual));
        high = _mm512_add_ps(high, _mm512_maskz_loadu_ps(store_high, residual + 16));
      }
      if (stage.relu) {  // max(0, v) lets a NaN through, as Relu does
        low = _mm512_max_ps(_mm512_setzero_ps(), low);
        high = _mm512_max_ps(_mm512_setzero_ps(), high);
      }
      _mm512_mask_storeu_ps(dst, store_low, low);
      if (store_high) _mm512_mask_storeu_ps(dst + 16, store_high, high);
    }
  });
}
#endif

/**
 * dst (36, channels, ld) columns [0, images·tiles) ← L d Lᵀ for every tile's Side×Side window d of
 * `planes` (images, channels, height, width), zero outside the plane; the window of tile (ty, tx) starts
 * at (ty·4 − pad_h, tx·4 − pad_w). With L = Bᵀ (Side 6, the padding) this is V of the input; with L = A
 * (Side 4, no padding) ∂M of the output gradient. With `panels` (float with the packed GEMM only),
 * point ξ's (channels × ld) goes in the GEMM's 64-column panels at dst + ξ·channels·whole_panels(ld)
 * (columns past ld zero), which the products read as they are instead of packing each point's matrix
 * again.
 */
template <int Side, const auto& L, class T>
void transform_windows(const Tiling& tiling, const T* planes, Index images, Index channels, Index height, Index width,
                       Index pad_h, Index pad_w, T* dst, Index ld, bool panels) {
  constexpr Index nr = kernels::detail::packed::nr;
  const Index panel_ld = kernels::detail::whole_panels(ld);
  parallel_for(0, channels, [&](Index c) {
    LaneVector<T> d[Side * Side], out[points];
    // d ← the windows by rows of the plane (float with AVX-512), false where that path does not apply.
    auto gather_by_rows = [&]([[maybe_unused]] Index first, [[maybe_unused]] Index count) {
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>)
        if (tiles_by_rows(tiling.tiles_w)) {
          gather_windows<Side>(tiling, planes, channels, c, height, width, pad_h, pad_w, first, count, d);
          return true;
        }
#endif
      return false;
    };
    // d ← the windows one scalar per lane and element.
    auto gather_by_lanes = [&](Index first, Index count) {
      auto tile = tiling.locate(first);
      for (Index lane = 0; lane < lanes; ++lane, tiling.advance(tile)) {
        if (lane >= count) {
          for (int e = 0; e < Side * Side; ++e) d[e][lane] = T(0);
          continue;
        }
        const T* plane = planes + (tile.image * channels + c) * height * width;
        const Index row0 = tile.ty * m - pad_h, col0 = tile.tx * m - pad_w;
        if (row0 >= 0 && col0 >= 0 && row0 + Side <= height && col0 + Side <= width) {  // inside: no bounds tests
          const T* src = plane + row0 * width + col0;
          for (int i = 0; i < Side; ++i)
            for (int j = 0; j < Side; ++j) d[i * Side + j][lane] = src[i * width + j];
          continue;
        }
        for (int i = 0; i < Side; ++i)
          for (int j = 0; j < Side; ++j) {
            const Index row = row0 + i, col = col0 + j;
            d[i * Side + j][lane] = (row >= 0 && row < height && col >= 0 && col < width) ? plane[row * width + col] : T(0);
          }
      }
    };
    for_each_lane_group(images * tiling.per_image(), [&](Index first, Index count) {
      if (!gather_by_rows(first, count)) gather_by_lanes(first, count);
      sandwich<t, Side, L>(d, out);
      if (panels) {  // a group of 16 columns lies inside one 64-column panel
        T* at = dst + (first / nr * channels + c) * nr + first % nr;
        for (int xi = 0; xi < points; ++xi) store_first_lanes(out[xi], count, at + xi * channels * panel_ld);
        return;
      }
      for (int xi = 0; xi < points; ++xi) store_first_lanes(out[xi], count, dst + (xi * channels + c) * ld + first);
    });
  }, images * tiling.per_image() * points * Side * 2);
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>)
    if (panels)
      for (int xi = 0; xi < points; ++xi) kernels::detail::zero_panel_tail(dst + xi * channels * panel_ld, channels, ld);
#endif
}

/// V (36, C_in, ld) ← Bᵀ d B of every 6×6 input window d of x (images, C_in, H, W); with `panels`, each
/// point's V_ξ in the GEMM's 64-column panels instead (in_panels).
template <class T>
void transform_inputs(const Conv2dShape& s, const Tiling& tiling, const T* x, Index images, T* v, Index ld, bool panels = false) {
  transform_windows<t, bt>(tiling, x, images, s.c_in, s.h, s.w, s.pad_h, s.pad_w, v, ld, panels);
}

/// ∂M (36, C_out, ld) ← A ∂Y Aᵀ of every 4×4 tile ∂Y of grad_y (images, C_out, H_out, W_out); `panels` as
/// for transform_inputs.
template <class T>
void transform_output_grads(const Conv2dShape& s, const Tiling& tiling, const T* grad_y, Index images, T* dm, Index ld,
                            bool panels = false) {
  transform_windows<m, a>(tiling, grad_y, images, s.c_out, tiling.out_h, tiling.out_w, 0, 0, dm, ld, panels);
}

/// Tiles per block worth gathering: the 36 GEMMs are efficient from 128 columns, and a block's
/// transform-domain data (36·(C_in + C_out) rows of them) should stay in cache between the transform
/// that writes it and the GEMM that reads it.
inline constexpr Index winograd_columns = 128;

/// Whether blocks of `columns` tiles have their products computed transposed (kernels/gemm.hpp) in both
/// passes that multiply by the transformed filters: few tiles, the filters on the 64-column side.
inline bool few_tiles(const Conv2dShape& s, Index columns) {
  return kernels::detail::computes_transposed(s.c_out, columns) && kernels::detail::computes_transposed(s.c_in, columns);
}

/**
 * Images per block of for_each_tile_block: kernels/conv2d.hpp's blocking (a block per thread when there
 * are enough images) — except for few tiles, where the batch is one block if it fits (up to
 * winograd_columns tiles, within the per-thread scratch budget) and the threads share its 36 products:
 * the filters' transform then outweighs the tiles' (a 4×4 plane is one tile; 512 → 512 channels have 9.4
 * MB of filters and 37.7 MB transformed), and a block per thread would have each thread stream all of it.
 */
inline Index images_per_tile_block(const Conv2dShape& s, const Tiling& tiling) {
  const Index per_image = points * (s.c_in + s.c_out) * tiling.per_image();
  const Index per_thread = kernels::detail::images_per_block(s.n, per_image, tiling.per_image(), winograd_columns);
  if (!few_tiles(s, per_thread * tiling.per_image())) return per_thread;
  return kernels::detail::images_per_block(s.n, per_image, tiling.per_image(), winograd_columns, 1);
}

/**
 * The transformed filters as the 36 GEMMs take them, in a buffer from the cache: op(U_ξ) = U_ξ for the
 * forward pass, U_ξᵀ for the input gradient (`transposed`). In float with the packed GEMM (AVX-512 or
 * AVX2 + FMA, QX_PACKED_GEMM), already in the GEMM's panels so that no product packs them again: op(U_ξ)
 * as A (`packed`: detail::packed::pack_a_whole's layout, one packed matrix per point), or — when gemm
 * would compute the products of a block of for_each_tile_block transposed (few tile columns) — op(U_ξ)ᵀ
 * as B (`b_panels`: 64-column panels, detail::packed::panel_offset's layout), the product then being
 * out_ξᵀ = in_ξᵀ · op(U_ξ)ᵀ. Packing op(U_ξ)ᵀ per product (a 16×16 register transpose per block) had
 * been a sixth of a 512-channel layer's forward pass on 4×4 planes. Otherwise (double, or Eigen's GEMM)
 * U (36, C_out, C_in).
 */
template <class T>
struct TransformedFilters {
  memory::Buffer<T> values;
  bool transposed;
  Index rows, depth;  // op(U_ξ)'s shape
  bool packed = false;
  bool b_panels = false;
  TransformedFilters(const Conv2dShape& s, const T* weight, bool transpose)
      : transposed(transpose), rows(transpose ? s.c_in : s.c_out), depth(transpose ? s.c_out : s.c_in) {
#if QX_PACKED_GEMM
    if constexpr (std::is_same_v<T, float>) {
      const Tiling tiling(s);
      if (kernels::detail::computes_transposed(rows, images_per_tile_block(s, tiling) * tiling.per_image())) {
        b_panels = true;
        // Positions in panel_offset's layout of op(U_ξ)ᵀ (depth × rows) from position q: panel by panel
        // of 64 columns, depth by depth, column by column; a column ≥ rows is padding. Counters, not
        // divisions: the walk runs once per stored value.
        constexpr Index nr = kernels::detail::packed::nr;
        struct Walk {
          Index panel, row, lane;  // column = panel + lane
          Index depth, rows, c_in;
          bool transpose;
          Index filter() const {
            const Index column = panel + lane;
            if (column >= rows) return -1;
            // op(U)ᵀ[row][column] = op(U)[column][row]: U[column][row] forward, U[row][column] transposed.
            return transpose ? row * c_in + column : column * c_in + row;
          }
          void advance() {
            if (++lane < nr) return;
            lane = 0;
            if (++row < depth) return;
            row = 0;
            panel += nr;
          }
        };
        values = memory::Buffer<T>(static_cast<std::size_t>(points * size()));
        transform_filters(weight, size(), values.data(), [&](Index q) {
          const Index within = q % (depth * nr);
          return Walk{q / (depth * nr) * nr, within / nr, within % nr, depth, rows, s.c_in, transpose};
        });
        return;
      }
      {
        packed = true;
        // Positions in pack_a_whole's layout of op(U_ξ), with the filter each holds.
        struct Walk {
          kernels::detail::packed::PackedAWalk at;
          Index c_in, rows;
          bool transpose;
          Index filter() const {
            if (at.row() >= rows) return -1;
            return transpose ? at.column() * c_in + at.row() : at.row() * c_in + at.column();
          }
          void advance() { at.advance(); }
        };
        values = memory::Buffer<T>(static_cast<std::size_t>(points * size()));
        transform_filters(weight, size(), values.data(), [&](Index q) {
          return Walk{kernels::detail::packed::PackedAWalk(rows, depth, q), s.c_in, rows, transpose};
        });
        return;
      }
    }
#endif
    // U_ξ (C_out, C_in) row-major: position q holds filter q.
    struct Consecutive {
      Index f;
      Index filter() const { return f; }
      void advance() { ++f; }
    };
    values = memory::Buffer<T>(static_cast<std::size_t>(points * size()));
    transform_filters(weight, size(), values.data(), [](Index q) { return Consecutive{q}; });
  }
  /// Floats per point: op(U_ξ) is values[ξ·size(), (ξ + 1)·size()).
  Index size() const {
#if QX_PACKED_GEMM
    if (packed) return kernels::detail::packed::packed_a_size(rows, depth);
    if (b_panels) return kernels::detail::whole_panels(rows) * depth;
#endif
    return rows * depth;
  }
  std::size_t bytes() const { return values.size() * sizeof(T); }
};

/// The transformed filters of `weight` for s: kept from call to call when the calling thread's
/// ConstantWeights registry holds `weight` as constant (nn::WeightCache's folded weights), else made here.
template <class T>
std::shared_ptr<const TransformedFilters<T>> transformed_filters(const Conv2dShape& s, const T* weight, bool transpose) {
  auto make = [&] { return std::make_shared<const TransformedFilters<T>>(s, weight, transpose); };
  const Derived kind = transpose ? Derived::winograd_filters_transposed : Derived::winograd_filters;
  if (ConstantWeights* constant = ConstantWeights::active())
    if (auto kept = constant->derived<TransformedFilters<T>>(weight, s, kind, make)) return kept;
  return make();
}

/// Runs body(first_image, images, ld, scratch, thread) over blocks of images (kernels/conv2d.hpp's
/// blocking, handed to threads in `order`), scratch holding 36·(C_in + C_out) rows of ld = images·tiles
/// columns, those of the first operand rounded up to whole 64-column panels.
template <class T, class Body>
void for_each_tile_block(const Conv2dShape& s, const Tiling& tiling, kernels::detail::BlockOrder order, Body&& body) {
  const Index per_image = points * (s.c_in + s.c_out) * tiling.per_image(), block = images_per_tile_block(s, tiling);
  // Room for the transformed operand's columns rounded up to whole 64-column panels (in_panels: float
  // with the packed GEMM only). The same for the three passes, so the cache hands each the previous
  // one's block.
  Index rounding = 0;
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>)
    rounding = kernels::detail::panel_rounding(points * std::max(s.c_in, s.c_out), block);
#endif
  kernels::detail::for_each_block<T>(
      s.n, block, per_image + rounding,
      [&](Index first, Index images, T* scratch, int thread) {
        body(first, images, images * tiling.per_image(), scratch, thread);
      },
      order);
}

/// Whether multiply_points takes its in_ξ in the GEMM's panels (transform_windows' `panels`): when the
/// filters are packed as A (float with the packed GEMM, enough tiles), so that no product packs its B.
/// Packing each point's B was 3.7 % of resnet18's five maps at batch 16.
template <class T>
bool in_panels(const TransformedFilters<T>& u) {
#if QX_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) return u.packed;
#endif
  (void)u;
  return false;
}

/// Columns one row of multiply_points' in spans: ld, or ld rounded up to whole panels (in_panels).
template <class T>
Index in_columns(const TransformedFilters<T>& u, Index ld) {
  return in_panels(u) ? kernels::detail::whole_panels(ld) : ld;
}

/// out_ξ (rows, ld) = op(U_ξ) · in_ξ (depth, ld) for the 36 points: U_ξ (C_out, C_in) itself (forward:
/// rows = C_out) or transposed (backward_input: rows = C_in). in is laid out as in_panels(u) says. The
/// GEMMs run on the threads side by side.
template <class T>
void multiply_points(const TransformedFilters<T>& u, const T* in, T* out, Index ld) {
  const Index rows = u.rows, depth = u.depth;
  parallel_for(0, points, [&](Index xi) {
    const T* u_xi = u.values.data() + xi * u.size();
#if QX_PACKED_GEMM
    if constexpr (std::is_same_v<T, float>) {
      if (in_panels(u)) {  // op(U_ξ) packed as A, in_ξ in panels
        gemm_b_panels(PackedA{u_xi, rows, depth}, ld, 1.0f, in + xi * depth * in_columns(u, ld), 0.0f, out + xi * rows * ld, ld);
        return;
      }
      if (u.b_panels) {  // out_ξᵀ (ld × rows) = in_ξᵀ · op(U_ξ)ᵀ into the thread's scratch, then transposed
        float* product = kernels::detail::packed::c_buffer().get(ld * rows);
        kernels::detail::packed::gemm_b_panels(true, ld, rows, depth, 1.0f, in + xi * depth * ld, ld, u_xi, 0.0f, product,
                                               rows);
        kernels::detail::packed::transpose(product, ld, rows, out + xi * rows * ld, ld);
        return;
      }
    }
#endif
    gemm(u.transposed, false, rows, ld, depth, T(1), u_xi, u.transposed ? rows : depth, in + xi * depth * ld, ld, T(0),
         out + xi * rows * ld, ld);
  }, rows * depth * ld);
}

/// tile[ξ][lane] ← element (ξ, row, first + lane) of a (36, rows, ld) matrix, zero for lanes ≥ count.
template <class T>
void load_lanes(const T* matrix, Index rows, Index row, Index ld, Index first, Index count, LaneVector<T>* tile) {
  for (int xi = 0; xi < points; ++xi) load_first_lanes(matrix + (xi * rows + row) * ld + first, count, tile[xi]);
}
}  // namespace detail

/// y (N, C_out, H_out, W_out) = stage(conv(x, weight) + bias (nullable)), for a 3×3 stride-1 convolution.
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* weight, const T* bias, T* y, const ConvOutputStage<T>& stage = {}) {
  const Tiling tiling(s);
  const auto filters = detail::transformed_filters(s, weight, false);
  const detail::TransformedFilters<T>& u = *filters;
  constexpr auto any_thread = kernels::detail::BlockOrder::any_thread;  // each block writes its own images
  detail::for_each_tile_block<T>(s, tiling, any_thread, [&](Index first, Index images, Index ld, T* scratch, int) {
    T* v = scratch;  // V (36, C_in, ld), or each V_ξ in panels of whole_panels(ld) columns (in_panels)
    T* mm = scratch + points * s.c_in * detail::in_columns(u, ld);  // (36, C_out, ld)
    detail::transform_inputs(s, tiling, x + first * s.c_in * s.h * s.w, images, v, ld, detail::in_panels(u));
    detail::multiply_points(u, v, mm, ld);
    // Y = Aᵀ M A per tile, plus the bias, written where the tile lies inside the output.
    parallel_for(0, s.c_out, [&](Index o) {
      LaneVector<T> tile[points], out[m * m];
      const T add = bias ? bias[o] : T(0);
      detail::for_each_lane_group(ld, [&](Index first_column, Index count) {
        detail::load_lanes(mm, s.c_out, o, ld, first_column, count, tile);
        sandwich<m, t, at>(tile, out);
        for (int e = 0; e < m * m; ++e) out[e] += add;
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>)
          if (detail::tiles_by_rows(tiling.tiles_w)) {
            T* block_output = y + first * s.c_out * tiling.out_h * tiling.out_w;
            detail::store_tiles(tiling, out, s.c_out, o, first_column, count, block_output, y, stage);
            return;
          }
#endif
        // With AVX-512 in float, one register transpose puts each tile's 16 outputs side by side, and a
        // whole tile row is then one 4-float store (not four scalars read out of four vectors).
        [[maybe_unused]] alignas(64) T by_tile[lanes][m * m];
#if defined(__AVX512F__)
        constexpr bool vector_rows = std::is_same_v<T, float>;
        if constexpr (vector_rows) kernels::detail::packed::transpose_16x16(reinterpret_cast<const float*>(out), lanes, by_tile[0], m * m);
#else
        constexpr bool vector_rows = false;
#endif
        auto where = tiling.locate(first_column);
        for (Index lane = 0; lane < count; ++lane, tiling.advance(where)) {
          T* plane = y + ((first + where.image) * s.c_out + o) * tiling.out_h * tiling.out_w;
          const int rows = static_cast<int>(std::min<Index>(m, tiling.out_h - where.ty * m));
          const int cols = static_cast<int>(std::min<Index>(m, tiling.out_w - where.tx * m));
          for (int i = 0; i < rows; ++i) {
            T* to = plane + (where.ty * m + i) * tiling.out_w + where.tx * m;
#if defined(__AVX512F__)
            if constexpr (vector_rows)
              if (cols == m) {
                __m128 row = _mm_loadu_ps(by_tile[lane] + i * m);
                if (stage.residual) row = _mm_add_ps(row, _mm_loadu_ps(stage.residual + (to - y)));
                if (stage.relu) row = _mm_max_ps(_mm_setzero_ps(), row);  // a NaN passes, as Relu lets it
                _mm_storeu_ps(to, row);
                continue;
              }
#endif
            for (int j = 0; j < cols; ++j) {
              const T biased = vector_rows ? by_tile[lane][i * m + j] : out[i * m + j][lane];
              to[j] = stage.active() ? stage(biased, &to[j] - y) : biased;
            }
          }
        }
      });
    }, ld * points * m * 2);
  });
}

/// grad_x (N, C_in, H, W) = the adjoint of the convolution applied to grad_y; assigned.
template <class T>
void conv2d_backward_input(const Conv2dShape& s, const T* grad_y, const T* weight, T* grad_x) {
  const Tiling tiling(s);
  const auto filters = detail::transformed_filters(s, weight, true);
  const detail::TransformedFilters<T>& u = *filters;
  constexpr auto any_thread = kernels::detail::BlockOrder::any_thread;  // each block writes its own images
  detail::for_each_tile_block<T>(s, tiling, any_thread, [&](Index first, Index images, Index ld, T* scratch, int) {
    T* dm = scratch;  // ∂M (36, C_out, ld), or each ∂M_ξ in panels of whole_panels(ld) columns (in_panels)
    T* dv = scratch + points * s.c_out * detail::in_columns(u, ld);  // (36, C_in, ld)
    detail::transform_output_grads(s, tiling, grad_y + first * s.c_out * tiling.out_h * tiling.out_w, images, dm, ld,
                                   detail::in_panels(u));
    detail::multiply_points(u, dm, dv, ld);
    // ∂d = B ∂V Bᵀ per tile, added into the 6×6 window the tile read (windows overlap by 2), channel by
    // channel: each channel writes only its own planes.
    parallel_for(0, s.c_in, [&](Index c) {
      LaneVector<T> tile[points], dd[points];
      for (Index n = 0; n < images; ++n) std::fill_n(grad_x + ((first + n) * s.c_in + c) * s.h * s.w, s.h * s.w, T(0));
      detail::for_each_lane_group(ld, [&](Index first_column, Index count) {
        detail::load_lanes(dv, s.c_in, c, ld, first_column, count, tile);
        sandwich<t, t, b>(tile, dd);
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>)
          if (detail::tiles_by_rows(tiling.tiles_w)) {
            detail::scatter_add_windows(tiling, dd, s.c_in, c, s.h, s.w, s.pad_h, s.pad_w, first_column, count,
                                        grad_x + first * s.c_in * s.h * s.w);
            return;
          }
#endif
        auto where = tiling.locate(first_column);
        for (Index lane = 0; lane < count; ++lane, tiling.advance(where)) {
          T* plane = grad_x + ((first + where.image) * s.c_in + c) * s.h * s.w;
          const Index row0 = where.ty * m - s.pad_h, col0 = where.tx * m - s.pad_w;
          if (row0 >= 0 && col0 >= 0 && row0 + t <= s.h && col0 + t <= s.w) {  // inside: no bounds tests
            T* dst = plane + row0 * s.w + col0;
            for (int i = 0; i < t; ++i)
              for (int j = 0; j < t; ++j) dst[i * s.w + j] += dd[i * t + j][lane];
            continue;
          }
          for (int i = 0; i < t; ++i) {
            const Index row = row0 + i;
            if (row < 0 || row >= s.h) continue;
            for (int j = 0; j < t; ++j) {
              const Index col = col0 + j;
              if (col >= 0 && col < s.w) plane[row * s.w + col] += dd[i * t + j][lane];
            }
          }
        }
      });
    }, ld * points * t * 2);
  });
}

/// grad_weight (C_out, C_in, 3, 3) = Σ over tiles, back-transformed; grad_bias (nullable) = Σ g; assigned.
template <class T>
void conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* grad_y, T* grad_weight, T* grad_bias) {
  const Tiling tiling(s);
  const Index filters = s.c_out * s.c_in;
  kernels::detail::PerThreadSums<T> partial(points * filters);  // ∂U (36, C_out, C_in) per thread
  constexpr auto fixed = kernels::detail::BlockOrder::fixed;  // per-thread sums: the same blocks per thread
  detail::for_each_tile_block<T>(s, tiling, fixed, [&](Index first, Index images, Index ld, T* scratch, int thread) {
    T* v = scratch;                          // (36, C_in, ld)
    T* dm = scratch + points * s.c_in * ld;  // (36, C_out, ld)
    detail::transform_inputs(s, tiling, x + first * s.c_in * s.h * s.w, images, v, ld);
    detail::transform_output_grads(s, tiling, grad_y + first * s.c_out * tiling.out_h * tiling.out_w, images, dm, ld);
    const auto du = partial.begin(thread);
    parallel_for(0, points, [&](Index xi) {
      gemm(false, true, s.c_out, s.c_in, ld, T(1), dm + xi * s.c_out * ld, ld, v + xi * s.c_in * ld, ld,
           du.first ? T(0) : T(1), du.data + xi * filters, s.c_in);
    }, s.c_out * s.c_in * ld);
  });
  const T* du_total = partial.finish();
  // ∂g = Gᵀ ∂U G per filter.
  parallel_for(0, (filters + lanes - 1) / lanes, [&](Index group) {
    LaneVector<T> du[points], out[r * r];
    const Index first = group * lanes, count = std::min<Index>(lanes, filters - first);
    for (int xi = 0; xi < points; ++xi) load_first_lanes(du_total + xi * filters + first, count, du[xi]);
    sandwich<r, t, gt>(du, out);
    for (Index f = 0; f < count; ++f)
      for (int e = 0; e < r * r; ++e) grad_weight[(first + f) * r * r + e] = out[e][f];
  }, lanes * points * r * t);
  if (grad_bias) conv2d_backward_bias(s, grad_y, grad_bias);
}

}  // namespace winograd

}  // namespace kernels
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_KERNELS_WINOGRAD(instance, T) \
  instance void winograd::conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*, const ConvOutputStage<T>&); \
  instance void winograd::conv2d_backward_input<T>(const Conv2dShape&, const T*, const T*, T*); \
  instance void winograd::conv2d_backward_weight<T>(const Conv2dShape&, const T*, const T*, T*, T*);
QX_DECLARE_INSTANCES(kernels, QX_INSTANCES_KERNELS_WINOGRAD)
#undef QX_INSTANCES_KERNELS_WINOGRAD
