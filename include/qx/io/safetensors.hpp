// safetensors read and write (https://github.com/huggingface/safetensors format): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end)}} with an optional
// "__metadata__" string map, then the raw little-endian bytes; offsets are relative to the data start.
// The reader validates the whole file before any tensor is handed out (docs/io.md lists every check), and
// checks the header length against SafetensorsLimits and the file's size before reading anything else.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"
#include "qx/io/regular_file.hpp"
#include "qx/core/tensor.hpp"
#include "qx/io/atomic_file.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace io {

static_assert(std::endian::native == std::endian::little, "qx's safetensors I/O assumes a little-endian host");

/// Element types qx reads and writes. Files may list other safetensors dtypes; fetching those throws.
enum class DType { f32, f64, i64, u8, i32, i16, i8, u16, u32, u64, f16, bf16, boolean };

inline const char* to_string(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::i16: return "I16";
    case DType::i8: return "I8";
    case DType::u16: return "U16";
    case DType::u32: return "U32";
    case DType::u64: return "U64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64: case DType::i64: case DType::u64: return 8;
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::i16: case DType::u16: case DType::f16: case DType::bf16: return 2;
    case DType::u8: case DType::i8: case DType::boolean: return 1;
  }
  return 0;
}

/// Sizes the reader refuses before allocating anything for them (docs/io.md).
struct SafetensorsLimits {
  /// The JSON header's length; the reference reader's cap is the same 100 MB.
  std::uint64_t max_header_bytes = 100'000'000;
};

namespace detail {
/// The nesting a safetensors header has at most: the header object (depth 0) holds entry objects and
/// __metadata__ (depth 1), which hold the shape and data_offsets arrays and strings (depth 2).
inline constexpr int max_header_nesting = 2;

/// Reads the 8-byte little-endian header length and checks it against the limit and the file's size.
inline std::uint64_t header_length(const std::byte* first8, std::uint64_t file_size, const SafetensorsLimits& limits,
                                   const std::string& p) {
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, first8, 8);
  check(header_len <= limits.max_header_bytes, "safetensors: '", p, "': header length ", header_len,
        " is more than the limit of ", limits.max_header_bytes, " bytes (SafetensorsLimits::max_header_bytes)");
  check(header_len <= file_size - 8, "safetensors: '", p, "': header length ", header_len, " goes beyond the file (",
        file_size, " bytes)");
  return header_len;
}

inline bool parse_dtype(const std::string& s, DType& out) {
  static const std::map<std::string, DType> table{
      {"F32", DType::f32}, {"F64", DType::f64}, {"I64", DType::i64}, {"U8", DType::u8},   {"I32", DType::i32},
      {"I16", DType::i16}, {"I8", DType::i8},   {"U16", DType::u16}, {"U32", DType::u32}, {"U64", DType::u64},
      {"F16", DType::f16}, {"BF16", DType::bf16}, {"BOOL", DType::boolean}};
  auto it = table.find(s);
  if (it == table.end()) return false;
  out = it->second;
  return true;
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::i64;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return DType::u8;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::i32;
  else static_assert(sizeof(T) == 0, "safetensors: unsupported element type");
}

/// Converts `count` elements of type `from` at `src` into T.
template <class T>
bool convert(DType from, const std::byte* src, std::size_t count, T* dst) {
  auto run = [&](auto tag) {
    using S = decltype(tag);
    for (std::size_t i = 0; i < count; ++i) {
      S v;
      std::memcpy(&v, src + i * sizeof(S), sizeof(S));
      dst[i] = static_cast<T>(v);
    }
    return true;
  };
  switch (from) {
    case DType::f32: return run(float{});
    case DType::f64: return run(double{});
    case DType::i64: return run(std::int64_t{});
    case DType::u8: return run(std::uint8_t{});
    case DType::i32: return run(std::int32_t{});
    case DType::i16: return run(std::int16_t{});
    case DType::i8: return run(std::int8_t{});
    case DType::u16: return run(std::uint16_t{});
    case DType::u32: return run(std::uint32_t{});
    case DType::u64: return run(std::uint64_t{});
    default: return false;
  }
}
}  // namespace detail

/**
 * @brief A safetensors file read into memory and fully validated.
 * @code
 * auto file = qx::io::SafetensorsFile::open("model.safetensors");
 * qx::Tensor<float> w = file.get<float>("conv1.weight");
 * @endcode
 */
class SafetensorsFile {
 public:
  struct Entry {
    DType dtype;
    Shape shape;
    std::size_t begin, end;  // byte range within the data section
  };

  /// Reads and validates `path`. A regular file only (a pipe or a device might never end); its header
  /// length is checked before the file is read. @throws qx::Error naming the file, the tensor and the field.
  static SafetensorsFile open(const std::filesystem::path& path, const SafetensorsLimits& limits = {}) {
    const std::string p = path.string();
    const std::uint64_t size = regular_file_size(path, "safetensors");
    std::ifstream in(path, std::ios::binary);
    check(static_cast<bool>(in), "safetensors: cannot open '", p, "'");
    check(size >= 8, "safetensors: '", p, "' is ", size, " bytes, shorter than the 8-byte header length");
    std::array<std::byte, 8> length{};
    in.read(reinterpret_cast<char*>(length.data()), 8);
    check(in.gcount() == 8, "safetensors: read error on '", p, "'");
    detail::header_length(length.data(), size, limits, p);
    in.seekg(0);
    std::vector<std::byte> bytes(static_cast<std::size_t>(size));
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
    check(static_cast<std::uint64_t>(in.gcount()) == size, "safetensors: '", p, "' changed size while being read");
    return from_bytes(std::move(bytes), p, limits);
  }

  /// Validates an in-memory file; `name` is used in error messages.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, const std::string& file_name = "<memory>",
                                    const SafetensorsLimits& limits = {}) {
    SafetensorsFile f;
    f.path_ = file_name;
    const std::string& p = f.path_;
    check(bytes.size() >= 8, "safetensors: '", p, "' is ", bytes.size(), " bytes, shorter than the 8-byte header length");
    const std::uint64_t header_len = detail::header_length(bytes.data(), bytes.size(), limits, p);
    const std::string text(reinterpret_cast<const char*>(bytes.data()) + 8, static_cast<std::size_t>(header_len));
    nlohmann::json header;
    std::string duplicate;
    std::set<std::string> seen_keys;
    try {
      header = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using event_t = nlohmann::json::parse_event_t;
        if (depth == 1 && event == event_t::key && !seen_keys.insert(parsed.get<std::string>()).second)
          duplicate = parsed.get<std::string>();
        // Refused while parsing: a deeper header is not a safetensors header, and its nesting would
        // otherwise reach recursive code (printing a value into an error message).
        check(depth <= detail::max_header_nesting || (event != event_t::object_start && event != event_t::array_start),
              "safetensors: '", p, "': header nests arrays or objects deeper than a safetensors header (",
              detail::max_header_nesting + 1, " levels)");
        return true;
      });
    } catch (const nlohmann::json::exception& e) {
      fail("safetensors: '", p, "': header is not valid JSON (", e.what(), ")");
    }
    check(duplicate.empty(), "safetensors: '", p, "': tensor '", duplicate, "' appears twice in the header");
    check(header.is_object(), "safetensors: '", p, "': header is not a JSON object");
    const std::size_t data_size = bytes.size() - 8 - static_cast<std::size_t>(header_len);

    for (auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        check(value.is_object(), "safetensors: '", p, "': __metadata__ is not an object of strings");
        for (auto& [mk, mv] : value.items()) {
          check(mv.is_string(), "safetensors: '", p, "': __metadata__ entry '", mk, "' is not a string");
          f.metadata_[mk] = mv.get<std::string>();
        }
        continue;
      }
      const std::string where = "safetensors: '" + p + "': tensor '" + key + "'";
      check(value.is_object(), where, " is not an object");
      check(value.contains("dtype") && value["dtype"].is_string(), where, ": field 'dtype' missing or not a string");
      check(value.contains("shape") && value["shape"].is_array(), where, ": field 'shape' missing or not an array");
      check(value.contains("data_offsets") && value["data_offsets"].is_array() && value["data_offsets"].size() == 2, where,
            ": field 'data_offsets' missing or not a pair [begin, end]");
      Entry e{};
      check(detail::parse_dtype(value["dtype"].get<std::string>(), e.dtype), where, ": unknown dtype '",
            value["dtype"].get<std::string>(), "'");
      std::uint64_t elements = 1;
      for (const auto& d : value["shape"]) {
        check(d.is_number_integer() && d.get<std::int64_t>() >= 0, where, ": field 'shape' has an entry ", d.dump(),
              " that is not a non-negative integer");
        const auto dim = d.get<std::uint64_t>();
        check(dim == 0 || elements <= (std::uint64_t{1} << 62) / dim, where, ": shape ", value["shape"].dump(), " is too large");
        elements *= dim;
        e.shape.push_back(static_cast<Index>(dim));
      }
      // Compared by division: elements × dtype size may not fit 64 bits (a wrapped product could match the offsets).
      check(elements <= std::numeric_limits<std::uint64_t>::max() / dtype_size(e.dtype), where, ": shape ",
            value["shape"].dump(), " of ", to_string(e.dtype), " needs 2^64 bytes or more");
      for (const auto& o : value["data_offsets"])
        check(o.is_number_integer() && o.get<std::int64_t>() >= 0, where, ": field 'data_offsets' has an entry ", o.dump(),
              " that is not a non-negative integer");
      const auto begin = value["data_offsets"][0].get<std::uint64_t>(), end = value["data_offsets"][1].get<std::uint64_t>();
      check(begin <= end, where, ": data_offsets [", begin, ", ", end, ") has begin > end");
      check(end <= data_size, where, ": data_offsets [", begin, ", ", end, ") out of range of the ", data_size,
            "-byte data section");
      check(end - begin == elements * dtype_size(e.dtype), where, ": shape ", value["shape"].dump(), " of ",
            to_string(e.dtype), " needs ", elements * dtype_size(e.dtype), " bytes but data_offsets span ", end - begin);
      e.begin = static_cast<std::size_t>(begin);
      e.end = static_cast<std::size_t>(end);
      f.entries_[key] = e;
    }
    // The tensors must tile the data section exactly: no overlap, no gap, no trailing bytes.
    std::vector<std::pair<std::size_t, std::string>> by_offset;
    for (const auto& [name, e] : f.entries_) by_offset.emplace_back(e.begin, name);
    std::sort(by_offset.begin(), by_offset.end(), [&](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : f.entries_[a.second].end < f.entries_[b.second].end;
    });
    std::size_t cursor = 0;
    std::string previous = "(start of data)";
    for (const auto& [begin, name] : by_offset) {
      const Entry& e = f.entries_[name];
      check(begin >= cursor, "safetensors: '", p, "': tensor '", name, "' [", begin, ", ", e.end, ") overlaps tensor '",
            previous, "' which ends at ", cursor);
      check(begin == cursor, "safetensors: '", p, "': gap of ", begin - cursor, " bytes before tensor '", name,
            "' (data_offsets must cover the data section)");
      cursor = e.end;
      previous = name;
    }
    check(cursor == data_size, "safetensors: '", p, "': ", data_size - cursor,
          " bytes after the last tensor are not covered by any data_offsets");
    f.data_.assign(bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len), bytes.end());
    return f;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, e] : entries_) out.push_back(name);
    return out;
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const Entry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    check(it != entries_.end(), "safetensors: '", path_, "' has no tensor named '", name, "'");
    return it->second;
  }
  DType dtype(const std::string& name) const { return entry(name).dtype; }
  const Shape& shape(const std::string& name) const { return entry(name).shape; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  /// The raw little-endian bytes of a tensor.
  std::span<const std::byte> bytes(const std::string& name) const {
    const Entry& e = entry(name);
    return {data_.data() + e.begin, e.end - e.begin};
  }

  /// The tensor `name`, whose dtype must be exactly T's (F32 ↔ float, F64 ↔ double, I64, U8, I32).
  template <class T>
  Tensor<T> get(const std::string& name) const {
    const Entry& e = entry(name);
    check(e.dtype == detail::dtype_of<T>(), "safetensors: '", path_, "': tensor '", name, "' is ", to_string(e.dtype),
          ", not ", to_string(detail::dtype_of<T>()));
    auto t = Tensor<T>::empty(e.shape);
    if (e.end > e.begin) std::memcpy(t.data(), data_.data() + e.begin, e.end - e.begin);
    return t;
  }

  /// The tensor `name` converted to T from any integer or F32/F64 dtype.
  template <class T>
  Tensor<T> get_as(const std::string& name) const {
    const Entry& e = entry(name);
    auto t = Tensor<T>::empty(e.shape);
    check(detail::convert(e.dtype, data_.data() + e.begin, static_cast<std::size_t>(t.numel()), t.data()),
          "safetensors: '", path_, "': tensor '", name, "' has dtype ", to_string(e.dtype), ", which qx cannot convert");
    return t;
  }

 private:
  std::string path_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::byte> data_;
};

/**
 * @brief Collects named tensors and writes them as one safetensors file (atomically).
 * Tensors are laid out in name order, contiguous, and the header is padded with spaces to 8 bytes.
 */
class SafetensorsWriter {
 public:
  template <class T>
  void add(const std::string& name, const Tensor<T>& t) {
    const Tensor<T> c = t.to(Device::cpu).contiguous();  // a GPU's tensor is written from a host copy
    add_raw(name, detail::dtype_of<T>(), t.shape(),
            {reinterpret_cast<const std::byte*>(c.data()), static_cast<std::size_t>(c.numel()) * sizeof(T)});
  }
  void add_raw(const std::string& name, DType dtype, const Shape& shape, std::span<const std::byte> bytes) {
    check(!name.empty() && name != "__metadata__", "safetensors writer: invalid tensor name '", name, "'");
    check(!tensors_.count(name), "safetensors writer: tensor '", name, "' added twice");
    check(bytes.size() == static_cast<std::size_t>(qx::numel(shape)) * dtype_size(dtype), "safetensors writer: tensor '",
          name, "' of shape ", shape_str(shape), " and dtype ", to_string(dtype), " given ", bytes.size(), " bytes");
    tensors_[name] = {dtype, shape, std::vector<std::byte>(bytes.begin(), bytes.end())};
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  /// The file's bytes.
  std::string serialize() const {
    nlohmann::ordered_json header;
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (const auto& [name, t] : tensors_) {
      header[name] = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
      offset += t.bytes.size();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    const std::uint64_t len = text.size();
    std::memcpy(out.data(), &len, 8);
    out += text;
    out.reserve(out.size() + offset);
    for (const auto& [name, t] : tensors_) out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
    return out;
  }

  /// Writes the file atomically (temporary name, then rename).
  void write(const std::filesystem::path& path) const {
    const std::string bytes = serialize();
    write_file_atomic(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
  }

 private:
  struct Stored {
    DType dtype;
    Shape shape;
    std::vector<std::byte> bytes;
  };
  std::map<std::string, Stored> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace io
QX_NAMESPACE_END
