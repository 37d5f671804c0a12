// The training loop: a small ResNet learns a synthetic two-class task; the early-stop rule; exact
// resume after an interruption; frozen parameter groups; the NaN stop; the CSV log and checkpoint.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/ecg/augment.hpp"
#include "qx/nn/nn.hpp"
#include "qx/train/trainer.hpp"
#include "qx/train/weight_average.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;
using qx::Index;
using qx::Tensor;
using qx::train::TensorDataset;

namespace {
/// Label 0: a bright blob in the left half; label 1: in the right half; noisy background.
TensorDataset<float> blobs(Index n, Index size, std::uint64_t seed) {
  qx::Rng rng(seed);
  auto images = Tensor<float>::randn({n, 1, size, size}, rng, 0.0, 0.2);
  std::vector<Index> labels(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    labels[static_cast<std::size_t>(i)] = i % 2;
    const double half = static_cast<double>(size) / 2;
    const double cx = (i % 2 == 0 ? rng.uniform(2, half - 2) : rng.uniform(half + 2, size - 2)), cy = rng.uniform(2, size - 2);
    for (Index y = 0; y < size; ++y)
      for (Index x = 0; x < size; ++x)
        images.at({i, 0, y, x}) += static_cast<float>(std::exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / 6.0));
  }
  return {images, labels};
}

fs::path fresh_dir(const std::string& name) {
  const auto dir = qx_test::temp_path("train_" + name);
  fs::remove_all(dir);
  return dir;
}

/// Batches of 16, no early stop, no progress bar, writing to a fresh folder `name`.
qx::train::TrainOptions quiet_options(Index epochs, const std::string& name) {
  qx::train::TrainOptions o;
  o.batch_size = 16;
  o.early_stop = false;
  o.progress = false;
  o.epochs = epochs;
  o.out_dir = fresh_dir(name);
  return o;
}

/// Every tensor of the two models' states is bit for bit the same.
void check_same_state(qx::nn::Module<float>& a_model, qx::nn::Module<float>& b_model) {
  const auto a = a_model.named_state(), b = b_model.named_state();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].name);
    CHECK(a[i].tensor->to_vector() == b[i].tensor->to_vector());
  }
}

/// `o` stopped after one epoch in the fresh folder `name`, then resumed by a new process (a model with other
/// initial weights) to `o.epochs`: the resumed model.
auto resumed_after_one_epoch(TensorDataset<float>& train, TensorDataset<float>& val, qx::train::TrainOptions o,
                             const std::string& name) {
  o.out_dir = fresh_dir(name);
  const Index epochs = o.epochs;
  o.epochs = 1;
  auto first = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*first, train, val, o);
  o.epochs = epochs;
  auto second = qx::nn::resnet18<float>(1, 2, 4, 99);
  CHECK(qx::train::fit(*second, train, val, o).resumed);
  return second;
}
}  // namespace

TEST_CASE("a small ResNet learns the blob task to at least 95 % test accuracy") {
  auto train = blobs(384, 24, 1), test = blobs(200, 24, 2);
  auto model = qx::nn::resnet18<float>(1, 2, 4, /*seed=*/3);
  qx::train::TrainOptions o;
  o.epochs = 6;
  o.batch_size = 32;
  o.lr = 3e-3;
  o.weight_decay = 0;
  o.early_stop = false;
  o.progress = false;
  const auto result = qx::train::fit(*model, train, test, o);
  const auto matrix = qx::train::evaluate(*model, test, 2, 64);
  MESSAGE("blob task: test accuracy ", matrix.accuracy(), " after ", result.history.size(), " epochs");
  CHECK(matrix.accuracy() >= 0.95);
  CHECK(result.history.back().train_loss < result.history.front().train_loss);
}

TEST_CASE("the early-stop rule: from epoch index 4, F1 ≤ mean of the previous three") {
  using qx::train::should_stop_early;
  CHECK_FALSE(should_stop_early({0.5, 0.6, 0.7, 0.6}, 3, 4));          // epoch 3: too early
  CHECK(should_stop_early({0.5, 0.6, 0.7, 0.6, 0.6}, 3, 4));           // 0.6 ≤ mean(0.6, 0.7, 0.6)
  CHECK_FALSE(should_stop_early({0.5, 0.6, 0.7, 0.6, 0.65}, 3, 4));    // 0.65 > 0.633…
  CHECK(should_stop_early({0.1, 0.2, 0.3, 0.4, 0.3}, 3, 4));           // 0.3 ≤ 0.3 (equality stops)
  CHECK(should_stop_early({0.1, 0.2, 0.3, 0.4, 0.5, 0.3}, 4, 4));      // window is a parameter
  auto w = qx::train::class_weights<double>({0, 0, 0, 1}, 2);
  CHECK(w.to_vector() == std::vector<double>{4.0 / 3, 4.0});          // N / N_c: the rarer class weighs more
}

TEST_CASE("resuming after an interruption gives exactly the weights of an uninterrupted run") {
  auto train = blobs(64, 16, 4), val = blobs(32, 16, 5);
  auto o = quiet_options(3, "straight");
  o.lr = 1e-3;
  o.lr_step = 1;  // so the schedule's state matters
  o.lr_gamma = 0.5;
  auto straight = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*straight, train, val, o);

  o.out_dir = fresh_dir("resumed");
  o.epochs = 2;  // "interrupted" after two epochs
  auto first = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*first, train, val, o);
  o.epochs = 3;
  auto second = qx::nn::resnet18<float>(1, 2, 4, 99);  // a new process: different initial weights
  const auto result = qx::train::fit(*second, train, val, o);
  CHECK(result.resumed);
  CHECK(result.history.size() == 3);
  check_same_state(*straight, *second);
  // The log has a header and one row per epoch; the checkpoint loads into a fresh model.
  std::ifstream csv(o.out_dir / "log.csv");
  std::string line;
  int rows = 0;
  while (std::getline(csv, line)) ++rows;
  CHECK(rows == 4);
  auto reloaded = qx::nn::resnet18<float>(1, 2, 4);
  if (result.best_epoch >= 0) qx::nn::load_safetensors(*reloaded, o.out_dir / "checkpoint.safetensors");
  CHECK_FALSE(fs::exists(o.out_dir / "state.safetensors.tmp"));
  fs::remove_all(o.out_dir);
  fs::remove_all(qx_test::temp_path("train_straight"));
}

TEST_CASE("an auxiliary label trains a second head on a layer's output, reaches the model, and resumes exactly") {
  auto train = blobs(64, 16, 4), val = blobs(32, 16, 5);
  // A second label unrelated to the first: alternating in runs of four samples.
  std::vector<Index> second(64);
  for (Index i = 0; i < 64; ++i) second[static_cast<std::size_t>(i)] = (i / 4) % 2;
  auto o = quiet_options(2, "aux_none");
  o.lr = 1e-3;
  auto plain = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*plain, train, val, o);

  o.auxiliary = qx::train::AuxiliaryLabels{"avgpool", second, 1.0, 2};
  o.out_dir = fresh_dir("aux_straight");
  auto straight = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*straight, train, val, o);
  // Its gradient reaches the backbone: the same seed and data end elsewhere than without it.
  CHECK(straight->conv1->weight.to_vector() != plain->conv1->weight.to_vector());
  // The state keeps the head for resuming; the checkpoint (the model) does not know it.
  const auto state = qx::io::SafetensorsFile::open(o.out_dir / "state.safetensors");
  const auto names = state.names();
  for (const char* name : {"auxiliary.weight", "auxiliary.bias"}) {
    CAPTURE(name);
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
  }
  CHECK(state.shape("auxiliary.weight") == qx::Shape{2, 32});  // avgpool of a width-4 resnet18: 32 features

  // Interrupted after one epoch, resumed by a new process: the uninterrupted run's weights.
  check_same_state(*straight, *resumed_after_one_epoch(train, val, o, "aux_resumed"));
  o.out_dir = qx_test::temp_path("train_aux_resumed");  // holds that run's state, with the head

  // A state written with the head is not resumed without one (fit checks the reverse the same way).
  auto without = o;
  without.auxiliary.reset();
  without.epochs = 3;
  auto third = qx::nn::resnet18<float>(1, 2, 4, 7);
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, without), doctest::Contains("with an auxiliary head"), qx::Error);

  // Bad options are named.
  auto bad = quiet_options(1, "aux_bad");
  bad.auxiliary = qx::train::AuxiliaryLabels{"avgpool", std::vector<Index>(63, 0), 1.0, 2};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad), doctest::Contains("63 auxiliary labels for 64 training samples"),
                       qx::Error);
  bad.auxiliary = qx::train::AuxiliaryLabels{"avgpool", second, 0.0, 2};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad), doctest::Contains("auxiliary loss weight"), qx::Error);
  bad.auxiliary = qx::train::AuxiliaryLabels{"no_such_layer", second, 1.0, 2};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad), doctest::Contains("no_such_layer"), qx::Error);
  second[5] = 2;
  bad.auxiliary = qx::train::AuxiliaryLabels{"avgpool", second, 1.0, 2};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad), doctest::Contains("auxiliary label 2 of sample 5 is outside [0, 2)"), qx::Error);
  for (const char* dir : {"aux_none", "aux_straight", "aux_resumed", "aux_bad"}) fs::remove_all(qx_test::temp_path(std::string("train_") + dir));
}

TEST_CASE("several auxiliary labels per sample: one head of tasks × classes scores, mixed pairs, exact resume, named errors") {
  auto train = blobs(64, 16, 4), val = blobs(32, 16, 5);
  // Three tasks per sample (sample i's labels at [3i, 3i + 3)): runs of four, runs of eight, and i mod 3 of 3 classes.
  std::vector<Index> labels;
  for (Index i = 0; i < 64; ++i) labels.insert(labels.end(), {(i / 4) % 2, (i / 8) % 2, i % 3});
  auto o = quiet_options(2, "aux_tasks");
  o.lr = 1e-3;
  o.mixup = 0.2;  // partners' labels are picked task by task
  o.auxiliary = qx::train::AuxiliaryLabels{"avgpool", labels, 0.5, 3, 3};
  auto straight = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*straight, train, val, o);
  const auto state = qx::io::SafetensorsFile::open(o.out_dir / "state.safetensors");
  CHECK(state.shape("auxiliary.weight") == qx::Shape{9, 32});  // 3 tasks × 3 classes, 32 pooled features
  CHECK(state.shape("auxiliary.bias") == qx::Shape{9});
  check_same_state(*straight, *resumed_after_one_epoch(train, val, o, "aux_tasks_resumed"));

  auto bad = quiet_options(1, "aux_tasks_bad");
  auto third = qx::nn::resnet18<float>(1, 2, 4, 7);
  bad.auxiliary = qx::train::AuxiliaryLabels{"avgpool", std::vector<Index>(64, 0), 1.0, 2, 3};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad),
                       doctest::Contains("64 auxiliary labels for 64 training samples and 3 task(s)"), qx::Error);
  bad.auxiliary = qx::train::AuxiliaryLabels{"avgpool", labels, 1.0, 3, 0};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad), doctest::Contains("at least 1 task"), qx::Error);
  labels[3 * 5 + 2] = 3;
  bad.auxiliary = qx::train::AuxiliaryLabels{"avgpool", labels, 1.0, 3, 3};
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, bad),
                       doctest::Contains("auxiliary label 3 of sample 5 (task 2) is outside [0, 3)"), qx::Error);
  for (const char* dir : {"aux_tasks", "aux_tasks_resumed", "aux_tasks_bad"})
    fs::remove_all(qx_test::temp_path(std::string("train_") + dir));
}

TEST_CASE("a batch's and a mixed pair's targets are picked task by task") {
  // Three samples of two tasks each (sample n's targets 10n + 10, 10n + 11), partners π = (2, 0, 1).
  const std::vector<Index> targets{10, 11, 20, 21, 30, 31};
  CHECK(qx::train::detail::task_targets(targets, {2, 0, 1}, 2) == std::vector<Index>{30, 31, 10, 11, 20, 21});
  CHECK(qx::train::detail::task_targets({7, 8, 9}, {1, 2, 0}) == std::vector<Index>{8, 9, 7});  // one task
}

TEST_CASE("a state written on samples of one shape is not resumed on another's, and says both shapes") {
  auto small_train = blobs(32, 16, 4), small_val = blobs(16, 16, 5);
  auto large_train = blobs(32, 24, 4), large_val = blobs(16, 24, 5);
  auto o = quiet_options(1, "sample_shape");
  auto model = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*model, small_train, small_val, o);
  o.epochs = 2;
  // A convolutional network takes either size, so only the state's record can tell.
  auto other = qx::nn::resnet18<float>(1, 2, 4, 99);
  const auto other_before = other->conv1->weight.to_vector();
  CHECK_THROWS_WITH_AS(qx::train::fit(*other, large_train, large_val, o),
                       doctest::Contains("written training on samples of shape (1, 16, 16) and this run's are (1, 24, 24)"),
                       qx::Error);
  CHECK(other->conv1->weight.to_vector() == other_before);  // refused before the state reached the model
  CHECK(qx::train::fit(*model, small_train, small_val, o).resumed);  // the same data resumes
  fs::remove_all(o.out_dir);
}

namespace {
/// A training set that records the epochs `fit` announces.
struct EpochRecorder {
  TensorDataset<float>& base;
  std::vector<Index> announced;
  Index size() const { return base.size(); }
  Index label(Index i) const { return base.label(i); }
  void set_epoch(Index e) { announced.push_back(e); }
  template <class T>
  void get_batch(const std::vector<Index>& idx, Tensor<T>& images, std::vector<Index>& labels) {
    base.get_batch(idx, images, labels);
  }
};
}  // namespace

TEST_CASE("fit announces every epoch to a training set that asks, and a resumed run continues the count") {
  auto data = blobs(32, 16, 4);
  EpochRecorder recorder{data, {}};
  auto o = quiet_options(2, "announce");
  auto model = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*model, recorder, data, o);
  CHECK(recorder.announced == std::vector<Index>{0, 1});
  o.epochs = 4;
  recorder.announced.clear();
  qx::train::fit(*model, recorder, data, o);
  CHECK(recorder.announced == std::vector<Index>{2, 3});
  fs::remove_all(o.out_dir);
}

TEST_CASE("an augmented training run resumed after an interruption ends with the uninterrupted run's weights") {
  auto train = blobs(64, 16, 4), val = blobs(32, 16, 5);
  qx::ecg::AugmentOptions augment;
  augment.min_vertical_scale = 0.6;
  augment.seed = 11;
  auto o = quiet_options(3, "augmented_straight");
  auto straight = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::ecg::AugmentedDataset<TensorDataset<float>> straight_data(train, augment);
  qx::train::fit(*straight, straight_data, val, o);

  o.out_dir = fresh_dir("augmented_resumed");
  o.epochs = 1;
  auto first = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::ecg::AugmentedDataset<TensorDataset<float>> first_data(train, augment);
  qx::train::fit(*first, first_data, val, o);
  o.epochs = 3;
  auto second = qx::nn::resnet18<float>(1, 2, 4, 99);
  qx::ecg::AugmentedDataset<TensorDataset<float>> second_data(train, augment);  // a new process starts at epoch 0
  CHECK(qx::train::fit(*second, second_data, val, o).resumed);
  check_same_state(*straight, *second);
  // And the augmentation changed something: without it the same run ends elsewhere.
  o.out_dir = fresh_dir("augmented_none");
  auto plain = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*plain, train, val, o);
  CHECK(plain->named_state().front().tensor->to_vector() != straight->named_state().front().tensor->to_vector());
  for (const char* name : {"augmented_straight", "augmented_resumed", "augmented_none"}) fs::remove_all(qx_test::temp_path(std::string("train_") + name));
}

TEST_CASE("parameters outside every learning-rate group stay frozen") {
  auto train = blobs(32, 16, 6), val = blobs(16, 16, 7);
  auto model = qx::nn::resnet18<float>(1, 2, 4, 8);
  const auto stem = model->conv1->weight.clone(), head = model->fc->weight.clone();
  qx::train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 16;
  o.group_lrs = {{"layer4", 1e-3}, {"fc", 1e-3}};
  o.progress = false;
  qx::train::fit(*model, train, val, o);
  CHECK(model->conv1->weight.to_vector() == stem.to_vector());
  CHECK(model->fc->weight.to_vector() != head.to_vector());
  CHECK_FALSE(model->conv1->weight.has_grad());
  o.group_lrs = {{"layer9", 1e-3}};
  CHECK_THROWS_WITH(qx::train::fit(*model, train, val, o), doctest::Contains("layer9"));
}

TEST_CASE("a NaN loss stops training with the epoch and batch") {
  auto images = Tensor<float>::zeros({8, 1, 16, 16});
  images.at({5, 0, 3, 3}) = std::numeric_limits<float>::quiet_NaN();
  TensorDataset<float> bad(images, {0, 1, 0, 1, 0, 1, 0, 1});
  auto model = qx::nn::resnet18<float>(1, 2, 4);
  qx::train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 8;
  o.progress = false;
  CHECK_THROWS_WITH(qx::train::fit(*model, bad, bad, o), doctest::Contains("epoch 1, batch 1"));
}

TEST_CASE("WeightAverage: the warmed-up moving average of parameters and running statistics, integer counters left alone") {
  qx::nn::Sequential<double> model;
  qx::Rng rng(3);
  auto linear = model.push_back(std::make_shared<qx::nn::Linear<double>>(2, 1, rng));
  auto norm = model.push_back(std::make_shared<qx::nn::BatchNorm2d<double>>(1));
  // Independent expectation: a_0 = w_0, a_t = d_t·a_{t−1} + (1 − d_t)·w_t with d_t = min(0.5, (1+t)/(10+t)),
  // i.e. 2/11, 3/12, 4/13, 5/14, 6/15, 7/16, 8/17, then 0.5 from t = 9 on.
  const auto value_at = [](int t) { return std::sin(0.7 * t) + 0.1 * t; };
  linear->weight.data()[0] = value_at(0);
  norm->running_mean.data()[0] = 2 * value_at(0);
  qx::train::WeightAverage<double> started(model, 0.5);  // the average starts at the weights of its construction
  double expected = value_at(0);
  for (int t = 1; t <= 12; ++t) {
    const double d = std::min(0.5, (1.0 + t) / (10.0 + t));
    CHECK(started.next_decay() == doctest::Approx(d));
    linear->weight.data()[0] = value_at(t);
    norm->running_mean.data()[0] = 2 * value_at(t);
    norm->num_batches_tracked.data()[0] = t;
    started.update();
    expected = d * expected + (1 - d) * value_at(t);
  }
  CHECK(started.steps() == 12);
  started.swap();
  CHECK(linear->weight.data()[0] == doctest::Approx(expected).epsilon(1e-14));
  CHECK(norm->running_mean.data()[0] == doctest::Approx(2 * expected).epsilon(1e-14));
  CHECK(norm->num_batches_tracked.data()[0] == 12);  // a counter, not averaged
  started.swap();
  CHECK(linear->weight.data()[0] == value_at(12));  // swapping twice restores the model

  // state_dict / load_state_dict carry the average and the step exactly; a wrong shape is named.
  qx::train::WeightAverage<double> restored(model, 0.5);
  restored.load_state_dict(started.state_dict());
  CHECK(restored.steps() == 12);
  CHECK(restored.next_decay() == started.next_decay());
  restored.swap();
  CHECK(linear->weight.data()[0] == doctest::Approx(expected).epsilon(1e-14));
  restored.swap();
  auto bad = started.state_dict();
  bad["0.weight"] = Tensor<double>::zeros({3});
  CHECK_THROWS_WITH_AS(restored.load_state_dict(bad), doctest::Contains("'0.weight' is saved with shape"), qx::Error);
  bad.erase("0.weight");
  CHECK_THROWS_WITH_AS(restored.load_state_dict(bad), doctest::Contains("has no '0.weight'"), qx::Error);
  CHECK_THROWS_AS(qx::train::WeightAverage<double>(model, 1.0), qx::Error);
  CHECK_THROWS_AS(qx::train::WeightAverage<double>(model, 0.0), qx::Error);
}

TEST_CASE("WeightAverage: the warm-up, not the decay, sets the average of runs shorter than (10d - 1)/(1 - d) steps") {
  // docs/training.md: for d = 0.999 the warm-up (1 + t)/(10 + t) stays below d until t = 8991, so a
  // 0.9995 average is the same as a 0.999 one until then, to the last bit; from t = 8991 on 0.999 binds.
  qx::nn::Sequential<double> model;
  qx::Rng rng(5);
  auto linear = model.push_back(std::make_shared<qx::nn::Linear<double>>(1, 1, rng));
  qx::train::WeightAverage<double> nominal(model, 0.999), longer(model, 0.9995);
  int first_different = 0;
  for (int t = 1; t <= 8990; ++t) {
    if (!first_different && nominal.next_decay() != longer.next_decay()) first_different = t;
    linear->weight.data()[0] = std::cos(0.01 * t);
    nominal.update();
    longer.update();
  }
  CHECK(first_different == 0);
  CHECK(nominal.next_decay() == 0.999);          // t = 8991: 8992/9001 > 0.999
  CHECK(longer.next_decay() == 8992.0 / 9001.0);  // still the warm-up
  nominal.swap();
  const double a = linear->weight.data()[0];
  nominal.swap();
  longer.swap();
  CHECK(linear->weight.data()[0] == a);
}

TEST_CASE("with a weight average, fit validates, checkpoints and returns the average, and resumes it exactly") {
  auto train = blobs(64, 16, 4), val = blobs(32, 16, 5);
  auto o = quiet_options(3, "averaged_straight");
  o.lr = 1e-3;
  o.average_decay = 0.9;
  o.state_every_batches = 1;
  auto straight = qx::nn::resnet18<float>(1, 2, 4, 7);
  const auto result = qx::train::fit(*straight, train, val, o);
  // The state on disk holds the raw weights ("model.") and the average ("average."): the returned model
  // is the average, not the raw weights, and the average took all 3 × 4 steps.
  const auto state = qx::io::SafetensorsFile::open(o.out_dir / "state.safetensors");
  CHECK(state.get_as<float>("average.step").item() == 12.0f);
  const auto& name = "layer1.0.conv1.weight";
  CHECK(state.get_as<float>(std::string("average.") + name).to_vector() == straight->named_parameters()[3].second->to_vector());
  CHECK(straight->named_parameters()[3].first == name);
  CHECK(state.get_as<float>(std::string("model.") + name).to_vector() != straight->named_parameters()[3].second->to_vector());
  // The checkpoint is the average of its epoch: after one epoch (always an improvement), the returned model.
  {
    auto once = quiet_options(1, "averaged_once");
    once.average_decay = 0.9;
    auto model = qx::nn::resnet18<float>(1, 2, 4, 7);
    CHECK(qx::train::fit(*model, train, val, once).best_epoch == 0);
    auto reloaded = qx::nn::resnet18<float>(1, 2, 4);
    qx::nn::load_safetensors(*reloaded, once.out_dir / "checkpoint.safetensors");
    check_same_state(*model, *reloaded);
    fs::remove_all(once.out_dir);
  }
  // Validation measured the average: evaluating the returned model gives the last epoch's accuracy.
  CHECK(qx::train::evaluate(*straight, val, 2, 32).accuracy() == result.history.back().val_accuracy);

  // Stopped inside the second epoch (after its second batch, whose state was just written), resumed by a
  // new process: the same raw weights and the same average as the uninterrupted run.
  o.out_dir = fresh_dir("averaged_resumed");
  o.on_batch = [](Index epoch, Index batch) {
    if (epoch == 1 && batch == 1) throw std::runtime_error("stopped for the test");
  };
  auto first = qx::nn::resnet18<float>(1, 2, 4, 7);
  CHECK_THROWS_AS(qx::train::fit(*first, train, val, o), std::runtime_error);
  o.on_batch = nullptr;
  auto second = qx::nn::resnet18<float>(1, 2, 4, 99);
  CHECK(qx::train::fit(*second, train, val, o).resumed);
  check_same_state(*straight, *second);  // the averages
  const auto resumed_state = qx::io::SafetensorsFile::open(o.out_dir / "state.safetensors");
  for (const auto& entry : straight->named_state()) {  // the raw weights
    CAPTURE(entry.name);
    CHECK(resumed_state.get_as<float>("model." + entry.name).to_vector() == state.get_as<float>("model." + entry.name).to_vector());
  }

  // A state written with an average does not resume without one, nor the reverse, saying so.
  o.average_decay = 0;
  auto third = qx::nn::resnet18<float>(1, 2, 4, 7);
  o.epochs = 4;
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, o), doctest::Contains("was written with a weight average"), qx::Error);
  o.average_decay = 1.5;
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, o), doctest::Contains("average decay 1.5 outside (0, 1)"), qx::Error);
  fs::remove_all(o.out_dir);
  auto plain = quiet_options(1, "averaged_plain");
  qx::train::fit(*third, train, val, plain);
  plain.epochs = 2;
  plain.average_decay = 0.9;
  CHECK_THROWS_WITH_AS(qx::train::fit(*third, train, val, plain), doctest::Contains("was written without a weight average"),
                       qx::Error);
  fs::remove_all(plain.out_dir);
  fs::remove_all(qx_test::temp_path("train_averaged_straight"));
}

TEST_CASE("mixup: lambda from Beta(a, a) folded to [1/2, 1], a permutation of the batch, and the mixed pictures") {
  // Rng::beta's first two moments: mean a / (a + b), variance ab / ((a + b)^2 (a + b + 1)).
  qx::Rng rng(3);
  for (const auto& [a, b] : {std::pair{0.2, 0.2}, std::pair{2.0, 5.0}}) {
    double sum = 0, squares = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
      const double x = rng.beta(a, b);
      REQUIRE((x >= 0 && x <= 1));
      sum += x;
      squares += x * x;
    }
    const double mean = sum / n, variance = squares / n - mean * mean;
    CHECK(mean == doctest::Approx(a / (a + b)).epsilon(0.01));
    CHECK(variance == doctest::Approx(a * b / ((a + b) * (a + b) * (a + b + 1))).epsilon(0.02));
  }
  // One batch's draw: folded, a permutation, and the same for the same (seed, epoch, batch).
  const auto m = qx::train::detail::draw_mixup(0.2, 7, 2, 5, 6);
  CHECK(m.lambda >= 0.5);
  CHECK(m.lambda <= 1.0);
  auto sorted = m.partner;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == std::vector<Index>{0, 1, 2, 3, 4, 5});
  const auto again = qx::train::detail::draw_mixup(0.2, 7, 2, 5, 6);
  CHECK(again.lambda == m.lambda);
  CHECK(again.partner == m.partner);
  CHECK(qx::train::detail::draw_mixup(0.2, 7, 2, 6, 6).lambda != m.lambda);
  // λ·x_i + (1 − λ)·x_π(i), sample by sample: samples are constant pictures of value i.
  auto images = Tensor<float>::empty({3, 1, 2, 2});
  for (Index i = 0; i < 3; ++i)
    for (Index e = 0; e < 4; ++e) images.data()[i * 4 + e] = static_cast<float>(i);
  qx::train::detail::Mixup fixed{0.75, {2, 0, 1}};
  qx::train::detail::mix_images(images, fixed);
  for (Index e = 0; e < 4; ++e) {
    CHECK(images.data()[0 * 4 + e] == doctest::Approx(0.75 * 0 + 0.25 * 2));
    CHECK(images.data()[1 * 4 + e] == doctest::Approx(0.75 * 1 + 0.25 * 0));
    CHECK(images.data()[2 * 4 + e] == doctest::Approx(0.75 * 2 + 0.25 * 1));
  }
}

TEST_CASE("fit with mixup trains elsewhere than without and resumes exactly") {
  auto train = blobs(64, 16, 4), val = blobs(32, 16, 5);
  auto o = quiet_options(2, "mix_none");
  o.lr = 1e-3;
  auto plain = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*plain, train, val, o);

  o.mixup = 0.2;
  o.out_dir = fresh_dir("mix_straight");
  auto straight = qx::nn::resnet18<float>(1, 2, 4, 7);
  qx::train::fit(*straight, train, val, o);
  CHECK(straight->conv1->weight.to_vector() != plain->conv1->weight.to_vector());

  // Interrupted after one epoch, resumed by a new process: the uninterrupted run's weights.
  check_same_state(*straight, *resumed_after_one_epoch(train, val, o, "mix_resumed"));

  auto bad = quiet_options(1, "mix_bad");
  bad.mixup = -0.5;
  CHECK_THROWS_WITH_AS(qx::train::fit(*straight, train, val, bad), doctest::Contains("mixup alpha -0.5"), qx::Error);
  for (const char* dir : {"mix_none", "mix_straight", "mix_resumed", "mix_bad"}) fs::remove_all(qx_test::temp_path(std::string("train_") + dir));
}
