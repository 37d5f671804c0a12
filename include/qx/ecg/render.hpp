// Renders an ECG window as a square image, from scratch, with an exactly known sample ↔ pixel map:
//   x(k) = (k + ½)·S/n          sample k of the n-sample window at the centre of its 1/n-wide time slot
//   y(v) = m + (v_max − v)·(S − 2m)/(v_max − v_min)   amplitude onto the height, margin m pixels
// (pixel (i, j) covers [j, j+1) × [i, i+1)). The trace is the polyline through (x(k), y(v_k)), drawn
// anti-aliased with thickness w: a pixel's ink is clamp(w/2 + ½ − d, 0, 1), d its centre's distance to
// the polyline; dark ink on a light background. The model's input is derived in one place:
// image_to_input (ink = 1, background = 0).
// The authors' picture (conventions, "The authors' protocol") is drawn with the same ink rule on their
// 3000 × 450 canvas, only its 1500 × 200 centre crop, then resized to S × S with PIL's bilinear filter
// (a triangle widened by the downscale factor, as torchvision's Resize on a PIL image does).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
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

/// The authors' model input: (pixel/255 − mean_c)/std_c with ImageNet's mean and standard deviation of
/// channel c (a grey picture: the channel only selects the constants; c > 2 uses channel 0's).
inline float imagenet_input(std::uint8_t pixel, Index channel) {
  static constexpr float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  const auto c = static_cast<std::size_t>(channel < 3 ? channel : 0);
  return (static_cast<float>(pixel) / 255.0f - mean[c]) / sd[c];
}

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

/// Ink of the polyline through point(0) … point(n−1) (pixel coordinates) on a width × height plane:
/// ink = max over segments of clamp(w/2 + ½ − d, 0, 1).
template <class Point>
void draw_polyline(long n, Point point, Index width, Index height, double line_width, std::vector<float>& ink) {
  ink.assign(static_cast<std::size_t>(width * height), 0.0f);
  const double reach = line_width / 2 + 0.5;  // beyond this distance a pixel gets no ink
  auto [ax, ay] = point(0);
  for (long k = 1; k < n; ++k) {
    const auto [bx, by] = point(k);
    const Index c0 = std::max<Index>(0, static_cast<Index>(std::floor(std::min(ax, bx) - reach)));
    const Index c1 = std::min<Index>(width - 1, static_cast<Index>(std::floor(std::max(ax, bx) + reach)));
    const Index r0 = std::max<Index>(0, static_cast<Index>(std::floor(std::min(ay, by) - reach)));
    const Index r1 = std::min<Index>(height - 1, static_cast<Index>(std::floor(std::max(ay, by) + reach)));
    for (Index r = r0; r <= r1; ++r)
      for (Index c = c0; c <= c1; ++c) {
        const double d = segment_distance(static_cast<double>(c) + 0.5, static_cast<double>(r) + 0.5, ax, ay, bx, by);
        const float cover = static_cast<float>(std::clamp(reach - d, 0.0, 1.0));
        float& p = ink[static_cast<std::size_t>(r * width + c)];
        p = std::max(p, cover);
      }
    ax = bx;
    ay = by;
  }
}

/// U8 pixels 255·(1 − ink), the plane repeated over `channels`.
inline void ink_to_image(const float* ink, Index plane, Index channels, std::uint8_t* image) {
  for (Index ch = 0; ch < channels; ++ch)
    for (Index i = 0; i < plane; ++i) image[ch * plane + i] = static_cast<std::uint8_t>(std::lround(255.0 * (1.0 - ink[i])));
}

/// PIL's bilinear resampling along one axis: output i centred at (i + ½)·scale (scale = in/out) takes
/// input j with weight max(0, 1 − |j + ½ − centre| / support), support = max(scale, 1), normalised.
/// `stride_in`/`stride_out` step along the axis, `lines` × `line_step` across it.
inline void resample_axis(const float* in, Index n_in, Index stride_in, float* out, Index n_out, Index stride_out, Index lines,
                          Index line_step_in, Index line_step_out) {
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out), support = std::max(scale, 1.0);
  std::vector<double> weights;
  for (Index i = 0; i < n_out; ++i) {
    const double centre = (static_cast<double>(i) + 0.5) * scale;
    const Index lo = std::max<Index>(0, static_cast<Index>(centre - support));
    const Index hi = std::min<Index>(n_in, static_cast<Index>(centre + support + 0.5));
    weights.assign(static_cast<std::size_t>(hi - lo), 0.0);
    double total = 0;
    for (Index j = lo; j < hi; ++j) {
      const double w = std::max(0.0, 1.0 - std::abs((static_cast<double>(j) + 0.5 - centre) / support));
      weights[static_cast<std::size_t>(j - lo)] = w;
      total += w;
    }
    for (Index l = 0; l < lines; ++l) {
      double v = 0;
      for (Index j = lo; j < hi; ++j) v += weights[static_cast<std::size_t>(j - lo)] * in[l * line_step_in + j * stride_in];
      out[l * line_step_out + i * stride_out] = static_cast<float>(total > 0 ? v / total : 0.0);
    }
  }
}
}  // namespace detail

/// The renderer's map of `n` samples (no drawing): what render_window uses, and ROIs with it.
inline PixelMap pixel_map(const float* samples, long n, const RenderOptions& options) {
  PixelMap map{options.size, n, samples[0], samples[0], options.margin, options.line_width};
  for (long k = 1; k < n; ++k) {
    map.v_min = std::min(map.v_min, static_cast<double>(samples[k]));
    map.v_max = std::max(map.v_max, static_cast<double>(samples[k]));
  }
  return map;
}

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
  const PixelMap map = pixel_map(samples, n, options);
  detail::draw_polyline(n, [&](long k) { return std::pair{map.x(static_cast<double>(k)), map.y(samples[k])}; }, s, s,
                        options.line_width, ink);
  detail::ink_to_image(ink.data(), s * s, options.channels, image);
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

// ---- the authors' picture ------------------------------------------------------------------------------

/// Geometry of the authors' figure in canvas pixels (3000 × 450, i.e. 30 × 4.5 in at 100 dpi): 232.5 px
/// per second centred at x = 1537.5, y = 227.25 − 96.25·v', a 1.5 pt line, the centre crop [750, 2250) ×
/// [125, 325).
struct AuthorsPicture {
  static constexpr double px_per_second = 232.5, centre_x = 1537.5, centre_y = 227.25, px_per_unit = 96.25;
  static constexpr double crop_x0 = 750, crop_y0 = 125;
  static constexpr Index crop_width = 1500, crop_height = 200;
  static constexpr double line_width = 1.5 * 100.0 / 72.0;  ///< 1.5 pt at 100 dpi, in pixels
};

/// The authors' sample ↔ pixel map of one window, into the S × S output image:
///   v' = 2(v − mean)/(max − min),  X = 1537.5 + 232.5·(k − (n−1)/2)/f_s,  Y = 227.25 − 96.25·v'   (canvas)
///   x = (X − 750)·S/1500,  y = (Y − 125)·S/200                                                 (output)
struct AuthorsMap {
  Index size = 0;
  long samples = 0;
  double frequency = 360, mean = 0, range = 0;
  double canvas_x(double k) const {
    return AuthorsPicture::centre_x + AuthorsPicture::px_per_second * (k - static_cast<double>(samples - 1) / 2) / frequency;
  }
  double canvas_y(double v) const {
    const double normalised = range > 0 ? 2 * (v - mean) / range : 0.0;
    return AuthorsPicture::centre_y - AuthorsPicture::px_per_unit * normalised;
  }
  double x(double k) const { return (canvas_x(k) - AuthorsPicture::crop_x0) * static_cast<double>(size) / AuthorsPicture::crop_width; }
  double y(double v) const { return (canvas_y(v) - AuthorsPicture::crop_y0) * static_cast<double>(size) / AuthorsPicture::crop_height; }
};

inline AuthorsMap authors_map(const float* samples, long n, double frequency, Index size) {
  check(n >= 2 && frequency > 0, "ECG render: the authors' picture needs at least 2 samples and a positive frequency, got ", n,
        " samples at ", frequency, " Hz");
  AuthorsMap map{size, n, frequency, 0, 0};
  double lo = samples[0], hi = samples[0], sum = 0;
  for (long k = 0; k < n; ++k) {
    lo = std::min(lo, static_cast<double>(samples[k]));
    hi = std::max(hi, static_cast<double>(samples[k]));
    sum += samples[k];
  }
  map.mean = sum / static_cast<double>(n);
  map.range = hi - lo;
  return map;
}

/// Draws the authors' picture of `n` samples: the crop at canvas resolution, then resized to S × S.
/// `ink` is caller scratch (crop-sized).
inline AuthorsMap render_authors_window(const float* samples, long n, double frequency, const RenderOptions& options,
                                        std::uint8_t* image, std::vector<float>& ink) {
  const AuthorsMap map = authors_map(samples, n, frequency, options.size);
  constexpr Index w = AuthorsPicture::crop_width, h = AuthorsPicture::crop_height;
  detail::draw_polyline(
      n,
      [&](long k) {
        return std::pair{map.canvas_x(static_cast<double>(k)) - AuthorsPicture::crop_x0, map.canvas_y(samples[k]) - AuthorsPicture::crop_y0};
      },
      w, h, AuthorsPicture::line_width, ink);
  const Index s = options.size;
  std::vector<float> rows(static_cast<std::size_t>(h * s)), out(static_cast<std::size_t>(s * s));
  detail::resample_axis(ink.data(), w, 1, rows.data(), s, 1, h, w, s);  // each row: 1500 → S
  detail::resample_axis(rows.data(), h, s, out.data(), s, s, s, 1, 1);  // each column: 200 → S
  detail::ink_to_image(out.data(), s * s, options.channels, image);
  return map;
}

/// A box in output pixels before clipping (the authors' random focus is its area over the image's).
struct ExactBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  double area() const { return std::max(0.0, x1 - x0) * std::max(0.0, y1 - y0); }
  /// Rounded outwards to whole pixels and clipped to the S × S image (may be empty).
  RoiBox clipped(Index size) const {
    RoiBox b;
    b.x0 = std::clamp<Index>(static_cast<Index>(std::floor(x0)), 0, size);
    b.x1 = std::clamp<Index>(static_cast<Index>(std::ceil(x1)), 0, size);
    b.y0 = std::clamp<Index>(static_cast<Index>(std::floor(y0)), 0, size);
    b.y1 = std::clamp<Index>(static_cast<Index>(std::ceil(y1)), 0, size);
    return b;
  }
};

/// The authors' ROI of samples [begin, end) of the window: horizontally x(begin) … x(end), vertically
/// the span's own maximum and minimum through the value map (no line width), unclipped. Two annotations
/// at one sample make an empty beat: its box is empty (area 0).
inline ExactBox authors_roi(const AuthorsMap& map, const float* samples, long begin, long end) {
  check(0 <= begin && begin <= end && end <= map.samples, "ECG ROI: span [", begin, ", ", end,
        ") is not inside the window's ", map.samples, " samples");
  if (begin == end) return {map.x(static_cast<double>(begin)), 0, map.x(static_cast<double>(begin)), 0};
  const auto [lo, hi] = std::minmax_element(samples + begin, samples + end);
  return {map.x(static_cast<double>(begin)), map.y(*hi), map.x(static_cast<double>(end)), map.y(*lo)};
}

}  // namespace ecg
QX_NAMESPACE_END
