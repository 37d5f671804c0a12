// Training-time augmentation of ECG pictures (ecg/augment.hpp): each of the three changes against its
// formula on hand-made pictures, the draw's dependence on (seed, epoch, index) only, and the dataset
// wrapper leaving labels alone.
#include <doctest/doctest.h>

#include "qx/ecg/augment.hpp"
#include "qx/train/trainer.hpp"

#include <numeric>
#include <vector>

using qx::Index;
using qx::Tensor;
using qx::ecg::AugmentDraw;
using qx::ecg::AugmentOptions;

namespace {
/// A 9 × 4 plane whose value at (r, c) is 10·r + c − 39.5: every row distinct, negative in the upper rows
/// (a change must move values, not clip them at the background's 0), never 0.
std::vector<double> numbered_plane() {
  std::vector<double> p(36);
  for (Index r = 0; r < 9; ++r)
    for (Index c = 0; c < 4; ++c) p[static_cast<std::size_t>(r * 4 + c)] = 10.0 * static_cast<double>(r) + static_cast<double>(c) - 39.5;
  return p;
}
double at(const std::vector<double>& p, Index r, Index c) { return p[static_cast<std::size_t>(r * 4 + c)]; }

/// `draw` applied to the numbered plane equals expected(r, c) everywhere.
template <class Expected>
void check_change(const AugmentDraw& draw, Expected expected) {
  auto plane = numbered_plane();
  std::vector<double> scratch(36);
  qx::ecg::augment_plane(plane.data(), 9, 4, draw, scratch.data());
  for (Index r = 0; r < 9; ++r)
    for (Index c = 0; c < 4; ++c) {
      CAPTURE(r);
      CAPTURE(c);
      CHECK(at(plane, r, c) == expected(r, c));
    }
}
}  // namespace

TEST_CASE("polarity flip: x'(r, c) = x(H − 1 − r, c), and twice is the identity") {
  AugmentDraw flip;
  flip.flip = true;
  check_change(flip, [](Index r, Index c) { return at(numbered_plane(), 8 - r, c); });
  auto plane = numbered_plane();
  std::vector<double> scratch(36);
  qx::ecg::augment_plane(plane.data(), 9, 4, flip, scratch.data());
  qx::ecg::augment_plane(plane.data(), 9, 4, flip, scratch.data());
  CHECK(plane == numbered_plane());
}

TEST_CASE("vertical shift: x'(r, c) = x(r − s, c), uncovered rows are background") {
  for (Index s : {-2, 3}) {
    CAPTURE(s);
    AugmentDraw shift;
    shift.shift = s;
    check_change(shift, [s](Index r, Index c) { return r - s >= 0 && r - s < 9 ? at(numbered_plane(), r - s, c) : 0.0; });
  }
}

TEST_CASE("vertical scale: rows move to round(m + (r − m)·a) about the middle, merged rows keep their maximum") {
  auto plane = numbered_plane();
  std::vector<double> scratch(36);
  AugmentDraw scale;
  scale.scale = 0.5;
  qx::ecg::augment_plane(plane.data(), 9, 4, scale, scratch.data());
  std::vector<double> expected(36, 0.0);
  // a = 0.5 on 9 rows (m = 4): row r goes to lround(4 + (r − 4)/2), halves rounded away from zero. Values
  // grow with r, so a row that two rows merge into holds the second one's values (their maximum).
  const Index target[9] = {2, 3, 3, 4, 4, 5, 5, 6, 6};
  for (Index r = 0; r < 9; ++r)
    for (Index c = 0; c < 4; ++c) expected[static_cast<std::size_t>(target[r] * 4 + c)] = at(numbered_plane(), r, c);
  CHECK(plane == expected);
  // The middle row stays; rows outside the scaled band are background; a = 1 changes nothing.
  CHECK(at(plane, 0, 0) == 0.0);
  CHECK(at(plane, 8, 3) == 0.0);
  auto same = numbered_plane();
  qx::ecg::augment_plane(same.data(), 9, 4, AugmentDraw{}, scratch.data());
  CHECK(same == numbered_plane());
}

TEST_CASE("a window's draw depends on (seed, epoch, index) only, and covers its ranges") {
  AugmentOptions o;
  o.min_vertical_scale = 0.6;
  o.max_shift = 3;
  o.seed = 5;
  Index flips = 0, changed_by_epoch = 0;
  std::vector<Index> shifts_seen(7, 0);
  for (Index i = 0; i < 2000; ++i) {
    const auto d = qx::ecg::draw_augmentation(o, 2, i), again = qx::ecg::draw_augmentation(o, 2, i);
    CHECK(d.flip == again.flip);
    CHECK(d.scale == again.scale);
    CHECK(d.shift == again.shift);
    CHECK(d.scale >= 0.6);
    CHECK(d.scale <= 1.0);
    REQUIRE(d.shift >= -3);
    REQUIRE(d.shift <= 3);
    ++shifts_seen[static_cast<std::size_t>(d.shift + 3)];
    flips += d.flip;
    const auto next = qx::ecg::draw_augmentation(o, 3, i);
    changed_by_epoch += next.flip != d.flip || next.shift != d.shift;
  }
  CHECK(flips > 900);  // p = 0.5 over 2000 windows: 1000 ± 22 (sd)
  CHECK(flips < 1100);
  for (Index n : shifts_seen) CHECK(n > 200);  // each of the 7 shifts about 286 times
  CHECK(changed_by_epoch > 1000);               // a new epoch draws anew
  AugmentOptions other = o;
  other.seed = 6;
  Index changed_by_seed = 0;
  for (Index i = 0; i < 200; ++i) changed_by_seed += qx::ecg::draw_augmentation(other, 2, i).scale != qx::ecg::draw_augmentation(o, 2, i).scale;
  CHECK(changed_by_seed == 200);
}

TEST_CASE("AugmentedDataset: a window's picture does not depend on its batch, labels are the base's") {
  const Index n = 6;
  auto images = Tensor<float>::zeros({n, 2, 9, 4});
  for (Index i = 0; i < n; ++i)
    for (Index c = 0; c < 2; ++c) images.at({i, c, 3 + i % 3, 2}) = 1.0f;  // one ink pixel per channel, mid-height
  qx::train::TensorDataset<float> base(images, {0, 1, 1, 0, 1, 0});
  AugmentOptions o;
  o.min_vertical_scale = 0.7;
  o.seed = 9;
  qx::ecg::AugmentedDataset<qx::train::TensorDataset<float>> data(base, o);
  data.set_epoch(4);
  Tensor<float> alone, together;
  std::vector<Index> labels_alone, labels_together;
  data.get_batch<float>({5}, alone, labels_alone);
  data.get_batch<float>({2, 5, 0}, together, labels_together);
  CHECK(labels_together == std::vector<Index>{1, 0, 0});
  const auto picture = [](const Tensor<float>& batch, Index k, Index c) {
    return batch.slice(0, k, k + 1).slice(1, c, c + 1).contiguous().to_vector();
  };
  CHECK(picture(alone, 0, 0) == picture(together, 1, 0));
  CHECK(picture(alone, 0, 1) == picture(together, 1, 1));
  // Both channels change alike, and mid-height ink survives (one pixel: shifts of ≤ 3 rows keep it inside).
  for (Index k = 0; k < 3; ++k) {
    CHECK(picture(together, k, 0) == picture(together, k, 1));
    const auto values = picture(together, k, 0);
    const double ink = std::accumulate(values.begin(), values.end(), 0.0);
    CHECK(ink == 1.0);
  }
  CHECK_THROWS_WITH_AS(qx::ecg::AugmentedDataset<qx::train::TensorDataset<float>>(base, {.flip_probability = 1.5}),
                       doctest::Contains("flip probability 1.5"), qx::Error);
  CHECK_THROWS_WITH_AS(qx::ecg::AugmentedDataset<qx::train::TensorDataset<float>>(base, {.min_vertical_scale = 0.0}),
                       doctest::Contains("vertical scale"), qx::Error);
}
