// The WFDB reader on MIT-BIH record 100 and 114 against the database's published figures, the other
// signal formats on synthetic records, and every malformed-input case on corrupted copies in a
// temporary folder: each must be a qx::Error naming the record and the problem.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/ecg/wfdb.hpp"

#include "../fuzz/fuzz_bodies.hpp"

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

namespace fs = std::filesystem;
using qx::ecg::read_annotations;
using qx::ecg::read_record;

namespace {
const fs::path mitdb = QX_MITDB_DIR;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(qx_test::temp_path("ecg_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  /// Copies record `r`'s three files here.
  void copy_record(const std::string& r) const {
    for (const char* ext : {".hea", ".dat", ".atr"}) fs::copy_file(mitdb / (r + ext), path / (r + ext));
  }
  void write(const std::string& file, const std::string& bytes) const {
    std::ofstream(path / file, std::ios::binary) << bytes;
  }
  std::string read(const std::string& file) const {
    std::ifstream in(path / file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
};

void expect_error(const std::function<void()>& f, const std::vector<std::string>& fragments) {
  try {
    f();
    FAIL("no qx::Error thrown");
  } catch (const qx::Error& e) {
    for (const auto& fragment : fragments) CHECK_MESSAGE(std::string(e.what()).find(fragment) != std::string::npos, e.what());
  }
}
}  // namespace

TEST_CASE("record 100: 650,000 frames, first samples and checksums as in the header") {
  const auto r = read_record(mitdb, "100");
  CHECK(r.header.num_signals == 2);
  CHECK(r.header.sampling_frequency == 360);
  CHECK(r.num_samples() == 650000);
  CHECK(r.header.signals[0].description == "MLII");
  CHECK(r.header.signals[1].description == "V5");
  CHECK(r.header.signals[0].gain == 200);
  CHECK(r.header.signals[0].adc_zero == 1024);
  // 100.hea: "100.dat 212 200 11 1024 995 -22131 0 MLII" and "... 1011 20052 0 V5" (checksums verified inside read_record)
  CHECK(r.digital[0][0] == 995);
  CHECK(r.digital[1][0] == 1011);
  CHECK(r.header.signals[0].checksum == -22131);
  CHECK(r.header.signals[1].checksum == 20052);
  const auto mv = r.physical(0);
  CHECK(mv[0] == doctest::Approx((995 - 1024) / 200.0));
  CHECK_FALSE(r.header.comments.empty());  // "# 69 M 1085 1629 x1" …
}

TEST_CASE("record 100 annotations: count and symbol histogram as published by PhysioNet") {
  const auto a = read_annotations(mitdb, "100", 650000);
  CHECK(a.size() == 2274);
  std::map<char, int> histogram;
  for (const auto& x : a) histogram[x.symbol]++;
  CHECK(histogram['N'] == 2239);
  CHECK(histogram['A'] == 33);
  CHECK(histogram['V'] == 1);
  CHECK(histogram['+'] == 1);  // the rhythm annotation "(N" at the start
  CHECK(histogram.size() == 4);
  CHECK(a[0].symbol == '+');
  CHECK(a[0].aux == std::string("(N\0", 3).substr(0, a[0].aux.size()));
  CHECK(a[0].aux.rfind("(N", 0) == 0);
  CHECK(a[1].sample == 77);  // the first beat of record 100
}

TEST_CASE("MLII is the second signal of record 114, and 102 and 104 have none") {
  CHECK(read_record(mitdb, "114").signal_index("MLII") == 1);
  CHECK(read_record(mitdb, "100").signal_index("MLII") == 0);
  expect_error([] { read_record(mitdb, "102").signal_index("MLII"); }, {"102", "MLII", "V5"});
}

TEST_CASE("formats 16 and 80, headers with LF endings, comments and an explicit baseline") {
  TempDir dir("formats");
  // Two signals, 3 frames: format 16 little-endian, interleaved per frame.
  const std::int16_t s16[] = {100, -5, 200, -6, -300, 7};
  dir.write("r16.dat", std::string(reinterpret_cast<const char*>(s16), sizeof s16));
  long sum0 = 100 + 200 - 300, sum1 = -5 - 6 + 7;
  dir.write("r16.hea", "# a comment\nr16 2 250 3\nr16.dat 16 100(10)/uV 16 0 100 " + std::to_string(sum0) +
                           " 0 lead A\nr16.dat 16 50 16 0 -5 " + std::to_string(sum1) + " 0 lead B\n");
  const auto r = read_record(dir.path, "r16");
  CHECK(r.digital[0] == std::vector<int>{100, 200, -300});
  CHECK(r.digital[1] == std::vector<int>{-5, -6, 7});
  CHECK(r.header.signals[0].units == "uV");
  CHECK(r.header.signals[0].baseline == 10);
  CHECK(r.physical(0)[1] == doctest::Approx((200 - 10) / 100.0));
  CHECK(r.signal_index("lead B") == 1);
  CHECK(r.header.comments.size() == 1);
  // Format 80: offset binary bytes.
  dir.write("r80.dat", std::string("\x80\x81\x7f", 3));
  dir.write("r80.hea", "r80 1 100 3\r\nr80.dat 80 200 8 0 0 0 0 x\r\n");
  CHECK(read_record(dir.path, "r80").digital[0] == std::vector<int>{0, 1, -1});
}

TEST_CASE("annotation pseudo-codes: SKIP, NUM, SUB, CHN and AUX") {
  // N at 10; SKIP +70000; V at 70010 with SUB 3, CHN 1, NUM 5 and AUX "hi"; end.
  auto word = [](int code, int value) {
    const unsigned w = static_cast<unsigned>(code << 10 | value);
    return std::string{static_cast<char>(w & 0xFF), static_cast<char>(w >> 8)};
  };
  std::string bytes = word(1, 10) + word(59, 0);
  const std::uint32_t skip = 70000;
  bytes += word(0, 0).substr(0, 0);
  const unsigned high = skip >> 16, low = skip & 0xFFFF;
  bytes += std::string{static_cast<char>(high & 0xFF), static_cast<char>(high >> 8), static_cast<char>(low & 0xFF),
                       static_cast<char>(low >> 8)};
  bytes += word(5, 0) + word(61, 3) + word(62, 1) + word(60, 5) + word(63, 2) + "hi" + word(0, 0);
  const std::vector<unsigned char> raw(bytes.begin(), bytes.end());
  const auto a = qx::ecg::parse_annotations(raw, "synthetic");
  REQUIRE(a.size() == 2);
  CHECK(a[0].symbol == 'N');
  CHECK(a[0].sample == 10);
  CHECK(a[1].symbol == 'V');
  CHECK(a[1].sample == 70010);
  CHECK(a[1].subtype == 3);
  CHECK(a[1].channel == 1);
  CHECK(a[1].number == 5);
  CHECK(a[1].aux == "hi");
  CHECK(qx::ecg::annotation_symbol(12) == '/');
  CHECK(qx::ecg::annotation_symbol(31) == '!');
  CHECK(qx::ecg::annotation_symbol(38) == 'f');
}

TEST_CASE("corrupt records are clear errors naming the record and the problem") {
  TempDir dir("corrupt");
  dir.copy_record("100");
  const std::string dat = dir.read("100.dat"), hea = dir.read("100.hea"), atr = dir.read("100.atr");

  dir.write("100.dat", dat.substr(0, dat.size() - 1000));
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "truncated"});

  dir.write("100.dat", dat);
  std::string wrong_count = hea;
  wrong_count.replace(wrong_count.find("650000"), 6, "640000");
  dir.write("100.hea", wrong_count);
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "bytes more than"});

  std::string wrong_format = hea;
  for (std::size_t p; (p = wrong_format.find(" 212 ")) != std::string::npos;) wrong_format.replace(p, 5, " 16 ");
  dir.write("100.hea", wrong_format);
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "format 16"});

  std::string unknown_format = hea;
  for (std::size_t p; (p = unknown_format.find(" 212 ")) != std::string::npos;) unknown_format.replace(p, 5, " 311 ");
  dir.write("100.hea", unknown_format);
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "format 311 is not supported"});

  std::string bad_checksum = hea;
  bad_checksum.replace(bad_checksum.find("-22131"), 6, "-22130");
  dir.write("100.hea", bad_checksum);
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "checksum"});

  std::string missing_line = hea.substr(0, hea.find("100.dat 212 200 11 1024 1011"));
  dir.write("100.hea", missing_line);
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "announces 2 signals"});

  dir.write("100.hea", "100 two 360\n");
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "number of signals", "two"});

  dir.write("100.hea", hea);
  fs::remove(dir.path / "100.atr");
  expect_error([&] { read_annotations(dir.path, "100", 650000); }, {"100", "cannot open annotation file"});

  dir.write("100.atr", atr.substr(0, atr.size() / 2));
  expect_error([&] { read_annotations(dir.path, "100", 650000); }, {"100", "truncated"});

  dir.write("100.atr", atr);
  expect_error([&] { read_annotations(dir.path, "100", 600000); }, {"100", "beyond the signal"});

  expect_error([&] { read_record(dir.path / "nowhere", "100"); }, {"100", "does not exist"});
  expect_error([&] { read_record(dir.path, "999"); }, {"999", "cannot open header"});
  fs::remove(dir.path / "100.dat");
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "cannot open signal file"});
}

TEST_CASE("sizes a header or file claims are checked against WfdbLimits before anything is allocated") {
  TempDir dir("limits");
  dir.copy_record("100");
  const std::string hea = dir.read("100.hea");
  // A record claiming 10^12 samples is refused while its header is parsed, before 100.dat is opened.
  std::string trillion = hea;
  trillion.replace(trillion.find("650000"), 6, "1000000000000");
  dir.write("100.hea", trillion);
  expect_error([&] { read_record(dir.path, "100"); },
               {"100", "number of samples is 1000000000000", "limit of 1073741824 samples", "WfdbLimits::max_samples"});
  // Without a sample count, the signal file's size is checked against the limit before it is read.
  std::string uncounted = hea;
  uncounted.replace(uncounted.find(" 650000"), 7, "");
  dir.write("100.hea", uncounted);
  CHECK(read_record(dir.path, "100").num_samples() == 650000);
  qx::ecg::WfdbLimits small;
  small.max_samples = 1'000'000;
  expect_error([&] { read_record(dir.path, "100", small); },
               {"100", "signal file", "100.dat' has 1950000 bytes, more than the limit of 1500000", "WfdbLimits::max_samples"});
  dir.write("100.hea", hea);
  expect_error([&] { read_record(dir.path, "100", small); }, {"100", "number of samples is 650000", "limit of 1000000"});
  small = {};
  small.max_header_bytes = 20;
  expect_error([&] { read_record(dir.path, "100", small); }, {"100", "header file", "WfdbLimits::max_header_bytes"});
  dir.write("100.hea", "100 5000 360\n");
  expect_error([&] { read_record(dir.path, "100"); }, {"100", "number of signals 5000", "WfdbLimits::max_signals"});
  // An annotation file that never ends (a device), or one larger than the limit, is refused unread.
  fs::remove(dir.path / "100.atr");
  fs::create_symlink("/dev/zero", dir.path / "100.atr");
  expect_error([&] { read_annotations(dir.path, "100", 650000); }, {"100", "annotation file", "is not a regular file"});
  fs::remove(dir.path / "100.atr");
  fs::copy_file(mitdb / "100.atr", dir.path / "100.atr");
  small = {};
  small.max_annotation_bytes = 1000;
  expect_error([&] { read_annotations(dir.path, "100", 650000, "atr", small); },
               {"100", "annotation file", "more than the limit of 1000", "WfdbLimits::max_annotation_bytes"});
  CHECK(read_annotations(dir.path, "100", 650000).size() == 2274);
}

TEST_CASE("header fields beyond what WFDB stores are errors, not wrapped or infinite values") {
  const auto header = [](const std::string& signal_line) { return "r 1 360 10\n" + signal_line + "\n"; };
  using qx::ecg::parse_header;
  expect_error([&] { parse_header(header("r.dat 4294967508 200 11 0 0"), "r"); }, {"r", "format", "beyond the range of an int"});
  expect_error([&] { parse_header(header("r.dat 212 inf 11 0 0"), "r"); }, {"r", "gain", "not a finite number"});
  expect_error([&] { parse_header(header("r.dat 212 200(-9223372036854775808) 11 0 0"), "r"); }, {"r", "baseline"});
  expect_error([&] { parse_header("r 1 nan 10\n", "r"); }, {"r", "sampling frequency"});
  expect_error([&] { parse_header("r 4294967297 360\n", "r"); }, {"r", "number of signals", "beyond the range"});
  expect_error([&] { parse_header("r 1 360\nr.dat 16\nr.dat 16\n", "r"); }, {"r", "announces 1 signals but has more"});
}

TEST_CASE("decode_record reads signal files from memory, within the same limits") {
  const std::int16_t samples[] = {5, -6, 7};
  const std::vector<unsigned char> bytes(reinterpret_cast<const unsigned char*>(samples),
                                         reinterpret_cast<const unsigned char*>(samples) + sizeof samples);
  const auto from_memory = [&](const std::string& file, std::uint64_t) {
    CHECK(file == "r.dat");
    return bytes;
  };
  using qx::ecg::decode_record;
  using qx::ecg::parse_header;
  CHECK(decode_record(parse_header("r 1 360\nr.dat 16 200 16 0 5\n", "r"), "r", from_memory).digital[0] ==
        std::vector<int>{5, -6, 7});
  expect_error([&] { decode_record(parse_header("r 1 360 3\nr.dat 16+-4\n", "r"), "r", from_memory); },
               {"r", "byte offset -4 of 'r.dat' is negative"});
  qx::ecg::WfdbLimits two;
  two.max_samples = 2;
  expect_error([&] { decode_record(parse_header("r 1 360\nr.dat 16 200 16 0 5\n", "r"), "r", from_memory, two); },
               {"r", "signal file 'r.dat' has 6 bytes, more than the limit of 4", "WfdbLimits::max_samples"});
}

TEST_CASE("every committed fuzz input of the WFDB targets is read or refused with a qx::Error") {
  // The seeds, and the inputs of bugs the fuzzers or the limit review found (tests/fuzz/regressions).
  for (const auto& [target, body] : {std::pair{"wfdb_header", &qx_fuzz::wfdb_header}, std::pair{"wfdb_signal", &qx_fuzz::wfdb_signal},
                                     std::pair{"wfdb_annotations", &qx_fuzz::wfdb_annotations}}) {
    const auto inputs = qx_fuzz::committed_inputs(QX_FUZZ_DIR, target);
    CHECK_MESSAGE(!inputs.empty(), target);
    for (const auto& [name, bytes] : inputs) {
      INFO(name);
      try {
        body(bytes);
      } catch (const qx::Error&) {
      }
    }
  }
}
