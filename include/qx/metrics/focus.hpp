// The focus metric (docs/conventions.md, "Focus on a region of interest"): how much of an attribution
// map lies inside a region of interest. A map (C, H, W) is first reduced to one non-negative value per
// pixel m(y, x) by a Reduction; then
//   focus = Σ_{(y,x) ∈ ROI} m / Σ_{all (y,x)} m      (0, and counted as a null map, when the total is 0)
//   random focus = |ROI| / (H·W)                      (what a map with no preference scores)
//   pointing game = [argmax m ∈ ROI]                  (first maximum in row-major order)
// The ROI is the half-open pixel box [x0, x1) × [y0, y1) (x = column, y = row).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace metrics {

struct Roi {
  Index x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  Index area() const { return (x1 - x0) * (y1 - y0); }
  bool contains(Index x, Index y) const { return x >= x0 && x < x1 && y >= y0 && y < y1; }
};

/// @throws qx::Error when the box is empty or reaches outside a height × width image.
inline void check_roi(const Roi& r, Index height, Index width) {
  check(r.x0 < r.x1 && r.y0 < r.y1, "ROI [", r.x0, ", ", r.x1, ") x [", r.y0, ", ", r.y1, ") is empty");
  check(r.x0 >= 0 && r.y0 >= 0 && r.x1 <= width && r.y1 <= height, "ROI [", r.x0, ", ", r.x1, ") x [", r.y0, ", ", r.y1,
        ") is outside the ", width, "x", height, " image (width x height)");
}

// ---- per-pixel reductions: value(map, channels, plane, pixel) ≥ 0 -------------------------------------

/// max_c |a_c| — saliency (Simonyan et al. 2014).
struct MaxAbsOverChannels {
  template <class T>
  double operator()(const T* map, Index channels, Index plane, Index pixel) const {
    double m = 0;
    for (Index c = 0; c < channels; ++c) m = std::max(m, std::abs(static_cast<double>(map[c * plane + pixel])));
    return m;
  }
};

/// max_c max(a_c, 0) — guided backprop and guided Grad-CAM: only positive evidence counts.
struct MaxPositiveOverChannels {
  template <class T>
  double operator()(const T* map, Index channels, Index plane, Index pixel) const {
    double m = 0;
    for (Index c = 0; c < channels; ++c) m = std::max(m, static_cast<double>(map[c * plane + pixel]));
    return m;
  }
};

/// The value as is (one channel, already ≥ 0) — Grad-CAM. Negative values are an error.
struct Identity {
  template <class T>
  double operator()(const T* map, Index channels, Index plane, Index pixel) const {
    const double v = static_cast<double>(map[pixel]);
    check(channels == 1, "focus: the identity reduction expects a one-channel map, got ", channels, " channels");
    check(v >= 0, "focus: the identity reduction expects a non-negative map, got ", v, " at pixel ", pixel);
    (void)plane;
    return v;
  }
};

/// The conventions' default reduction of each map name.
template <class F>
decltype(auto) with_default_reduction(const std::string& map_name, F&& f) {
  if (map_name == "saliency" || map_name == "gradient_x_input" || map_name == "integrated_gradients" ||
      map_name == "smoothgrad")
    return f(MaxAbsOverChannels{});
  if (map_name == "gradcam" || map_name == "gradcam_pp") return f(Identity{});
  if (map_name == "guided_backprop" || map_name == "guided_gradcam") return f(MaxPositiveOverChannels{});
  fail("focus: no default reduction for map '", map_name, "'");
}

struct FocusResult {
  double focus = 0;
  bool null_map = false;
};

/// Focus of one map (C, H, W) given by pointer, reduced by `Reduction`.
template <class Reduction = MaxAbsOverChannels, class T>
FocusResult focus(const T* map, Index channels, Index height, Index width, const Roi& roi, Reduction reduce = {}) {
  check_roi(roi, height, width);
  double inside = 0, total = 0;
  const Index plane = height * width;
  for (Index y = 0; y < height; ++y)
    for (Index x = 0; x < width; ++x) {
      const double v = reduce(map, channels, plane, y * width + x);
      total += v;
      if (roi.contains(x, y)) inside += v;
    }
  if (!(total > 0)) return {0.0, true};
  return {inside / total, false};
}

/// Focus of a map tensor (C, H, W) or (H, W).
template <class Reduction = MaxAbsOverChannels, class T>
FocusResult focus(const Tensor<T>& map, const Roi& roi, Reduction reduce = {}) {
  check(map.dim() == 2 || map.dim() == 3, "focus: map must be (C, H, W) or (H, W), got ", shape_str(map.shape()));
  const Tensor<T> m = map.contiguous();
  const Index c = map.dim() == 3 ? map.size(0) : 1;
  return focus(m.data(), c, map.size(-2), map.size(-1), roi, reduce);
}

/// Focus of every sample of a batch (N, C, H, W) or (N, H, W); one ROI for all or one per sample.
template <class Reduction = MaxAbsOverChannels, class T>
std::vector<FocusResult> focus_batch(const Tensor<T>& maps, const std::vector<Roi>& rois, Reduction reduce = {}) {
  check(maps.dim() == 3 || maps.dim() == 4, "focus_batch: maps must be (N, C, H, W) or (N, H, W), got ", shape_str(maps.shape()));
  const Index n = maps.size(0);
  check(rois.size() == 1 || static_cast<Index>(rois.size()) == n, "focus_batch: ", rois.size(), " ROIs for ", n,
        " maps (give one, or one per sample)");
  const Tensor<T> m = maps.contiguous();
  const Index c = maps.dim() == 4 ? maps.size(1) : 1, h = maps.size(-2), w = maps.size(-1);
  std::vector<FocusResult> out;
  for (Index i = 0; i < n; ++i)
    out.push_back(focus(m.data() + i * c * h * w, c, h, w, rois[rois.size() == 1 ? 0 : static_cast<std::size_t>(i)], reduce));
  return out;
}

/// ROI area / image area.
inline double random_focus(const Roi& roi, Index height, Index width) {
  check_roi(roi, height, width);
  return static_cast<double>(roi.area()) / static_cast<double>(height * width);
}

/// Whether the reduced map's maximum lies inside the ROI (ties: the first maximum in row-major order;
/// a null map scores false).
template <class Reduction = MaxAbsOverChannels, class T>
bool pointing_game(const Tensor<T>& map, const Roi& roi, Reduction reduce = {}) {
  check(map.dim() == 2 || map.dim() == 3, "pointing_game: map must be (C, H, W) or (H, W), got ", shape_str(map.shape()));
  const Tensor<T> m = map.contiguous();
  const Index c = map.dim() == 3 ? map.size(0) : 1, h = map.size(-2), w = map.size(-1);
  check_roi(roi, h, w);
  double best = 0;
  Index best_at = -1;
  for (Index p = 0; p < h * w; ++p) {
    const double v = reduce(m.data(), c, h * w, p);
    if (v > best) best = v, best_at = p;
  }
  return best_at >= 0 && roi.contains(best_at % w, best_at / w);
}

/// Mean ± sample standard deviation (n − 1) of focus values, the null-map count, and a histogram.
struct FocusSummary {
  Index count = 0, null_maps = 0;
  double mean = 0, sd = 0;
  std::vector<Index> histogram;  ///< `bins` equal bins over [0, 1]; 1.0 falls in the last

  /// "30.3 ± 9.2" — percent with one decimal, as the paper's tables.
  std::string percent() const {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.1f ± %.1f", 100 * mean, 100 * sd);
    return buffer;
  }
};

inline FocusSummary summarize(const std::vector<double>& values, Index null_maps = 0, Index bins = 10) {
  FocusSummary s;
  s.count = static_cast<Index>(values.size());
  s.null_maps = null_maps;
  s.histogram.assign(static_cast<std::size_t>(bins), 0);
  if (values.empty()) return s;
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  double ss = 0;
  for (double v : values) ss += (v - s.mean) * (v - s.mean);
  s.sd = values.size() > 1 ? std::sqrt(ss / static_cast<double>(values.size() - 1)) : 0.0;
  for (double v : values) {
    const auto b = std::clamp<Index>(static_cast<Index>(v * static_cast<double>(bins)), 0, bins - 1);
    ++s.histogram[static_cast<std::size_t>(b)];
  }
  return s;
}

/// Summary of focus results; null maps count (with focus 0) and are reported.
inline FocusSummary summarize(const std::vector<FocusResult>& results, Index bins = 10) {
  std::vector<double> values;
  Index nulls = 0;
  for (const auto& r : results) {
    values.push_back(r.focus);
    nulls += r.null_map;
  }
  return summarize(values, nulls, bins);
}

}  // namespace metrics
QX_NAMESPACE_END
