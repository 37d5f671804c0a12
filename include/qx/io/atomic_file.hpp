// Atomic file writes: the content goes to a temporary file in the target's directory, is flushed and
// checked, and is then renamed over the target. A crash or an exception never leaves a half-written
// target; on failure the temporary is removed and the target keeps its previous content.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <system_error>

QX_NAMESPACE_BEGIN
namespace io {

/// Writes `path` atomically with `writer` (which streams the whole content).
/// @throws qx::Error naming the path when the file cannot be written or renamed.
inline void write_file_atomic(const std::filesystem::path& path, const std::function<void(std::ostream&)>& writer) {
  namespace fs = std::filesystem;
  const fs::path temporary = path.string() + ".tmp." + std::to_string(::getpid());
  // The temporary goes away however this function ends, unless it became `path`.
  struct RemoveUnlessRenamed {
    const fs::path& file;
    bool renamed = false;
    ~RemoveUnlessRenamed() {
      std::error_code ignored;
      if (!renamed) fs::remove(file, ignored);
    }
  } cleanup{temporary};
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    check(static_cast<bool>(out), "cannot open '", temporary.string(), "' for writing (writing '", path.string(), "')");
    writer(out);
    out.flush();
    check(static_cast<bool>(out), "write error on '", temporary.string(), "' (disk full?) while writing '", path.string(),
          "'");
  }
  std::error_code ec;
  fs::rename(temporary, path, ec);
  check(!ec, "cannot rename '", temporary.string(), "' to '", path.string(), "': ", ec.message());
  cleanup.renamed = true;
}

}  // namespace io
QX_NAMESPACE_END
