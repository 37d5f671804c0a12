// The --device option of the commands that compute (`qx explain`, `qx reproduce`): cpu, or cuda. Asking
// for cuda fails at once — before any data is read — with a message naming what is missing: CUDA in the
// build, or a GPU in the machine (docs/cuda.md).
#pragma once
#include "qx/config.hpp"
#include "qx/core/cuda.hpp"
#include "qx/core/error.hpp"

#include <CLI/CLI.hpp>

#include <string>

QX_NAMESPACE_BEGIN
namespace cli {

inline void add_device_option(CLI::App& cmd, std::string& device) {
  cmd.add_option("--device", device, "cpu, or cuda (a CUDA build of qx on a machine with a GPU; docs/cuda.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
}

/// The device --device names; for cuda, fails unless CUDA is built in and a GPU is present (the program
/// prefixes the command to the message).
inline Device device_option(const std::string& device) {
  if (device != "cuda") return Device::cpu;
  cuda::require("--device cuda");
  return Device::cuda;
}


}  // namespace cli
QX_NAMESPACE_END
