// `qx reproduce` end to end on a tiny configuration (a few windows per split, 16-pixel images, a width-4
// ResNet, one epoch), once per protocol: every table of report.md, every figure and every JSON field the
// report promises is produced. Also: the --paper warning and a clear error for a bad --init-weights.
#include <doctest/doctest.h>

#include "cli_run.hpp"

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;

namespace {
std::pair<int, std::string> run_reproduce(const std::string& args) { return qx_test::run_qx("reproduce", args); }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("qx reproduce, tiny, both protocols: every table, figure and JSON field") {
  for (const std::string protocol : {"qx", "authors"}) {
    CAPTURE(protocol);
    const auto out = qx_test::temp_path("cli_reproduce_" + protocol);
    fs::remove_all(out);
    const auto [code, err] = run_reproduce("--mitdb " + std::string(QX_MITDB_DIR) + " --protocol " + protocol +
                                           " --data-limit 40 --size 16 --width 4 --epochs 1 --batch 8 --explain-limit 12 "
                                           "--bootstrap 20 --out " + out.string());
    REQUIRE_MESSAGE(code == 0, err);
    for (const char* figure : {"figure1_histograms.png", "figure2_examples.png", "figure3_roi.png"}) {
      CAPTURE(figure);
      CHECK(fs::file_size(out / "figures" / figure) > 100);
    }
    const std::string md = read_text(out / "report.md");
    for (const char* part : {"## Split sizes", "## Table 1", "F1, normal class", "F1, abnormal class", "## Beyond the paper",
                             "balanced accuracy", "sensitivity V", "## Table 2", "null values", "null maps", "chance-normalised",
                             "## Table 3", "## Table 4", "## Paired tests", "vs random focus", "figures/figure1_histograms.png",
                             "figures/figure2_examples.png", "figures/figure3_roi.png", "wall time", "37867", "96.47"}) {
      CAPTURE(part);
      CHECK(md.find(part) != std::string::npos);
    }
    // The paper's implied test confusion (its accuracy and abnormal precision with the authors' counts:
    // TP − FP = a·n − (n − P), FP = TP·(1 − p)/p), worked out by hand: sensitivity 64.77 / 57.35 %,
    // specificity 97.22 / 95.95 %, and a normal-class F1 of 96.47 / 95.38 % — the paper's own figures.
    CHECK(md.find("| paper 1 (implied) | 93.66 | 80.99 | 89.04 | 64.77 | 74.12 | 97.22 |") != std::string::npos);
    CHECK(md.find("| paper 2 (implied) | 91.72 | 76.65 | 89.04 | 57.35 | 63.57 | 95.95 |") != std::string::npos);
    const auto report = nlohmann::json::parse(read_text(out / "report.json"));
    CHECK(report["settings"]["protocol"] == protocol);
    // Training pictures are augmented under the clean protocol only (the authors had no augmentation).
    CHECK(report["settings"]["augment"].is_object() == (protocol == "qx"));
    // So is the weight average (auto: 0.999 for the clean protocol, off for the authors').
    CHECK(report["settings"]["average_decay"] == (protocol == "qx" ? 0.999 : 0.0));
    // The auxiliary label (auto): dataset 2 learns its window's five other beats too, under the clean protocol only.
    CHECK(report["settings"]["auxiliary_label"] == "auto");
    REQUIRE(report["datasets"].size() == 2);
    CHECK(report["datasets"][0]["auxiliary_label"].is_null());
    if (protocol == "qx") CHECK(report["datasets"][1]["auxiliary_label"] == "other five beats");
    else CHECK(report["datasets"][1]["auxiliary_label"].is_null());
    // Mixup (auto): dataset 2 under the clean protocol only, alpha 0.2.
    CHECK(report["settings"]["mixup"] == "auto");
    CHECK(report["datasets"][0]["mixup_alpha"] == 0.0);
    CHECK(report["datasets"][1]["mixup_alpha"] == (protocol == "qx" ? 0.2 : 0.0));
    CHECK(report["data"]["test"]["counts"]["dataset1_windows"].get<long>() > 0);
    // An explicit --size serves both datasets: one data folder, Grad-CAM's automatic layer from that size.
    CHECK(report["settings"]["size"] == "16");
    for (const auto& d : report["datasets"]) {
      CHECK(d["size"] == 16);
      CHECK(d["gradcam_layer"] == "layer1");  // 16 px / 4 = 4 cells: no stage has 7, the finest is used
    }
    CHECK(fs::is_directory(out / "data" / "16px"));
    CHECK(report["timing"]["total_seconds"].get<double>() > 0);
    CHECK(report["software"].contains("version"));
    CHECK(report["machine"].contains("threads"));
    REQUIRE(report["datasets"].size() == 2);
    for (const auto& d : report["datasets"]) {
      for (const char* key : {"accuracy", "f1_normal", "f1_abnormal"}) CHECK(d["validation"].contains(key));
      const auto& t = d["test"];
      for (const char* key : {"accuracy", "f1_normal", "f1_abnormal", "precision_abnormal", "sensitivity_abnormal", "specificity",
                              "balanced_accuracy", "majority_accuracy"})
        CHECK(t.contains(key));
      for (const char* c : {"S", "V", "F"}) CHECK(t["sensitivity_aami"][c].contains("sensitivity"));
      for (const char* key : {"accuracy", "balanced_accuracy"}) {
        CHECK(t["ci"][key]["lo"].get<double>() <= t["ci"][key]["hi"].get<double>());
        CHECK(t["ci"][key]["resamples"] == 20);
      }
      const auto& e = d["explain"];
      CHECK(e["samples"] == 12);
      CHECK(e["random_focus"]["mean"].get<double>() > 0);
      for (const char* m : {"saliency", "gradcam", "guided_backprop", "guided_gradcam"}) {
        CAPTURE(m);
        for (const char* g : {"all", "correct", "incorrect", "normal", "abnormal"})
          for (const char* key : {"mean", "sd", "n", "null_values", "null_maps", "chance_normalised", "histogram"})
            CHECK(e["focus"][m][g].contains(key));
        CHECK(e["focus"][m]["all"]["n"] == 12);
        CHECK(e["focus"][m]["ci"].contains("lo"));
        CHECK(e["focus"][m]["vs_random"].contains("p"));
      }
      CHECK(e["paired_tests"].size() == 6);
      CHECK(e["figures"]["gradcam_cells"].get<int>() >= 2);
      for (const char* key : {"train_seconds", "test_seconds", "explain_seconds"}) CHECK(d["timing"].contains(key));
    }
    fs::remove_all(out);
  }
}

TEST_CASE("qx reproduce --size auto: dataset 1 at 128 px, dataset 2 at 64 px, each with its own Grad-CAM layer and shift") {
  const auto out = qx_test::temp_path("cli_reproduce_size_auto");
  fs::remove_all(out);
  const auto [code, err] = run_reproduce("--mitdb " + std::string(QX_MITDB_DIR) + " --data-limit 24 --width 4 --epochs 1 --batch 8 "
                                         "--explain-limit 4 --bootstrap 5 --out " + out.string());
  REQUIRE_MESSAGE(code == 0, err);
  const auto report = nlohmann::json::parse(read_text(out / "report.json"));
  CHECK(report["settings"]["size"] == "auto");
  REQUIRE(report["datasets"].size() == 2);
  const auto& d1 = report["datasets"][0];
  const auto& d2 = report["datasets"][1];
  CHECK(d1["size"] == 128);
  CHECK(d1["gradcam_layer"] == "layer3");  // 128 / 16 = 8 cells across
  CHECK(d1["augment_max_shift"] == 6);     // ±3 rows per 64 px
  CHECK(d1["explain"]["figures"]["gradcam_cells"] == 8);
  CHECK(d2["size"] == 64);
  CHECK(d2["gradcam_layer"] == "layer2");  // 64 / 8 = 8 cells across
  CHECK(d2["augment_max_shift"] == 3);
  CHECK(d2["explain"]["figures"]["gradcam_cells"] == 8);
  CHECK(fs::is_directory(out / "data" / "128px"));
  CHECK(fs::is_directory(out / "data" / "64px"));
  const std::string md = read_text(out / "report.md");
  CHECK(md.find("dataset 1 (128 px, Grad-CAM at layer3)") != std::string::npos);
  CHECK(md.find("Dataset 1 (128 px): Grad-CAM at `layer3` is a 8 × 8 grid") != std::string::npos);
  CHECK(md.find("Dataset 2 (64 px): Grad-CAM at `layer2` is a 8 × 8 grid") != std::string::npos);
  // The authors' protocol keeps one size for both datasets.
  const auto out_authors = qx_test::temp_path("cli_reproduce_size_auto_authors");
  fs::remove_all(out_authors);
  const auto [code_authors, err_authors] =
      run_reproduce("--mitdb " + std::string(QX_MITDB_DIR) + " --protocol authors --datasets 1 --data-limit 24 --width 4 --epochs 1 "
                    "--batch 8 --explain-limit 4 --bootstrap 5 --out " + out_authors.string());
  REQUIRE_MESSAGE(code_authors == 0, err_authors);
  const auto authors = nlohmann::json::parse(read_text(out_authors / "report.json"));
  CHECK(authors["datasets"][0]["size"] == 64);
  fs::remove_all(out);
  fs::remove_all(out_authors);
}

TEST_CASE("qx reproduce: a folder of the older one-size layout is refused in one line, not resumed at another size") {
  const auto out = qx_test::temp_path("cli_reproduce_old_layout");
  fs::remove_all(out);
  fs::create_directories(out / "data");
  std::ofstream(out / "data" / "dataset_card.json") << "{}\n";
  const auto [code, err] = run_reproduce("--mitdb " + std::string(QX_MITDB_DIR) + " --data-limit 24 --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("holds the shards of an older qx") != std::string::npos);
  CHECK(err.find((out / "data").string()) != std::string::npos);
  CHECK_FALSE(fs::exists(out / "figures"));
  fs::remove_all(out);
}

TEST_CASE("qx reproduce: a malformed --size is refused in one line, before any work") {
  const auto out = qx_test::temp_path("cli_reproduce_size");
  fs::remove_all(out);
  for (const std::string bad : {"15", "1025", "64.5", "big", "-64", "64px"}) {
    CAPTURE(bad);
    const auto [code, err] = run_reproduce("--size " + bad + " --out " + out.string());
    CHECK(code == 2);
    CHECK(err.find("--size '" + bad + "': expected auto or a whole number of pixels in [16, 1024]") != std::string::npos);
    CHECK_FALSE(fs::exists(out / "data"));
  }
}

TEST_CASE("qx reproduce: --paper warns without --init-weights, and a bad --init-weights is one clear line") {
  auto [code, err] = run_reproduce("--paper --datasets 3 --out " + qx_test::temp_path("cli_reproduce_paper").string());
  CHECK(code == 2);
  CHECK(err.find("warning: --paper") != std::string::npos);
  CHECK(err.find("--datasets") != std::string::npos);
  std::tie(code, err) = run_reproduce("--init-weights /nonexistent/resnet50.safetensors");
  CHECK(code == 2);
  CHECK(err.find("/nonexistent/resnet50.safetensors") != std::string::npos);
}

TEST_CASE("qx reproduce: --augment on with the authors' protocol is refused in one line, before any work") {
  const auto out = qx_test::temp_path("cli_reproduce_augment");
  fs::remove_all(out);
  const auto [code, err] = run_reproduce("--protocol authors --augment on --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("--augment on needs --protocol qx") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "data"));
}

TEST_CASE("qx reproduce: --auxiliary-label on with the authors' protocol is refused in one line, before any work") {
  const auto out = qx_test::temp_path("cli_reproduce_auxiliary");
  fs::remove_all(out);
  auto [code, err] = run_reproduce("--protocol authors --auxiliary-label on --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("--auxiliary-label on needs --protocol qx") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "data"));
  std::tie(code, err) = run_reproduce("--protocol authors --auxiliary-label beats --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("--auxiliary-label beats needs --protocol qx") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "data"));
  std::tie(code, err) = run_reproduce("--auxiliary-label sometimes --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("--auxiliary-label") != std::string::npos);
}

TEST_CASE("qx reproduce --auxiliary-label beats | on: both datasets learn the five other beats, or the other end's") {
  const auto out = qx_test::temp_path("cli_reproduce_beats");
  for (const auto& [option, learned] : {std::pair{"beats", std::vector<std::string>{"other five beats", "other five beats"}},
                                        std::pair{"on", std::vector<std::string>{"first beat", "last beat"}}}) {
    CAPTURE(option);
    fs::remove_all(out);
    const auto [code, err] = run_reproduce("--mitdb " + std::string(QX_MITDB_DIR) + " --auxiliary-label " + option +
                                           " --data-limit 40 --size 16 --width 4 --epochs 1 --batch 8 --explain-limit 12 "
                                           "--bootstrap 20 --out " + out.string());
    REQUIRE_MESSAGE(code == 0, err);
    const auto report = nlohmann::json::parse(read_text(out / "report.json"));
    CHECK(report["settings"]["auxiliary_label"] == option);
    REQUIRE(report["datasets"].size() == 2);
    for (int d = 0; d < 2; ++d) CHECK(report["datasets"][d]["auxiliary_label"] == learned[static_cast<std::size_t>(d)]);
  }
  fs::remove_all(out);
}

TEST_CASE("qx reproduce: a malformed --average-decay is refused in one line, before any work") {
  const auto out = qx_test::temp_path("cli_reproduce_average");
  fs::remove_all(out);
  for (const std::string bad : {"1", "0", "-0.5", "0.99x", "fast"}) {
    CAPTURE(bad);
    const auto [code, err] = run_reproduce("--average-decay " + bad + " --out " + out.string());
    CHECK(code == 2);
    CHECK(err.find("--average-decay '" + bad + "': expected auto, off or a number in (0, 1)") != std::string::npos);
    CHECK_FALSE(fs::exists(out / "data"));
  }
}

TEST_CASE("qx reproduce: a malformed --mixup, or mixup with the authors' protocol, is refused in one line, before any work") {
  const auto out = qx_test::temp_path("cli_reproduce_mixup");
  fs::remove_all(out);
  for (const std::string bad : {"0", "-0.2", "0.2x", "much", "inf"}) {
    CAPTURE(bad);
    const auto [code, err] = run_reproduce("--mixup " + bad + " --out " + out.string());
    CHECK(code == 2);
    CHECK(err.find("--mixup '" + bad + "': expected auto, off or a positive number") != std::string::npos);
    CHECK_FALSE(fs::exists(out / "data"));
  }
  const auto [code, err] = run_reproduce("--protocol authors --mixup 0.4 --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("--mixup 0.4 needs --protocol qx") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "data"));
}
