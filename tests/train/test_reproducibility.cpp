// Reproducibility, from records to maps: the same seed gives the same dataset shards (byte for byte,
// whatever the thread count), the same training curve and weights and the same five maps — bit for bit
// for a given number of threads — and results within a stated tolerance between one and two threads,
// where the order of floating-point sums in the parallel reductions differs.
#include <doctest/doctest.h>

#include "../test_compare.hpp"
#include "../test_paths.hpp"
#include "../test_threads.hpp"

#include "qx/ecg/ecg.hpp"
#include "qx/explain/explain.hpp"
#include "qx/nn/nn.hpp"
#include "qx/train/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using qx::Index;
using qx::Tensor;

namespace {
const fs::path mitdb = QX_MITDB_DIR;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

fs::path build(const std::string& name, int threads) {
  const qx_test::ThreadCount scope(threads);
  qx::ecg::BuildOptions options;
  options.mitdb = mitdb;
  options.out = qx_test::temp_path("repro_" + name);
  fs::remove_all(options.out);
  options.render.size = 64;
  options.shard_size = 32;
  options.limit_per_split = 48;
  qx::ecg::build_datasets(options);
  return options.out;
}

struct Outcome {
  std::vector<qx::train::EpochRecord> history;
  std::vector<std::vector<float>> weights;  // every tensor of the model's state
  std::vector<std::vector<float>> maps;     // the five maps of eight test windows
};

Outcome train_and_explain(const fs::path& data, int threads) {
  const qx_test::ThreadCount scope(threads);
  qx::ecg::ShardedDataset train(data, "train", 1), val(data, "validation", 1), test(data, "test", 1);
  auto model = qx::nn::resnet18<float>(1, 2, 4, /*seed=*/21);
  const qx::train::TrainOptions o{.epochs = 2, .batch_size = 16, .seed = 5, .lr = 1e-3, .weight_decay = 1e-4, .early_stop = false,
                                  .progress = false};
  Outcome out;
  out.history = qx::train::fit(*model, train, val, o).history;
  for (const auto& entry : model->named_state()) out.weights.push_back(entry.tensor->to_vector());
  Tensor<float> images;
  std::vector<Index> labels;
  test.get_batch<float>({0, 5, 10, 15, 20, 25, 30, 35}, images, labels);
  model->eval();
  const auto maps = qx::explain::explain(*model, images);
  for (auto m : qx::explain::all_methods()) out.maps.push_back(maps.map(m).to_vector());
  return out;
}

void check_identical(const Outcome& a, const Outcome& b) {
  REQUIRE(a.history.size() == b.history.size());
  for (std::size_t e = 0; e < a.history.size(); ++e) {
    CHECK(a.history[e].train_loss == b.history[e].train_loss);
    CHECK(a.history[e].val_accuracy == b.history[e].val_accuracy);
  }
  CHECK(a.weights == b.weights);
  CHECK(a.maps == b.maps);
}

}  // namespace

TEST_CASE("the same seed gives the same shards, training curve, weights and maps — bit for bit per thread count") {
  const auto one = build("one", 1), two = build("two", 2), again = build("again", 2);
  // Shards are byte-identical whatever the thread count: each window is rendered by one thread alone.
  int shards = 0;
  for (const auto& entry : fs::directory_iterator(one)) {
    if (entry.path().extension() != ".safetensors") continue;
    ++shards;
    CAPTURE(entry.path().filename().string());
    const std::string bytes = slurp(entry.path());
    CHECK(bytes == slurp(two / entry.path().filename()));
    CHECK(bytes == slurp(again / entry.path().filename()));
  }
  CHECK(shards >= 6);

  const auto serial_a = train_and_explain(one, 1), serial_b = train_and_explain(one, 1);
  check_identical(serial_a, serial_b);
  const auto parallel_a = train_and_explain(one, 2), parallel_b = train_and_explain(one, 2);
  check_identical(parallel_a, parallel_b);

  // One thread against two: the weights after 2 epochs (6 Adam steps) and the maps of the two models.
  const double weights = qx_test::worst_relative_difference(serial_a.weights, parallel_a.weights);
  const double maps = qx_test::worst_relative_difference(serial_a.maps, parallel_a.maps);
  MESSAGE("1 vs 2 threads: weights differ by ", weights, ", maps by ", maps, " (relative to each tensor's largest value)");
  CHECK(weights <= 1e-4);
  CHECK(maps <= 1e-3);
  CHECK(std::abs(serial_a.history.back().train_loss - parallel_a.history.back().train_loss) <= 1e-4);
  for (const auto& dir : {one, two, again}) fs::remove_all(dir);
}
