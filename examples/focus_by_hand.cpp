// The focus metric and its random baseline on a map drawn by hand (include/qx/metrics/focus.hpp).
//
//   focus        = Σ_{ROI} m / Σ_{image} m     the share of the map's mass inside the region of interest
//   random focus = |ROI| / (H·W)               what a map with no preference scores, on average
//
// A map concentrated on the ROI scores near 1; a map spread evenly scores exactly the random focus, and
// so do random maps on average: focus means something only next to its random baseline. The ROI is the
// half-open box [x0, x1) × [y0, y1), x = column, y = row.
#include <qx/metrics/focus.hpp>

#include "example_checks.hpp"

#include <cmath>

using qx::Index;
using qx::Tensor;

int main() {
  // An 8×8 map, one digit per pixel: a blob in the middle and a stray speck at the bottom left.
  const char* drawing[8] = {"00000000",  //
                            "00000000",  //
                            "00013100",  //
                            "00159310",  //
                            "00139510",  //
                            "00013100",  //
                            "02000000",  //
                            "00000000"};
  auto map = Tensor<double>::zeros({8, 8});
  for (Index y = 0; y < 8; ++y)
    for (Index x = 0; x < 8; ++x) map.at({y, x}) = drawing[y][x] - '0';
  const qx::metrics::Roi roi{2, 2, 7, 6};  // columns 2…6, rows 2…5: around the blob
  std::printf("map (ROI [2, 7) × [2, 6) in brackets):\n");
  for (Index y = 0; y < 8; ++y) {
    std::printf("   ");
    for (Index x = 0; x < 8; ++x) std::printf(roi.contains(x, y) ? "[%c]" : " %c ", drawing[y][x]);
    std::printf("\n");
  }

  // ---- by hand -----------------------------------------------------------------------------------------
  double inside = 0, total = 0;
  for (Index y = 0; y < 8; ++y)
    for (Index x = 0; x < 8; ++x) {
      total += map.at({y, x});
      if (roi.contains(x, y)) inside += map.at({y, x});
    }
  const double random = static_cast<double>(roi.area()) / 64;
  std::printf("mass inside %.0f of %.0f → focus %.4f;  random focus %d/64 = %.4f\n", inside, total, inside / total,
              static_cast<int>(roi.area()), random);

  // ---- qx ------------------------------------------------------------------------------------------------
  // A one-channel map needs no reduction over channels; Identity also refuses negative values.
  const auto f = qx::metrics::focus(map, roi, qx::metrics::Identity{});
  example::expect(std::abs(f.focus - inside / total) < 1e-15, "qx::metrics::focus = mass inside / total mass");
  example::expect(qx::metrics::random_focus(roi, 8, 8) == random, "random focus = ROI area / image area = 20/64");
  example::expect(qx::metrics::pointing_game(map, roi, qx::metrics::Identity{}), "the map's maximum (the 9) lies in the ROI");

  // An even map has no preference: its focus is exactly the random focus.
  const auto even = qx::metrics::focus(Tensor<double>::ones({8, 8}), roi, qx::metrics::Identity{});
  example::expect(std::abs(even.focus - random) < 1e-15, "an even map scores exactly the random focus");

  // Random maps score the random focus on average (and scatter around it).
  qx::Rng rng(5);
  std::vector<double> values;
  for (int i = 0; i < 2000; ++i)
    values.push_back(qx::metrics::focus(Tensor<double>::uniform({8, 8}, rng), roi, qx::metrics::Identity{}).focus);
  const auto summary = qx::metrics::summarize(values);
  std::printf("2000 uniform-noise maps: focus %s %% (random focus %.1f %%)\n", summary.percent().c_str(), 100 * random);
  example::expect(std::abs(summary.mean - random) < 0.01, "random maps average the random focus");

  // An all-zero map has no mass to place: focus 0, reported as a null map rather than as bad focus.
  const auto null = qx::metrics::focus(Tensor<double>::zeros({8, 8}), roi, qx::metrics::Identity{});
  example::expect(null.null_map && null.focus == 0, "an all-zero map is a null map");

  // Signed maps with channels are reduced per pixel first: saliency by max_c |a_c| (a strong negative
  // gradient is evidence too), guided maps by max_c max(a_c, 0). Here the ROI holds only negative values.
  auto signed_map = Tensor<double>::zeros({2, 8, 8});
  signed_map.at({0, 3, 3}) = -4;  // inside
  signed_map.at({1, 0, 0}) = 1;   // outside
  const double by_abs = qx::metrics::focus(signed_map, roi, qx::metrics::MaxAbsOverChannels{}).focus;
  const double by_positive = qx::metrics::focus(signed_map, roi, qx::metrics::MaxPositiveOverChannels{}).focus;
  std::printf("signed two-channel map: focus %.2f by max |a|, %.2f by max(a, 0)\n", by_abs, by_positive);
  example::expect(by_abs == 0.8 && by_positive == 0.0, "the reduction decides whether negative values count");
  return example::finish();
}
