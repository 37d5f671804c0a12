// What each fuzz target does with one input, shared by the libFuzzer programs (fuzz_*.cpp) and by the
// regression tests that replay every committed input of tests/fuzz/regressions/<target>/ under the
// normal build. A body may end with qx::Error (a refused input); anything else — another exception, a
// crash, a sanitizer report, a hang — is a bug in the reader. docs/reliability.md has the results.
#pragma once
#include "qx/ecg/wfdb.hpp"
#include "qx/io/safetensors.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace qx_fuzz {

/// Small limits keep every execution fast; the limit checks themselves are what is exercised.
inline qx::ecg::WfdbLimits wfdb_limits() {
  qx::ecg::WfdbLimits limits;
  limits.max_header_bytes = 1 << 16;
  limits.max_signals = 64;
  limits.max_samples = 1 << 20;
  limits.max_annotation_bytes = 1 << 20;
  return limits;
}

/// A `.hea` file's text.
inline void wfdb_header(std::span<const std::uint8_t> input) {
  qx::ecg::parse_header(std::string(input.begin(), input.end()), "fuzz", wfdb_limits());
}

/// A header's text, a NUL byte, then the bytes every signal file of that header reads (formats 212, 16, 80).
inline void wfdb_signal(std::span<const std::uint8_t> input) {
  std::size_t split = 0;
  while (split < input.size() && input[split] != 0) ++split;
  const std::string header(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(split));
  const std::vector<unsigned char> signal(input.begin() + static_cast<std::ptrdiff_t>(std::min(split + 1, input.size())),
                                          input.end());
  const auto limits = wfdb_limits();
  const auto record = qx::ecg::decode_record(
      qx::ecg::parse_header(header, "fuzz", limits), "fuzz", [&](const std::string&, std::uint64_t) { return signal; },
      limits);
  for (std::size_t s = 0; s < record.digital.size(); ++s) (void)record.physical(static_cast<int>(s));
}

/// An MIT-format annotation file; the first two bytes, when present, also bound the annotation times.
inline void wfdb_annotations(std::span<const std::uint8_t> input) {
  const std::vector<unsigned char> bytes(input.begin(), input.end());
  (void)qx::ecg::parse_annotations(bytes, "fuzz");
  if (input.size() >= 2) (void)qx::ecg::parse_annotations(bytes, "fuzz", long{input[0]} << 8 | input[1]);
}

/// A safetensors file, header and data: every tensor is fetched as stored and converted to double.
inline void safetensors(std::span<const std::uint8_t> input) {
  const auto* first = reinterpret_cast<const std::byte*>(input.data());
  const auto file = qx::io::SafetensorsFile::from_bytes(std::vector<std::byte>(first, first + input.size()), "fuzz",
                                                        {.max_header_bytes = 1 << 16});
  for (const auto& name : file.names()) {
    (void)file.bytes(name);
    switch (file.dtype(name)) {
      case qx::io::DType::f32: (void)file.get<float>(name); break;
      case qx::io::DType::u8: (void)file.get<std::uint8_t>(name); break;
      default: break;
    }
    try {
      (void)file.get_as<double>(name);
    } catch (const qx::Error&) {  // F16, BF16 and BOOL are listed but not converted
    }
  }
}

/// The committed inputs of `target` (seeds/<target> and regressions/<target> under `fuzz_dir`), by path,
/// in name order, for the regression tests.
inline std::vector<std::pair<std::string, std::vector<std::uint8_t>>> committed_inputs(const std::filesystem::path& fuzz_dir,
                                                                                       const std::string& target) {
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> inputs;
  for (const char* kind : {"seeds", "regressions"}) {
    if (!std::filesystem::is_directory(fuzz_dir / kind / target)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(fuzz_dir / kind / target)) {
      std::ifstream in(entry.path(), std::ios::binary);
      inputs.emplace_back(entry.path().string(),
                          std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
    }
  }
  std::sort(inputs.begin(), inputs.end());
  return inputs;
}

}  // namespace qx_fuzz
