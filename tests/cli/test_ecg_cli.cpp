// `qx ecg` on bad input: exit code 2 and one line naming the problem.
#include <doctest/doctest.h>

#include "cli_run.hpp"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace {
std::pair<int, std::string> run_ecg(const std::string& args) { return qx_test::run_qx("ecg", args); }
}  // namespace

TEST_CASE("qx ecg: a missing database folder, a missing dataset and a bad index are clear errors") {
  const auto out = qx_test::temp_path("cli_ecg");
  fs::remove_all(out);
  auto [code, err] = run_ecg("build --mitdb /nonexistent/mitdb --out " + out.string());
  CHECK(code == 2);
  CHECK(err.find("/nonexistent/mitdb") != std::string::npos);
  const auto picture = qx_test::temp_path("cli_ecg_png", ".png");
  std::tie(code, err) = run_ecg("png --data " + out.string() + " --index 3 --out " + picture.string());
  CHECK(code == 2);
  CHECK(err.find("dataset_card.json") != std::string::npos);
  CHECK_FALSE(fs::exists(picture));
  std::tie(code, err) = run_ecg("build --mitdb " + std::string(QX_MITDB_DIR) + " --size 16 --limit 4 --shard-size 4 --out " + out.string());
  REQUIRE(code == 0);
  std::tie(code, err) = run_ecg("png --data " + out.string() + " --index 99 --out " + (out / "x.png").string());
  CHECK(code == 2);
  CHECK(err.find("--index 99") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "x.png"));
  std::tie(code, err) = run_ecg("build --size 3");
  CHECK(code == 2);
  CHECK(err.find("--size") != std::string::npos);
  fs::remove_all(out);
}
