// Classification metrics on hand-counted cases, and the focus metric on hand-made maps: half-open ROI
// edges, the null map, a map entirely inside, each reduction, the pointing game and the summaries.
#include <doctest/doctest.h>

#include "qx/metrics/classification.hpp"
#include "qx/metrics/focus.hpp"

using qx::Tensor;
using namespace qx::metrics;

TEST_CASE("confusion matrix and the metrics of a chosen positive class") {
  ConfusionMatrix m(2);
  // truth:     1 1 1 1 0 0 0 0 0 0
  // predicted: 1 1 1 0 1 1 0 0 0 0   → TP 3, FN 1, FP 2, TN 4
  m.add({1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, {1, 1, 1, 0, 1, 1, 0, 0, 0, 0});
  const auto b = m.counts(1);
  CHECK(b.tp == 3);
  CHECK(b.fn == 1);
  CHECK(b.fp == 2);
  CHECK(b.tn == 4);
  CHECK(m.accuracy() == doctest::Approx(0.7));
  CHECK(m.precision(1) == doctest::Approx(3.0 / 5));
  CHECK(m.recall(1) == doctest::Approx(3.0 / 4));
  CHECK(m.specificity(1) == doctest::Approx(4.0 / 6));
  CHECK(m.f1(1) == doctest::Approx(6.0 / 9));  // 2TP / (2TP + FP + FN)
  CHECK(m.f1(0) == doctest::Approx(8.0 / 11));
  CHECK(m.macro_f1() == doctest::Approx((6.0 / 9 + 8.0 / 11) / 2));
  ConfusionMatrix empty(3);
  CHECK(empty.precision(2) == 0.0);  // zero division → 0
  CHECK(empty.f1(0) == 0.0);
  CHECK_THROWS_AS(m.add(2, 0), qx::Error);
  CHECK_THROWS_AS(ConfusionMatrix(1), qx::Error);
}

TEST_CASE_TEMPLATE("focus: half-open ROI edges", T, float, double) {
  // A 4×5 one-channel map with a single 1 at (y, x); ROI [1, 3) × [1, 3).
  const Roi roi{1, 1, 3, 3};
  auto at = [](qx::Index y, qx::Index x) {
    auto m = Tensor<T>::zeros({1, 4, 5});
    m.at({0, y, x}) = T(1);
    return m;
  };
  CHECK(focus(at(1, 1), roi).focus == 1.0);  // x0, y0 are inside
  CHECK(focus(at(2, 2), roi).focus == 1.0);
  CHECK(focus(at(1, 3), roi).focus == 0.0);  // x1 is outside
  CHECK(focus(at(3, 1), roi).focus == 0.0);  // y1 is outside
  CHECK(focus(at(0, 0), roi).focus == 0.0);
}

TEST_CASE("focus: null map, map entirely inside, mixed mass") {
  const Roi roi{0, 0, 2, 1};
  const auto zero = Tensor<double>::zeros({3, 2, 4});
  const auto r0 = focus(zero, roi);
  CHECK(r0.null_map);
  CHECK(r0.focus == 0.0);
  auto inside = Tensor<double>::zeros({1, 2, 4});
  inside.at({0, 0, 0}) = 2, inside.at({0, 0, 1}) = 3;
  CHECK(focus(inside, roi).focus == 1.0);
  CHECK_FALSE(focus(inside, roi).null_map);
  auto mixed = inside.clone();
  mixed.at({0, 1, 3}) = 5;
  CHECK(focus(mixed, roi).focus == doctest::Approx(0.5));
  CHECK(random_focus(roi, 2, 4) == doctest::Approx(2.0 / 8));
}

TEST_CASE("focus: the reductions per method") {
  // Two channels at two pixels: pixel A (inside) = (−4, 1), pixel B (outside) = (2, −3).
  auto m = Tensor<double>::zeros({2, 1, 2});
  m.at({0, 0, 0}) = -4, m.at({1, 0, 0}) = 1;
  m.at({0, 0, 1}) = 2, m.at({1, 0, 1}) = -3;
  const Roi left{0, 0, 1, 1};
  // saliency: max |·| → A 4, B 3
  CHECK(focus(m, left, MaxAbsOverChannels{}).focus == doctest::Approx(4.0 / 7));
  // guided maps: max(·, 0) over channels → A 1, B 2
  CHECK(focus(m, left, MaxPositiveOverChannels{}).focus == doctest::Approx(1.0 / 3));
  // Grad-CAM: one non-negative channel as is; a negative value is refused
  auto cam = Tensor<double>::from({1, 1, 2}, {1, 3});
  CHECK(focus(cam, left, Identity{}).focus == doctest::Approx(0.25));
  CHECK_THROWS_AS(focus(m, left, Identity{}), qx::Error);
  with_default_reduction("guided_gradcam", [&](auto r) { CHECK(focus(m, left, r).focus == doctest::Approx(1.0 / 3)); });
  with_default_reduction("saliency", [&](auto r) { CHECK(focus(m, left, r).focus == doctest::Approx(4.0 / 7)); });
  CHECK_THROWS_AS(with_default_reduction("nope", [](auto) {}), qx::Error);
}

TEST_CASE("ROI validation, batches, pointing game and summaries") {
  const auto map = Tensor<float>::ones({1, 4, 4});
  CHECK_THROWS_WITH(focus(map, Roi{2, 0, 2, 4}), doctest::Contains("empty"));
  CHECK_THROWS_WITH(focus(map, Roi{0, 0, 5, 4}), doctest::Contains("outside the 4x4 image"));
  CHECK_THROWS_AS(focus(map, Roi{-1, 0, 2, 2}), qx::Error);

  auto batch = Tensor<float>::zeros({2, 1, 4, 4});
  batch.at({0, 0, 0, 0}) = 1;  // sample 0: mass top-left
  batch.at({1, 0, 3, 3}) = 1;  // sample 1: mass bottom-right
  const auto one_box = focus_batch(batch, {Roi{0, 0, 2, 2}});
  CHECK(one_box[0].focus == 1.0);
  CHECK(one_box[1].focus == 0.0);
  const auto per_sample = focus_batch(batch, {Roi{0, 0, 1, 1}, Roi{3, 3, 4, 4}});
  CHECK(per_sample[1].focus == 1.0);
  CHECK_THROWS_AS(focus_batch(batch, {Roi{0, 0, 1, 1}, Roi{0, 0, 1, 1}, Roi{0, 0, 1, 1}}), qx::Error);

  auto p = Tensor<float>::zeros({1, 3, 3});
  p.at({0, 2, 1}) = 5, p.at({0, 0, 0}) = 5;  // tie: the first in row-major order (0, 0) wins
  CHECK(pointing_game(p, Roi{0, 0, 1, 1}));
  CHECK_FALSE(pointing_game(p, Roi{1, 2, 2, 3}));
  CHECK_FALSE(pointing_game(Tensor<float>::zeros({1, 3, 3}), Roi{0, 0, 3, 3}));

  const auto s = summarize(std::vector<double>{0.1, 0.3, 0.5});
  CHECK(s.mean == doctest::Approx(0.3));
  CHECK(s.sd == doctest::Approx(0.2));  // sample standard deviation
  CHECK(s.percent() == "30.0 ± 20.0");
  CHECK(s.histogram[1] == 1);
  CHECK(s.histogram[3] == 1);
  CHECK(s.histogram[5] == 1);
  const auto r = summarize(std::vector<FocusResult>{{0.0, true}, {1.0, false}});
  CHECK(r.null_maps == 1);
  CHECK(r.histogram[9] == 1);
}
