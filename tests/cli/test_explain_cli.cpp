// The `qx explain` command end to end: a round trip on a small model equals the library's maps, the
// ROI report is JSON with a focus per map and sample, PNG and JPEG inputs are read as the model's grey or
// RGB channels and normalised by --mean/--std, and every bad argument exits with code 2, a one-line
// message naming the problem, and no output file.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/core/cuda.hpp"
#include "qx/explain/explain.hpp"
#include "qx/io/image.hpp"
#include "qx/io/png.hpp"
#include "qx/nn/nn.hpp"

#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using qx::Tensor;

namespace {
struct Run {
  int code;
  std::string out, err;
};

// Each test case uses its own folder and output files: CTest runs them in parallel.
Run run(const std::string& args, const fs::path& dir) {
  const auto out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string command = std::string(QX_CLI_PATH) + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(command.c_str());
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

struct Fixture {
  fs::path dir;
  Tensor<float> x;
  std::unique_ptr<qx::nn::ResNet<float>> model;
  explicit Fixture(const std::string& name) : dir(qx_test::temp_path("cli_explain_" + name)) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    model = qx::nn::resnet18<float>(1, 2, 4, 5);
    model->eval();
    qx::nn::save_safetensors(*model, dir / "w.safetensors");
    qx::Rng rng(1);
    x = Tensor<float>::randn({2, 1, 40, 36}, rng);
    qx::io::SafetensorsWriter in;
    in.add("input", x);
    in.write(dir / "x.safetensors");
    qx::io::SafetensorsWriter bad_rank;
    bad_rank.add("input", Tensor<float>::zeros({1, 40, 36}));
    bad_rank.write(dir / "rank3.safetensors");
    qx::io::SafetensorsWriter three;
    three.add("input", Tensor<float>::zeros({1, 3, 40, 36}));
    three.write(dir / "rgb.safetensors");
    // A 36×40 grey picture with a gradient and a bright block, and files that only pretend to be images.
    grey.resize(36 * 40);
    for (std::size_t p = 0; p < grey.size(); ++p) grey[p] = static_cast<std::uint8_t>((p * 7) % 200 + (p % 36 > 20 ? 55 : 0));
    qx::io::write_png_gray(dir / "x.png", 36, 40, grey.data());
    std::ofstream(dir / "text.png") << "not an image\n";
    std::ofstream(dir / "empty.jpg");
    std::ifstream png(dir / "x.png", std::ios::binary);
    std::string head(60, '\0');
    png.read(head.data(), 60);
    std::ofstream(dir / "truncated.png", std::ios::binary) << head;  // a valid signature, then nothing
  }
  ~Fixture() { fs::remove_all(dir); }
  std::vector<std::uint8_t> grey;  // the pixels of x.png, (40, 36)
  std::string base(const std::string& out = "out.safetensors", const std::string& input = "x.safetensors") const {
    return "explain --arch resnet18 --in-channels 1 --num-classes 2 --width 4 --weights " + (dir / "w.safetensors").string() +
           " --input " + (dir / input).string() + " --out " + (dir / out).string();
  }
};
}  // namespace

TEST_CASE("qx explain: round trip, ROI focus report and pictures") {
  Fixture f("roundtrip");
  const auto r = run(f.base() + " --roi 0,0,18,20 --roi 18,20,36,40 --png " + (f.dir / "png").string(), f.dir);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto out = qx::io::SafetensorsFile::open(f.dir / "out.safetensors");
  CHECK(out.shape("logits") == qx::Shape{2, 2});
  CHECK(out.dtype("target") == qx::io::DType::i64);
  CHECK(out.shape("saliency") == qx::Shape{2, 1, 40, 36});
  CHECK(out.shape("gradcam_raw") == qx::Shape{2, 2, 2});
  CHECK(out.shape("gradcam") == qx::Shape{2, 40, 36});
  CHECK(out.shape("guided_backprop") == qx::Shape{2, 1, 40, 36});
  CHECK(out.shape("guided_gradcam") == qx::Shape{2, 1, 40, 36});
  const auto expected = qx::explain::explain(*f.model, f.x);
  for (auto m : qx::explain::all_methods()) CHECK(out.get<float>(qx::explain::to_string(m)).to_vector() == expected.map(m).to_vector());
  const auto report = nlohmann::json::parse(r.out);
  REQUIRE(report["samples"].size() == 2);
  CHECK(report["samples"][0]["random_focus"].get<double>() == doctest::Approx(18.0 * 20 / (36 * 40)));
  for (const char* m : {"saliency", "gradcam", "guided_backprop", "guided_gradcam"}) {
    const double v = report["samples"][1]["focus"][m];
    CHECK(v >= 0.0);
    CHECK(v <= 1.0);
  }
  CHECK(fs::exists(f.dir / "png" / "sample1_gradcam.png"));
  const auto targeted = run(f.base("t.safetensors") + " --target 1", f.dir);
  REQUIRE(targeted.code == 0);
  CHECK(qx::io::SafetensorsFile::open(f.dir / "t.safetensors").get<std::int64_t>("target").to_vector() == std::vector<std::int64_t>{1, 1});
}

TEST_CASE("qx explain: every bad argument is exit code 2, one line naming it, and no output file") {
  Fixture f("errors");
  const std::string w = (f.dir / "w.safetensors").string(), x = (f.dir / "x.safetensors").string();
  const std::string out = (f.dir / "bad.safetensors").string();
  struct Case {
    std::string args, fragment;
  };
  const Case cases[] = {
      {"explain --arch resnet99 --in-channels 1 --num-classes 2 --width 4 --weights " + w + " --input " + x + " --out " + out, "resnet99"},
      {"explain --arch resnet34 --in-channels 1 --num-classes 2 --width 4 --weights " + w + " --input " + x + " --out " + out, "missing"},
      {"explain --arch resnet18 --in-channels 1 --num-classes 3 --width 4 --weights " + w + " --input " + x + " --out " + out, "fc.weight"},
      {"explain --arch resnet18 --in-channels 1 --num-classes 2 --width 4 --weights " + w + " --input " + (f.dir / "rank3.safetensors").string() + " --out " + out, "(1, 40, 36)"},
      {"explain --arch resnet18 --in-channels 3 --num-classes 2 --width 4 --weights " + w + " --input " + (f.dir / "rgb.safetensors").string() + " --out " + out, "do not fit"},
      {f.base("bad.safetensors") + " --target 2", "--target 2"},
      {f.base("bad.safetensors") + " --target -1", "--target -1"},
      {f.base("bad.safetensors") + " --layer layer7", "layer7"},
      {f.base("bad.safetensors") + " --roi 0,0,40,20", "outside"},
      {f.base("bad.safetensors") + " --roi 5,5,5,9", "empty"},
      {f.base("bad.safetensors") + " --roi 1,2,3", "four integers"},
      {f.base("bad.safetensors") + " --roi 0,0,2,2 --roi 0,0,2,2 --roi 0,0,2,2", "3 times for 2 samples"},
      {"explain --arch resnet18 --in-channels 1 --num-classes 2 --width 4 --weights " + (f.dir / "none.safetensors").string() + " --input " + x + " --out " + out, "does not exist"},
      {"explain --arch resnet18 --in-channels 1 --num-classes 2 --weights " + w + " --input " + x + " --out " + out, "do not fit"},
      {"explain --arch resnet18 --num-classes 2 --weights " + w + " --input " + x + " --out " + out, "--in-channels"},
      {f.base("bad.safetensors", "text.png"), "is not a readable PNG or JPEG image"},
      {f.base("bad.safetensors", "truncated.png"), "is not a readable PNG or JPEG image"},
      {f.base("bad.safetensors", "empty.jpg"), "is empty"},
      {f.base("bad.safetensors", "none.png"), "does not exist"},
      {f.base("bad.safetensors", "x.png") + " --mean 0.5,0.5", "2 values of mean for 1 channels"},
      {f.base("bad.safetensors", "x.png") + " --std 0", "not positive"},
      {f.base("bad.safetensors") + " --mean 0.5", "apply to PNG/JPEG inputs"},
      {f.base("bad.safetensors") + " --device tpu", "--device"},
      // Without CUDA in the build, or without a GPU, --device cuda names what is missing (docs/cuda.md).
      {f.base("bad.safetensors") + " --device cuda",
       qx::cuda::built ? "qx explain: --device cuda: CUDA requested but no usable GPU"
                       : "qx explain: --device cuda: CUDA requested but qx was built without CUDA"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const auto r = run(c.args, f.dir);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find(c.fragment) != std::string::npos, r.err);
    CHECK(r.err.rfind("qx explain: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(out));
  }
}

TEST_CASE("qx explain: a PNG or JPEG image is the model's grey or RGB input, normalised by --mean and --std") {
  Fixture f("image");
  // Grey PNG into a one-channel model: input = (pixel / 255 − 0.5) / 0.25.
  const auto r = run(f.base("grey.safetensors", "x.png") + " --mean 0.5 --std 0.25 --png " + (f.dir / "png").string(), f.dir);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto x = Tensor<float>::empty({1, 1, 40, 36});
  for (std::size_t p = 0; p < f.grey.size(); ++p) x.data()[p] = static_cast<float>((f.grey[p] / 255.0 - 0.5) / 0.25);
  const auto expected = qx::explain::explain(*f.model, x);
  const auto out = qx::io::SafetensorsFile::open(f.dir / "grey.safetensors");
  for (auto m : qx::explain::all_methods()) CHECK(out.get<float>(qx::explain::to_string(m)).to_vector() == expected.map(m).to_vector());
  CHECK(fs::exists(f.dir / "png" / "sample0_saliency.png"));
  CHECK(fs::exists(f.dir / "png" / "sample0_guided_gradcam.png"));
  // Below the maps a picture is drawn as it is; an ECG image (ink on nothing) as a dark trace on white.
  auto ramp = Tensor<float>::empty({1, 3, 4, 8});  // brighter to the right, in every channel
  for (qx::Index p = 0; p < ramp.numel(); ++p) ramp.data()[p] = static_cast<float>(p % 8);
  for (bool ink : {false, true}) {
    const auto picture = f.dir / (ink ? "ink.png" : "picture.png");
    qx::explain::write_map_png(picture, Tensor<float>::zeros({1, 4, 8}), qx::explain::Method::gradcam, 0, ramp, std::nullopt,
                               {qx::io::Colormap::gray, /*overlay_alpha=*/0.0, true, ink});
    const auto drawn = qx::io::read_image(picture, 1);
    CHECK(drawn.pixels[0] == (ink ? 255 : 0));
    CHECK(drawn.pixels[7] == (ink ? 0 : 255));
  }

  // RGB into a three-channel model, normalised per channel; the same picture as a JPEG.
  auto rgb_model = qx::nn::resnet18<float>(3, 2, 4, 6);
  rgb_model->eval();
  qx::nn::save_safetensors(*rgb_model, f.dir / "w3.safetensors");
  std::vector<std::uint8_t> rgb(36 * 40 * 3);
  for (std::size_t p = 0; p < rgb.size(); ++p) rgb[p] = static_cast<std::uint8_t>((p * 13) % 251);
  qx::io::write_png_rgb(f.dir / "rgb.png", 36, 40, rgb.data());
  REQUIRE(stbi_write_jpg((f.dir / "rgb.jpg").string().c_str(), 36, 40, 3, rgb.data(), 95) != 0);
  const std::string rgb_base = "explain --arch resnet18 --in-channels 3 --num-classes 2 --width 4 --weights " +
                               (f.dir / "w3.safetensors").string() + " --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225";
  for (const char* name : {"rgb.png", "rgb.jpg"}) {
    CAPTURE(name);
    const auto rr = run(rgb_base + " --input " + (f.dir / name).string() + " --out " + (f.dir / "rgb.safetensors").string(), f.dir);
    REQUIRE_MESSAGE(rr.code == 0, rr.err);
    // The decoded pixels (exact for PNG, JPEG's own for JPEG), normalised channel by channel.
    const auto image = qx::io::read_image(f.dir / name, 3);
    if (std::string(name) == "rgb.png") CHECK(image.pixels == rgb);
    const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    auto x3 = Tensor<float>::empty({1, 3, 40, 36});
    for (qx::Index c = 0; c < 3; ++c)
      for (qx::Index p = 0; p < 40 * 36; ++p)
        x3.data()[c * 40 * 36 + p] = static_cast<float>((image.pixels[static_cast<std::size_t>(p * 3 + c)] / 255.0 - mean[c]) / std[c]);
    const auto maps = qx::explain::explain(*rgb_model, x3);
    const auto written = qx::io::SafetensorsFile::open(f.dir / "rgb.safetensors");
    CHECK(written.get<float>("logits").to_vector() == maps.logits.to_vector());
    CHECK(written.get<float>("saliency").to_vector() == maps.saliency.to_vector());
  }

  // An RGB picture into a one-channel model is read as grey (stb's luminance).
  const auto grey_of_rgb = run(f.base("g.safetensors", "rgb.png"), f.dir);
  REQUIRE_MESSAGE(grey_of_rgb.code == 0, grey_of_rgb.err);
  CHECK(qx::io::SafetensorsFile::open(f.dir / "g.safetensors").shape("saliency") == qx::Shape{1, 1, 40, 36});
}

TEST_CASE("read_image refuses a device or a folder at once instead of reading forever") {
  CHECK_THROWS_WITH_AS(qx::io::read_image("/dev/zero", 1), doctest::Contains("'/dev/zero' is not a regular file"), qx::Error);
  CHECK_THROWS_WITH_AS(qx::io::read_image(fs::temp_directory_path(), 3), doctest::Contains("is not a regular file"), qx::Error);
  CHECK_THROWS_WITH_AS(qx::io::read_image("/nonexistent/x.png", 3), doctest::Contains("cannot open '/nonexistent/x.png'"),
                       qx::Error);
}

TEST_CASE("qx reproduce --device cuda fails at once, naming what is missing, before reading or writing anything") {
  const fs::path dir = qx_test::temp_path("cli_reproduce_device");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto r = run("reproduce --device cuda --mitdb " + (dir / "none").string() + " --out " + (dir / "run").string(), dir);
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find(qx::cuda::built ? "qx reproduce: --device cuda: CUDA requested but no usable GPU"
                                           : "qx reproduce: --device cuda: CUDA requested but qx was built without CUDA") !=
                    std::string::npos,
                r.err);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_FALSE(fs::exists(dir / "run"));
  fs::remove_all(dir);
}
