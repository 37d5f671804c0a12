// `qx ecg build`: builds both datasets' shards from MIT-BIH; `qx ecg png`: writes one window as a PNG
// with the labelled beat's ROI drawn. Thin clients of qx::ecg.
#pragma once
#include "qx/ecg/ecg.hpp"
#include "qx/io/colormap.hpp"
#include "qx/io/png.hpp"
#include "qx/io/progress.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

QX_NAMESPACE_BEGIN
namespace cli {

/// Builds the datasets showing one progress bar per split ("<label> train", …).
inline nlohmann::json build_datasets_with_progress(const ecg::BuildOptions& options, const std::string& label) {
  std::unique_ptr<io::ProgressBar> bar;
  std::string current;
  const auto card = ecg::build_datasets(options, [&](const std::string& split, Index done, Index total) {
    if (split != current) {
      if (bar) bar->finish();
      bar = std::make_unique<io::ProgressBar>(label + " " + split, total);
      current = split;
    }
    bar->update(done);
  });
  if (bar) bar->finish();
  return card;
}

/// One line per split: windows of each dataset, abnormal among them, and the random focus.
inline void print_split_sizes(const nlohmann::json& card) {
  for (const std::string split : {"train", "validation", "test"}) {
    if (!card["splits"].contains(split)) continue;
    const auto& info = card["splits"][split];
    const auto& c = info["counts"];
    std::printf("%-10s dataset 1: %6lld windows (%5lld abnormal), random focus %4.1f ± %3.1f %%   dataset 2: %6lld windows (%5lld "
                "abnormal), random focus %4.1f ± %3.1f %%\n",
                split.c_str(), c.value("dataset1_windows", 0LL), c.value("dataset1_abnormal", 0LL),
                100 * info["random_focus_dataset1"]["mean"].get<double>(), 100 * info["random_focus_dataset1"]["sd"].get<double>(),
                c.value("dataset2_windows", 0LL), c.value("dataset2_abnormal", 0LL),
                100 * info["random_focus_dataset2"]["mean"].get<double>(), 100 * info["random_focus_dataset2"]["sd"].get<double>());
  }
}

inline CLI::App* add_ecg_command(CLI::App& root) {
  auto* ecg = root.add_subcommand("ecg", "MIT-BIH: build the six-beat window datasets, draw samples");
  ecg->require_subcommand(1);

  auto options = std::make_shared<ecg::BuildOptions>();
  auto rule = std::make_shared<std::string>("aami");
  auto protocol = std::make_shared<std::string>("qx");
  auto count_only = std::make_shared<bool>(false);
  auto* build = ecg->add_subcommand("build", "render every window of the inter-patient split into safetensors shards");
  build->add_option("--mitdb", options->mitdb, "folder with the MIT-BIH records")->capture_default_str();
  build->add_option("--out", options->out, "output folder (shards and dataset_card.json)")->capture_default_str();
  build->add_option("--size", options->render.size, "image side in pixels")->capture_default_str()->check(CLI::Range(8, 4096));
  build->add_option("--channels", options->render.channels, "1 or 3")->capture_default_str()->check(CLI::IsMember({1, 3}));
  build->add_option("--line-width", options->render.line_width, "trace thickness in pixels")->capture_default_str();
  build->add_option("--shard-size", options->shard_size, "windows per shard")->capture_default_str()->check(CLI::PositiveNumber);
  build->add_option("--limit", options->limit_per_split, "at most this many windows per split (0: all)")->capture_default_str();
  build->add_option("--label-rule", *rule, "aami (normal = AAMI N) or strict (normal = 'N' only)")
      ->capture_default_str()->check(CLI::IsMember({"aami", "strict"}));
  build->add_option("--protocol", *protocol,
                    "qx (the conventions' clean rules) or authors (the authors' code: records, lead signal 0, every "
                    "annotation a boundary, their 3000x450 picture cropped and resized, ImageNet normalisation; use --size 224 "
                    "--channels 3 for their exact input)")
      ->capture_default_str()->check(CLI::IsMember({"qx", "authors"}));
  build->add_flag("--count-only", *count_only, "count windows, ROIs and random focus; write the card but no shards");
  build->callback([options, rule, protocol, count_only]() {
    options->rule = *rule == "strict" ? ecg::LabelRule::strict : ecg::LabelRule::aami;
    options->protocol = ecg::parse_protocol(*protocol);
    options->images = !*count_only;
    const auto card = build_datasets_with_progress(*options, "ecg");
    print_split_sizes(card);
    std::printf("dataset card: %s\n", (options->out / "dataset_card.json").string().c_str());
  });

  struct PngArgs {
    std::string data = "out/ecg", split = "test", out = "window.png";
    Index index = 0;
    int dataset = 1;
  };
  auto args = std::make_shared<PngArgs>();
  auto* png = ecg->add_subcommand("png", "write one window as a PNG with its labelled beat's ROI drawn");
  png->add_option("--data", args->data, "folder of a built dataset")->capture_default_str();
  png->add_option("--split", args->split, "train, validation or test")->capture_default_str()
      ->check(CLI::IsMember({"train", "validation", "test"}));
  png->add_option("--index", args->index, "window index within the split")->capture_default_str();
  png->add_option("--dataset", args->dataset, "1 (last beat labelled) or 2 (first)")->capture_default_str()
      ->check(CLI::IsMember({1, 2}));
  png->add_option("--out", args->out, "PNG file to write")->capture_default_str();
  png->callback([args]() {
    ecg::ShardedDataset data(args->data, args->split, args->dataset);
    check(args->index >= 0 && args->index < data.size(), "--index ", args->index, " is outside [0, ", data.size(),
          ") of split ", args->split);
    const Index s = data.image_size();
    const std::uint8_t* image = data.image(args->index);
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(3 * s * s));
    for (Index i = 0; i < s * s; ++i)
      for (int c = 0; c < 3; ++c) rgb[static_cast<std::size_t>(3 * i + c)] = image[i];
    const auto& roi = data.roi(args->index);
    io::draw_box_rgb(rgb, s, s, roi.x0, roi.y0, roi.x1, roi.y1);
    io::write_png_rgb(args->out, s, s, rgb.data());
    std::printf("%s: record %lld, label %s, ROI [%lld, %lld) x [%lld, %lld)\n", args->out.c_str(),
                static_cast<long long>(data.record(args->index)), data.label(args->index) ? "abnormal" : "normal",
                static_cast<long long>(roi.x0), static_cast<long long>(roi.x1), static_cast<long long>(roi.y0),
                static_cast<long long>(roi.y1));
  });
  return ecg;
}

}  // namespace cli
QX_NAMESPACE_END
