// A convolution's forward pass and weight gradient with the image as the broadcast operand (float, AVX2 +
// FMA): register tiles of 6 taps (or 6 positions) × 16 output channels, no column matrix made.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "qx/config.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/conv2d_shape.hpp"
#include "qx/kernels/gemm_packed.hpp"

#if QX_PACKED_AVX2
#include <immintrin.h>

QX_NAMESPACE_BEGIN
namespace kernels::detail {

/**
 * The layout of a block of images for tap tiles. The weight gradient is
 *   ∂Wᵀ[k][o] = Σ_d x̄[tap(k) + at(d)] · g[o][d]        k = (c, p, q), d = (b, i, v) a position of the block,
 * where x̄ is the block's images with the zero border the taps read (each channel a plane of hp × wp),
 * tap(k) = c·hp·wp + p·wp + q and at(d) = b·C_in·hp·wp + i·stride_h·wp + v·stride_w. A tile holds 6 taps ×
 * 16 channels in 12 ymm registers; per position it loads 16 floats of gᵀ (two vectors) and broadcasts 6
 * floats of x̄ — the image is read where it is, as the GEMM's broadcast operand, instead of being copied
 * into colᵀ (K × positions) and packed: with ColumnMaker that making and packing was a fifth of a strided
 * layer's weight gradient (docs/kernels.md, "Tap tiles"). The forward pass is the same sum over k instead
 * of d, y[o][d] = Σ_k W[o][k] · x̄[tap(k) + at(d)]: a tile of 6 positions × 16 channels, W as the vector
 * operand and x̄ broadcast.
 */
struct TapTiles {
  static constexpr Index taps = 6, lanes = 16;
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
    const Index p = s.positions(), depth = images * p, ow = s.out_w();
    for (Index d = 0; d < count; ++d) {
      const Index e = std::min(d, depth - 1), b = e / p, i = e % p / ow, v = e % ow;
      at[d] = static_cast<std::int32_t>(b * image + i * s.stride_h * wp + v * s.stride_w);
    }
  }
  /// tap(k) for the k-th row of ∂Wᵀ.
  Index tap(const Conv2dShape& s, Index row) const {
    return row / (s.kh * s.kw) * plane + row / s.kw % s.kh * wp + row % s.kw;
  }
};

/// x̄ (images × C_in planes of hp × wp) ← x with zeros where a tap reads outside it (rows and columns
/// past x's that no tap reads are left out).
inline void pad_images(const Conv2dShape& s, const TapTiles& l, const float* x, Index images, float* out) {
  const Index copied = std::min(s.w, l.wp - s.pad_w);
  for (Index plane = 0; plane < images * s.c_in; ++plane) {
    const float* from = x + plane * s.h * s.w;
    float* to = out + plane * l.plane;
    for (Index r = 0; r < l.hp; ++r, to += l.wp) {
      const Index row = r - s.pad_h;
      if (row < 0 || row >= s.h) {
        std::fill(to, to + l.wp, 0.0f);
        continue;
      }
      std::fill(to, to + s.pad_w, 0.0f);
      std::copy_n(from + row * s.w, copied, to + s.pad_w);
      std::fill(to + s.pad_w + copied, to + l.wp, 0.0f);
    }
  }
}

/// Rows of a matrix as strips of 16: strips[16σ·depth + 16j + ℓ] = from[(16σ + ℓ)·ld + j] for j < columns,
/// zero for rows past `rows` (σ < c_padded/16) — ∂y's channels or W's output channels as the vector operand
/// of a tile (packed::transpose per strip).
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

/// The tile both passes share: out[r·ld + ℓ] (+)= Σ_{j < steps} x̄[rows[r] + step[j]] · strip[16j + ℓ] for
/// r < 6, ℓ < 16 (strip 32-byte aligned) — six taps over positions in the weight gradient (rows = taps,
/// step = positions' offsets), six positions over taps in the forward pass (the other way round).
/// Not inlined: inside its caller GCC kept the six row pointers on the stack and reloaded them every step
/// (about 38 instructions a step instead of 26; the weight gradient ran 5 % slower than made columns).
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
/// as strips of 16 output channels (transpose_into_strips, K deep). yᵀ (positions × c_padded) is summed
/// chunk of taps by chunk, then turned into NCHW (packed::transpose).
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
  const Index chunk = 16 * s.kh * s.kw;
  for (Index k0 = 0; k0 < k; k0 += chunk)
    for (Index d0 = 0; d0 < rounded; d0 += TapTiles::taps)
      for (Index o0 = 0; o0 < l.c_padded; o0 += TapTiles::lanes)
        tap_tile(padded, at + d0, tap + k0, std::min(chunk, k - k0), wt + o0 * k + k0 * TapTiles::lanes,
                 transposed + d0 * l.c_padded + o0, l.c_padded, k0 > 0);
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

}  // namespace kernels::detail
QX_NAMESPACE_END
#endif
