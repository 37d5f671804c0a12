// Windows, labels and ROIs: the split sizes and abnormal counts of docs/conventions.md, labels taken
// from the right beat, and rendered images whose ROI lies inside the image and contains the labelled
// beat's R peak. Counting windows needs no rendering, so the full-database checks stay fast.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/ecg/ecg.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace fs = std::filesystem;
using namespace qx::ecg;

namespace {
const fs::path mitdb = QX_MITDB_DIR;

/// Build options writing to a fresh temporary folder `name` at image side `size`.
BuildOptions fresh_build(const std::string& name, qx::Index size) {
  BuildOptions options;
  options.mitdb = mitdb;
  options.out = qx_test::temp_path(name);
  fs::remove_all(options.out);
  options.render.size = size;
  return options;
}
}

TEST_CASE("AAMI classes and the two label rules") {
  for (char c : std::string("NLRej")) CHECK(binary_label(c) == label_normal);
  for (char c : std::string("AaJSVEF")) CHECK(binary_label(c) == label_abnormal);
  for (char c : std::string("/fQ+~|!x\"[]")) CHECK(binary_label(c) == label_dropped);
  CHECK(binary_label('L', LabelRule::strict) == label_abnormal);
  CHECK(binary_label('N', LabelRule::strict) == label_normal);
  CHECK(binary_label('Q', LabelRule::strict) == label_dropped);
}

TEST_CASE("split sizes and abnormal counts match the conventions") {
  struct Expected {
    const std::vector<std::string>* records;
    long windows, abnormal_last, abnormal_first;
  };
  const auto& split = inter_patient_split();
  CHECK(split.train.size() == 17);
  CHECK(split.validation.size() == 5);
  CHECK(split.test.size() == 22);
  const Expected expected[] = {{&split.train, 39680, 4559, 4553}, {&split.validation, 11192, 579, 578}, {&split.test, 49566, 5434, 5434}};
  for (const auto& e : expected) {
    long windows = 0, last = 0, first = 0;
    for (const auto& record : *e.records) {
      const auto annotations = read_annotations(mitdb, record, 650000);
      const auto beats = kept_beats(annotations);
      const auto cut = cut_windows(beats, 650000);
      windows += static_cast<long>(cut.size());
      for (std::size_t i = 0; i < cut.size(); ++i) {
        last += cut[i].label_last();
        first += cut[i].label_first();
      }
    }
    CHECK(windows == e.windows);
    CHECK(last == e.abnormal_last);
    CHECK(first == e.abnormal_first);
  }
}

TEST_CASE("window i spans R_i - 100 to R_{i+6} - 100, dataset 1 labels by beat 5 and dataset 2 by beat 0") {
  const std::vector<Beat> beats{{50, 'N', 0},   {400, 'N', 0},  {700, 'V', 1},  {1000, 'N', 0}, {1300, 'N', 0},
                                {1600, 'N', 0}, {1900, 'A', 1}, {2200, 'N', 0}, {2500, 'N', 0}};
  const auto w = cut_windows(beats, 10000);
  // 9 beats give windows i = 0, 1, 2; window 0 would start at 50 - 100 < 0 and is dropped.
  REQUIRE(w.size() == 2);
  CHECK(w[0].start == 300);
  CHECK(w[0].end == 2100);
  CHECK(w[0].beat_begin(5) == 1800);
  CHECK(w[0].beat_end(5) == 2100);
  CHECK(w[0].label_first() == 0);  // beat at 400
  CHECK(w[0].label_last() == 1);   // beat at 1900 ('A')
  CHECK(w[1].start == 600);
  CHECK(w[1].label_first() == 1);  // beat at 700 ('V')
  CHECK(w[1].label_last() == 0);   // beat at 2200
  CHECK(labelled_beat(1) == 5);
  CHECK(labelled_beat(2) == 0);
  CHECK_THROWS_AS(labelled_beat(3), qx::Error);
  // A window reaching past the end of the signal is dropped too.
  CHECK(cut_windows(beats, 2300).size() == 1);
}

TEST_CASE("rendered windows: ROIs inside the image, containing the labelled beat's R peak, on the renderer's map") {
  RenderOptions options;
  options.size = 96;
  std::vector<std::uint8_t> image(static_cast<std::size_t>(options.size * options.size));
  std::vector<float> scratch;
  for (const char* record : {"100", "114", "208", "232"}) {
    const auto rw = record_windows(mitdb, record, "MLII", LabelRule::aami);
    for (std::size_t k = 0; k < rw.windows.size(); k += 97) {
      const Window& w = rw.windows[k];
      const float* samples = rw.signal.data() + w.start;
      const PixelMap map = render_window(samples, w.end - w.start, options, image.data(), scratch);
      for (int beat : {0, 5}) {
        const RoiBox roi = roi_of_span(map, samples, w.beat_begin(beat) - w.start, w.beat_end(beat) - w.start);
        CAPTURE(record);
        CAPTURE(k);
        CHECK(0 <= roi.x0);
        CHECK(roi.x0 < roi.x1);
        CHECK(roi.x1 <= options.size);
        CHECK(0 <= roi.y0);
        CHECK(roi.y0 < roi.y1);
        CHECK(roi.y1 <= options.size);
        const long r = w.r_peaks[static_cast<std::size_t>(beat)] - w.start;
        const auto rx = static_cast<qx::Index>(std::floor(map.x(static_cast<double>(r))));
        const auto ry = static_cast<qx::Index>(std::floor(map.y(samples[r])));
        CHECK(roi.contains(rx, ry));
        // Horizontal edges are the beat's time slots mapped linearly: x = k·S/n.
        const double scale = static_cast<double>(options.size) / static_cast<double>(w.end - w.start);
        CHECK(roi.x0 == static_cast<qx::Index>(std::floor(static_cast<double>(w.beat_begin(beat) - w.start) * scale)));
        CHECK(roi.x1 == std::min<qx::Index>(options.size, static_cast<qx::Index>(std::ceil(static_cast<double>(w.beat_end(beat) - w.start) * scale))));
        // The R-peak pixel is inked (dark) and the box's outside rows above it are not all ink.
        CHECK(image[static_cast<std::size_t>(ry * options.size + rx)] < 128);
      }
    }
  }
}

TEST_CASE("the renderer's pixel map is exact: a straight ramp draws a straight line") {
  RenderOptions options;
  options.size = 32;
  options.margin = 2;
  options.line_width = 1;
  std::vector<float> ramp(64);
  for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i);
  std::vector<std::uint8_t> image(32 * 32);
  std::vector<float> scratch;
  const PixelMap map = render_window(ramp.data(), 64, options, image.data(), scratch);
  CHECK(map.x(0) == doctest::Approx(0.25));    // (0 + ½)·32/64
  CHECK(map.x(63) == doctest::Approx(31.75));
  CHECK(map.y(63) == doctest::Approx(2.0));    // the maximum sits on the top margin
  CHECK(map.y(0) == doctest::Approx(30.0));    // the minimum on the bottom margin
  // Every column has ink exactly around y(v) for the samples of that column.
  for (qx::Index c = 0; c < 32; ++c) {
    const double expected_row = map.y(2.0 * static_cast<double>(c) + 0.5);
    qx::Index darkest = 0;
    for (qx::Index r = 1; r < 32; ++r)
      if (image[static_cast<std::size_t>(r * 32 + c)] < image[static_cast<std::size_t>(darkest * 32 + c)]) darkest = r;
    CHECK(std::abs(static_cast<double>(darkest) + 0.5 - expected_row) <= 1.0);
  }
  CHECK(image_to_input(255) == 0.0f);
  CHECK(image_to_input(0) == 1.0f);
}

TEST_CASE("building datasets: shards, card, streaming reader, resume without rewriting") {
  BuildOptions options = fresh_build("ecg_build", 32);
  const fs::path out = options.out;
  options.shard_size = 16;
  options.limit_per_split = 40;
  const auto card = build_datasets(options);
  CHECK(card["splits"]["train"]["windows"] == 40);
  CHECK(card["splits"]["test"]["shards"].size() == 3);
  CHECK(fs::exists(out / "dataset_card.json"));
  ShardedDataset test(out, "test", 1);
  CHECK(test.size() == 40);
  qx::Tensor<float> images;
  std::vector<qx::Index> labels;
  test.get_batch<float>({0, 17, 39}, images, labels);
  CHECK(images.shape() == qx::Shape{3, 1, 32, 32});
  float ink = 0;
  for (float v : images.span()) ink += v;
  CHECK(ink > 0);
  for (qx::Index i = 0; i < test.size(); ++i) {
    const auto& roi = test.roi(i);
    CHECK(roi.x1 == 32);  // dataset 1: the last beat ends at the right edge
  }
  ShardedDataset test2(out, "test", 2);
  CHECK(test2.roi(0).x0 == 0);  // dataset 2: the first beat starts at the left edge
  const auto stamp = fs::last_write_time(out / "test-00001.safetensors");
  std::ofstream(out / "test-00002.safetensors", std::ios::trunc) << "garbage";
  build_datasets(options);
  CHECK(fs::last_write_time(out / "test-00001.safetensors") == stamp);       // complete shard kept
  CHECK(qx::io::SafetensorsFile::open(out / "test-00002.safetensors").contains("images"));  // broken one rebuilt
  CHECK_THROWS_WITH(ShardedDataset(out / "missing", "test", 1), doctest::Contains("dataset_card.json"));
  CHECK_THROWS_WITH(ShardedDataset(out, "nope", 1), doctest::Contains("nope"));
  fs::remove_all(out);
}

TEST_CASE("the authors' windows: every annotation is a boundary, clamped to the record, membership by the labelled symbol") {
  // Annotations at 50 ('+' rhythm), 400 N, 700 V, 1000 '~' noise, 1300 N, 1600 N, 1900 A, 2200 Q, 2500 N.
  std::vector<Annotation> a;
  const std::pair<long, char> marks[] = {{50, '+'}, {400, 'N'}, {700, 'V'}, {1000, '~'}, {1300, 'N'},
                                         {1600, 'N'}, {1900, 'A'}, {2200, 'Q'}, {2500, 'N'}};
  for (const auto& [t, c] : marks) a.push_back({t, 0, c});
  const auto w = cut_windows_authors(a, 3000);
  // i = 0 … n − 6 = 3: window 0 (annotation 5 = N, 0 = '+') is in dataset 1 only; window 1 (6 = A, 1 = N)
  // in both; window 2 (7 = Q, 2 = V) in dataset 2 only; window 3 (8 = N, 3 = '~') in dataset 1 only.
  REQUIRE(w.size() == 4);
  CHECK(w[0].start == 0);          // 50 − 100 is cut at sample 0
  CHECK(w[0].end == 1800);         // t_6 − 100
  CHECK(w[0].label_last() == label_normal);
  CHECK(w[0].label_first() == label_dropped);
  CHECK(w[1].label_last() == label_abnormal);
  CHECK(w[1].label_first() == label_normal);
  CHECK(w[2].label_last() == label_dropped);
  CHECK(w[2].label_first() == label_abnormal);
  CHECK(w[3].start == 900);
  CHECK(w[3].end == 3000);         // the last window runs to the end of the record
  CHECK(w[3].beat_begin(5) == 2400);
  CHECK(w[3].beat_end(5) == 3000);
  CHECK(w[1].beat_begin(3) == 1200);  // beat j of window i is [t_{i+j} − 100, t_{i+j+1} − 100)
  CHECK(w[1].beat_end(3) == 1500);
  const auto& split = inter_patient_split(Protocol::authors);
  CHECK(split.train.size() == 16);
  CHECK(std::find(split.train.begin(), split.train.end(), "207") == split.train.end());
  CHECK(parse_protocol("authors") == Protocol::authors);
  CHECK_THROWS_WITH(parse_protocol("paper"), doctest::Contains("--protocol"));
}

TEST_CASE("the authors' picture: time and value maps through the crop, PIL's bilinear keeps a constant") {
  std::vector<float> samples(721);
  for (std::size_t k = 0; k < samples.size(); ++k) samples[k] = static_cast<float>(k % 2 ? 1.0 : -1.0);
  samples[720] = 0;  // mean 0, range 2: v' = v
  const AuthorsMap map = authors_map(samples.data(), 721, 360, 224);
  // The middle sample (360) sits at canvas x = 1537.5, i.e. (1537.5 − 750)·224/1500 = 117.6.
  CHECK(map.x(360) == doctest::Approx(117.6));
  // One second is 232.5 canvas px = 34.72 output px; v' = ±1 is 227.25 ∓ 96.25 canvas px.
  CHECK(map.x(720) - map.x(360) == doctest::Approx(232.5 * 224 / 1500));
  CHECK(map.y(1.0) == doctest::Approx((227.25 - 96.25 - 125) * 224 / 200));
  CHECK(map.y(-1.0) == doctest::Approx((227.25 + 96.25 - 125) * 224 / 200));
  const ExactBox box = authors_roi(map, samples.data(), 360, 720);
  CHECK(box.area() == doctest::Approx((232.5 * 224 / 1500) * (2 * 96.25 * 224 / 200)));
  CHECK(box.clipped(224).y0 == 6);  // floor((227.25 − 96.25 − 125)·1.12) = floor(6.72)
  // A constant plane stays constant through the resampling, down and up.
  std::vector<float> plane(1500 * 200, 0.25f), rows(200 * 64), out(64 * 64);
  qx::ecg::detail::resample_axis(plane.data(), 1500, 1, rows.data(), 64, 1, 200, 1500, 64);
  qx::ecg::detail::resample_axis(rows.data(), 200, 64, out.data(), 64, 64, 64, 1, 1);
  for (float v : out) CHECK(v == doctest::Approx(0.25f));
  // The rendered picture has ink on the trace's middle row and none in the corner.
  RenderOptions options;
  options.size = 64;
  std::vector<std::uint8_t> image(64 * 64);
  std::vector<float> scratch;
  const std::vector<float> flat(361, 0.5f);
  const AuthorsMap m = render_authors_window(flat.data(), 361, 360, options, image.data(), scratch);
  const auto row = static_cast<std::size_t>(m.y(0.5));
  CHECK(image[row * 64 + 32] < 255);
  CHECK(image[0] == 255);
  CHECK(imagenet_input(255, 0) == doctest::Approx((1 - 0.485) / 0.229));
}

TEST_CASE("the authors' protocol gives the paper's split sizes and random focus exactly") {
  // Paper: 37,867 / 11,204 / 49,617 windows (dataset 1), random focus 9.7 ± 4.0 % (conventions: 9.7 ± 3.8 %).
  BuildOptions options = fresh_build("ecg_authors_count", 224);
  const fs::path out = options.out;
  options.protocol = Protocol::authors;
  options.images = false;
  const auto card = build_datasets(options);
  const auto& s = card["splits"];
  CHECK(s["train"]["counts"]["dataset1_windows"] == 37867);
  CHECK(s["train"]["counts"]["dataset1_abnormal"] == 4247);
  CHECK(s["validation"]["counts"]["dataset1_windows"] == 11204);
  CHECK(s["validation"]["counts"]["dataset1_abnormal"] == 579);
  CHECK(s["test"]["counts"]["dataset1_windows"] == 49617);
  CHECK(s["test"]["counts"]["dataset1_abnormal"] == 5438);
  CHECK(s["train"]["counts"]["dataset2_windows"] == 37849);
  CHECK(s["validation"]["counts"]["dataset2_windows"] == 11200);
  CHECK(s["test"]["counts"]["dataset2_windows"] == 49596);
  const double mean = s["test"]["random_focus_dataset1"]["mean"], sd = s["test"]["random_focus_dataset1"]["sd"];
  CHECK(std::abs(100 * mean - 9.7) <= 0.3);
  CHECK(std::abs(100 * sd - 3.8) <= 0.3);
  fs::remove_all(out);
}
