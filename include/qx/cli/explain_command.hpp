// `qx explain`: loads a ResNet and a batch of inputs (a safetensors tensor, or one PNG/JPEG image read as
// the model's grey or RGB channels and normalised by --mean/--std), computes the five maps of
// docs/conventions.md from one forward pass, writes them to a safetensors file and, with --roi, prints
// the focus of every map for every sample as JSON. Every argument is validated before any work starts;
// the output file is written atomically, so a failure never leaves one behind.
#pragma once
#include "qx/cli/device_option.hpp"
#include "qx/explain/explain.hpp"
#include "qx/io/colormap.hpp"
#include "qx/io/image.hpp"
#include "qx/io/safetensors.hpp"
#include "qx/metrics/focus.hpp"
#include "qx/nn/nn.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace cli {

struct ExplainArgs {
  std::string arch, weights, input, out, layer = "layer4", png_dir, colormap = "inferno", device = "cpu";
  Index in_channels = 0, num_classes = 0, width = 64;
  std::optional<Index> target;
  std::vector<std::string> rois;
  std::vector<double> mean{0.0}, std{1.0};  ///< image normalisation: one value, or one per channel
  bool normalisation_given = false;          ///< --mean or --std was on the command line
};

/// Whether --input names an image (by its extension) rather than a safetensors file.
inline bool is_image_file(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

/// The batch to explain: an image as a batch of one, (pixel / 255 − mean) / std with the model's channels
/// (grey or RGB), or the tensor 'input' (N, C, H, W) of a safetensors file. @throws qx::Error naming --input.
inline Tensor<float> read_explain_input(const ExplainArgs& a) {
  check(std::filesystem::exists(a.input), "--input '", a.input, "' does not exist");
  if (is_image_file(a.input)) {
    check(a.in_channels == 1 || a.in_channels == 3, "--input '", a.input, "' is an image, which gives 1 (grey) or 3 (RGB) channels, not ",
          a.in_channels, " (--in-channels)");
    io::Image image;
    try {
      image = io::read_image(a.input, static_cast<int>(a.in_channels));
    } catch (const Error& e) {
      fail("--input: ", e.what());
    }
    try {
      return io::image_to_tensor<float>(image, a.mean, a.std);
    } catch (const Error& e) {
      fail("--mean/--std: ", e.what());
    }
  }
  check(!a.normalisation_given, "--mean and --std apply to PNG/JPEG inputs; '", a.input, "' is read as safetensors");
  const auto input_file = io::SafetensorsFile::open(a.input);
  check(input_file.contains("input"), "--input '", a.input, "' has no tensor named 'input'");
  const Tensor<float> x = input_file.get_as<float>("input");
  check(x.dim() == 4, "--input '", a.input, "': 'input' must be (N, C, H, W), got ", shape_str(x.shape()));
  check(x.size(1) == a.in_channels, "--input '", a.input, "': 'input' has ", x.size(1), " channels but --in-channels is ",
        a.in_channels);
  check(x.size(0) > 0, "--input '", a.input, "': the batch is empty");
  return x;
}

/// "x0,y0,x1,y1" → Roi. @throws qx::Error naming the text.
inline metrics::Roi parse_roi(const std::string& text) {
  metrics::Roi r;
  long long v[4];
  char tail = 0;
  check(std::sscanf(text.c_str(), "%lld,%lld,%lld,%lld%c", &v[0], &v[1], &v[2], &v[3], &tail) == 4,
        "--roi '", text, "' is not four integers x0,y0,x1,y1");
  r.x0 = v[0], r.y0 = v[1], r.x1 = v[2], r.y1 = v[3];
  return r;
}

/// Runs `qx explain` with parsed arguments; returns the JSON it prints (empty without --roi).
inline nlohmann::json run_explain(const ExplainArgs& a) {
  namespace fs = std::filesystem;
  // ---- validate everything before computing ---------------------------------------------------------
  const Device device = device_option(a.device);
  auto model = nn::make_resnet<float>(a.arch, a.in_channels, a.num_classes, a.width);  // unknown arch → error
  check(fs::exists(a.weights), "--weights '", a.weights, "' does not exist");
  try {
    nn::load_safetensors(*model, a.weights);
  } catch (const Error& e) {
    fail("--weights '", a.weights, "' do not fit ", a.arch, " with ", a.in_channels, " input channels, ", a.num_classes,
         " classes and width ", a.width, ": ", e.what());
  }
  const Tensor<float> x = read_explain_input(a);
  check(model->has_submodule(a.layer) && !a.layer.empty(), "--layer '", a.layer,
        "' is not a layer of ", a.arch, " (e.g. layer1 … layer4, layer3.1, layer4.0.conv2)");
  const Index n = x.size(0), h = x.size(2), w = x.size(3);
  std::vector<Index> targets;
  if (a.target) {
    check(*a.target >= 0 && *a.target < a.num_classes, "--target ", *a.target, " is outside [0, ", a.num_classes, ")");
    targets.assign(static_cast<std::size_t>(n), *a.target);
  }
  std::vector<metrics::Roi> rois;
  for (const auto& text : a.rois) {
    rois.push_back(parse_roi(text));
    metrics::check_roi(rois.back(), h, w);
  }
  check(rois.empty() || rois.size() == 1 || static_cast<Index>(rois.size()) == n, "--roi given ", rois.size(),
        " times for ", n, " samples (give one box for all, or one per sample)");
  const auto colormap = io::colormap_from_name(a.colormap);

  // ---- compute and write ------------------------------------------------------------------------------
  model->to(device);  // on a GPU the maps are computed there, then brought back to be written
  const auto maps = explain::explain(*model, x.to(device), {explain::all_methods(), a.layer, targets}).to(Device::cpu);
  if (!a.png_dir.empty()) {
    fs::create_directories(a.png_dir);
    for (Index s = 0; s < n; ++s)
      for (auto m : {explain::Method::saliency, explain::Method::gradcam, explain::Method::guided_backprop,
                     explain::Method::guided_gradcam}) {
        std::optional<metrics::Roi> roi;
        if (!rois.empty()) roi = rois[rois.size() == 1 ? 0 : static_cast<std::size_t>(s)];
        explain::write_map_png(fs::path(a.png_dir) / ("sample" + std::to_string(s) + "_" + explain::to_string(m) + ".png"),
                               maps.map(m), m, s, x, roi, {colormap, 0.6, true, !is_image_file(a.input)});
      }
  }

  io::SafetensorsWriter writer;
  writer.add("logits", maps.logits);
  auto target_tensor = Tensor<std::int64_t>::empty({n});
  for (Index i = 0; i < n; ++i) target_tensor.data()[i] = maps.targets[static_cast<std::size_t>(i)];
  writer.add("target", target_tensor);
  for (auto m : explain::all_methods()) writer.add(explain::to_string(m), maps.map(m));
  writer.set_metadata("arch", a.arch);
  writer.set_metadata("layer", a.layer);
  writer.write(a.out);

  nlohmann::json report;
  if (rois.empty()) return report;
  report["samples"] = nlohmann::json::array();
  for (Index s = 0; s < n; ++s) {
    const auto& roi = rois[rois.size() == 1 ? 0 : static_cast<std::size_t>(s)];
    nlohmann::json sample = {{"index", s}, {"target", maps.targets[static_cast<std::size_t>(s)]},
                             {"roi", {roi.x0, roi.y0, roi.x1, roi.y1}}, {"random_focus", metrics::random_focus(roi, h, w)}};
    for (auto m : {explain::Method::saliency, explain::Method::gradcam, explain::Method::guided_backprop,
                   explain::Method::guided_gradcam}) {
      const auto values = explain::reduced_map(maps.map(m), m, s);
      const auto r = metrics::focus(values.data(), 1, h, w, roi, metrics::MaxPositiveOverChannels{});
      sample["focus"][explain::to_string(m)] = r.focus;
      if (r.null_map) sample["null_map"].push_back(explain::to_string(m));
    }
    report["samples"].push_back(sample);
  }
  return report;
}

inline CLI::App* add_explain_command(CLI::App& root) {
  auto args = std::make_shared<ExplainArgs>();
  auto* cmd = root.add_subcommand("explain", "attribution maps of a ResNet for a batch of inputs, and their focus in ROIs");
  cmd->add_option("--arch", args->arch, "resnet18, resnet34 or resnet50")->required();
  cmd->add_option("--in-channels", args->in_channels, "input channels of the model")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--num-classes", args->num_classes, "classes of the model")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--width", args->width, "base width (torchvision: 64)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--weights", args->weights, "model weights (safetensors, torchvision names)")->required();
  cmd->add_option("--input", args->input,
                  "safetensors file with 'input' (N, C, H, W) F32, or a PNG/JPEG image (.png, .jpg, .jpeg: a batch of one)")
      ->required();
  cmd->add_option("--mean", args->mean, "image normalisation (pixel/255 - mean)/std: one value, or one per channel")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--std", args->std, "image normalisation: one value, or one per channel")->delimiter(',')->capture_default_str();
  cmd->add_option("--target", args->target, "explain this class for every sample (default: the predicted class)");
  cmd->add_option("--layer", args->layer, "Grad-CAM layer")->capture_default_str();
  cmd->add_option("--roi", args->rois, "x0,y0,x1,y1 half-open box; once for all samples or once per sample");
  cmd->add_option("--png", args->png_dir, "write heat-map PNGs into this folder");
  cmd->add_option("--colormap", args->colormap, "inferno, viridis or gray")->capture_default_str();
  cmd->add_option("--out", args->out, "output safetensors file (logits, target, the five maps)")->required();
  add_device_option(*cmd, args->device);
  cmd->callback([args, cmd]() {
    args->normalisation_given = cmd->count("--mean") + cmd->count("--std") > 0;
    const auto report = run_explain(*args);
    if (!report.is_null()) std::printf("%s\n", report.dump(2).c_str());
  });
  return cmd;
}

}  // namespace cli
QX_NAMESPACE_END
