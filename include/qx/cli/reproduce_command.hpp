// `qx reproduce`: the study end to end on MIT-BIH — build both datasets, train one ResNet per dataset
// with the study's recipe (class-weighted cross-entropy, Adam with weight decay, StepLR, early stop on
// validation F1), test it, explain test windows with saliency, Grad-CAM, guided backprop and guided
// Grad-CAM, and measure each map's focus on the labelled beat: the paper's Tables 1–4, plus the random
// focus, the pointing game and null-map counts. Every stage is resumable and writes atomically; the
// defaults fit a 2-core CPU (docs/reproduce.md), `--paper` selects the paper's full-size settings.
#pragma once
#include "qx/cli/device_option.hpp"
#include "qx/cli/ecg_command.hpp"
#include "qx/ecg/ecg.hpp"
#include "qx/explain/explain.hpp"
#include "qx/io/atomic_file.hpp"
#include "qx/io/progress.hpp"
#include "qx/metrics/classification.hpp"
#include "qx/metrics/focus.hpp"
#include "qx/nn/nn.hpp"
#include "qx/train/trainer.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace cli {

struct ReproduceArgs {
  std::string mitdb = "../shared/data/mitdb", out = "runs/reproduce", arch = "resnet18", device = "cpu";
  Index size = 64, width = 16, epochs = 8, batch = 32, train_limit = 0, test_limit = 0, explain_limit = 2000;
  double lr = 1e-3, weight_decay = 1e-4;
  std::vector<int> datasets{1, 2};
  std::uint64_t seed = 0;
  bool paper = false;
};

/// A view of some windows of a dataset (evenly spaced), for CPU-sized runs.
template <class D>
class Subset {
 public:
  Subset(D& base, Index limit) : base_(base) {
    const Index n = base.size();
    const Index m = limit > 0 ? std::min(limit, n) : n;
    for (Index i = 0; i < m; ++i) indices_.push_back(static_cast<Index>(static_cast<double>(i) * static_cast<double>(n) / static_cast<double>(m)));
  }
  Index size() const { return static_cast<Index>(indices_.size()); }
  Index label(Index i) const { return base_.label(indices_.at(static_cast<std::size_t>(i))); }
  Index base_index(Index i) const { return indices_.at(static_cast<std::size_t>(i)); }
  template <class T>
  void get_batch(const std::vector<Index>& idx, Tensor<T>& images, std::vector<Index>& labels) {
    std::vector<Index> mapped;
    for (Index i : idx) mapped.push_back(indices_.at(static_cast<std::size_t>(i)));
    base_.template get_batch<T>(mapped, images, labels);
  }

 private:
  D& base_;
  std::vector<Index> indices_;
};

namespace detail {
inline std::string percent(const metrics::FocusSummary& s) { return s.count ? s.percent() : "–"; }

/// Focus and classification results of one dataset's test windows.
inline nlohmann::json explain_test_set(nn::Module<float>& model, ecg::ShardedDataset& test, Index limit, Index batch,
                                       const std::filesystem::path& figures, int dataset, Device device = Device::cpu) {
  namespace fs = std::filesystem;
  Subset<ecg::ShardedDataset> subset(test, limit);
  const Index n = subset.size();
  const std::vector<explain::Method> methods{explain::Method::saliency, explain::Method::gradcam,
                                             explain::Method::guided_backprop, explain::Method::guided_gradcam};
  // Per method: focus values grouped as in the paper's tables.
  struct Groups {
    std::vector<metrics::FocusResult> all, correct, incorrect, normal, abnormal;
    Index pointing_hits = 0;
  };
  std::map<std::string, Groups> groups;
  std::vector<double> random;
  io::ProgressBar bar("explain dataset " + std::to_string(dataset), n);
  Tensor<float> images;
  std::vector<Index> labels;
  for (Index first = 0; first < n; first += batch) {
    std::vector<Index> idx;
    for (Index i = first; i < std::min(n, first + batch); ++i) idx.push_back(i);
    subset.get_batch<float>(idx, images, labels);
    // The target is the predicted class (docs/conventions.md's default); the ROI is the labelled beat's.
    const auto maps = explain::explain(model, images.to(device), {explain::all_methods(), "layer4", {}}).to(Device::cpu);
    const auto predicted = explain::detail::argmax_rows(maps.logits);
    for (std::size_t k = 0; k < idx.size(); ++k) {
      const auto& box = test.roi(subset.base_index(idx[k]));
      const metrics::Roi roi{box.x0, box.y0, box.x1, box.y1};
      random.push_back(metrics::random_focus(roi, images.size(2), images.size(3)));
      const bool correct = predicted[k] == labels[k];
      for (auto m : methods) {
        const auto values = explain::reduced_map(maps.map(m), m, static_cast<Index>(k));
        const auto r = metrics::focus(values.data(), 1, images.size(2), images.size(3), roi, metrics::MaxPositiveOverChannels{});
        auto& g = groups[explain::to_string(m)];
        g.all.push_back(r);
        (correct ? g.correct : g.incorrect).push_back(r);
        (labels[k] ? g.abnormal : g.normal).push_back(r);
        const auto best = std::max_element(values.begin(), values.end());
        const Index at = best - values.begin();
        g.pointing_hits += (*best > 0 && roi.contains(at % images.size(3), at / images.size(3)));
      }
      if (first + static_cast<Index>(k) < 3) {  // a few pictures per dataset
        for (auto m : methods)
          explain::write_map_png(figures / ("dataset" + std::to_string(dataset) + "_sample" + std::to_string(first + static_cast<Index>(k)) +
                                            "_" + explain::to_string(m) + ".png"),
                                 maps.map(m), m, static_cast<Index>(k), images, roi);
      }
    }
    bar.update(std::min(n, first + batch));
  }
  bar.finish();
  nlohmann::json out;
  out["samples"] = n;
  const auto rf = metrics::summarize(random);
  out["random_focus"] = {{"mean", rf.mean}, {"sd", rf.sd}, {"text", percent(rf)}};
  for (auto& [name, g] : groups) {
    auto entry = [&](const std::vector<metrics::FocusResult>& v) {
      const auto s = metrics::summarize(v);
      return nlohmann::json{{"mean", s.mean}, {"sd", s.sd}, {"n", s.count}, {"null_maps", s.null_maps}, {"text", percent(s)},
                            {"histogram", s.histogram}};
    };
    out["focus"][name] = {{"all", entry(g.all)},           {"correct", entry(g.correct)}, {"incorrect", entry(g.incorrect)},
                          {"normal", entry(g.normal)},     {"abnormal", entry(g.abnormal)},
                          {"pointing_game", n ? static_cast<double>(g.pointing_hits) / static_cast<double>(n) : 0.0}};
  }
  return out;
}

inline std::string report_markdown(const nlohmann::json& r) {
  std::ostringstream md;
  md << "# qx reproduce — report\n\n" << "Settings: `" << r["settings"].dump() << "`\n\n";
  md << "## Classification (test set; positive class = abnormal)\n\n"
     << "| model | epochs | val accuracy | val F1 | test accuracy | test F1 | test precision | test recall |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& d : r["datasets"]) {
    char line[256];
    std::snprintf(line, sizeof line, "| dataset %d | %lld | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", d["dataset"].get<int>(),
                  d["epochs"].get<long long>(), 100 * d["val_accuracy"].get<double>(), 100 * d["val_f1"].get<double>(),
                  100 * d["test"]["accuracy"].get<double>(), 100 * d["test"]["f1"].get<double>(),
                  100 * d["test"]["precision"].get<double>(), 100 * d["test"]["recall"].get<double>());
    md << line;
  }
  const char* names[] = {"saliency", "gradcam", "guided_backprop", "guided_gradcam"};
  md << "\n## Focus on the labelled beat (%, mean ± sd over explained test windows)\n\n"
     << "| dataset | random | saliency | Grad-CAM | guided backprop | guided Grad-CAM |\n|---|---|---|---|---|---|\n";
  for (const auto& d : r["datasets"]) {
    md << "| " << d["dataset"].get<int>() << " | " << d["explain"]["random_focus"]["text"].get<std::string>();
    for (const char* m : names) md << " | " << d["explain"]["focus"][m]["all"]["text"].get<std::string>();
    md << " |\n";
  }
  for (const auto& [group_a, group_b, title] :
       {std::tuple{"correct", "incorrect", "Correctly vs incorrectly classified"}, std::tuple{"normal", "abnormal", "Normal vs abnormal label"}}) {
    md << "\n## " << title << "\n\n| dataset | method | " << group_a << " | " << group_b << " |\n|---|---|---|---|\n";
    for (const auto& d : r["datasets"])
      for (const char* m : names)
        md << "| " << d["dataset"].get<int>() << " | " << m << " | " << d["explain"]["focus"][m][group_a]["text"].get<std::string>()
           << " (n = " << d["explain"]["focus"][m][group_a]["n"] << ") | "
           << d["explain"]["focus"][m][group_b]["text"].get<std::string>() << " (n = " << d["explain"]["focus"][m][group_b]["n"] << ") |\n";
  }
  md << "\n## Pointing game (share of windows whose map maximum lies in the ROI) and null maps\n\n"
     << "| dataset | method | pointing game | null maps |\n|---|---|---|---|\n";
  for (const auto& d : r["datasets"])
    for (const char* m : names) {
      char line[160];
      std::snprintf(line, sizeof line, "| %d | %s | %.1f %% | %lld |\n", d["dataset"].get<int>(), m,
                    100 * d["explain"]["focus"][m]["pointing_game"].get<double>(),
                    d["explain"]["focus"][m]["all"]["null_maps"].get<long long>());
      md << line;
    }
  return md.str();
}
}  // namespace detail

/// Runs the whole study; returns the report (also written to <out>/report.json and report.md).
inline nlohmann::json run_reproduce(ReproduceArgs a) {
  namespace fs = std::filesystem;
  if (a.paper) {  // the paper's settings (authors' code): hours to days on a CPU
    a.arch = "resnet50", a.size = 224, a.width = 64, a.batch = 16, a.epochs = 20, a.lr = 1e-4, a.weight_decay = 0.1;
    a.train_limit = a.test_limit = a.explain_limit = 0;
  }
  const Device device = device_option(a.device);
  for (int d : a.datasets) check(d == 1 || d == 2, "--datasets takes 1 and/or 2, got ", d);
  const fs::path out = a.out;
  fs::create_directories(out / "figures");
  nlohmann::json report;
  report["settings"] = {{"arch", a.arch}, {"size", a.size}, {"width", a.width}, {"epochs", a.epochs}, {"batch", a.batch},
                        {"lr", a.lr}, {"weight_decay", a.weight_decay}, {"train_limit", a.train_limit},
                        {"test_limit", a.test_limit}, {"explain_limit", a.explain_limit}, {"seed", a.seed}, {"paper", a.paper}};

  // 1. Data: both datasets' shards (resumable).
  ecg::BuildOptions build;
  build.mitdb = a.mitdb;
  build.out = out / "data";
  build.render.size = a.size;
  build.render.channels = a.arch == "resnet50" && a.paper ? 3 : 1;
  const auto card = build_datasets_with_progress(build, "data");
  report["data"] = card["splits"];

  for (int dataset : a.datasets) {
    const fs::path run = out / ("dataset" + std::to_string(dataset));
    std::fprintf(stderr, "== dataset %d (label of the %s beat) ==\n", dataset, dataset == 1 ? "last" : "first");
    ecg::ShardedDataset train_full(build.out, "train", dataset), val(build.out, "validation", dataset), test(build.out, "test", dataset);
    Subset<ecg::ShardedDataset> train(train_full, a.train_limit);
    auto model = nn::make_resnet<float>(a.arch, build.render.channels, 2, a.width, a.seed + static_cast<std::uint64_t>(dataset));
    train::TrainOptions options;
    options.epochs = a.epochs;
    options.batch_size = a.batch;
    options.lr = a.lr;
    options.weight_decay = a.weight_decay;
    options.seed = a.seed;
    options.out_dir = run;
    options.stop_on_interrupt = true;   // Ctrl-C saves the state; the same command resumes from it
    options.state_every_batches = 200;  // a crash or a kill loses at most 200 batches
    options.device = device;
    if (a.paper) options.group_lrs = {{"layer1", 1e-6}, {"layer2", 1e-6}, {"layer3", 1e-5}, {"layer4", 1e-4}, {"fc", 1e-4}};
    const auto result = train::fit(*model, train, val, options);
    if (result.best_epoch >= 0) nn::load_safetensors(*model, run / "checkpoint.safetensors");
    const auto& best = result.history.at(static_cast<std::size_t>(std::max<Index>(0, result.best_epoch)));

    Subset<ecg::ShardedDataset> test_subset(test, a.test_limit);
    std::fprintf(stderr, "testing on %lld windows\n", static_cast<long long>(test_subset.size()));
    const auto matrix = train::evaluate(*model, test_subset, 2, 64);
    nlohmann::json entry = {{"dataset", dataset},
                            {"epochs", static_cast<Index>(result.history.size())},
                            {"best_epoch", result.best_epoch},
                            {"stopped_early", result.stopped_early},
                            {"val_accuracy", best.val_accuracy},
                            {"val_f1", best.val_f1},
                            {"test", {{"windows", test_subset.size()}, {"accuracy", matrix.accuracy()}, {"precision", matrix.precision(1)},
                                      {"recall", matrix.recall(1)}, {"specificity", matrix.specificity(1)}, {"f1", matrix.f1(1)},
                                      {"confusion", {{matrix.at(0, 0), matrix.at(0, 1)}, {matrix.at(1, 0), matrix.at(1, 1)}}}}}};
    entry["explain"] = detail::explain_test_set(*model, test, a.explain_limit, 16, out / "figures", dataset, device);
    report["datasets"].push_back(entry);
  }
  io::write_file_atomic(out / "report.json", [&](std::ostream& o) { o << report.dump(2) << '\n'; });
  const std::string md = detail::report_markdown(report);
  io::write_file_atomic(out / "report.md", [&](std::ostream& o) { o << md; });
  std::printf("%s\nresults: %s (report.md, report.json, figures/, dataset*/log.csv and checkpoints)\n", md.c_str(),
              fs::absolute(out).string().c_str());
  return report;
}

inline CLI::App* add_reproduce_command(CLI::App& root) {
  auto a = std::make_shared<ReproduceArgs>();
  auto* cmd = root.add_subcommand("reproduce", "the study end to end on MIT-BIH: data, training, attribution, focus tables");
  cmd->add_option("--mitdb", a->mitdb, "folder with the MIT-BIH records")->capture_default_str();
  cmd->add_option("--out", a->out, "output folder (resumable)")->capture_default_str();
  cmd->add_option("--arch", a->arch, "resnet18, resnet34 or resnet50")->capture_default_str();
  cmd->add_option("--size", a->size, "image side in pixels")->capture_default_str()->check(CLI::Range(16, 1024));
  cmd->add_option("--width", a->width, "ResNet base width (torchvision: 64)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--epochs", a->epochs, "at most this many epochs (early stop may end sooner)")->capture_default_str();
  cmd->add_option("--batch", a->batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--lr", a->lr, "Adam learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", a->weight_decay, "Adam weight decay (L2, PyTorch semantics)")->capture_default_str();
  cmd->add_option("--train-limit", a->train_limit, "train on at most this many windows (0: all)")->capture_default_str();
  cmd->add_option("--test-limit", a->test_limit, "test on at most this many windows (0: all)")->capture_default_str();
  cmd->add_option("--explain-limit", a->explain_limit, "explain at most this many test windows (0: all)")->capture_default_str();
  cmd->add_option("--datasets", a->datasets, "which datasets: 1 (last beat labelled), 2 (first)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of initialisation and shuffling")->capture_default_str();
  cmd->add_flag("--paper", a->paper, "the paper's settings: resnet50, 224×224, 3 channels, batch 16, 20 epochs, per-stage rates");
  add_device_option(*cmd, a->device);
  cmd->callback([a]() { run_reproduce(*a); });
  return cmd;
}

}  // namespace cli
QX_NAMESPACE_END
