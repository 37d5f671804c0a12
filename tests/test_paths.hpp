// Scratch paths for the tests: under the system's temporary folder, named per test and per process, so
// that concurrent runs of the suite (two build folders, two checkouts, CTest's -j) never share a file.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

namespace qx_test {
/// <temp>/qx_test_<name>_<pid><extension>
inline std::filesystem::path temp_path(const std::string& name, const std::string& extension = "") {
  return std::filesystem::temp_directory_path() / ("qx_test_" + name + "_" + std::to_string(::getpid()) + extension);
}
}  // namespace qx_test
