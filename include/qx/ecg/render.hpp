// Renders an ECG window as a square image, from scratch, with an exactly known sample ↔ pixel map:
//   x(k) = (k + ½)·S/n          sample k of the n-sample window at the centre of its 1/n-wide time slot
//   y(v) = m + (v_max − v)·(S − 2m)/(v_max − v_min)   amplitude onto the height, margin m pixels
// (pixel (i, j) covers [j, j+1) × [i, i+1)). The trace is the polyline through (x(k), y(v_k)), drawn
// anti-aliased with thickness w: a pixel's ink is clamp(w/2 + ½ − d, 0, 1), d its centre's distance to
// the polyline; dark ink on a light background. The model's input is derived in one place:
// image_to_input (ink = 1, background = 0).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ecg {

struct RenderOptions {
  Index size = 224;          ///< S: the image is S × S
  Index channels = 1;        ///< 1 (grey) or 3 (the grey trace repeated, for 3-channel models)
  double line_width = 1.5;   ///< w, in pixels
  double margin = 4.0;       ///< m, pixels kept free above the highest and below the lowest sample
};

/// A pixel box [x0, x1) × [y0, y1), half-open, in image coordinates (x = column, y = row).
struct RoiBox {
  Index x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  Index area() const { return std::max<Index>(0, x1 - x0) * std::max<Index>(0, y1 - y0); }
  bool contains(Index x, Index y) const { return x >= x0 && x < x1 && y >= y0 && y < y1; }
};

/// The renderer's linear maps of one window; ROIs are computed with the same maps.
struct PixelMap {
  Index size = 0;
  long samples = 0;  ///< n
  double v_min = 0, v_max = 0, margin = 0, line_width = 0;
  double x(double k) const { return (k + 0.5) * static_cast<double>(size) / static_cast<double>(samples); }
  double y(double v) const {
    const double span = v_max - v_min;
    if (span <= 0) return static_cast<double>(size) / 2;
    return margin + (v_max - v) * (static_cast<double>(size) - 2 * margin) / span;
  }
};

/// Float model input from a rendered U8 pixel: ink 1, background 0. The one normalisation qx uses.
inline float image_to_input(std::uint8_t pixel) { return static_cast<float>(255 - pixel) / 255.0f; }

namespace detail {
/// Distance from point (px, py) to segment (ax, ay)–(bx, by).
inline double segment_distance(double px, double py, double ax, double ay, double bx, double by) {
  const double dx = bx - ax, dy = by - ay;
  const double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0;
  t = std::clamp(t, 0.0, 1.0);
  const double ex = ax + t * dx - px, ey = ay + t * dy - py;
  return std::sqrt(ex * ex + ey * ey);
}
}  // namespace detail

/**
 * Draws `n` samples into `image` (channels × S × S, U8) and returns the pixel map used.
 * `ink` is a caller-provided scratch of S·S floats (so batch rendering allocates nothing per image).
 */
inline PixelMap render_window(const float* samples, long n, const RenderOptions& options, std::uint8_t* image,
                              std::vector<float>& ink) {
  check(n >= 2, "ECG render: a window needs at least 2 samples, got ", n);
  check(options.size >= 8 && (options.channels == 1 || options.channels == 3) && options.line_width > 0 &&
            options.margin >= 0 && 2 * options.margin < static_cast<double>(options.size),
        "ECG render: invalid options (size ", options.size, ", channels ", options.channels, ", line width ",
        options.line_width, ", margin ", options.margin, ")");
  const Index s = options.size;
  PixelMap map{s, n, samples[0], samples[0], options.margin, options.line_width};
  for (long k = 1; k < n; ++k) {
    map.v_min = std::min(map.v_min, static_cast<double>(samples[k]));
    map.v_max = std::max(map.v_max, static_cast<double>(samples[k]));
  }
  ink.assign(static_cast<std::size_t>(s * s), 0.0f);
  const double reach = options.line_width / 2 + 0.5;  // beyond this distance a pixel gets no ink
  double ax = map.x(0), ay = map.y(samples[0]);
  for (long k = 1; k < n; ++k) {
    const double bx = map.x(static_cast<double>(k)), by = map.y(samples[k]);
    const Index c0 = std::max<Index>(0, static_cast<Index>(std::floor(std::min(ax, bx) - reach)));
    const Index c1 = std::min<Index>(s - 1, static_cast<Index>(std::floor(std::max(ax, bx) + reach)));
    const Index r0 = std::max<Index>(0, static_cast<Index>(std::floor(std::min(ay, by) - reach)));
    const Index r1 = std::min<Index>(s - 1, static_cast<Index>(std::floor(std::max(ay, by) + reach)));
    for (Index r = r0; r <= r1; ++r)
      for (Index c = c0; c <= c1; ++c) {
        const double d = detail::segment_distance(static_cast<double>(c) + 0.5, static_cast<double>(r) + 0.5, ax, ay, bx, by);
        const float cover = static_cast<float>(std::clamp(reach - d, 0.0, 1.0));
        float& p = ink[static_cast<std::size_t>(r * s + c)];
        p = std::max(p, cover);
      }
    ax = bx;
    ay = by;
  }
  for (Index ch = 0; ch < options.channels; ++ch)
    for (Index i = 0; i < s * s; ++i)
      image[ch * s * s + i] = static_cast<std::uint8_t>(std::lround(255.0 * (1.0 - ink[static_cast<std::size_t>(i)])));
  return map;
}

/**
 * The ROI of the samples [begin, end) of the window (window coordinates): horizontally their time
 * slots [begin·S/n, end·S/n) rounded outwards; vertically the extent of the drawn trace over those
 * samples, line width and anti-aliasing included; clipped to the image.
 */
inline RoiBox roi_of_span(const PixelMap& map, const float* samples, long begin, long end) {
  check(0 <= begin && begin < end && end <= map.samples, "ECG ROI: span [", begin, ", ", end,
        ") is not inside the window's ", map.samples, " samples");
  const double scale = static_cast<double>(map.size) / static_cast<double>(map.samples);
  double y_lo = map.y(samples[begin]), y_hi = y_lo;
  for (long k = begin; k < end; ++k) {
    const double y = map.y(samples[k]);
    y_lo = std::min(y_lo, y);
    y_hi = std::max(y_hi, y);
  }
  const double reach = map.line_width / 2 + 0.5;
  RoiBox box;
  box.x0 = std::clamp<Index>(static_cast<Index>(std::floor(static_cast<double>(begin) * scale)), 0, map.size);
  box.x1 = std::clamp<Index>(static_cast<Index>(std::ceil(static_cast<double>(end) * scale)), 0, map.size);
  box.y0 = std::clamp<Index>(static_cast<Index>(std::floor(y_lo - reach)), 0, map.size);
  box.y1 = std::clamp<Index>(static_cast<Index>(std::ceil(y_hi + reach)), 0, map.size);
  return box;
}

}  // namespace ecg
QX_NAMESPACE_END
