// safetensors: round trips of every dtype and of strided views, a file written by the Python fixture
// writer, and every malformed-file case, each a qx::Error naming the file and the problem.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/io/atomic_file.hpp"
#include "qx/io/progress.hpp"
#include "qx/io/safetensors.hpp"

#include "../fuzz/fuzz_bodies.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using qx::Tensor;
using qx::io::SafetensorsFile;
using qx::io::SafetensorsWriter;

namespace {
std::vector<std::byte> file_bytes(const std::string& header, std::size_t data_size, std::uint64_t length_override = 0) {
  std::string text = header;
  const std::uint64_t length = length_override ? length_override : text.size();
  std::vector<std::byte> out(8 + text.size() + data_size, std::byte{0});
  std::memcpy(out.data(), &length, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

void expect_error(const std::vector<std::byte>& bytes, const std::vector<std::string>& fragments) {
  try {
    SafetensorsFile::from_bytes(bytes, "bad.safetensors");
    FAIL("no error");
  } catch (const qx::Error& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find("bad.safetensors") != std::string::npos, msg);
    for (const auto& f : fragments) CHECK_MESSAGE(msg.find(f) != std::string::npos, msg);
  }
}
}  // namespace

TEST_CASE("round trip of F32, F64, I64, U8 and a strided view, with metadata") {
  const auto dir = qx_test::temp_path("io_roundtrip");
  fs::create_directories(dir);
  SafetensorsWriter w;
  const auto f = Tensor<float>::from({2, 3}, {1, 2, 3, 4, 5, 6});
  w.add("f32", f);
  w.add("f64", Tensor<double>::from({3}, {0.5, -1.25, 1e300}));
  w.add("i64", Tensor<std::int64_t>::from({2}, {-7, 1LL << 40}));
  w.add("u8", Tensor<std::uint8_t>::from({4}, {0, 1, 254, 255}));
  w.add("view", f.slice(1, 1, 3));  // (2, 2) strided
  w.add("scalar", Tensor<float>::full({}, 3.5f));
  w.set_metadata("format", "pt");
  w.write(dir / "a.safetensors");
  const auto r = SafetensorsFile::open(dir / "a.safetensors");
  CHECK(r.names().size() == 6);
  CHECK(r.get<float>("f32").to_vector() == f.to_vector());
  CHECK(r.get<double>("f64").to_vector() == std::vector<double>{0.5, -1.25, 1e300});
  CHECK(r.get<std::int64_t>("i64").to_vector() == std::vector<std::int64_t>{-7, 1LL << 40});
  CHECK(r.get<std::uint8_t>("u8").to_vector() == std::vector<std::uint8_t>{0, 1, 254, 255});
  CHECK(r.get<float>("view").to_vector() == std::vector<float>{2, 3, 5, 6});
  CHECK(r.get<float>("scalar").shape().empty());
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.get_as<double>("i64").to_vector() == std::vector<double>{-7, double(1LL << 40)});
  CHECK_THROWS_WITH(r.get<double>("f32"), doctest::Contains("is F32, not F64"));
  CHECK_THROWS_WITH(r.get<float>("nope"), doctest::Contains("no tensor named 'nope'"));
  // The header is padded to 8 bytes.
  std::ifstream in(dir / "a.safetensors", std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
  fs::remove_all(dir);
}

TEST_CASE("a file written by the Python fixture writer reads back exactly") {
  const auto r = SafetensorsFile::open(QX_TEST_FIXTURES "/ops/ops.safetensors");
  CHECK(r.metadata().at("generator") == "make_ops_fixtures.py");
  CHECK(r.shape("conv_s1p1.x") == qx::Shape{2, 3, 7, 9});
  CHECK(r.dtype("cross_entropy.targets") == qx::io::DType::i64);
  CHECK(r.get<std::int64_t>("cross_entropy.targets").to_vector() == std::vector<std::int64_t>{1, 0, 2, 2, 1});
  CHECK(r.get<double>("cross_entropy.weights").to_vector() == std::vector<double>{0.2, 1.5, 0.7});
}

TEST_CASE("every malformed file is a clear error") {
  expect_error(std::vector<std::byte>(5), {"shorter than the 8-byte header length"});
  expect_error(file_bytes("{}", 0, 1000), {"header length 1000 goes beyond the file"});
  expect_error(file_bytes("{not json", 0), {"not valid JSON"});
  expect_error(file_bytes("[1, 2]", 0), {"not a JSON object"});
  expect_error(file_bytes(R"({"a": 3})", 0), {"tensor 'a' is not an object"});
  expect_error(file_bytes(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4), {"'a'", "dtype"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4), {"'a'", "shape"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), {"'a'", "data_offsets"});
  expect_error(file_bytes(R"({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}})", 4), {"unknown dtype 'Q7'"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4), {"'shape'", "-1"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4), {"'shape'"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4), {"data_offsets"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4), {"begin > end"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}})", 4), {"out of range"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4), {"needs 8 bytes", "span 4"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}})", 6), {"overlaps"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8), {"gap of 4 bytes"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 12), {"8 bytes after the last tensor"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8), {"'a' appears twice"});
  expect_error(file_bytes(R"({"__metadata__": {"k": 1}})", 0), {"__metadata__"});
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 4]}})", 4), {"too large"});
  CHECK_THROWS_WITH(SafetensorsFile::open("/nonexistent/x.safetensors"), doctest::Contains("cannot open '/nonexistent/x.safetensors'"));
  // A supported-on-disk but unconvertible dtype fails only when fetched.
  const auto half = SafetensorsFile::from_bytes(file_bytes(R"({"h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})", 4), "half.safetensors");
  CHECK(half.contains("h"));
  CHECK_THROWS_WITH(half.get_as<float>("h"), doctest::Contains("F16"));
}

TEST_CASE("sizes a file claims are checked against the limits before anything is allocated") {
  // A header length of 2^63, in memory and on disk (where only 8 bytes are read before the refusal).
  expect_error(file_bytes("{}", 0, std::uint64_t{1} << 63),
               {"header length 9223372036854775808", "limit of 100000000", "SafetensorsLimits::max_header_bytes"});
  const auto dir = qx_test::temp_path("io_limits");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto huge = file_bytes("{}", 0, std::uint64_t{1} << 63);
  std::ofstream(dir / "huge.safetensors", std::ios::binary).write(reinterpret_cast<const char*>(huge.data()), 10);
  CHECK_THROWS_WITH(SafetensorsFile::open(dir / "huge.safetensors"), doctest::Contains("max_header_bytes"));
  // The limit is configurable both ways.
  const auto small = file_bytes(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})", 1);
  CHECK(SafetensorsFile::from_bytes(small, "ok").get<std::uint8_t>("a").numel() == 1);
  CHECK_THROWS_WITH(SafetensorsFile::from_bytes(small, "small.safetensors", {.max_header_bytes = 16}),
                    doctest::Contains("'small.safetensors': header length 60 is more than the limit of 16 bytes"));
  // A shape whose byte count wraps to 0 in 64 bits (2^62 F64 elements × 8 bytes) with empty offsets.
  expect_error(file_bytes(R"({"a": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0),
               {"tensor 'a'", "[4611686018427387904] of F64 needs 2^64 bytes or more"});
  expect_error(file_bytes(R"({"a": {"dtype": "I32", "shape": [2147483648, 2147483648], "data_offsets": [0, 0]}})", 0),
               {"tensor 'a'", "needs 2^64 bytes or more"});
  // Nesting deeper than a safetensors header has is refused while parsing, however deep it goes.
  expect_error(file_bytes(R"({"a": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})", 4), {"nests", "3 levels"});
  expect_error(file_bytes(std::string(100000, '[') + std::string(100000, ']'), 0), {"nests"});
  // Only regular files: a folder or a device that never ends is refused before reading.
  CHECK_THROWS_WITH(SafetensorsFile::open(dir), doctest::Contains("is not a regular file"));
  CHECK_THROWS_WITH(SafetensorsFile::open("/dev/zero"), doctest::Contains("'/dev/zero' is not a regular file"));
  fs::remove_all(dir);
}

TEST_CASE("every committed fuzz input of the safetensors target is read or refused with a qx::Error") {
  // The seeds, and the inputs of bugs the fuzzer or the limit review found (tests/fuzz/regressions).
  const auto inputs = qx_fuzz::committed_inputs(QX_FUZZ_DIR, "safetensors");
  CHECK(inputs.size() >= 3);
  int valid = 0;
  for (const auto& [name, bytes] : inputs) {
    INFO(name);
    try {
      qx_fuzz::safetensors(bytes);
      ++valid;
    } catch (const qx::Error&) {
    }
  }
  CHECK(valid == 2);  // the two seeds
}

TEST_CASE("atomic writes leave no temporary and do not touch the target on failure") {
  const auto dir = qx_test::temp_path("io_atomic");
  fs::remove_all(dir);
  fs::create_directories(dir);
  qx::io::write_file_atomic(dir / "t.txt", [](std::ostream& o) { o << "first"; });
  CHECK_THROWS_AS(qx::io::write_file_atomic(dir / "t.txt", [](std::ostream& o) {
                    o << "half";
                    throw qx::Error("writer failed");
                  }),
                  qx::Error);
  std::ifstream in(dir / "t.txt");
  std::string content;
  in >> content;
  CHECK(content == "first");
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}) == 1);
  CHECK_THROWS_WITH(qx::io::write_file_atomic(dir / "missing" / "t.txt", [](std::ostream&) {}), doctest::Contains("missing"));
  fs::remove_all(dir);
}

TEST_CASE("the progress bar shows counts, rate and ETA, and prints per 10 % when not a terminal") {
  std::ostringstream out;
  qx::io::ProgressBar bar("work", 100, out, 0);
  for (int i = 1; i <= 100; ++i) bar.update(i, "loss 0.5");
  bar.finish();
  const std::string text = out.str();
  CHECK(text.find("100/100") != std::string::npos);
  CHECK(text.find(" < ") != std::string::npos);  // elapsed < ETA
  CHECK(text.find("loss 0.5") != std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') <= 12);
  CHECK(bar.line().find("work [") == 0);
}
