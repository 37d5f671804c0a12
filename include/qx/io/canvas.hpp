// An RGB canvas for the report's figures, drawn by qx itself (no plotting library): filled boxes,
// pictures pasted at an integer enlargement (nearest neighbour, so pixels stay visible), bar charts.
// Pixel (x, y) is column x, row y; boxes are half-open [x0, x1) × [y0, y1) and clipped to the canvas.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/io/colormap.hpp"
#include "qx/io/png.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <utility>
#include <vector>

QX_NAMESPACE_BEGIN
namespace io {

class RgbCanvas {
 public:
  RgbCanvas(Index width, Index height, Rgb background = {255, 255, 255}) : width_(width), height_(height) {
    check(width > 0 && height > 0, "RgbCanvas: size ", width, "x", height, " must be positive");
    pixels_.resize(static_cast<std::size_t>(3 * width * height));
    for (Index i = 0; i < width * height; ++i) std::copy(background.begin(), background.end(), pixels_.begin() + 3 * i);
  }
  Index width() const noexcept { return width_; }
  Index height() const noexcept { return height_; }
  const std::vector<std::uint8_t>& pixels() const noexcept { return pixels_; }

  void fill(Index x0, Index y0, Index x1, Index y1, Rgb color) {
    for (Index y = std::max<Index>(0, y0); y < std::min(height_, y1); ++y)
      for (Index x = std::max<Index>(0, x0); x < std::min(width_, x1); ++x)
        std::copy(color.begin(), color.end(), pixels_.begin() + 3 * (y * width_ + x));
  }

  /// Pastes an RGB picture (w × h) with its top-left corner at (x, y), each pixel as a scale × scale block.
  void paste(const std::vector<std::uint8_t>& rgb, Index w, Index h, Index x, Index y, Index scale = 1) {
    check(static_cast<Index>(rgb.size()) == 3 * w * h && scale > 0, "RgbCanvas::paste: ", rgb.size(), " bytes for a ", w, "x", h,
          " picture at scale ", scale);
    for (Index r = 0; r < h * scale; ++r)
      for (Index c = 0; c < w * scale; ++c) {
        const Index cx = x + c, cy = y + r;
        if (cx < 0 || cy < 0 || cx >= width_ || cy >= height_) continue;
        const auto* src = rgb.data() + 3 * ((r / scale) * w + c / scale);
        std::copy(src, src + 3, pixels_.begin() + 3 * (cy * width_ + cx));
      }
  }

  /**
   * Bar chart of `values` (≥ 0) in the panel [x, x + w) × [y, y + h): equal-width bars on a baseline, the
   * tallest at full height (or `top`, when given, so panels share a scale); bars listed in `highlight` in
   * their own colour.
   */
  void bars(const std::vector<double>& values, Index x, Index y, Index w, Index h, Rgb color, double top = 0,
            const std::vector<std::pair<std::size_t, Rgb>>& highlight = {}) {
    if (values.empty()) return;
    for (double v : values) top = std::max(top, v);
    fill(x, y + h - 1, x + w, y + h, {0, 0, 0});  // baseline
    const double bar = static_cast<double>(w) / static_cast<double>(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      Rgb c = color;
      for (const auto& [index, special] : highlight)
        if (index == i) c = special;
      const auto height = top > 0 ? static_cast<Index>(std::lround(values[i] / top * static_cast<double>(h - 1))) : 0;
      const auto left = x + static_cast<Index>(std::lround(static_cast<double>(i) * bar));
      const auto right = x + static_cast<Index>(std::lround(static_cast<double>(i + 1) * bar)) - 1;  // 1 px gap
      fill(left, y + h - 1 - height, std::max(left + 1, right), y + h - 1, c);
    }
  }

  void write(const std::filesystem::path& path) const { write_png_rgb(path, width_, height_, pixels_.data()); }

 private:
  Index width_, height_;
  std::vector<std::uint8_t> pixels_;
};

}  // namespace io
QX_NAMESPACE_END
