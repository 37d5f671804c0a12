// The --device option of the commands that compute (`qx explain`, `qx reproduce`): cpu, or cuda. Asking
// for cuda fails at once — before any data is read — with a message naming what is missing: CUDA in the
// build, a GPU in the machine, or (today) the CUDA dispatch of the ops the command runs (docs/cuda.md).
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

/// Returns for --device cpu; for cuda, fails naming what is missing (the program prefixes the command).
inline void require_device_supported(const std::string& device) {
  if (device != "cuda") return;
  const char* who = "--device cuda";
  cuda::require(who);
  // A GPU is here: the kernels exist and are CPU-tested (docs/cuda.md), but the ops, the training loop
  // and the attribution pass do not dispatch to them yet, so running would read device memory on the host.
  fail(who, ": this command has no CUDA path yet: its ops do not dispatch to the CUDA kernels (docs/cuda.md)");
}

}  // namespace cli
QX_NAMESPACE_END
