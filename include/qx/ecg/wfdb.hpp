// A WFDB reader written from PhysioNet's format descriptions (header(5), signal(5), annot(5)), with no
// WFDB library: `.hea` headers, signal formats 212, 16 and 80, and MIT-format `.atr` annotations with
// the SKIP, NUM, SUB, CHN and AUX pseudo-annotations. Every inconsistency between a header and its files
// is a qx::Error naming the record and the problem; nothing is read outside a file's bytes, and no size a
// file claims is allocated before it is checked against WfdbLimits and the files' real sizes.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/io/regular_file.hpp"

#include <algorithm>
#include <array>
#include <climits>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ecg {

/// Sizes the reader refuses before allocating anything for them. The defaults admit the MIT-BIH records
/// (650,000 frames of 2 signals, annotation files under 10 KB) and a day of 12 leads at 1 kHz; raise them for
/// larger records. Each error names the limit that was exceeded.
struct WfdbLimits {
  std::uint64_t max_header_bytes = std::uint64_t{1} << 20;      ///< size of a `.hea` file
  int max_signals = 4096;                                        ///< signal lines in a header
  long max_samples = long{1} << 30;                              ///< frames × signals of a record (4 GiB decoded)
  std::uint64_t max_annotation_bytes = std::uint64_t{1} << 28;  ///< size of an annotation file
};

/// One signal line of a header: "100.dat 212 200 11 1024 995 -22131 0 MLII".
struct SignalSpec {
  std::string file_name;
  int format = 0;
  long byte_offset = 0;     ///< from "212+offset"
  double gain = 200;        ///< ADC units per physical unit (0 in a header means the default, 200)
  long baseline = 0;        ///< digital value of 0 physical units (defaults to adc_zero)
  std::string units = "mV";
  int adc_resolution = 12;
  long adc_zero = 0;
  long initial_value = 0;
  long checksum = 0;  ///< 16-bit sum of all samples, as a signed value
  bool has_checksum = false;
  long block_size = 0;
  std::string description;
};

/// The record line and the signal lines of a `.hea` file.
struct RecordHeader {
  std::string name;
  int num_signals = 0;
  double sampling_frequency = 250;
  long num_samples = -1;  ///< per signal; -1 when the header does not say
  std::vector<SignalSpec> signals;
  std::vector<std::string> comments;
};

namespace detail {
inline std::vector<std::string> split_fields(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string f; in >> f;) out.push_back(f);
  return out;
}

/// The whole of `text` parsed as a number by std::from_chars (no exceptions, no locale); a leading '+'
/// is allowed, as strtol and strtod allow it.
template <class Number>
bool parse_whole(const std::string& text, Number& value) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (first != last && *first == '+' && last - first > 1 && first[1] != '-') ++first;
  const auto [end, error] = std::from_chars(first, last, value);
  return error == std::errc() && end == last && first != last;
}

inline long to_long(const std::string& text, const std::string& record, const char* field) {
  long v = 0;
  if (!parse_whole(text, v)) fail("WFDB record ", record, ": header field ", field, " is '", text, "', not an integer");
  return v;
}

/// An integer field that must fit an int (WFDB stores samples, formats and counts as int).
inline int to_int(const std::string& text, const std::string& record, const char* field) {
  const long v = to_long(text, record, field);
  check(v >= INT_MIN && v <= INT_MAX, "WFDB record ", record, ": header field ", field, " is ", v, ", beyond the range of an int");
  return static_cast<int>(v);
}

inline double to_double(const std::string& text, const std::string& record, const char* field) {
  double v = 0;
  if (!parse_whole(text, v)) fail("WFDB record ", record, ": header field ", field, " is '", text, "', not a number");
  return v;
}

inline double to_finite(const std::string& text, const std::string& record, const char* field) {
  const double v = to_double(text, record, field);
  check(std::isfinite(v), "WFDB record ", record, ": header field ", field, " is '", text, "', not a finite number");
  return v;
}

/// The size of `path`, a regular file of at most `max_bytes` (io::regular_file_size), checked before
/// anything is read. `limit` names the setting that raises the bound.
inline std::uint64_t checked_file_size(const std::filesystem::path& path, const std::string& record, const char* what,
                                       std::uint64_t max_bytes, const char* limit) {
  const std::uint64_t size = io::regular_file_size(path, "WFDB record " + record, std::string(what) + " file ");
  check(size <= max_bytes, "WFDB record ", record, ": ", what, " file '", path.string(), "' has ", size,
        " bytes, more than the limit of ", max_bytes, " (", limit, ")");
  return size;
}

/// Reads a file whose size checked_file_size has bounded.
inline std::vector<unsigned char> read_bytes(const std::filesystem::path& path, const std::string& record, const char* what,
                                             std::uint64_t max_bytes, const char* limit) {
  const std::uint64_t size = checked_file_size(path, record, what, max_bytes, limit);
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "WFDB record ", record, ": cannot open ", what, " file '", path.string(), "'");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  check(static_cast<std::uint64_t>(in.gcount()) == size, "WFDB record ", record, ": ", what, " file '", path.string(),
        "' changed size while being read");
  return bytes;
}
/// "101 ('mitdb/101.hea')": how errors found in a file's content name the record and the file.
inline std::string record_and_file(const std::string& record, const std::filesystem::path& path) {
  return record + " ('" + path.string() + "')";
}
}  // namespace detail

/// Parses the text of a `.hea` file (LF or CRLF line ends, '#' comments). `record` names errors.
inline RecordHeader parse_header(const std::string& text, const std::string& record, const WfdbLimits& limits = {}) {
  RecordHeader h;
  std::istringstream in(text);
  std::string line;
  bool have_record_line = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    if (line[first] == '#') {
      h.comments.push_back(line.substr(first + 1));
      continue;
    }
    const auto f = detail::split_fields(line);
    if (!have_record_line) {
      have_record_line = true;
      check(f.size() >= 2, "WFDB record ", record, ": record line '", line, "' needs a name and a signal count");
      h.name = f[0].substr(0, f[0].find('/'));
      h.num_signals = detail::to_int(f[1], record, "number of signals");
      check(h.num_signals >= 0 && h.num_signals <= limits.max_signals, "WFDB record ", record, ": number of signals ",
            h.num_signals, " is out of range [0, ", limits.max_signals, "] (WfdbLimits::max_signals)");
      if (f.size() >= 3) {
        const std::string fs = f[2].substr(0, f[2].find_first_of("/("));
        h.sampling_frequency = detail::to_finite(fs, record, "sampling frequency");
        check(h.sampling_frequency > 0, "WFDB record ", record, ": sampling frequency must be positive");
      }
      if (f.size() >= 4) {
        h.num_samples = detail::to_long(f[3], record, "number of samples");
        check(h.num_samples >= 0, "WFDB record ", record, ": negative number of samples");
        // Checked here, before any signal file is opened: frames × signals must stay within the limit.
        check(h.num_samples <= limits.max_samples / std::max(h.num_signals, 1), "WFDB record ", record,
              ": header field number of samples is ", h.num_samples, "; ", h.num_samples, " frames of ", h.num_signals,
              " signal(s) exceed the limit of ", limits.max_samples, " samples (WfdbLimits::max_samples)");
      }
      continue;
    }
    check(f.size() >= 2, "WFDB record ", record, ": signal line '", line, "' needs a file name and a format");
    check(static_cast<int>(h.signals.size()) < h.num_signals, "WFDB record ", record, ": header announces ",
          h.num_signals, " signals but has more signal lines");
    SignalSpec s;
    s.file_name = f[0];
    const std::string format = f[1];
    const auto plus = format.find('+');
    s.format = detail::to_int(format.substr(0, format.find_first_of("x:+")), record, "format");
    if (plus != std::string::npos) s.byte_offset = detail::to_long(format.substr(plus + 1), record, "byte offset");
    if (f.size() >= 3) {
      std::string gain = f[2];
      if (const auto slash = gain.find('/'); slash != std::string::npos) {
        s.units = gain.substr(slash + 1);
        gain = gain.substr(0, slash);
      }
      bool explicit_baseline = false;
      if (const auto paren = gain.find('('); paren != std::string::npos) {
        const auto close = gain.find(')', paren);
        check(close != std::string::npos, "WFDB record ", record, ": gain field '", f[2], "' has an unclosed '('");
        s.baseline = detail::to_int(gain.substr(paren + 1, close - paren - 1), record, "baseline");
        explicit_baseline = true;
        gain = gain.substr(0, paren);
      }
      s.gain = detail::to_finite(gain, record, "gain");
      if (s.gain == 0) s.gain = 200;  // WFDB's default gain
      if (f.size() >= 4) s.adc_resolution = detail::to_int(f[3], record, "ADC resolution");
      if (f.size() >= 5) s.adc_zero = detail::to_int(f[4], record, "ADC zero");
      if (!explicit_baseline) s.baseline = s.adc_zero;
      if (f.size() >= 6) s.initial_value = detail::to_int(f[5], record, "initial value");
      if (f.size() >= 7) {
        s.checksum = detail::to_long(f[6], record, "checksum");
        s.has_checksum = true;
      }
      if (f.size() >= 8) s.block_size = detail::to_long(f[7], record, "block size");
      for (std::size_t k = 8; k < f.size(); ++k) s.description += (k > 8 ? " " : "") + f[k];
    }
    h.signals.push_back(std::move(s));
  }
  check(have_record_line, "WFDB record ", record, ": header has no record line");
  check(static_cast<int>(h.signals.size()) == h.num_signals, "WFDB record ", record, ": header announces ", h.num_signals,
        " signals but has ", h.signals.size(), " signal lines");
  return h;
}

/// Reads `<dir>/<record>.hea`.
inline RecordHeader read_header(const std::filesystem::path& dir, const std::string& record, const WfdbLimits& limits = {}) {
  check(std::filesystem::is_directory(dir), "WFDB record ", record, ": folder '", dir.string(), "' does not exist");
  const auto path = dir / (record + ".hea");
  const auto bytes = detail::read_bytes(path, record, "header", limits.max_header_bytes, "WfdbLimits::max_header_bytes");
  // Errors in the text name the file too: "WFDB record 101 ('mitdb/101.hea'): ...".
  return parse_header(std::string(bytes.begin(), bytes.end()), detail::record_and_file(record, path), limits);
}

/// A record's samples: digital values per signal, and the conversion to physical units.
struct Record {
  RecordHeader header;
  std::vector<std::vector<int>> digital;  ///< [signal][sample]

  long num_samples() const { return digital.empty() ? 0 : static_cast<long>(digital[0].size()); }
  /// Index of the signal whose description is `name` (e.g. "MLII"). @throws qx::Error listing the signals.
  int signal_index(const std::string& name) const {
    std::string names;
    for (std::size_t i = 0; i < header.signals.size(); ++i) {
      if (header.signals[i].description == name) return static_cast<int>(i);
      names += (i ? ", " : "") + header.signals[i].description;
    }
    fail("WFDB record ", header.name, " has no signal '", name, "' (signals: ", names, ")");
  }
  /// (digital − baseline) / gain, in the signal's units (mV for MIT-BIH).
  std::vector<float> physical(int signal) const {
    const auto& s = header.signals.at(static_cast<std::size_t>(signal));
    const auto& d = digital.at(static_cast<std::size_t>(signal));
    std::vector<float> out(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) out[i] = static_cast<float>((d[i] - s.baseline) / s.gain);
    return out;
  }
};

namespace detail {
/// Decodes `count` interleaved samples of one format from `bytes` (already bounds-checked by the caller).
inline void decode(int format, const unsigned char* bytes, long count, std::vector<int>& out) {
  out.resize(static_cast<std::size_t>(count));
  switch (format) {
    case 212:  // two 12-bit two's-complement samples in three bytes
      for (long k = 0; k < count; ++k) {
        const unsigned char* b = bytes + (k / 2) * 3;
        int v = (k % 2 == 0) ? (b[0] | ((b[1] & 0x0F) << 8)) : (b[2] | ((b[1] & 0xF0) << 4));
        if (v & 0x800) v -= 0x1000;
        out[static_cast<std::size_t>(k)] = v;
      }
      break;
    case 16:  // 16-bit little-endian two's complement
      for (long k = 0; k < count; ++k)
        out[static_cast<std::size_t>(k)] = static_cast<std::int16_t>(bytes[2 * k] | (bytes[2 * k + 1] << 8));
      break;
    case 80:  // 8-bit offset binary
      for (long k = 0; k < count; ++k) out[static_cast<std::size_t>(k)] = static_cast<int>(bytes[k]) - 128;
      break;
  }
}

/// Bytes that `count` samples occupy in `format`.
inline long format_bytes(int format, long count) {
  switch (format) {
    case 212: return (count * 3 + 1) / 2;
    case 16: return count * 2;
    case 80: return count;
  }
  return -1;
}
}  // namespace detail

/// Where decode_record gets the bytes of a signal file: given the file name and the most bytes the limits
/// admit (byte offset + the samples WfdbLimits::max_samples leaves), it returns the file's bytes, or throws
/// without reading when the file is larger.
using SignalFileReader = std::function<std::vector<unsigned char>(const std::string& file_name, std::uint64_t max_bytes)>;

/// Decodes the signals `header` describes, checking sizes, first values and checksums; `record` names
/// errors. read_record is this with the files read from a folder (the fuzz target feeds memory).
inline Record decode_record(RecordHeader header, const std::string& record, const SignalFileReader& signal_file,
                            const WfdbLimits& limits = {}) {
  Record r;
  r.header = std::move(header);
  const auto& signals = r.header.signals;
  r.digital.resize(signals.size());
  long samples_left = limits.max_samples;  // frames × signals still admitted, over all signal files
  // Signals stored in the same file are interleaved frame by frame; group them by file.
  std::size_t i = 0;
  while (i < signals.size()) {
    std::size_t j = i;
    while (j < signals.size() && signals[j].file_name == signals[i].file_name) ++j;
    const std::string& file = signals[i].file_name;
    const int format = signals[i].format;
    for (std::size_t k = i; k < j; ++k)
      check(signals[k].format == format, "WFDB record ", record, ": signals in '", file, "' have different formats");
    check(format == 212 || format == 16 || format == 80, "WFDB record ", record, ": signal format ", format,
          " is not supported (212, 16 and 80 are)");
    const long per_frame = static_cast<long>(j - i);
    const long offset = signals[i].byte_offset;
    check(offset >= 0, "WFDB record ", record, ": byte offset ", offset, " of '", file, "' is negative");
    const long max_frames = samples_left / per_frame;
    check(r.header.num_samples <= max_frames, "WFDB record ", record, ": the header's ", r.header.num_samples,
          " samples of ", per_frame, " signal(s) in '", file, "' exceed the limit of ", limits.max_samples,
          " samples (WfdbLimits::max_samples)");
    const std::uint64_t max_bytes =
        static_cast<std::uint64_t>(offset) + static_cast<std::uint64_t>(detail::format_bytes(format, max_frames * per_frame));
    const auto bytes = signal_file(file, max_bytes);
    check(bytes.size() <= max_bytes, "WFDB record ", record, ": signal file '", file, "' has ", bytes.size(),
          " bytes, more than the limit of ", max_bytes, " (WfdbLimits::max_samples)");
    check(static_cast<std::uint64_t>(offset) <= bytes.size(), "WFDB record ", record, ": byte offset ", offset,
          " is beyond '", file, "' (", bytes.size(), " bytes)");
    const long available = static_cast<long>(bytes.size()) - offset;
    long frames = r.header.num_samples;
    if (frames < 0) frames = (format == 212 ? available * 2 / 3 : available / detail::format_bytes(format, 1)) / per_frame;
    const long needed = detail::format_bytes(format, frames * per_frame);
    check(needed <= available, "WFDB record ", record, ": '", file, "' has ", available,
          " bytes of samples but the header's ", frames, " samples of ", per_frame, " signal(s) in format ", format,
          " need ", needed, " (truncated file, or wrong sample count or format)");
    check(needed == available || r.header.num_samples < 0, "WFDB record ", record, ": '", file, "' has ",
          available - needed, " bytes more than the header's ", frames, " samples in format ", format,
          " account for (wrong sample count or format)");
    std::vector<int> interleaved;
    detail::decode(format, bytes.data() + offset, frames * per_frame, interleaved);
    for (long s = 0; s < per_frame; ++s) {
      auto& d = r.digital[i + static_cast<std::size_t>(s)];
      d.resize(static_cast<std::size_t>(frames));
      for (long t = 0; t < frames; ++t) d[static_cast<std::size_t>(t)] = interleaved[static_cast<std::size_t>(t * per_frame + s)];
    }
    samples_left -= frames * per_frame;
    i = j;
  }
  for (std::size_t s = 0; s < signals.size(); ++s) {
    const auto& d = r.digital[s];
    if (!d.empty())
      check(d[0] == signals[s].initial_value, "WFDB record ", record, ": signal ", s, " (", signals[s].description,
            ") starts with ", d[0], " but the header says ", signals[s].initial_value);
    if (signals[s].has_checksum) {
      long sum = 0;
      for (int v : d) sum += v;
      const auto checksum = static_cast<std::int16_t>(static_cast<std::uint16_t>(sum & 0xFFFF));
      check(checksum == signals[s].checksum, "WFDB record ", record, ": signal ", s, " (", signals[s].description,
            ") has checksum ", checksum, " but the header says ", signals[s].checksum);
    }
  }
  return r;
}

/// Reads a record's header and signal files from `dir`; see decode_record and WfdbLimits.
inline Record read_record(const std::filesystem::path& dir, const std::string& record, const WfdbLimits& limits = {}) {
  return decode_record(
      read_header(dir, record, limits), record,
      [&](const std::string& file, std::uint64_t max_bytes) {
        return detail::read_bytes(dir / file, record, "signal", max_bytes, "WfdbLimits::max_samples");
      },
      limits);
}

/// One annotation of an annotation file, with its pseudo-annotation fields.
struct Annotation {
  long sample = 0;
  int code = 0;
  char symbol = '?';  ///< the standard mnemonic (first character of the WFDB mnemonic)
  int subtype = 0, channel = 0, number = 0;
  std::string aux;
};

/// The WFDB annotation code table (ecgcodes.h): mnemonic of each code 0–41; unknown codes map to '?'.
inline char annotation_symbol(int code) {
  static constexpr std::array<char, 42> table{
      ' ', 'N', 'L', 'R', 'a', 'V', 'F', 'J', 'A', 'S', 'E', 'j', '/', 'Q', '~', '?', '|', '?', 's', 'T', '*',
      'D', '"', '=', 'p', 'B', '^', 't', '+', 'u', '?', '!', '[', ']', 'e', 'n', '@', 'x', 'f', '(', ')', 'r'};
  return code >= 0 && code < static_cast<int>(table.size()) ? table[static_cast<std::size_t>(code)] : '?';
}

/// Parses MIT-format annotation bytes. `signal_length` (if ≥ 0) bounds the annotation times.
inline std::vector<Annotation> parse_annotations(const std::vector<unsigned char>& bytes, const std::string& record,
                                                 long signal_length = -1) {
  enum : int { skip = 59, num = 60, sub = 61, chn = 62, aux = 63 };
  std::vector<Annotation> out;
  long time = 0;
  int channel = 0, number = 0;
  std::size_t pos = 0;
  auto word_at = [&](std::size_t p) { return static_cast<unsigned>(bytes[p] | (bytes[p + 1] << 8)); };
  bool ended = false;
  while (pos + 2 <= bytes.size()) {
    const unsigned word = word_at(pos);
    pos += 2;
    const int code = static_cast<int>(word >> 10);
    const int value = static_cast<int>(word & 0x3FF);
    if (code == 0 && value == 0) {
      ended = true;
      break;
    }
    switch (code) {
      case skip: {
        check(pos + 4 <= bytes.size(), "WFDB record ", record, ": annotation file truncated inside a SKIP at byte ", pos);
        // The 32-bit interval is stored as two 16-bit little-endian words, high word first.
        const auto interval = static_cast<std::int32_t>((word_at(pos) << 16) | word_at(pos + 2));
        time += interval;
        pos += 4;
        break;
      }
      case num:
        number = value;
        if (!out.empty()) out.back().number = number;
        break;
      case sub:
        if (!out.empty()) out.back().subtype = value;
        break;
      case chn:
        channel = value;
        if (!out.empty()) out.back().channel = channel;
        break;
      case aux: {
        check(pos + static_cast<std::size_t>(value) <= bytes.size(), "WFDB record ", record,
              ": annotation file truncated inside an AUX string at byte ", pos);
        if (!out.empty()) out.back().aux.assign(reinterpret_cast<const char*>(bytes.data() + pos), static_cast<std::size_t>(value));
        pos += static_cast<std::size_t>(value + (value & 1));
        break;
      }
      default: {
        time += value;
        Annotation a;
        a.sample = time;
        a.code = code;
        a.symbol = annotation_symbol(code);
        a.channel = channel;
        a.number = number;
        check(signal_length < 0 || (time >= 0 && time < signal_length), "WFDB record ", record, ": annotation ",
              out.size(), " at sample ", time, " is beyond the signal (", signal_length, " samples)");
        out.push_back(std::move(a));
      }
    }
  }
  check(ended, "WFDB record ", record, ": annotation file is truncated (no end-of-file marker after ", out.size(),
        " annotations)");
  return out;
}

/// Reads `<dir>/<record>.<extension>`, refusing a file larger than WfdbLimits::max_annotation_bytes unread.
inline std::vector<Annotation> read_annotations(const std::filesystem::path& dir, const std::string& record,
                                                long signal_length = -1, const std::string& extension = "atr",
                                                const WfdbLimits& limits = {}) {
  check(std::filesystem::is_directory(dir), "WFDB record ", record, ": folder '", dir.string(), "' does not exist");
  const auto path = dir / (record + "." + extension);
  return parse_annotations(
      detail::read_bytes(path, record, "annotation", limits.max_annotation_bytes, "WfdbLimits::max_annotation_bytes"),
      detail::record_and_file(record, path), signal_length);
}

}  // namespace ecg
QX_NAMESPACE_END
