// `qx --version`: the library version (QX_VERSION_* of qx/config.hpp, which the top-level CMakeLists.txt
// checks against project(VERSION)), and the switches this build of qx was compiled with: the instruction
// set (it selects the float GEMM), OpenMP and CUDA. They are facts about the translation unit that
// includes this header, i.e. about the `qx` program, which is built like the tests.
#pragma once
#include "qx/config.hpp"
#include "qx/core/parallel.hpp"

#include <CLI/CLI.hpp>

#include <string>

#define QX_CLI_STRINGIFY_IMPL(x) #x
#define QX_CLI_STRINGIFY(x) QX_CLI_STRINGIFY_IMPL(x)  // expands x first: the ABI tag's spelling

QX_NAMESPACE_BEGIN
namespace cli {

struct BuildInfo {
  std::string version;    ///< "0.1.0"
  std::string isa;        ///< "AVX-512", "AVX2" or "portable"
  std::string float_gemm; ///< which kernel multiplies float matrices
  bool openmp = false;
  bool cuda = false;
  std::string abi_namespace;  ///< the inline namespace every qx symbol lives in
};

inline BuildInfo build_info() {
  BuildInfo info;
  info.version = std::to_string(QX_VERSION_MAJOR) + "." + std::to_string(QX_VERSION_MINOR) + "." + std::to_string(QX_VERSION_PATCH);
#if defined(__AVX512F__)
  info.isa = "AVX-512";
  info.float_gemm = "packed AVX-512 kernel";
#elif defined(__AVX2__) && defined(__FMA__)
  info.isa = "AVX2";
  info.float_gemm = "packed AVX2 kernel";
#elif defined(__AVX2__)
  info.isa = "AVX2";
  info.float_gemm = "Eigen";
#else
  info.isa = "portable";
  info.float_gemm = "Eigen";
#endif
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  info.openmp = true;
#endif
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  info.cuda = true;
#endif
  info.abi_namespace = "qx::" QX_CLI_STRINGIFY(QX_ABI_TAG);
  return info;
}

/// The text `qx --version` prints, one fact per line, the version first.
inline std::string version_text() {
  const BuildInfo b = build_info();
  std::string text = "qx " + b.version + "\n";
  text += "ISA: " + b.isa + " (float GEMM: " + b.float_gemm + ")\n";
  text += std::string("OpenMP: ") + (b.openmp ? "on (" + std::to_string(num_threads()) + " threads)" : "off") + "\n";
  text += std::string("CUDA: ") + (b.cuda ? "on" : "off") + "\n";
  text += "ABI namespace: " + b.abi_namespace;
  return text;
}

/// Adds --version to the program: prints version_text() and exits 0 (CLI::CallForVersion).
inline void add_version_flag(CLI::App& app) {
  app.set_version_flag("--version", version_text(), "print the library version and build switches, then exit");
}

}  // namespace cli
QX_NAMESPACE_END
