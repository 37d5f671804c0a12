// Reading PNG and JPEG images through stb_image, as 8-bit pixels and as a normalised model input:
//   input[0, c, y, x] = (pixel[y, x, c] / 255 − mean_c) / std_c        (torchvision's ToTensor, Normalize)
// stb_image is compiled as static functions inside this header (STB_IMAGE_STATIC), PNG and JPEG only,
// as io/png.hpp does for stb_image_write: every translation unit gets a private copy, no duplicate
// symbols. Files are read into memory first, so errors name the file and say what is wrong with it.
// Not part of qx/qx.hpp: a translation unit that compiles stb_image itself (STB_IMAGE_IMPLEMENTATION)
// must not include this header too, or it would hold two implementations.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/core/tensor.hpp"
#include "qx/io/regular_file.hpp"
#include "qx/io/stb_diagnostics.hpp"

#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#ifndef QX_STB_IMAGE_INCLUDED
#define QX_STB_IMAGE_INCLUDED
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
QX_STB_DIAGNOSTICS_PUSH
#include <stb_image.h>
QX_STB_DIAGNOSTICS_POP
#endif

QX_NAMESPACE_BEGIN
namespace io {

/// 8-bit pixels, interleaved (grey: 1 channel, RGB: 3), row-major.
struct Image {
  Index width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels;  // (height, width, channels)
};

/**
 * @brief Reads a PNG or JPEG file as `channels` = 1 (grey) or 3 (RGB) channels, whatever the file holds:
 * stb turns RGB into grey with the luminance weights (77, 150, 29) / 256 and repeats grey over RGB;
 * alpha is dropped and 16-bit PNGs are scaled to 8 bits.
 * @throws qx::Error naming the file when it is missing, not a regular file, empty, or not a decodable PNG or JPEG image.
 */
inline Image read_image(const std::filesystem::path& path, int channels) {
  check(channels == 1 || channels == 3, "read_image: '", path.string(), "': asked for ", channels,
        " channels; an image gives 1 (grey) or 3 (RGB)");
  // A regular file of a size stb can index (an int): /dev/zero or a pipe would never end.
  const std::uint64_t size = regular_file_size(path, "read_image");
  check(size > 0, "read_image: '", path.string(), "' is empty");
  check(size <= static_cast<std::uint64_t>(INT_MAX), "read_image: '", path.string(), "' has ", size,
        " bytes, more than an image decoder can index");
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "read_image: '", path.string(), "' cannot be opened");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  check(static_cast<std::uint64_t>(in.gcount()) == size, "read_image: '", path.string(), "' changed size while being read");
  int width = 0, height = 0, in_file = 0;
  unsigned char* decoded = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &in_file, channels);
  check(decoded != nullptr, "read_image: '", path.string(), "' is not a readable PNG or JPEG image (", stbi_failure_reason(), ")");
  Image image{width, height, channels, {decoded, decoded + static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * static_cast<std::size_t>(channels)}};
  stbi_image_free(decoded);
  return image;
}

/**
 * @brief The image as a model input (1, C, H, W): (pixel / 255 − mean_c) / std_c. `mean` and `std` hold one
 * value for every channel or one per channel; every std must be positive.
 * @code
 * auto x = qx::io::image_to_tensor<float>(qx::io::read_image("cat.png", 3), {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});
 * @endcode
 */
template <class T>
Tensor<T> image_to_tensor(const Image& image, const std::vector<double>& mean = {0.0}, const std::vector<double>& std = {1.0}) {
  const Index c = image.channels, plane = image.width * image.height;
  auto per_channel = [&](const std::vector<double>& v, const char* name) {
    check(v.size() == 1 || static_cast<Index>(v.size()) == c, "image_to_tensor: ", v.size(), " values of ", name, " for ", c,
          " channels (give one, or one per channel)");
    return [&v](Index ch) { return v[v.size() == 1 ? 0 : static_cast<std::size_t>(ch)]; };
  };
  const auto mean_of = per_channel(mean, "mean");
  const auto std_of = per_channel(std, "std");
  for (Index ch = 0; ch < c; ++ch) check(std_of(ch) > 0, "image_to_tensor: std of channel ", ch, " is ", std_of(ch), ", not positive");
  auto x = Tensor<T>::empty({1, c, image.height, image.width});
  for (Index ch = 0; ch < c; ++ch)
    for (Index p = 0; p < plane; ++p)
      x.data()[ch * plane + p] =
          static_cast<T>((image.pixels[static_cast<std::size_t>(p * c + ch)] / 255.0 - mean_of(ch)) / std_of(ch));
  return x;
}

}  // namespace io
QX_NAMESPACE_END
