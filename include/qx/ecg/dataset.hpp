// The paper's two datasets as safetensors shards, and a reader that streams them.
// Both datasets cut the same windows and draw the same images; they differ only in which beat labels a
// window (dataset 1: the last, dataset 2: the first) and so in the ROI. One set of shards per split
// therefore serves both: each shard holds `images` (n, C, S, S) U8, `label_last`/`label_first` (n) I64,
// `roi_last`/`roi_first` (n, 4) I64 as [x0, y0, x1, y1), `record` (n) I64 and `r_peaks` (n, 7) I64
// (R_i … R_{i+6}, record sample indices). A dataset card (dataset_card.json) lists shards and counts.
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
  std::string lead = "MLII";
  /// At most this many windows per split (0: all) — for quick demonstrations; taken evenly spaced.
  Index limit_per_split = 0;
};

/// One record's windows with the MLII trace in mV.
struct RecordWindows {
  std::string record;
  std::vector<float> signal;
  std::vector<Window> windows;
};

/// Reads a record and cuts its windows (the lead is found by name).
inline RecordWindows record_windows(const std::filesystem::path& mitdb, const std::string& record, const std::string& lead,
                                    LabelRule rule) {
  const Record r = read_record(mitdb, record);
  RecordWindows out;
  out.record = record;
  out.signal = r.physical(r.signal_index(lead));
  const auto annotations = read_annotations(mitdb, record, r.num_samples());
  out.windows = cut_windows(kept_beats(annotations, rule), r.num_samples());
  return out;
}

/// Renders window `w` of `rw` into `image` and returns the ROIs of beat 5 and of beat 0.
inline std::pair<RoiBox, RoiBox> render_with_rois(const RecordWindows& rw, const Window& w, const RenderOptions& options,
                                                  std::uint8_t* image, std::vector<float>& scratch) {
  const float* samples = rw.signal.data() + w.start;
  const long n = w.end - w.start;
  const PixelMap map = render_window(samples, n, options, image, scratch);
  auto roi = [&](int beat) { return roi_of_span(map, samples, w.beat_begin(beat) - w.start, w.beat_end(beat) - w.start); };
  return {roi(beats_per_window - 1), roi(0)};
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
          {"lead", o.lead},
          {"limit_per_split", o.limit_per_split},
          {"samples_before_r", samples_before_r},
          {"normalisation", "input = (255 - pixel) / 255 (ink 1, background 0)"}};
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

  const auto& split = inter_patient_split();
  const std::pair<std::string, const std::vector<std::string>*> parts[] = {
      {"train", &split.train}, {"validation", &split.validation}, {"test", &split.test}};
  for (const auto& [name, records] : parts) {
    std::vector<RecordWindows> data;
    std::vector<std::pair<std::size_t, std::size_t>> items;  // (record, window)
    for (const auto& record : *records) {
      data.push_back(record_windows(options.mitdb, record, options.lead, options.rule));
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
    detail::Running random_focus_last, random_focus_first;
    if (progress) progress(name, 0, total);
    for (Index first = 0, shard = 0; first < total; first += options.shard_size, ++shard) {
      const Index n = std::min(options.shard_size, total - first);
      const fs::path path = options.out / detail::shard_name(name, static_cast<std::size_t>(shard));
      auto labels_last = Tensor<std::int64_t>::empty({n}), labels_first = Tensor<std::int64_t>::empty({n});
      auto roi_last = Tensor<std::int64_t>::empty({n, 4}), roi_first = Tensor<std::int64_t>::empty({n, 4});
      bool reuse = false;
      if (fs::exists(path)) {
        try {
          const auto existing = io::SafetensorsFile::open(path);
          reuse = existing.metadata().count("settings") && existing.metadata().at("settings") == settings_text &&
                  existing.shape("images")[0] == n;
          if (reuse) {
            labels_last = existing.get<std::int64_t>("label_last");
            labels_first = existing.get<std::int64_t>("label_first");
            roi_last = existing.get<std::int64_t>("roi_last");
            roi_first = existing.get<std::int64_t>("roi_first");
          }
        } catch (const Error&) {
          reuse = false;  // unreadable or foreign: rebuild it
        }
      }
      if (!reuse) {
        auto images = Tensor<std::uint8_t>::empty({n, channels, s, s});
        auto record_ids = Tensor<std::int64_t>::empty({n});
        auto r_peaks = Tensor<std::int64_t>::empty({n, beats_per_window + 1});
        std::vector<std::vector<float>> scratch(static_cast<std::size_t>(num_threads()));
        parallel_for(0, n, [&](Index i) {
          int thread = 0;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
          thread = omp_get_thread_num();
#endif
          const auto [ri, wi] = items[static_cast<std::size_t>(first + i)];
          const auto& rw = data[ri];
          const Window& w = rw.windows[wi];
          const auto [last, first_roi] = render_with_rois(rw, w, options.render, images.data() + i * image_bytes,
                                                          scratch[static_cast<std::size_t>(thread)]);
          labels_last.data()[i] = w.label_last();
          labels_first.data()[i] = w.label_first();
          const RoiBox boxes[2] = {last, first_roi};
          for (int b = 0; b < 2; ++b) {
            auto* dst = (b == 0 ? roi_last : roi_first).data() + 4 * i;
            dst[0] = boxes[b].x0, dst[1] = boxes[b].y0, dst[2] = boxes[b].x1, dst[3] = boxes[b].y1;
          }
          record_ids.data()[i] = std::stoll(rw.record);
          for (int j = 0; j <= beats_per_window; ++j) r_peaks.data()[i * (beats_per_window + 1) + j] = w.r_peaks[static_cast<std::size_t>(j)];
        }, 1, 1);
        io::SafetensorsWriter writer;
        writer.add("images", images);
        writer.add("label_last", labels_last);
        writer.add("label_first", labels_first);
        writer.add("roi_last", roi_last);
        writer.add("roi_first", roi_first);
        writer.add("record", record_ids);
        writer.add("r_peaks", r_peaks);
        writer.set_metadata("settings", settings_text);
        writer.set_metadata("split", name);
        writer.write(path);
      }
      for (Index i = 0; i < n; ++i) {
        counts[labels_last.data()[i] ? "dataset1_abnormal" : "dataset1_normal"]++;
        counts[labels_first.data()[i] ? "dataset2_abnormal" : "dataset2_normal"]++;
        const auto area = [&](const Tensor<std::int64_t>& r) {
          const auto* b = r.data() + 4 * i;
          return static_cast<double>((b[2] - b[0]) * (b[3] - b[1])) / static_cast<double>(s * s);
        };
        random_focus_last.add(area(roi_last));
        random_focus_first.add(area(roi_first));
      }
      shards.push_back({{"file", path.filename().string()}, {"windows", n}});
      if (progress) progress(name, first + n, total);
    }
    card["splits"][name] = {{"records", *records},          {"windows", total},
                            {"counts", counts},             {"shards", shards},
                            {"random_focus_dataset1", random_focus_last.json()},
                            {"random_focus_dataset2", random_focus_first.json()}};
  }
  io::write_file_atomic(options.out / "dataset_card.json", [&](std::ostream& out) { out << card.dump(2) << '\n'; });
  return card;
}

/**
 * @brief Streams one split of a built dataset: dataset 1 or 2 selects the label and the ROI.
 * Shards are loaded on first use and kept (up to `cached_shards`, least recently used dropped).
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
    } catch (const nlohmann::json::exception& e) {
      fail("ECG dataset: '", card_path, "' is not a valid dataset card (", e.what(), ")");
    }
    check(size_image_ > 0 && size_image_ <= 65536 && (channels_ == 1 || channels_ == 3), "ECG dataset: '", card_path,
          "' gives images of ", channels_, " × ", size_image_, " × ", size_image_);
    // Labels and ROIs of the whole split are small: load them once.
    labels_.reserve(static_cast<std::size_t>(size_));
    for (std::size_t f = 0; f < files_.size(); ++f) {
      const auto file = io::SafetensorsFile::open(dir_ / files_[f]);
      const auto labels = file.get<std::int64_t>(dataset == 1 ? "label_last" : "label_first");
      const auto rois = file.get<std::int64_t>(dataset == 1 ? "roi_last" : "roi_first");
      const auto records = file.get<std::int64_t>("record");
      const Index n = shard_windows(f);
      check(labels.shape() == Shape{n} && rois.shape() == Shape{n, 4} && records.shape() == Shape{n}, "ECG dataset: '",
            (dir_ / files_[f]).string(), "' holds labels ", shape_str(labels.shape()), ", ROIs ", shape_str(rois.shape()),
            " and records ", shape_str(records.shape()), " but the card says ", n, " windows");
      for (Index i = 0; i < n; ++i) {
        labels_.push_back(labels.data()[i]);
        const RoiBox roi{rois.data()[4 * i], rois.data()[4 * i + 1], rois.data()[4 * i + 2], rois.data()[4 * i + 3]};
        check(0 <= roi.x0 && roi.x0 <= roi.x1 && roi.x1 <= size_image_ && 0 <= roi.y0 && roi.y0 <= roi.y1 && roi.y1 <= size_image_,
              "ECG dataset: '", (dir_ / files_[f]).string(), "' window ", i, " has ROI [", roi.x0, ", ", roi.x1, ") × [", roi.y0,
              ", ", roi.y1, "), not inside its ", size_image_, " × ", size_image_, " image");
        rois_.push_back(roi);
        records_.push_back(records.data()[i]);
      }
    }
  }

  Index size() const noexcept { return size_; }
  Index image_size() const noexcept { return size_image_; }
  Index channels() const noexcept { return channels_; }
  int dataset() const noexcept { return dataset_; }
  Index label(Index i) const { return labels_.at(static_cast<std::size_t>(i)); }
  const RoiBox& roi(Index i) const { return rois_.at(static_cast<std::size_t>(i)); }
  Index record(Index i) const { return records_.at(static_cast<std::size_t>(i)); }
  const std::vector<Index>& labels() const noexcept { return labels_; }

  /// The U8 image of window i (C·S·S bytes).
  const std::uint8_t* image(Index i) {
    check(i >= 0 && i < size_, "ECG dataset: index ", i, " out of range [0, ", size_, ")");
    const auto shard = static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), i) - starts_.begin() - 1);
    const auto& images = load(shard);
    return images.data() + (i - starts_[shard]) * channels_ * size_image_ * size_image_;
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
      for (Index p = 0; p < per; ++p) dst[p] = static_cast<T>(image_to_input(src[p]));
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

  Index shard_windows(std::size_t shard) const { return (shard + 1 < starts_.size() ? starts_[shard + 1] : size_) - starts_[shard]; }

  std::filesystem::path dir_;
  int dataset_;
  std::size_t capacity_;
  nlohmann::json settings_;
  std::vector<std::string> files_;
  std::vector<Index> starts_;
  Index size_ = 0, size_image_ = 0, channels_ = 1;
  std::vector<Index> labels_, records_;
  std::vector<RoiBox> rois_;
  std::map<std::size_t, Tensor<std::uint8_t>> cache_;
  std::vector<std::size_t> order_;
};

}  // namespace ecg
QX_NAMESPACE_END
