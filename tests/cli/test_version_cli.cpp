// `qx --version`: the version CMake's project() declares, then the ISA, OpenMP and CUDA switches this
// build was compiled with (the test is compiled with the same switches as the program).
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/cli/version_command.hpp"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

TEST_CASE("qx --version prints the project version and the build switches, exit code 0") {
  const auto out = qx_test::temp_path("cli_version", ".txt");
  const int status = std::system((std::string(QX_CLI_PATH) + " --version >" + out.string() + " 2>&1").c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  std::filesystem::remove(out);
  const std::string printed = text.str();
  CAPTURE(printed);
  CHECK(printed.rfind(std::string("qx ") + QX_PROJECT_VERSION + "\n", 0) == 0);
  CHECK(printed == qx::cli::version_text() + "\n");
#if defined(__AVX512F__)
  CHECK(printed.find("ISA: AVX-512 (float GEMM: packed AVX-512 kernel)") != std::string::npos);
#elif defined(__AVX2__) && defined(__FMA__)
  CHECK(printed.find("ISA: AVX2 (float GEMM: packed AVX2 kernel)") != std::string::npos);
  CHECK(printed.find("_avx2\n") != std::string::npos);  // the ABI namespace names the micro-kernel's ISA
#elif defined(__AVX2__)
  CHECK(printed.find("ISA: AVX2 (float GEMM: Eigen)") != std::string::npos);
#else
  CHECK(printed.find("ISA: portable") != std::string::npos);
#endif
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  CHECK(printed.find("OpenMP: on (") != std::string::npos);
#else
  CHECK(printed.find("OpenMP: off") != std::string::npos);
#endif
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  CHECK(printed.find("CUDA: on") != std::string::npos);
#else
  CHECK(printed.find("CUDA: off") != std::string::npos);
#endif
  // --version is the one way to run qx without a subcommand.
  const int bare = std::system((std::string(QX_CLI_PATH) + " >/dev/null 2>&1").c_str());
  CHECK(WEXITSTATUS(bare) == 2);
}
