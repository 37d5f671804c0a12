// Runs the qx program for the command-line tests: its exit code and what it wrote on stderr.
#pragma once
#include "../test_paths.hpp"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

namespace qx_test {
/// `qx <command> <args>` with stdout discarded: (exit code, stderr text).
inline std::pair<int, std::string> run_qx(const std::string& command, const std::string& args) {
  const auto err = temp_path("cli_" + command + "_stderr", ".txt");
  const int status = std::system((std::string(QX_CLI_PATH) + " " + command + " " + args + " >/dev/null 2>" + err.string()).c_str());
  std::stringstream s;
  {
    std::ifstream in(err);
    s << in.rdbuf();
  }
  std::error_code ignored;
  std::filesystem::remove(err, ignored);  // one file per call would pile up in the temporary folder
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, s.str()};
}
}  // namespace qx_test
