// The paper's two datasets as safetensors shards, and a reader that streams them.
// Both datasets cut the same windows and draw the same images; they differ only in which beat labels a
// window (dataset 1: the last, dataset 2: the first) and so in the ROI. One set of shards per split
// therefore serves both: each shard holds `images` (n, C, S, S) U8, `label_last`/`label_first` (n) I64,
// `roi_last`/`roi_first` (n, 4) I64 as [x0, y0, x1, y1), `random_last`/`random_first` (n) F64 (the
// random focus as the protocol defines it), `record` (n) I64, `r_peaks` (n, 7) I64 (R_i … R_{i+6}, record
// sample indices) and `symbols` (n, 6) U8 (the six annotation symbols). A label of −1 means "not in this
// dataset" (the authors' protocol only). A dataset card (dataset_card.json) lists shards and counts.
#pragma once
#include "qx/config.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/ecg/beats.hpp"
#include "qx/ecg/render.hpp"
#include "qx/ecg/wfdb.hpp"
#include "qx/io/atomic_file.hpp"
#include "qx/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ecg {

struct BuildOptions {
  std::filesystem::path mitdb = "../shared/data/mitdb";
  std::filesystem::path out = "out/ecg";
  RenderOptions render;
  Index shard_size = 2048;
  LabelRule rule = LabelRule::aami;
  std::string lead = "MLII";  ///< the clean rules' lead, found by name (the authors' protocol takes signal 0)
  Protocol protocol = Protocol::qx;
  /// At most this many windows per split (0: all) — for quick demonstrations; taken evenly spaced.
  Index limit_per_split = 0;
  /// false: count windows and compute ROIs and random focus only, writing the card but no shards.
  bool images = true;
};

/// One record's windows with the chosen lead in mV.
struct RecordWindows {
  std::string record;
  double frequency = 360;
  std::vector<float> signal;
  std::vector<Window> windows;
};

/// Reads a record and cuts its windows by `protocol`'s rules (lead by name, or the authors' signal 0).
inline RecordWindows record_windows(const std::filesystem::path& mitdb, const std::string& record, const std::string& lead,
                                    LabelRule rule, Protocol protocol = Protocol::qx) {
  const Record r = read_record(mitdb, record);
  RecordWindows out;
  out.record = record;
  out.frequency = r.header.sampling_frequency;
  out.signal = r.physical(protocol == Protocol::authors ? 0 : r.signal_index(lead));
  const auto annotations = read_annotations(mitdb, record, r.num_samples());
  out.windows = protocol == Protocol::authors ? cut_windows_authors(annotations, r.num_samples(), rule)
                                              : cut_windows(kept_beats(annotations, rule), r.num_samples());
  return out;
}

/// ROIs of beat 5 and beat 0 (dataset 1, dataset 2), and each one's random focus as the protocol
/// defines it (qx: the clipped box's area; authors: the unclipped box's, conventions).
struct WindowRois {
  RoiBox last, first;
  double random_last = 0, random_first = 0;
};

/// Renders window `w` of `rw` into `image` (none when `image` is null) and returns its ROIs.
inline WindowRois render_with_rois(const RecordWindows& rw, const Window& w, const RenderOptions& options, Protocol protocol,
                                   std::uint8_t* image, std::vector<float>& scratch) {
  const float* samples = rw.signal.data() + w.start;
  const long n = w.end - w.start;
  const double image_area = static_cast<double>(options.size * options.size);
  WindowRois out;
  if (protocol == Protocol::authors) {
    const AuthorsMap map = image ? render_authors_window(samples, n, rw.frequency, options, image, scratch)
                                 : authors_map(samples, n, rw.frequency, options.size);
    auto roi = [&](int beat) { return authors_roi(map, samples, w.beat_begin(beat) - w.start, w.beat_end(beat) - w.start); };
    const ExactBox last = roi(beats_per_window - 1), first = roi(0);
    out = {last.clipped(options.size), first.clipped(options.size), last.area() / image_area, first.area() / image_area};
  } else {
    const PixelMap map = image ? render_window(samples, n, options, image, scratch) : pixel_map(samples, n, options);
    auto roi = [&](int beat) { return roi_of_span(map, samples, w.beat_begin(beat) - w.start, w.beat_end(beat) - w.start); };
    out.last = roi(beats_per_window - 1);
    out.first = roi(0);
    out.random_last = static_cast<double>(out.last.area()) / image_area;
    out.random_first = static_cast<double>(out.first.area()) / image_area;
  }
  return out;
}

namespace detail {
inline std::string shard_name(const std::string& split, std::size_t index) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%s-%05zu.safetensors", split.c_str(), index);
  return buffer;
}

inline nlohmann::json settings_json(const BuildOptions& o) {
  return {{"size", o.render.size},
          {"channels", o.render.channels},
          {"line_width", o.render.line_width},
          {"margin", o.render.margin},
          {"shard_size", o.shard_size},
          {"label_rule", o.rule == LabelRule::aami ? "aami" : "strict"},
          {"protocol", to_string(o.protocol)},
          {"lead", o.protocol == Protocol::authors ? std::string("signal 0") : o.lead},
          {"limit_per_split", o.limit_per_split},
          {"samples_before_r", samples_before_r},
          {"shard_format", 2},
          {"normalisation", o.protocol == Protocol::authors ? "imagenet" : "ink"}};
}

struct Running {
  double sum = 0, sum2 = 0;
  Index n = 0;
  void add(double v) {
    sum += v;
    sum2 += v * v;
    ++n;
  }
  nlohmann::json json() const {
    const double mean = n ? sum / static_cast<double>(n) : 0;
    const double var = n > 1 ? (sum2 - static_cast<double>(n) * mean * mean) / static_cast<double>(n - 1) : 0;
    return {{"mean", mean}, {"sd", std::sqrt(std::max(0.0, var))}, {"n", n}};
  }
};
}  // namespace detail

/// Progress callback: (split, windows done in this split, windows in this split).
using BuildProgress = std::function<void(const std::string&, Index, Index)>;

/**
 * @brief Builds the train/validation/test shards of both datasets and returns the dataset card.
 * Resumable: a shard whose file exists with the same settings is kept, not rewritten (every shard and
 * the card are written atomically, so an interrupted build leaves only complete files).
 */
inline nlohmann::json build_datasets(const BuildOptions& options, const BuildProgress& progress = {}) {
  namespace fs = std::filesystem;
  check(fs::is_directory(options.mitdb), "qx ecg: MIT-BIH folder '", options.mitdb.string(), "' does not exist");
  check(options.shard_size > 0, "qx ecg: shard size must be positive, got ", options.shard_size);
  fs::create_directories(options.out);
  const nlohmann::json settings = detail::settings_json(options);
  const std::string settings_text = settings.dump();
  const Index s = options.render.size, channels = options.render.channels;
  const Index image_bytes = channels * s * s;
  nlohmann::json card = {{"settings", settings}, {"source", options.mitdb.string()}, {"splits", nlohmann::json::object()}};

  const auto& split = inter_patient_split(options.protocol);
  const std::pair<std::string, const std::vector<std::string>*> parts[] = {
      {"train", &split.train}, {"validation", &split.validation}, {"test", &split.test}};
  for (const auto& [name, records] : parts) {
    std::vector<RecordWindows> data;
    std::vector<std::pair<std::size_t, std::size_t>> items;  // (record, window)
    for (const auto& record : *records) {
      data.push_back(record_windows(options.mitdb, record, options.lead, options.rule, options.protocol));
      for (std::size_t w = 0; w < data.back().windows.size(); ++w) items.emplace_back(data.size() - 1, w);
    }
    if (options.limit_per_split > 0 && static_cast<Index>(items.size()) > options.limit_per_split) {
      std::vector<std::pair<std::size_t, std::size_t>> picked;
      const double step = static_cast<double>(items.size()) / static_cast<double>(options.limit_per_split);
      for (Index i = 0; i < options.limit_per_split; ++i) picked.push_back(items[static_cast<std::size_t>(static_cast<double>(i) * step)]);
      items.swap(picked);
    }
    const Index total = static_cast<Index>(items.size());
    nlohmann::json shards = nlohmann::json::array();
    std::map<std::string, Index> counts;
    detail::Running random_focus[2];
    if (progress) progress(name, 0, total);
    for (Index first = 0, shard = 0; first < total; first += options.shard_size, ++shard) {
      const Index n = std::min(options.shard_size, total - first);
      const fs::path path = options.out / detail::shard_name(name, static_cast<std::size_t>(shard));
      bool reuse = false;
      if (options.images && fs::exists(path)) {
        try {
          const auto existing = io::SafetensorsFile::open(path);
          reuse = existing.metadata().count("settings") && existing.metadata().at("settings") == settings_text &&
                  existing.shape("images")[0] == n;
        } catch (const Error&) {
          reuse = false;  // unreadable or foreign: rebuild it
        }
      }
      // Labels, ROIs and the rest are cheap and recomputed; only the images are reused.
      // [0]: dataset 1 (beat 5), [1]: dataset 2 (beat 0).
      Tensor<std::int64_t> labels[2] = {Tensor<std::int64_t>::empty({n}), Tensor<std::int64_t>::empty({n})};
      Tensor<std::int64_t> rois[2] = {Tensor<std::int64_t>::empty({n, 4}), Tensor<std::int64_t>::empty({n, 4})};
      Tensor<double> random[2] = {Tensor<double>::empty({n}), Tensor<double>::empty({n})};
      auto images = Tensor<std::uint8_t>::empty({options.images && !reuse ? n : 0, channels, s, s});
      auto record_ids = Tensor<std::int64_t>::empty({n});
      auto r_peaks = Tensor<std::int64_t>::empty({n, beats_per_window + 1});
      auto symbols = Tensor<std::uint8_t>::empty({n, beats_per_window});
      std::vector<std::vector<float>> scratch(static_cast<std::size_t>(num_threads()));
      parallel_for(0, n, [&](Index i) {
        int thread = 0;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
        thread = omp_get_thread_num();
#endif
        const auto [ri, wi] = items[static_cast<std::size_t>(first + i)];
        const auto& rw = data[ri];
        const Window& w = rw.windows[wi];
        const WindowRois r = render_with_rois(rw, w, options.render, options.protocol,
                                              images.numel() ? images.data() + i * image_bytes : nullptr,
                                              scratch[static_cast<std::size_t>(thread)]);
        const RoiBox boxes[2] = {r.last, r.first};
        for (int d = 0; d < 2; ++d) {
          labels[d].data()[i] = d == 0 ? w.label_last() : w.label_first();
          random[d].data()[i] = d == 0 ? r.random_last : r.random_first;
          auto* dst = rois[d].data() + i * 4;
          dst[0] = boxes[d].x0, dst[1] = boxes[d].y0, dst[2] = boxes[d].x1, dst[3] = boxes[d].y1;
        }
        record_ids.data()[i] = std::stoll(rw.record);
        for (int j = 0; j <= beats_per_window; ++j) r_peaks.data()[i * (beats_per_window + 1) + j] = w.r_peaks[static_cast<std::size_t>(j)];
        for (int j = 0; j < beats_per_window; ++j)
          symbols.data()[i * beats_per_window + j] = static_cast<std::uint8_t>(w.symbols[static_cast<std::size_t>(j)]);
      }, 1, 1);
      if (options.images && !reuse) {
        io::SafetensorsWriter writer;
        writer.add("images", images);
        const char* suffix[2] = {"last", "first"};
        for (Index d = 0; d < 2; ++d) {
          writer.add(std::string("label_") + suffix[d], labels[d]);
          writer.add(std::string("roi_") + suffix[d], rois[d]);
          writer.add(std::string("random_") + suffix[d], random[d]);
        }
        writer.add("record", record_ids);
        writer.add("r_peaks", r_peaks);
        writer.add("symbols", symbols);
        writer.set_metadata("settings", settings_text);
        writer.set_metadata("split", name);
        writer.write(path);
      }
      for (Index d = 0; d < 2; ++d)
        for (Index i = 0; i < n; ++i) {
          const auto label = labels[d].data()[i];
          if (label < 0) continue;
          const std::string key = "dataset" + std::to_string(d + 1);
          counts[key + "_windows"]++;
          counts[key + (label ? "_abnormal" : "_normal")]++;
          random_focus[d].add(random[d].data()[i]);
          const auto* b = rois[d].data() + i * 4;
          if (b[2] <= b[0] || b[3] <= b[1]) counts[key + "_roi_outside_picture"]++;
        }
      if (options.images) shards.push_back({{"file", path.filename().string()}, {"windows", n}});
      if (progress) progress(name, first + n, total);
    }
    card["splits"][name] = {{"records", *records},          {"windows", total},
                            {"counts", counts},             {"shards", shards},
                            {"random_focus_dataset1", random_focus[0].json()},
                            {"random_focus_dataset2", random_focus[1].json()}};
  }
  io::write_file_atomic(options.out / "dataset_card.json", [&](std::ostream& out) { out << card.dump(2) << '\n'; });
  return card;
}

/**
 * @brief Streams one split of a built dataset: dataset 1 or 2 selects the label and the ROI, and the
 * windows (those labelled −1 for it are not in it). Shards are loaded on first use and kept (up to
 * `cached_shards`, least recently used dropped).
 */
class ShardedDataset {
 public:
  ShardedDataset(const std::filesystem::path& dir, const std::string& split, int dataset, std::size_t cached_shards = 1024)
      : dir_(dir), dataset_(dataset), capacity_(cached_shards) {
    labelled_beat(dataset);  // validates 1 or 2
    std::ifstream in(dir / "dataset_card.json");
    check(static_cast<bool>(in), "ECG dataset: no dataset_card.json in '", dir.string(), "' (build it with `qx ecg build`)");
    const std::string card_path = (dir / "dataset_card.json").string();
    // Whatever the card holds, a wrong type or a missing field is an error naming it, never a crash.
    try {
      nlohmann::json card;
      in >> card;
      check(card.is_object() && card.contains("splits") && card["splits"].contains(split), "ECG dataset: '", card_path,
            "' has no split '", split, "'");
      settings_ = card.at("settings");
      for (const auto& shard : card["splits"][split].at("shards")) {
        files_.push_back(shard.at("file").get<std::string>());
        starts_.push_back(size_);
        const Index windows = shard.at("windows").get<Index>();
        check(windows >= 0, "ECG dataset: '", card_path, "' gives shard '", files_.back(), "' ", windows, " windows");
        size_ += windows;
      }
      size_image_ = settings_.at("size").get<Index>();
      channels_ = settings_.at("channels").get<Index>();
      const auto rule = settings_.value("label_rule", std::string("aami"));  // an older card has none: AAMI
      check(rule == "aami" || rule == "strict", "ECG dataset: '", card_path, "' gives the label rule '", rule,
            "', not aami or strict");
      label_rule_ = rule == "strict" ? LabelRule::strict : LabelRule::aami;
    } catch (const nlohmann::json::exception& e) {
      fail("ECG dataset: '", card_path, "' is not a valid dataset card (", e.what(), ")");
    }
    check(size_image_ > 0 && size_image_ <= 65536 && (channels_ == 1 || channels_ == 3), "ECG dataset: '", card_path,
          "' gives images of ", channels_, " × ", size_image_, " × ", size_image_);
    imagenet_ = settings_.value("normalisation", std::string()) == "imagenet";
    check(settings_.value("shard_format", 1) == 2, "ECG dataset: '", dir.string(),
          "' was built by an older qx (shard format 1); build it again with `qx ecg build`");
    stored_ = size_;
    // Labels, ROIs and the rest of the whole split are small: load them once, keeping this dataset's windows.
    const std::string beat = dataset == 1 ? "last" : "first";
    Index stored = 0;
    for (std::size_t f = 0; f < files_.size(); ++f) {
      const auto file = io::SafetensorsFile::open(dir_ / files_[f]);
      const auto labels = file.get<std::int64_t>("label_" + beat);
      const auto rois = file.get<std::int64_t>("roi_" + beat);
      const auto random = file.get<double>("random_" + beat);
      const auto records = file.get<std::int64_t>("record");
      const auto symbols = file.get<std::uint8_t>("symbols");
      const Index n = shard_windows(f);
      check(labels.shape() == Shape{n} && rois.shape() == Shape{n, 4} && records.shape() == Shape{n} && random.shape() == Shape{n} &&
                symbols.shape() == Shape{n, beats_per_window},
            "ECG dataset: '", (dir_ / files_[f]).string(), "' holds labels ", shape_str(labels.shape()), ", ROIs ",
            shape_str(rois.shape()), ", random focus ", shape_str(random.shape()), ", records ", shape_str(records.shape()),
            " and symbols ", shape_str(symbols.shape()), " but the card says ", n, " windows");
      for (Index i = 0; i < n; ++i, ++stored) {
        if (labels.data()[i] < 0) continue;  // not in this dataset (authors' protocol)
        const RoiBox roi{rois.data()[4 * i], rois.data()[4 * i + 1], rois.data()[4 * i + 2], rois.data()[4 * i + 3]};
        check(0 <= roi.x0 && roi.x0 <= roi.x1 && roi.x1 <= size_image_ && 0 <= roi.y0 && roi.y0 <= roi.y1 && roi.y1 <= size_image_,
              "ECG dataset: '", (dir_ / files_[f]).string(), "' window ", i, " has ROI [", roi.x0, ", ", roi.x1, ") × [", roi.y0,
              ", ", roi.y1, "), not inside its ", size_image_, " × ", size_image_, " image");
        positions_.push_back(stored);
        labels_.push_back(labels.data()[i]);
        rois_.push_back(roi);
        random_.push_back(random.data()[i]);
        records_.push_back(records.data()[i]);
        for (int j = 0; j < beats_per_window; ++j)
          beat_symbols_.push_back(static_cast<char>(symbols.data()[i * beats_per_window + j]));
      }
    }
    size_ = static_cast<Index>(labels_.size());
  }

  Index size() const noexcept { return size_; }
  Index image_size() const noexcept { return size_image_; }
  Index channels() const noexcept { return channels_; }
  int dataset() const noexcept { return dataset_; }
  Index label(Index i) const { return labels_.at(static_cast<std::size_t>(i)); }
  const RoiBox& roi(Index i) const { return rois_.at(static_cast<std::size_t>(i)); }
  Index record(Index i) const { return records_.at(static_cast<std::size_t>(i)); }
  /// The random focus of window i as the protocol defines it (ROI area / image area).
  double random_focus(Index i) const { return random_.at(static_cast<std::size_t>(i)); }
  /// The annotation symbol of window i's labelled beat (its AAMI class: aami_class).
  char symbol(Index i) const { return beat_symbol(i, labelled_beat(dataset_)); }
  /// The annotation symbol of beat `beat` (0 … 5, in time order) of window i.
  char beat_symbol(Index i, Index beat) const {
    check(beat >= 0 && beat < beats_per_window, "ECG dataset: beat ", beat, " of a window outside [0, ", beats_per_window, ")");
    return beat_symbols_.at(static_cast<std::size_t>(i * beats_per_window + beat));
  }
  /// The rule the dataset's labels were made by (the card's "label_rule"; AAMI when an older card has none).
  LabelRule label_rule() const noexcept { return label_rule_; }
  /// Whether inputs are ImageNet-normalised RGB values (the authors' protocol) rather than ink.
  bool imagenet_normalised() const noexcept { return imagenet_; }
  const std::vector<Index>& labels() const noexcept { return labels_; }

  /// The U8 image of window i (C·S·S bytes).
  const std::uint8_t* image(Index i) {
    check(i >= 0 && i < size_, "ECG dataset: index ", i, " out of range [0, ", size_, ")");
    const Index at = positions_[static_cast<std::size_t>(i)];
    const auto shard = static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), at) - starts_.begin() - 1);
    const auto& images = load(shard);
    return images.data() + (at - starts_[shard]) * channels_ * size_image_ * size_image_;
  }

  /// images (B, C, S, S) float model inputs (image_to_input) and labels of the windows `indices`.
  template <class T>
  void get_batch(const std::vector<Index>& indices, Tensor<T>& images, std::vector<Index>& labels) {
    const Index per = channels_ * size_image_ * size_image_, b = static_cast<Index>(indices.size());
    if (images.shape() != Shape{b, channels_, size_image_, size_image_}) images = Tensor<T>::empty({b, channels_, size_image_, size_image_});
    labels.resize(indices.size());
    for (Index k = 0; k < b; ++k) {
      const std::uint8_t* src = image(indices[static_cast<std::size_t>(k)]);
      T* dst = images.data() + k * per;
      if (imagenet_) {
        const Index plane = size_image_ * size_image_;
        for (Index p = 0; p < per; ++p) dst[p] = static_cast<T>(imagenet_input(src[p], p / plane));
      } else {
        for (Index p = 0; p < per; ++p) dst[p] = static_cast<T>(image_to_input(src[p]));
      }
      labels[static_cast<std::size_t>(k)] = label(indices[static_cast<std::size_t>(k)]);
    }
  }

 private:
  const Tensor<std::uint8_t>& load(std::size_t shard) {
    auto it = cache_.find(shard);
    if (it == cache_.end()) {
      if (cache_.size() >= capacity_) cache_.erase(order_.front()), order_.erase(order_.begin());
      const auto file = io::SafetensorsFile::open(dir_ / files_[shard]);
      auto images = file.get<std::uint8_t>("images");
      const Shape expected{shard_windows(shard), channels_, size_image_, size_image_};
      check(images.shape() == expected, "ECG dataset: '", (dir_ / files_[shard]).string(), "' holds images ",
            shape_str(images.shape()), " but the card says ", shape_str(expected));
      it = cache_.emplace(shard, std::move(images)).first;
      order_.push_back(shard);
    }
    return it->second;
  }

  /// Windows stored in a shard (of both datasets; stored_ counts them all, size_ only this dataset's).
  Index shard_windows(std::size_t shard) const { return (shard + 1 < starts_.size() ? starts_[shard + 1] : stored_) - starts_[shard]; }

  std::filesystem::path dir_;
  int dataset_;
  std::size_t capacity_;
  nlohmann::json settings_;
  std::vector<std::string> files_;
  std::vector<Index> starts_;
  Index size_ = 0, stored_ = 0, size_image_ = 0, channels_ = 1;
  bool imagenet_ = false;
  std::vector<Index> positions_, labels_, records_;  // positions_: this dataset's window → stored window
  std::vector<RoiBox> rois_;
  std::vector<double> random_;
  std::vector<char> beat_symbols_;  // beats_per_window per window
  LabelRule label_rule_ = LabelRule::aami;
  std::map<std::size_t, Tensor<std::uint8_t>> cache_;
  std::vector<std::size_t> order_;
};

}  // namespace ecg
QX_NAMESPACE_END
