// A convolution's forward pass and weight gradient with the image as the broadcast operand (float, AVX2 +
// FMA or AVX-512): register tiles of 6 taps (or 6 positions) × 16 output channels (AVX2: 12 ymm
// accumulators) or × 64 (AVX-512: 24 zmm), no column matrix made.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "qx/config.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/conv2d_shape.hpp"
#include "qx/kernels/gemm_packed.hpp"

/// 1 when the tap tiles are compiled: float with AVX2 + FMA, or AVX-512 (where the packed GEMM is).
#define QX_TAP_TILES QX_PACKED_GEMM

#if QX_TAP_TILES
#include <immintrin.h>

QX_NAMESPACE_BEGIN
namespace kernels::detail {

/// at[d] = b·image + i·row_step + v·column_step for the d-th point (b, i, v) of `images` grids of rows ×
/// columns, in that order, and past the last point (count beyond images·rows·columns) the last one again: a
/// last tile's extra positions read real addresses and their sums are dropped.
inline void grid_offsets(Index images, Index image, Index rows, Index columns, Index row_step, Index column_step,
                         Index count, std::int32_t* at) {
  Index d = 0;
  for (Index b = 0; b < images; ++b)
    for (Index i = 0; i < rows; ++i)
      for (Index v = 0; v < columns; ++v) at[d++] = static_cast<std::int32_t>(b * image + i * row_step + v * column_step);
  for (const Index last = d - 1; d < count; ++d) at[d] = at[last];
}

/**
 * The layout of a block of images for tap tiles. The weight gradient is
 *   ∂Wᵀ[k][o] = Σ_d x̄[tap(k) + at(d)] · g[o][d]        k = (c, p, q), d = (b, i, v) a position of the block,
 * where x̄ is the block's images with the zero border the taps read (each channel a plane of hp × wp),
 * tap(k) = c·hp·wp + p·wp + q and at(d) = b·C_in·hp·wp + i·stride_h·wp + v·stride_w. A tile holds 6 taps ×
 * `lanes` channels in registers (AVX2: 16 in 12 ymm; AVX-512: 64 in 24 zmm, the packed GEMM's 6 × 64);
 * per position it loads `lanes` floats of gᵀ (two or four vectors) and broadcasts 6 floats of x̄ — the
 * image is read where it is, as the GEMM's broadcast operand, instead of being copied into colᵀ (K ×
 * positions) and packed: with ColumnMaker that making and packing was a fifth of a strided layer's weight
 * gradient (docs/kernels.md, "Tap tiles"). The forward pass is the same sum over k instead
 * of d, y[o][d] = Σ_k W[o][k] · x̄[tap(k) + at(d)]: a tile of 6 positions × `lanes` channels, W as the
 * vector operand and x̄ broadcast.
 */
struct TapTiles {
#if defined(__AVX512F__)
  static constexpr Index taps = 6, lanes = 64;
#else
  static constexpr Index taps = 6, lanes = 16;
#endif
  // Output channels per pass of the weight gradient over the taps: their gᵀ, 256 KiB at depth 512, stays in L2.
  static constexpr Index group = 128;
  Index hp, wp, plane, image, k, k_padded, c_padded;
  explicit TapTiles(const Conv2dShape& s)
      : hp((s.out_h() - 1) * s.stride_h + s.kh),
        wp((s.out_w() - 1) * s.stride_w + s.kw),
        plane(hp * wp),
        image(s.c_in * plane),
        k(s.patch()),
        k_padded((k + taps - 1) / taps * taps),
        c_padded((s.c_out + lanes - 1) / lanes * lanes) {}
  /// Floats of a weight-gradient block's scratch per image: x̄, gᵀ, the positions' offsets, room to align gᵀ.
  Index weight_scratch_per_image(const Conv2dShape& s) const { return image + (c_padded + 1) * s.positions() + lanes; }
  /// Floats of a forward block's scratch per image: x̄, yᵀ (positions × c_padded, up to a whole position
  /// tile more), the positions' and taps' offsets.
  Index forward_scratch_per_image(const Conv2dShape& s) const {
    return image + (c_padded + 1) * (s.positions() + taps) + k;
  }
  /// Whether a block of `images` images is addressed by the tiles' 32-bit offsets (the passes take tap
  /// tiles only where it is).
  bool offsets_fit(Index images) const { return images * image <= std::numeric_limits<std::int32_t>::max(); }
  /// at(d) for the first `count` positions of a block of `images` images (past its depth, the last one again:
  /// the forward pass's last tile of positions reads real windows and drops their sums).
  void position_offsets(const Conv2dShape& s, Index images, Index count, std::int32_t* at) const {
    grid_offsets(images, image, s.out_h(), s.out_w(), s.stride_h * wp, s.stride_w, count, at);
  }
  /// tap(k) for the k-th row of ∂Wᵀ.
  Index tap(const Conv2dShape& s, Index row) const {
    return row / (s.kh * s.kw) * plane + row / s.kw % s.kh * wp + row % s.kw;
  }
};

/// out (planes of hp × wp) ← x (planes of h × w) placed `top` rows down and `left` columns across, zeros
/// around it (rows and columns of x past the planes are left out).
inline void pad_planes(const float* x, Index planes, Index h, Index w, Index top, Index left, Index hp, Index wp,
                       float* out) {
  const Index copied = std::clamp<Index>(wp - left, 0, w);
  for (Index plane = 0; plane < planes; ++plane) {
    const float* from = x + plane * h * w;
    float* to = out + plane * hp * wp;
    for (Index r = 0; r < hp; ++r, to += wp) {
      const Index row = r - top;
      if (row < 0 || row >= h) {
        std::fill(to, to + wp, 0.0f);
        continue;
      }
      std::fill(to, to + left, 0.0f);
      std::copy_n(from + row * w, copied, to + left);
      std::fill(to + left + copied, to + wp, 0.0f);
    }
  }
}

/// x̄ (images × C_in planes of hp × wp) ← x with zeros where a tap reads outside it (rows and columns
/// past x's that no tap reads are left out).
inline void pad_images(const Conv2dShape& s, const TapTiles& l, const float* x, Index images, float* out) {
  pad_planes(x, images * s.c_in, s.h, s.w, s.pad_h, s.pad_w, l.hp, l.wp, out);
}

/// Rows of a matrix as strips of L = TapTiles::lanes: strips[Lσ·depth + Lj + ℓ] = from[(Lσ + ℓ)·ld + j] for
/// j < columns, zero for rows past `rows` (σ < c_padded/L) — ∂y's channels or W's output channels as the
/// vector operand of a tile (packed::transpose per strip).
inline void transpose_into_strips(const float* from, Index rows, Index columns, Index ld, Index c_padded, float* strips,
                                  Index depth) {
  for (Index o0 = 0; o0 < c_padded; o0 += TapTiles::lanes) {
    float* strip = strips + o0 * depth;
    const Index filled = std::clamp<Index>(rows - o0, 0, TapTiles::lanes);
    if (filled < TapTiles::lanes)
      for (Index j = 0; j < columns; ++j)
        std::fill(strip + j * TapTiles::lanes + filled, strip + (j + 1) * TapTiles::lanes, 0.0f);
    if (filled > 0) packed::transpose(from + o0 * ld, ld, filled, columns, strip, TapTiles::lanes);
  }
}

/// gᵀ, the block's ∂y (images × (C_out, P)) as strips over the block's depth images·P.
inline void transpose_gradients(const Conv2dShape& s, const TapTiles& l, const float* g, Index images, float* gt) {
  const Index p = s.positions();
  for (Index b = 0; b < images; ++b)
    transpose_into_strips(g + b * s.c_out * p, s.c_out, p, p, l.c_padded, gt + b * p * TapTiles::lanes, images * p);
}

/// The tile both passes share: out[r·ld + ℓ] (+)= Σ_{j < steps} x̄[rows[r] + step[j]] · strip[L·j + ℓ] for
/// r < 6, ℓ < L = TapTiles::lanes (strip aligned to L floats' vector) — six taps over positions in the weight
/// gradient (rows = taps, step = positions' offsets), six positions over taps in the forward pass (the other
/// way round).
/// Not inlined: inside its caller GCC kept the six row pointers on the stack and reloaded them every step
/// (about 38 instructions a step instead of 26; the weight gradient ran 5 % slower than made columns).
#if defined(__AVX512F__)
[[gnu::noinline]] inline void tap_tile(const float* image, const std::int32_t* rows, const std::int32_t* step,
                                       Index steps, const float* strip, float* out, Index ld, bool add) {
  const float* x[TapTiles::taps];
  for (int r = 0; r < TapTiles::taps; ++r) x[r] = image + rows[r];
  __m512 c[TapTiles::taps][4];
  for (auto& row : c)
    for (auto& v : row) v = _mm512_setzero_ps();
  for (Index j = 0; j < steps; ++j, strip += TapTiles::lanes) {
    const __m512 s0 = _mm512_load_ps(strip), s1 = _mm512_load_ps(strip + 16), s2 = _mm512_load_ps(strip + 32),
                 s3 = _mm512_load_ps(strip + 48);
    const Index i = step[j];
#pragma GCC unroll 6
    for (int r = 0; r < TapTiles::taps; ++r) {
      const __m512 v = _mm512_set1_ps(x[r][i]);
      c[r][0] = _mm512_fmadd_ps(v, s0, c[r][0]), c[r][1] = _mm512_fmadd_ps(v, s1, c[r][1]);
      c[r][2] = _mm512_fmadd_ps(v, s2, c[r][2]), c[r][3] = _mm512_fmadd_ps(v, s3, c[r][3]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < TapTiles::taps; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      float* to = out + r * ld + 16 * q;
      _mm512_storeu_ps(to, add ? _mm512_add_ps(c[r][q], _mm512_loadu_ps(to)) : c[r][q]);
    }
}
#else
[[gnu::noinline]] inline void tap_tile(const float* image, const std::int32_t* rows, const std::int32_t* step,
                                       Index steps, const float* strip, float* out, Index ld, bool add) {
  const float *x0 = image + rows[0], *x1 = image + rows[1], *x2 = image + rows[2], *x3 = image + rows[3],
              *x4 = image + rows[4], *x5 = image + rows[5];
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (Index j = 0; j < steps; ++j, strip += TapTiles::lanes) {
    const __m256 s0 = _mm256_load_ps(strip), s1 = _mm256_load_ps(strip + 8);
    const Index i = step[j];
    __m256 v = _mm256_broadcast_ss(x0 + i);
    c00 = _mm256_fmadd_ps(v, s0, c00), c01 = _mm256_fmadd_ps(v, s1, c01);
    v = _mm256_broadcast_ss(x1 + i);
    c10 = _mm256_fmadd_ps(v, s0, c10), c11 = _mm256_fmadd_ps(v, s1, c11);
    v = _mm256_broadcast_ss(x2 + i);
    c20 = _mm256_fmadd_ps(v, s0, c20), c21 = _mm256_fmadd_ps(v, s1, c21);
    v = _mm256_broadcast_ss(x3 + i);
    c30 = _mm256_fmadd_ps(v, s0, c30), c31 = _mm256_fmadd_ps(v, s1, c31);
    v = _mm256_broadcast_ss(x4 + i);
    c40 = _mm256_fmadd_ps(v, s0, c40), c41 = _mm256_fmadd_ps(v, s1, c41);
    v = _mm256_broadcast_ss(x5 + i);
    c50 = _mm256_fmadd_ps(v, s0, c50), c51 = _mm256_fmadd_ps(v, s1, c51);
  }
  const auto put = [add](float* to, __m256 low, __m256 high) {
    if (add) low = _mm256_add_ps(low, _mm256_loadu_ps(to)), high = _mm256_add_ps(high, _mm256_loadu_ps(to + 8));
    _mm256_storeu_ps(to, low), _mm256_storeu_ps(to + 8, high);
  };
  put(out, c00, c01), put(out + ld, c10, c11), put(out + 2 * ld, c20, c21), put(out + 3 * ld, c30, c31);
  put(out + 4 * ld, c40, c41), put(out + 5 * ld, c50, c51);
}
#endif

/// out (+)= the tiles over taps, row d of out (`rounded` rows, leading dimension c_padded) holding position
/// d's channels: Σ_j x̄[at[d] + tap[j]] · strips[σ·L·k + L·j + ℓ] for the k taps, in chunks of `chunk` taps
/// (each chunk adding), tiles of 6 positions, strips σ of L = TapTiles::lanes channels — the forward pass
/// and each phase of the input gradient.
inline void tiles_over_taps(const float* image, const std::int32_t* at, Index rounded, const std::int32_t* tap, Index k,
                            Index chunk, const float* strips, Index c_padded, float* out) {
  for (Index k0 = 0; k0 < k; k0 += chunk)
    for (Index d0 = 0; d0 < rounded; d0 += TapTiles::taps)
      for (Index c0 = 0; c0 < c_padded; c0 += TapTiles::lanes)
        tap_tile(image, at + d0, tap + k0, std::min(chunk, k - k0), strips + c0 * k + k0 * TapTiles::lanes,
                 out + d0 * c_padded + c0, c_padded, k0 > 0);
}

/// ∂Wᵀ (k_padded × c_padded, row-major) (+)= one block's share: x the block's `images` images, g their
/// ∂y, `add` false to assign. Rows past K are computed from the last tap and dropped by untranspose.
inline void weight_gradient_tap_tiles(const Conv2dShape& s, const TapTiles& l, const float* x, const float* g,
                                      Index images, float* scratch, float* wt, bool add) {
  const Index depth = images * s.positions();
  float* padded = scratch;
  float* gt = padded + images * l.image;
  gt += (64 - reinterpret_cast<std::uintptr_t>(gt) % 64) % 64 / sizeof(float);
  auto* at = reinterpret_cast<std::int32_t*>(gt + l.c_padded * depth);
  pad_images(s, l, x, images, padded);
  transpose_gradients(s, l, g, images, gt);
  l.position_offsets(s, images, depth, at);
  std::int32_t tap[TapTiles::taps];
  // Channel groups outermost: one group's gᵀ is read once per 6 taps, and stays in L2 (all of a 256-channel
  // layer's did not: resnet18's 128 → 256 layer on 16² ran 7 % slower than with ColumnMaker, 7 % faster
  // in groups).
  for (Index g0 = 0; g0 < l.c_padded; g0 += TapTiles::group)
    for (Index k0 = 0; k0 < l.k_padded; k0 += TapTiles::taps) {
      for (Index t = 0; t < TapTiles::taps; ++t)
        tap[t] = static_cast<std::int32_t>(l.tap(s, std::min(k0 + t, l.k - 1)));
      for (Index o0 = g0; o0 < std::min(l.c_padded, g0 + TapTiles::group); o0 += TapTiles::lanes)
        tap_tile(padded, tap, at, depth, gt + o0 * depth, wt + k0 * l.c_padded + o0, l.c_padded, add);
    }
}

/// y (images × (C_out, P), NCHW) = W ⋆ x over one block by tap tiles: x the block's images, wt W (C_out × K)
/// as strips of TapTiles::lanes output channels (transpose_into_strips, K deep). yᵀ (positions × c_padded)
/// is summed chunk of taps by chunk, then turned into NCHW (packed::transpose).
inline void forward_tap_tiles(const Conv2dShape& s, const TapTiles& l, const float* x, Index images, const float* wt,
                              float* scratch, float* y) {
  const Index p = s.positions(), depth = images * p, k = l.k;
  const Index rounded = (depth + TapTiles::taps - 1) / TapTiles::taps * TapTiles::taps;
  float* padded = scratch;
  float* transposed = padded + images * l.image;  // yᵀ: row d holds position d's c_padded channels
  auto* at = reinterpret_cast<std::int32_t*>(transposed + rounded * l.c_padded);
  std::int32_t* tap = at + rounded;
  pad_images(s, l, x, images, padded);
  l.position_offsets(s, images, rounded, at);
  for (Index row = 0; row < k; ++row) tap[row] = static_cast<std::int32_t>(l.tap(s, row));
  // The taps of 16 input channels at a time: their windows of x̄ for a position tile (16 × kH rows) stay in
  // L1 while the strips of W pass, each tile adding into yᵀ. Over all of K at once the windows were
  // evicted by W's stream and the tile waited on L2 (resnet18's stride-2 layer on 32² ran 4 % slower than
  // with made columns; in 16 channels 3–4 % faster, in 8 level with 16, in 32 between).
  tiles_over_taps(padded, at, rounded, tap, k, 16 * s.kh * s.kw, wt, l.c_padded, transposed);
  for (Index b = 0; b < images; ++b)
    packed::transpose(transposed + b * p * l.c_padded, l.c_padded, p, s.c_out, y + b * s.c_out * p, p);
}

/// w (C_out × K) ← the first K rows and C_out columns of wt (k_padded × c_padded), transposed
/// (packed::transpose), in parallel over blocks of 8 rows of w.
inline void untranspose_weights(const Conv2dShape& s, const TapTiles& l, const float* wt, float* w) {
  parallel_for(
      0, (s.c_out + 7) / 8,
      [&](Index block) {
        const Index o0 = block * 8;
        packed::transpose(wt + o0, l.c_padded, l.k, std::min<Index>(8, s.c_out - o0), w + o0 * l.k, l.k);
      },
      8 * l.k);
}

/**
 * The input gradient by tap tiles, one phase of the stride at a time. Input row y is read only by the taps
 * p = ry + stride_h·m with ry = (y + pad_h) mod stride_h, through output row y' − m where y = stride_h·y' +
 * ry − pad_h; the same across. So on the phase (ry, rx) of ∂x
 *   ∂x[c][stride_h·y' + ry − pad_h][stride_w·x' + rx − pad_w] = Σ_{o,m,n} Wᵀ_φ[c][(o, m, n)] · ∂y[o][y' − m][x' − n]
 * with Wᵀ_φ[c][(o, m, n)] = W[o][c][ry + stride_h·m][rx + stride_w·n]: a stride-1 forward pass over ∂y
 * with the phase's taps, which the forward pass's tile computes — ∂ȳ (∂y behind a zero border) broadcast,
 * strips of Wᵀ_φ over input channels as the vector operand. The phases partition ∂x: every element is
 * written once, by a transpose and a strided copy, where col2im would scatter K sums into it.
 */
struct PhaseTiles {
  /// Phase r of one axis: taps r + stride·m for m < taps; its outputs y' in [lo, lo + count).
  struct Axis {
    Index r, taps, lo, count;
  };
  struct Phase {
    Axis down, across;
    Index k;       // its taps: C_out · down.taps · across.taps
    Index strips;  // where its strips of Wᵀ_φ start (c_padded · k floats)
    Index planes;  // where its part of an image's phase planes starts (C_in · positions floats)
  };
  Index top = 0, left = 0, hp = 0, wp = 0, plane = 0, image = 0, c_padded, most_positions = 0, most_k = 0, strip_floats = 0;
  std::vector<Phase> phases;

  static std::vector<Axis> axes(Index size, Index k, Index stride, Index pad) {
    std::vector<Axis> out;
    for (Index r = 0; r < stride; ++r) {
      const Index lo = pad >= r ? (pad - r + stride - 1) / stride : 0, last = size - 1 + pad - r;
      const Index count = last < 0 ? 0 : std::max<Index>(0, last / stride - lo + 1);
      out.push_back({r, r < k ? (k - r + stride - 1) / stride : 0, lo, count});
    }
    return out;
  }
  explicit PhaseTiles(const Conv2dShape& s)
      : c_padded((s.c_in + TapTiles::lanes - 1) / TapTiles::lanes * TapTiles::lanes) {
    Index bottom = 0, right = 0, plane_floats = 0;
    const auto downs = axes(s.h, s.kh, s.stride_h, s.pad_h), acrosses = axes(s.w, s.kw, s.stride_w, s.pad_w);
    for (const Axis& down : downs)
      for (const Axis& across : acrosses) {
        const Phase phase{down, across, s.c_out * down.taps * across.taps, strip_floats, plane_floats};
        phases.push_back(phase);
        strip_floats += c_padded * phase.k;
        plane_floats += s.c_in * down.count * across.count;
        most_positions = std::max(most_positions, down.count * across.count);
        most_k = std::max(most_k, phase.k);
        if (phase.k == 0 || down.count == 0 || across.count == 0) continue;
        // The border ∂ȳ needs: output rows lo − (taps − 1) to lo + count − 1, of which [0, out_h) are ∂y's.
        top = std::max(top, down.taps - 1 - down.lo), bottom = std::max(bottom, down.lo + down.count - s.out_h());
        left = std::max(left, across.taps - 1 - across.lo), right = std::max(right, across.lo + across.count - s.out_w());
      }
    hp = top + s.out_h() + bottom, wp = left + s.out_w() + right, plane = hp * wp, image = s.c_out * plane;
  }
  /// Floats of a block's scratch per image: ∂ȳ, ∂xᵀ of a phase (a whole tile of positions more), the
  /// image's phase planes (∂x phase by phase, C_in × H·W in all), the positions' and taps' offsets.
  Index scratch_per_image(const Conv2dShape& s) const {
    return image + (c_padded + 1) * (most_positions + TapTiles::taps) + s.c_in * s.h * s.w + most_k;
  }
  /// The phase of input row y and column x, and where in it (row, column): y + pad_h = stride_h·(lo + i) + r.
  const Phase& phase_of(const Conv2dShape& s, Index y, Index x, Index& i, Index& v) const {
    const Index ry = (y + s.pad_h) % s.stride_h, rx = (x + s.pad_w) % s.stride_w;
    const Phase& phase = phases[static_cast<std::size_t>(ry * s.stride_w + rx)];
    i = (y + s.pad_h - ry) / s.stride_h - phase.down.lo, v = (x + s.pad_w - rx) / s.stride_w - phase.across.lo;
    return phase;
  }
  bool offsets_fit(Index images) const { return images * image <= std::numeric_limits<std::int32_t>::max(); }
};

/// Every phase's strips of Wᵀ_φ (PhaseTiles::Phase::strips; strip σ of phase φ at strips + σ·L·k, entry
/// (o, m, n) at (o·taps_down + m)·taps_across + n, lanes past C_in zero), from W by way of Wᵀ per output
/// channel (kH·kW rows of c_padded input channels), in parallel over output channels.
inline void phase_strips(const Conv2dShape& s, const PhaseTiles& l, const float* weight, float* turned, float* strips) {
  constexpr Index lanes = TapTiles::lanes;
  const Index kk = s.kh * s.kw;
  parallel_for(
      0, s.c_out,
      [&](Index o) {
        float* wt = turned + o * kk * l.c_padded;  // wt[pq][c] = W[o][c][pq]
        for (Index pq = 0; pq < kk; ++pq) std::fill(wt + pq * l.c_padded + s.c_in, wt + (pq + 1) * l.c_padded, 0.0f);
        packed::transpose(weight + o * s.c_in * kk, kk, s.c_in, kk, wt, l.c_padded);
        for (const auto& phase : l.phases)
          for (Index m = 0; m < phase.down.taps; ++m)
            for (Index n = 0; n < phase.across.taps; ++n) {
              const Index j = (o * phase.down.taps + m) * phase.across.taps + n;
              const Index pq = (phase.down.r + s.stride_h * m) * s.kw + phase.across.r + s.stride_w * n;
              for (Index c0 = 0; c0 < l.c_padded; c0 += lanes)
                std::copy_n(wt + pq * l.c_padded + c0, lanes, strips + phase.strips + c0 * phase.k + j * lanes);
            }
      },
      kk * l.c_padded);
}

/// ∂x (images × (C_in, H, W)) ← the images' phase planes (image b's phase φ at planes + b·C_in·H·W +
/// φ.planes, C_in × its positions): ∂x[c][y][x] from the phase of (y, x) (PhaseTiles::phase_of), row by row.
/// A stride of 2 across alternates two phases along a row: a loop of pairs, which vectorises.
inline void weave_phases(const Conv2dShape& s, const PhaseTiles& l, const float* planes, Index images, float* grad_x) {
  const Index hw = s.h * s.w;
  for (Index plane = 0; plane < images * s.c_in; ++plane) {
    const float* image = planes + plane / s.c_in * s.c_in * hw;
    const Index c = plane % s.c_in;
    // Row r of channel c of a phase, from column v on.
    const auto row = [&](const PhaseTiles::Phase& phase, Index r, Index v) {
      return image + phase.planes + (c * phase.down.count + r) * phase.across.count + v;
    };
    for (Index y = 0; y < s.h; ++y) {
      float* out = grad_x + plane * hw + y * s.w;
      Index i, v, i1, v1;
      const auto& even = l.phase_of(s, y, 0, i, v);
      const float* a = row(even, i, v);
      if (s.stride_w == 2 && s.w > 1) {
        const auto& odd = l.phase_of(s, y, 1, i1, v1);
        const float* b = row(odd, i1, v1);
        for (Index x = 0; x < s.w / 2; ++x) out[2 * x] = a[x], out[2 * x + 1] = b[x];
        if (s.w % 2) out[s.w - 1] = a[s.w / 2];
        continue;
      }
      for (Index x = 0; x < s.w; ++x) {
        const auto& phase = l.phase_of(s, y, x, i, v);
        out[x] = *row(phase, i, v);
      }
    }
  }
}

/// ∂x (images × (C_in, H, W)) of one block by tap tiles, phase by phase: g the block's ∂y, strips from
/// phase_strips. Assigned. Each phase's ∂xᵀ is turned into the image's phase planes, which one pass then
/// weaves into ∂x's rows (written whole, once: stored straight from each phase, a row's elements a stride
/// apart, the writes were a third of the pass).
inline void input_gradient_tap_tiles(const Conv2dShape& s, const PhaseTiles& l, const float* g, Index images,
                                     const float* strips, float* scratch, float* grad_x) {
  constexpr Index taps = TapTiles::taps;
  const Index hw = s.h * s.w;
  float* padded = scratch;
  float* transposed = padded + images * l.image;  // ∂xᵀ of a phase: row d holds position d's c_padded channels
  float* planes = transposed + (images * l.most_positions + taps) * l.c_padded;  // images × C_in × H·W
  auto* at = reinterpret_cast<std::int32_t*>(planes + images * s.c_in * hw);
  std::int32_t* tap = at + images * l.most_positions + taps;
  pad_planes(g, images * s.c_out, s.out_h(), s.out_w(), l.top, l.left, l.hp, l.wp, padded);
  for (const auto& phase : l.phases) {
    const Index rows = phase.down.count, columns = phase.across.count, positions = rows * columns;
    if (positions == 0) continue;
    if (phase.k == 0) {  // no tap reads this phase (a kernel smaller than the stride)
      for (Index b = 0; b < images; ++b) std::fill_n(planes + b * s.c_in * hw + phase.planes, s.c_in * positions, 0.0f);
      continue;
    }
    const Index depth = images * positions, rounded = (depth + taps - 1) / taps * taps;
    grid_offsets(images, l.image, rows, columns, l.wp, 1, rounded, at);
    const Index area = phase.down.taps * phase.across.taps;
    for (Index j = 0; j < phase.k; ++j) {
      const Index o = j / area, m = j % area / phase.across.taps, n = j % phase.across.taps;
      tap[j] = static_cast<std::int32_t>(o * l.plane + (phase.down.lo - m + l.top) * l.wp + phase.across.lo - n + l.left);
    }
    // About 144 taps at a time (16 channels of a 3×3 kernel, the forward pass's chunks: the windows stay in
    // L1 while the strips pass), so a phase of one or two taps a channel still runs long tiles.
    tiles_over_taps(padded, at, rounded, tap, phase.k, std::max<Index>(16, 144 / area) * area, strips + phase.strips,
                    l.c_padded, transposed);
    for (Index b = 0; b < images; ++b)
      packed::transpose(transposed + b * positions * l.c_padded, l.c_padded, positions, s.c_in,
                        planes + b * s.c_in * hw + phase.planes, positions);
  }
  weave_phases(s, l, planes, images, grad_x);
}

}  // namespace kernels::detail
QX_NAMESPACE_END
#endif
