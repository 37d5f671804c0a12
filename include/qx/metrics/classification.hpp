// Classification metrics from a confusion matrix, for a chosen positive class c (docs/metrics.md):
//   TP = C[c][c], FP = Σ_{t≠c} C[t][c], FN = Σ_{p≠c} C[c][p], TN = the rest   (C[true][predicted])
//   accuracy = Σ_k C[k][k] / N,  precision = TP/(TP+FP),  recall = TP/(TP+FN),  specificity = TN/(TN+FP),
//   F1 = 2TP/(2TP+FP+FN)   (the standard form; the paper's equation 3 has a typo)
// A ratio whose denominator is 0 is defined as 0 (scikit-learn's zero_division = 0).
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <vector>

QX_NAMESPACE_BEGIN
namespace metrics {

struct BinaryCounts {
  Index tp = 0, fp = 0, fn = 0, tn = 0;
};

inline double safe_ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(Index num_classes) : k_(num_classes), counts_(static_cast<std::size_t>(num_classes * num_classes), 0) {
    check(num_classes >= 2, "ConfusionMatrix: needs at least 2 classes, got ", num_classes);
  }
  void add(Index truth, Index predicted) {
    check(truth >= 0 && truth < k_ && predicted >= 0 && predicted < k_, "ConfusionMatrix: class (", truth, ", ", predicted,
          ") outside [0, ", k_, ")");
    ++counts_[static_cast<std::size_t>(truth * k_ + predicted)];
  }
  void add(const std::vector<Index>& truth, const std::vector<Index>& predicted) {
    check(truth.size() == predicted.size(), "ConfusionMatrix: ", truth.size(), " labels but ", predicted.size(), " predictions");
    for (std::size_t i = 0; i < truth.size(); ++i) add(truth[i], predicted[i]);
  }
  /// Number of samples of true class t predicted as p.
  Index at(Index t, Index p) const { return counts_.at(static_cast<std::size_t>(t * k_ + p)); }
  Index num_classes() const noexcept { return k_; }
  Index total() const {
    Index n = 0;
    for (Index c : counts_) n += c;
    return n;
  }
  BinaryCounts counts(Index positive) const {
    check(positive >= 0 && positive < k_, "ConfusionMatrix: positive class ", positive, " outside [0, ", k_, ")");
    BinaryCounts b;
    for (Index t = 0; t < k_; ++t)
      for (Index p = 0; p < k_; ++p) {
        const Index c = at(t, p);
        if (t == positive && p == positive) b.tp += c;
        else if (p == positive) b.fp += c;
        else if (t == positive) b.fn += c;
        else b.tn += c;
      }
    return b;
  }
  double accuracy() const {
    Index correct = 0;
    for (Index c = 0; c < k_; ++c) correct += at(c, c);
    return safe_ratio(static_cast<double>(correct), static_cast<double>(total()));
  }
  double precision(Index positive) const {
    const auto b = counts(positive);
    return safe_ratio(static_cast<double>(b.tp), static_cast<double>(b.tp + b.fp));
  }
  double recall(Index positive) const {
    const auto b = counts(positive);
    return safe_ratio(static_cast<double>(b.tp), static_cast<double>(b.tp + b.fn));
  }
  double specificity(Index positive) const {
    const auto b = counts(positive);
    return safe_ratio(static_cast<double>(b.tn), static_cast<double>(b.tn + b.fp));
  }
  double f1(Index positive) const {
    const auto b = counts(positive);
    return safe_ratio(2.0 * static_cast<double>(b.tp), static_cast<double>(2 * b.tp + b.fp + b.fn));
  }
  /// Unweighted mean over classes of F1 (each class in turn positive).
  double macro_f1() const {
    double s = 0;
    for (Index c = 0; c < k_; ++c) s += f1(c);
    return s / static_cast<double>(k_);
  }

 private:
  Index k_;
  std::vector<Index> counts_;
};

}  // namespace metrics
QX_NAMESPACE_END
