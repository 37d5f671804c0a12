// Training-time augmentation of rendered ECG windows, for the inter-patient split.
//
// A model trained on 17 patients and tested on 22 others fails mostly on test patients whose beats look
// unlike any training patient's (an inverted QRS, other wave proportions), while what tells a beat
// abnormal — that it differs from its neighbours in the same window — does not depend on them. Three
// label-preserving changes of the whole picture widen the morphologies seen in training without moving a
// beat in time, so the labelled beat and its ROI stay where they are:
//
//   polarity flip (probability p):      x'(r, c) = x(H − 1 − r, c)
//   vertical scale a ∈ [a_min, 1]:       x'(t, c) = max { x(r, c) : round(m + (r − m)·a) = t },  m = (H − 1)/2
//   vertical shift s ∈ {−S, …, S}:       x'(r, c) = x(r − s, c), and 0 where r − s is outside the picture
//
// applied in that order to every channel alike. Pictures are the ink normalisation of `image_to_input`
// (background 0, ink > 0): the scale keeps a column's ink by taking the maximum of the rows it merges,
// and the rows a shift uncovers are background. docs/reproduction.md gives the measured effect.
//
// The draw of each picture depends only on (seed, epoch, window index): the same window gets the same
// change in an epoch whatever the batch it is in or the number of threads, a resumed run draws what an
// uninterrupted one did (train::fit tells the dataset the epoch through `set_epoch`), and every epoch
// draws anew.
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/error.hpp"
#include "qx/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ecg {

struct AugmentOptions {
  double flip_probability = 0.5;   ///< p: probability of the polarity flip
  double min_vertical_scale = 1.0; ///< a_min in (0, 1]; 1: no scaling
  Index max_shift = 3;             ///< S, rows; 0: no shift
  std::uint64_t seed = 0;
};

/// The change drawn for one picture.
struct AugmentDraw {
  bool flip = false;
  double scale = 1.0;
  Index shift = 0;
};

namespace detail {

/// SplitMix64's finaliser: a bijective mix of 64 bits (Steele, Lea & Flood 2014).
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// A uniform double in [0, 1) from the top 53 bits.
constexpr double unit_interval(std::uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

}  // namespace detail

/// The change of window `index` in `epoch`: three independent uniform draws from one hash chain.
inline AugmentDraw draw_augmentation(const AugmentOptions& o, Index epoch, Index index) {
  const std::uint64_t key = detail::mix64(detail::mix64(detail::mix64(o.seed) ^ static_cast<std::uint64_t>(epoch)) ^
                                          static_cast<std::uint64_t>(index));
  const std::uint64_t u_flip = detail::mix64(key + 1), u_scale = detail::mix64(key + 2), u_shift = detail::mix64(key + 3);
  AugmentDraw d;
  d.flip = detail::unit_interval(u_flip) < o.flip_probability;
  d.scale = o.min_vertical_scale + (1.0 - o.min_vertical_scale) * detail::unit_interval(u_scale);
  d.shift = o.max_shift > 0 ? static_cast<Index>(u_shift % static_cast<std::uint64_t>(2 * o.max_shift + 1)) - o.max_shift : 0;
  return d;
}

/// Applies `d` to one H × W plane in place; `scratch` holds at least H·W values. The three changes all
/// move whole rows, so they compose into one row map r → t = round(m + (f(r) − m)·a) + s, with f the flip:
/// one pass in which a target row takes the maximum of the rows mapped to it, and a row that nothing maps
/// to is background (0).
template <class T>
void augment_plane(T* plane, Index height, Index width, const AugmentDraw& d, T* scratch) {
  if (!d.flip && d.scale == 1.0 && d.shift == 0) return;
  constexpr T unmapped = std::numeric_limits<T>::lowest();
  std::fill_n(scratch, height * width, unmapped);
  const double middle = static_cast<double>(height - 1) / 2;
  for (Index r = 0; r < height; ++r) {
    const Index flipped = d.flip ? height - 1 - r : r;
    const Index t = static_cast<Index>(std::lround(middle + (static_cast<double>(flipped) - middle) * d.scale)) + d.shift;
    if (t < 0 || t >= height) continue;
    T* target = scratch + t * width;
    const T* source = plane + r * width;
    for (Index c = 0; c < width; ++c) target[c] = std::max(target[c], source[c]);
  }
  for (Index i = 0; i < height * width; ++i) plane[i] = scratch[i] == unmapped ? T(0) : scratch[i];
}

/**
 * @brief A training dataset whose pictures are augmented as above; labels and everything else are the
 * base dataset's. `train::fit` calls `set_epoch` before each epoch.
 */
template <class D>
class AugmentedDataset {
 public:
  AugmentedDataset(D& base, AugmentOptions options) : base_(base), options_(options) {
    check(options.flip_probability >= 0 && options.flip_probability <= 1, "AugmentedDataset: flip probability ",
          options.flip_probability, " outside [0, 1]");
    check(options.min_vertical_scale > 0 && options.min_vertical_scale <= 1, "AugmentedDataset: minimum vertical scale ",
          options.min_vertical_scale, " outside (0, 1]");
    check(options.max_shift >= 0, "AugmentedDataset: maximum shift ", options.max_shift, " is negative");
  }
  Index size() const { return base_.size(); }
  Index label(Index i) const { return base_.label(i); }
  void set_epoch(Index epoch) { epoch_ = epoch; }
  Index epoch() const { return epoch_; }

  template <class T>
  void get_batch(const std::vector<Index>& indices, Tensor<T>& images, std::vector<Index>& labels) {
    base_.template get_batch<T>(indices, images, labels);
    check(images.dim() == 4 && images.is_contiguous(), "AugmentedDataset: pictures must be (N, C, H, W), got ",
          shape_str(images.shape()));
    const Index channels = images.size(1), height = images.size(2), width = images.size(3);
    const memory::Buffer<T> scratch(static_cast<std::size_t>(height * width));  // one plane, from the cache
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const AugmentDraw d = draw_augmentation(options_, epoch_, indices[k]);
      for (Index c = 0; c < channels; ++c)
        augment_plane(images.data() + (static_cast<Index>(k) * channels + c) * height * width, height, width, d, scratch.data());
    }
  }

 private:
  D& base_;
  AugmentOptions options_;
  Index epoch_ = 0;
};

}  // namespace ecg
QX_NAMESPACE_END
