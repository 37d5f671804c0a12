// Pictures of attribution maps: a map reduced per pixel (the focus metric's reduction), drawn as a heat
// map (viridis, inferno) or as the paper's grey scale ("brighter = more focus"), optionally overlaid on
// the input image, with the ROI box outlined.
#pragma once
#include "qx/config.hpp"
#include "qx/explain/attribution.hpp"
#include "qx/io/colormap.hpp"
#include "qx/io/png.hpp"
#include "qx/explain/reduce.hpp"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <vector>

QX_NAMESPACE_BEGIN
namespace explain {

struct PictureOptions {
  io::Colormap colormap = io::Colormap::inferno;
  double overlay_alpha = 0.6;  ///< weight of the heat map over the input image (0: input only; 1: map only)
  bool overlay = true;
  /// How the input is drawn below the map: true for ink-on-nothing inputs such as the ECG images (ink 1
  /// on 0), drawn as a dark trace on white; false for pictures (a PNG or JPEG), drawn as they are.
  bool input_is_ink = true;
};

/**
 * The picture (H·W·3 RGB) of sample `s` of `map` (N, C, H, W) or (N, H, W), reduced as `method` is in the
 * focus metric. `image` (N, C, H, W) is the model input, drawn below in grey: the mean over its channels,
 * stretched to the full range, inverted when `options.input_is_ink`.
 */
template <class T>
std::vector<std::uint8_t> map_picture_rgb(const Tensor<T>& map, Method method, Index s, const Tensor<T>& image,
                                          const std::optional<metrics::Roi>& roi = std::nullopt, const PictureOptions& options = {}) {
  const Tensor<T> m = map.contiguous();
  const Index h = m.size(-2), w = m.size(-1);
  const auto values = reduced_map(m, method, s);
  std::vector<float> plane(values.begin(), values.end());
  auto rgb = io::heatmap_rgb(plane.data(), w, h, options.colormap);
  if (options.overlay && image.defined()) {
    check(image.size(-2) == h && image.size(-1) == w, "write_map_png: image ", shape_str(image.shape()),
          " does not match the map's ", h, "x", w);
    const Tensor<T> img = image.contiguous();
    const Index channels = img.size(1), pixels = h * w;
    std::vector<double> mean(static_cast<std::size_t>(pixels), 0.0);
    for (Index c = 0; c < channels; ++c)
      for (Index p = 0; p < pixels; ++p)
        mean[static_cast<std::size_t>(p)] += static_cast<double>(img.data()[(s * channels + c) * pixels + p]) / static_cast<double>(channels);
    const auto [lo, hi] = std::minmax_element(mean.begin(), mean.end());
    std::vector<std::uint8_t> gray(static_cast<std::size_t>(pixels));
    for (std::size_t p = 0; p < gray.size(); ++p) {  // full range whatever the input scale
      const double v = *hi > *lo ? (mean[p] - *lo) / (*hi - *lo) : 0.0;
      gray[p] = static_cast<std::uint8_t>(255.0 * (options.input_is_ink ? 1.0 - v : v));
    }
    rgb = io::overlay_rgb(gray.data(), rgb, w, h, options.overlay_alpha);
  }
  if (roi) io::draw_box_rgb(rgb, w, h, roi->x0, roi->y0, roi->x1, roi->y1, {255, 64, 64}, 1);
  return rgb;
}

/// Writes map_picture_rgb as a PNG.
template <class T>
void write_map_png(const std::filesystem::path& path, const Tensor<T>& map, Method method, Index s, const Tensor<T>& image,
                   const std::optional<metrics::Roi>& roi = std::nullopt, const PictureOptions& options = {}) {
  const auto rgb = map_picture_rgb(map, method, s, image, roi, options);
  io::write_png_rgb(path, map.size(-1), map.size(-2), rgb.data());
}

}  // namespace explain
QX_NAMESPACE_END
