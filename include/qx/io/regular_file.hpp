// The size of a file a reader is about to trust: it must exist and be a regular file (a pipe or a
// device such as /dev/zero might never end), so that every limit a reader checks before allocating can
// be checked against the real size. Shared by the safetensors and WFDB readers.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

QX_NAMESPACE_BEGIN
namespace io {

/**
 * The size in bytes of the regular file `path`. Errors read "<context>: cannot open <what>'<path>'",
 * "<context>: <what>'<path>' is not a regular file" or "<context>: cannot read the size of <what>'<path>'",
 * with `what` e.g. "header file " or empty.
 */
inline std::uint64_t regular_file_size(const std::filesystem::path& path, const std::string& context, const std::string& what = "") {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  check(std::filesystem::exists(status), context, ": cannot open ", what, "'", path.string(), "'");
  check(std::filesystem::is_regular_file(status), context, ": ", what, "'", path.string(), "' is not a regular file");
  const std::uint64_t size = std::filesystem::file_size(path, error);
  check(!error, context, ": cannot read the size of ", what, "'", path.string(), "'");
  return size;
}

}  // namespace io
QX_NAMESPACE_END
