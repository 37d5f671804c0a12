// Heartbeats and six-beat windows of MIT-BIH, as docs/conventions.md ("MIT-BIH Arrhythmia Database")
// defines them: AAMI classes (de Chazal et al. 2004), binary labels normal = N vs abnormal = S, V, F
// with Q beats dropped, windows [R_i − 100, R_{i+6} − 100) within one record at a stride of one beat,
// dataset 1 labelled by beat 5 (the last) and dataset 2 by beat 0 (the first), the inter-patient split.
// Protocol::authors cuts windows as the authors' published code did (conventions, "The authors'
// protocol"): every annotation is a boundary, and a window belongs to a dataset when its labelled
// annotation is an N/S/V/F beat.
#pragma once
#include "qx/config.hpp"
#include "qx/ecg/wfdb.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ecg {

/// AAMI heartbeat classes; `none` for annotations that are not beats.
enum class AamiClass { n, s, v, f, q, none };

/// N = {N, L, R, e, j}, S = {A, a, J, S}, V = {V, E}, F = {F}, Q = {/, f, Q}; everything else is no beat.
inline AamiClass aami_class(char symbol) {
  switch (symbol) {
    case 'N': case 'L': case 'R': case 'e': case 'j': return AamiClass::n;
    case 'A': case 'a': case 'J': case 'S': return AamiClass::s;
    case 'V': case 'E': return AamiClass::v;
    case 'F': return AamiClass::f;
    case '/': case 'f': case 'Q': return AamiClass::q;
    default: return AamiClass::none;
  }
}

/// How beats become binary labels.
enum class LabelRule {
  aami,   ///< normal = AAMI class N; abnormal = S, V, F (the authors' code; the default)
  strict  ///< normal = the symbol 'N' only; every other S/V/F/N-class beat is abnormal (the paper's text)
};

inline constexpr int label_normal = 0;
inline constexpr int label_abnormal = 1;
inline constexpr int label_dropped = -1;

/// 0 normal, 1 abnormal, −1 not kept (Q beats and non-beat annotations).
inline int binary_label(char symbol, LabelRule rule = LabelRule::aami) {
  const AamiClass c = aami_class(symbol);
  if (c == AamiClass::none || c == AamiClass::q) return label_dropped;
  if (rule == LabelRule::strict) return symbol == 'N' ? label_normal : label_abnormal;
  return c == AamiClass::n ? label_normal : label_abnormal;
}

/// Which rules cut, draw and label the windows: the clean rules of the conventions (`qx`, the default),
/// or the authors' published code to the letter (`authors`: records, lead, windows, picture, ROI, F1).
enum class Protocol { qx, authors };

inline Protocol parse_protocol(const std::string& name) {
  check(name == "qx" || name == "authors", "--protocol takes qx or authors, got '", name, "'");
  return name == "authors" ? Protocol::authors : Protocol::qx;
}
inline const char* to_string(Protocol p) { return p == Protocol::authors ? "authors" : "qx"; }

/// A kept beat: its R-peak sample, annotation symbol and binary label.
struct Beat {
  long r_peak;
  char symbol;
  int label;
};

/// The kept beats of a record, in time order.
inline std::vector<Beat> kept_beats(const std::vector<Annotation>& annotations, LabelRule rule = LabelRule::aami) {
  std::vector<Beat> beats;
  for (const auto& a : annotations) {
    const int label = binary_label(a.symbol, rule);
    if (label != label_dropped) beats.push_back({a.sample, a.symbol, label});
  }
  return beats;
}

inline constexpr int beats_per_window = 6;
inline constexpr long samples_before_r = 100;  ///< 278 ms at 360 Hz

/// Six consecutive beats: samples [start, end) = [bounds_0, bounds_6); beat j is [bounds_j, bounds_{j+1}).
/// Under the clean rules bounds_j = R_{i+j} − 100; a label of −1 means the window is not in that dataset
/// (only the authors' protocol keeps such windows, for the other dataset).
struct Window {
  long start, end;
  std::array<long, beats_per_window + 1> r_peaks;  ///< R_i … R_{i+6} (the seventh bounds beat 5)
  std::array<long, beats_per_window + 1> bounds;   ///< beat boundaries, record samples
  std::array<int, beats_per_window> labels;
  std::array<char, beats_per_window> symbols;
  /// Samples [begin, end) of beat j (0…5), in record coordinates.
  long beat_begin(int j) const { return bounds[static_cast<std::size_t>(j)]; }
  long beat_end(int j) const { return bounds[static_cast<std::size_t>(j) + 1]; }
  int label_last() const { return labels[beats_per_window - 1]; }  ///< dataset 1
  int label_first() const { return labels[0]; }                    ///< dataset 2
};

/// Windows i = 0 … beats − 7 of one record; a window starting before sample 0 is dropped.
inline std::vector<Window> cut_windows(const std::vector<Beat>& beats, long signal_length) {
  std::vector<Window> out;
  for (std::size_t i = 0; i + beats_per_window < beats.size(); ++i) {
    Window w{};
    for (int j = 0; j <= beats_per_window; ++j) {
      w.r_peaks[static_cast<std::size_t>(j)] = beats[i + static_cast<std::size_t>(j)].r_peak;
      w.bounds[static_cast<std::size_t>(j)] = w.r_peaks[static_cast<std::size_t>(j)] - samples_before_r;
    }
    for (int j = 0; j < beats_per_window; ++j) {
      w.labels[static_cast<std::size_t>(j)] = beats[i + static_cast<std::size_t>(j)].label;
      w.symbols[static_cast<std::size_t>(j)] = beats[i + static_cast<std::size_t>(j)].symbol;
    }
    w.start = w.r_peaks[0] - samples_before_r;
    w.end = w.r_peaks[beats_per_window] - samples_before_r;
    if (w.start < 0 || w.end > signal_length || w.end <= w.start) continue;
    out.push_back(w);
  }
  return out;
}

/**
 * The authors' windows: with annotation samples t_0 … t_{n−1} (every annotation, beat or not), window
 * i = 0 … n − 6 has bounds_j = clamp(t_{i+j} − 100, 0, L) and bounds_6 = L (the record's end) for the last
 * window; it is kept when annotation i + 5 (dataset 1) or i (dataset 2) is an N/S/V/F beat, and labels
 * of the other dataset are −1.
 */
inline std::vector<Window> cut_windows_authors(const std::vector<Annotation>& annotations, long signal_length,
                                               LabelRule rule = LabelRule::aami) {
  std::vector<Window> out;
  const std::size_t n = annotations.size();
  for (std::size_t i = 0; i + beats_per_window <= n; ++i) {
    Window w{};
    for (std::size_t j = 0; j <= static_cast<std::size_t>(beats_per_window); ++j) {
      const bool inside = i + j < n;
      w.r_peaks[j] = inside ? annotations[i + j].sample : signal_length;
      w.bounds[j] = inside ? std::clamp(annotations[i + j].sample - samples_before_r, 0L, signal_length) : signal_length;
    }
    for (std::size_t j = 0; j < static_cast<std::size_t>(beats_per_window); ++j) {
      w.labels[j] = binary_label(annotations[i + j].symbol, rule);
      w.symbols[j] = annotations[i + j].symbol;
    }
    w.start = w.bounds[0];
    w.end = w.bounds[beats_per_window];
    if (w.label_last() == label_dropped && w.label_first() == label_dropped) continue;
    if (w.end <= w.start) continue;
    out.push_back(w);
  }
  return out;
}

/// Which beat labels a window: dataset 1 the last (5), dataset 2 the first (0).
inline int labelled_beat(int dataset) {
  check(dataset == 1 || dataset == 2, "ECG dataset must be 1 (label of the last beat) or 2 (of the first), got ", dataset);
  return dataset == 1 ? beats_per_window - 1 : 0;
}

/// The inter-patient split of de Chazal et al. (2004); paced records 102, 104, 107, 217 left out.
struct Split {
  std::vector<std::string> train, validation, test;
};

inline const Split& inter_patient_split() {
  static const Split split{
      {"101", "106", "109", "112", "115", "116", "118", "119", "122", "124", "203", "205", "207", "208", "209", "220", "223"},
      {"108", "114", "201", "215", "230"},
      {"100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213", "214", "219", "221", "222",
       "228", "231", "232", "233", "234"}};
  return split;
}

/// The split of `protocol`: the authors' training set leaves out record 207.
inline const Split& inter_patient_split(Protocol protocol) {
  if (protocol == Protocol::qx) return inter_patient_split();
  static const Split split = [] {
    Split s = inter_patient_split();
    std::erase(s.train, std::string("207"));
    return s;
  }();
  return split;
}

}  // namespace ecg
QX_NAMESPACE_END
