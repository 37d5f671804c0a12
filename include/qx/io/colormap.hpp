// Colour maps and the drawing helpers of attribution pictures: heat maps, overlays, ROI boxes.
// viridis and inferno are matplotlib's, reproduced as piecewise-linear interpolation between nine of
// their published colours (at 0, 1/8, …, 1) — within a few levels of the 256-entry tables, and free of
// a plotting dependency. gray is the paper's "brighter = more focus".
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace io {

enum class Colormap { viridis, inferno, gray };

inline Colormap colormap_from_name(const std::string& name) {
  if (name == "viridis") return Colormap::viridis;
  if (name == "inferno") return Colormap::inferno;
  if (name == "gray" || name == "grey") return Colormap::gray;
  fail("unknown colour map '", name, "' (expected viridis, inferno or gray)");
}

using Rgb = std::array<std::uint8_t, 3>;

/// The colour of v ∈ [0, 1] (values outside are clamped).
inline Rgb colormap_rgb(Colormap map, double v) {
  static constexpr std::array<std::uint32_t, 9> viridis{0x440154, 0x472d7b, 0x3b528b, 0x2c728e, 0x21918c,
                                                        0x28ae80, 0x5ec962, 0xaddc30, 0xfde725};
  static constexpr std::array<std::uint32_t, 9> inferno{0x000004, 0x1f0c48, 0x550f6d, 0x88226a, 0xba3655,
                                                        0xe35933, 0xf98e09, 0xf8c932, 0xfcffa4};
  v = std::isfinite(v) ? std::clamp(v, 0.0, 1.0) : 0.0;
  if (map == Colormap::gray) {
    const auto g = static_cast<std::uint8_t>(std::lround(255 * v));
    return {g, g, g};
  }
  const auto& stops = map == Colormap::viridis ? viridis : inferno;
  const double position = v * 8;
  const auto i = std::min<std::size_t>(7, static_cast<std::size_t>(position));
  const double t = position - static_cast<double>(i);
  Rgb out;
  for (int c = 0; c < 3; ++c) {
    const int shift = 16 - 8 * c;
    const double a = (stops[i] >> shift) & 0xFF, b = (stops[i + 1] >> shift) & 0xFF;
    out[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(std::lround(a + t * (b - a)));
  }
  return out;
}

/// RGB heat map (H·W·3) of a non-negative map (H·W), scaled by `vmax` (≤ 0: by the map's maximum).
inline std::vector<std::uint8_t> heatmap_rgb(const float* map, Index width, Index height, Colormap colormap, double vmax = 0) {
  const Index n = width * height;
  if (vmax <= 0) {
    for (Index i = 0; i < n; ++i) vmax = std::max(vmax, static_cast<double>(map[i]));
  }
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(3 * n));
  for (Index i = 0; i < n; ++i) {
    const Rgb c = colormap_rgb(colormap, vmax > 0 ? map[i] / vmax : 0.0);
    std::copy(c.begin(), c.end(), rgb.begin() + 3 * i);
  }
  return rgb;
}

/// out = (1 − α)·base + α·heat, per pixel; base is grey (H·W) and heat RGB (H·W·3).
inline std::vector<std::uint8_t> overlay_rgb(const std::uint8_t* base_gray, const std::vector<std::uint8_t>& heat, Index width,
                                             Index height, double alpha) {
  check(static_cast<Index>(heat.size()) == 3 * width * height, "overlay_rgb: heat map size does not match ", width, "x", height);
  std::vector<std::uint8_t> out(heat.size());
  for (Index i = 0; i < width * height; ++i)
    for (int c = 0; c < 3; ++c)
      out[static_cast<std::size_t>(3 * i + c)] =
          static_cast<std::uint8_t>(std::lround((1 - alpha) * base_gray[i] + alpha * heat[static_cast<std::size_t>(3 * i + c)]));
  return out;
}

/// Draws the outline of the box [x0, x1) × [y0, y1) into an RGB image, `thickness` pixels inwards.
inline void draw_box_rgb(std::vector<std::uint8_t>& rgb, Index width, Index height, Index x0, Index y0, Index x1, Index y1,
                         Rgb color = {255, 64, 64}, Index thickness = 1) {
  x0 = std::clamp<Index>(x0, 0, width);
  x1 = std::clamp<Index>(x1, 0, width);
  y0 = std::clamp<Index>(y0, 0, height);
  y1 = std::clamp<Index>(y1, 0, height);
  for (Index y = y0; y < y1; ++y)
    for (Index x = x0; x < x1; ++x) {
      const bool edge = x < x0 + thickness || x >= x1 - thickness || y < y0 + thickness || y >= y1 - thickness;
      if (edge) std::copy(color.begin(), color.end(), rgb.begin() + 3 * (y * width + x));
    }
}

}  // namespace io
QX_NAMESPACE_END
