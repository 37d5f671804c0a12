// PNG writing through stb_image_write, atomically (encoded in memory, then write_file_atomic).
// stb is compiled as static functions inside this header (STB_IMAGE_WRITE_STATIC): every translation
// unit gets its own private copy, so including qx in many files never produces duplicate symbols, and
// a program that also uses stb_image_write itself is not affected.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"
#include "qx/io/atomic_file.hpp"
#include "qx/io/stb_diagnostics.hpp"

#include <cstdint>
#include <filesystem>
#include <string>

#ifndef QX_STB_IMAGE_WRITE_INCLUDED
#define QX_STB_IMAGE_WRITE_INCLUDED
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
QX_STB_DIAGNOSTICS_PUSH
#include <stb_image_write.h>
QX_STB_DIAGNOSTICS_POP
#endif

QX_NAMESPACE_BEGIN
namespace io {

/// Writes interleaved 8-bit pixels (`channels` = 1 grey, 3 RGB, 4 RGBA), row-major, as a PNG file.
inline void write_png(const std::filesystem::path& path, Index width, Index height, int channels, const std::uint8_t* pixels) {
  check(width > 0 && height > 0 && (channels == 1 || channels == 3 || channels == 4), "write_png: '", path.string(),
        "': invalid image ", width, "x", height, " with ", channels, " channels");
  std::string encoded;
  auto sink = [](void* context, void* data, int size) { static_cast<std::string*>(context)->append(static_cast<char*>(data), static_cast<std::size_t>(size)); };
  const int ok = stbi_write_png_to_func(sink, &encoded, static_cast<int>(width), static_cast<int>(height), channels, pixels,
                                        static_cast<int>(width * channels));
  check(ok != 0, "write_png: '", path.string(), "': encoding failed");
  write_file_atomic(path, [&](std::ostream& out) { out.write(encoded.data(), static_cast<std::streamsize>(encoded.size())); });
}

inline void write_png_gray(const std::filesystem::path& path, Index width, Index height, const std::uint8_t* pixels) {
  write_png(path, width, height, 1, pixels);
}
inline void write_png_rgb(const std::filesystem::path& path, Index width, Index height, const std::uint8_t* pixels) {
  write_png(path, width, height, 3, pixels);
}

}  // namespace io
QX_NAMESPACE_END
