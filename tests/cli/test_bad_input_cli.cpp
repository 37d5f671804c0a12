// Every `qx` subcommand that reads files, given a corrupt or truncated one: exit code 2, one line
// "qx <command>: ..." naming the file, no crash, and no partial output (no dataset card, report or
// output file, no temporary left behind).
#include <doctest/doctest.h>

#include "cli_run.hpp"

#include "qx/io/safetensors.hpp"
#include "qx/nn/nn.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace {
struct Run {
  int code;
  std::string err;
};

// `qx <args>`: the first word of `args` is the command.
Run run(const std::string& args) {
  const auto space = args.find(' ');
  auto [code, err] = qx_test::run_qx(args.substr(0, space), args.substr(space + 1));
  return {code, err};
}

// Exit code 2 and one error line — the last of standard error, after any progress bars — with the
// command's prefix and the file's name.
void check_clear_error(const Run& r, const std::string& command, const std::string& file) {
  CHECK(r.code == 2);
  REQUIRE_MESSAGE(!r.err.empty(), "nothing on standard error");
  const auto start = r.err.rfind('\n', r.err.size() - 2);
  const std::string last = r.err.substr(start == std::string::npos ? 0 : start + 1);
  CHECK_MESSAGE(last.rfind(command + ": ", 0) == 0, last);
  CHECK_MESSAGE(last.find(file) != std::string::npos, last);
  CHECK(r.err.find(command + ": ") == (start == std::string::npos ? 0 : start + 1));  // the only such line
}

// No file under `dir` is a leftover temporary of an atomic write.
void check_no_temporaries(const fs::path& dir) {
  if (!fs::exists(dir)) return;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    CAPTURE(entry.path().string());
    CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
  }
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::remove(path);
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string head_of(const fs::path& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(n, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  return bytes;
}

// A copy of the MIT-BIH folder made of symbolic links, in which record 101 — the first the datasets
// read — can be corrupted without touching the real files.
struct CorruptibleMitdb {
  fs::path dir;
  explicit CorruptibleMitdb(const std::string& name) : dir(qx_test::temp_path("bad_mitdb_" + name)) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& entry : fs::directory_iterator(QX_MITDB_DIR))
      fs::create_symlink(fs::absolute(entry.path()), dir / entry.path().filename());
  }
  ~CorruptibleMitdb() { fs::remove_all(dir); }
  fs::path real(const std::string& file) const { return fs::path(QX_MITDB_DIR) / file; }
};
}  // namespace

TEST_CASE("qx ecg build and qx reproduce: a corrupt or truncated record is one line naming its file, and no dataset") {
  struct Corruption {
    std::string file, bytes, what;
  };
  CorruptibleMitdb db("records");
  const std::string dat = head_of(db.real("101.dat"), 3000), atr = head_of(db.real("101.atr"), 7);
  const Corruption corruptions[] = {
      {"101.dat", dat, "a signal file cut short"},
      {"101.hea", "101 2 360\n", "a header without its signal lines"},
      {"101.hea", "garbage that is not a header\n", "a header of garbage"},
      {"101.hea", "", "an empty header"},
      {"101.atr", atr, "an annotation file cut inside an annotation"},
      {"101.atr", "", "an empty annotation file"},
  };
  const auto scratch = qx_test::temp_path("bad_records_out");
  for (const auto& c : corruptions) {
    CAPTURE(c.what);
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    write_bytes(db.dir / c.file, c.bytes);
    const auto data = scratch / "data";
    check_clear_error(run("ecg build --mitdb " + db.dir.string() + " --size 16 --out " + data.string()), "qx ecg build",
                      c.file);
    CHECK_FALSE(fs::exists(data / "dataset_card.json"));
    check_no_temporaries(data);
    const auto runs = scratch / "runs";
    check_clear_error(run("reproduce --mitdb " + db.dir.string() + " --size 16 --epochs 1 --out " + runs.string()),
                      "qx reproduce", c.file);
    CHECK_FALSE(fs::exists(runs / "report.md"));
    CHECK_FALSE(fs::exists(runs / "report.json"));
    check_no_temporaries(runs);
    fs::remove(db.dir / c.file);
    fs::create_symlink(db.real(c.file), db.dir / c.file);
  }
  fs::remove(db.dir / "101.atr");  // a missing annotation file
  check_clear_error(run("ecg build --mitdb " + db.dir.string() + " --size 16 --out " + (scratch / "data").string()),
                    "qx ecg build", "101.atr");
  fs::remove_all(scratch);
}

TEST_CASE("qx ecg png: a corrupt dataset card or a truncated shard is one line naming its file, and no picture") {
  const auto dir = qx_test::temp_path("bad_dataset");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto data = dir / "data";
  REQUIRE(run("ecg build --mitdb " + std::string(QX_MITDB_DIR) + " --size 16 --limit 4 --shard-size 4 --out " + data.string())
              .code == 0);
  const auto picture = dir / "w.png";
  const std::string png = "ecg png --data " + data.string() + " --index 1 --out " + picture.string();
  REQUIRE(run(png).code == 0);
  fs::remove(picture);

  const std::string card = head_of(data / "dataset_card.json", 1 << 20), shard = head_of(data / "test-00000.safetensors", 1 << 20);
  write_bytes(data / "test-00000.safetensors", shard.substr(0, shard.size() / 2));
  check_clear_error(run(png), "qx ecg png", "test-00000.safetensors");
  CHECK_FALSE(fs::exists(picture));
  write_bytes(data / "test-00000.safetensors", "");
  check_clear_error(run(png), "qx ecg png", "test-00000.safetensors");
  write_bytes(data / "test-00000.safetensors", shard);
  write_bytes(data / "dataset_card.json", card.substr(0, card.size() / 2));
  check_clear_error(run(png), "qx ecg png", "dataset_card.json");
  write_bytes(data / "dataset_card.json", "[1, 2, 3]");
  check_clear_error(run(png), "qx ecg png", "dataset_card.json");
  write_bytes(data / "dataset_card.json", "{\"splits\": {\"test\": {\"shards\": 7}}, \"settings\": 1}");
  check_clear_error(run(png), "qx ecg png", "dataset_card.json");
  // A label rule the reader does not know, or not a string (the five-beat auxiliary labels follow it).
  for (const nlohmann::json& rule : {nlohmann::json("loose"), nlohmann::json(5)}) {
    auto edited = nlohmann::json::parse(card);
    edited["settings"]["label_rule"] = rule;
    write_bytes(data / "dataset_card.json", edited.dump());
    check_clear_error(run(png), "qx ecg png", "dataset_card.json");
  }
  CHECK_FALSE(fs::exists(picture));
  write_bytes(data / "dataset_card.json", card);

  // Well-formed shards whose arrays do not fit the card: ROIs of the wrong shape or outside the image,
  // too few images. Each would have been read beyond its array.
  write_bytes(data / "test-00000.safetensors", shard);
  const auto original = qx::io::SafetensorsFile::open(data / "test-00000.safetensors");
  auto rewrite = [&](const std::string& replaced, const auto& tensor) {
    qx::io::SafetensorsWriter w;
    for (const auto& name : original.names())
      if (name != replaced) w.add_raw(name, original.dtype(name), original.shape(name), original.bytes(name));
    w.add(replaced, tensor);
    w.write(data / "test-00000.safetensors");
  };
  rewrite("roi_last", qx::Tensor<std::int64_t>::zeros({4, 3}));
  check_clear_error(run(png), "qx ecg png", "test-00000.safetensors");
  auto outside = original.get<std::int64_t>("roi_last");
  outside.data()[6] = 17;  // window 1's x1 beyond the 16-pixel image
  rewrite("roi_last", outside);
  check_clear_error(run(png), "qx ecg png", "test-00000.safetensors");
  rewrite("images", qx::Tensor<std::uint8_t>::zeros({2, 1, 16, 16}));
  check_clear_error(run(png), "qx ecg png", "test-00000.safetensors");
  CHECK_FALSE(fs::exists(picture));
  check_no_temporaries(dir);
  fs::remove_all(dir);
}

TEST_CASE("qx explain: truncated or corrupt weights and inputs are one line naming the file, and no output") {
  const auto dir = qx_test::temp_path("bad_explain");
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto model = qx::nn::resnet18<float>(1, 2, 4, 5);
  qx::nn::save_safetensors(*model, dir / "w.safetensors");
  qx::Rng rng(2);
  qx::io::SafetensorsWriter input;
  input.add("input", qx::Tensor<float>::randn({1, 1, 32, 32}, rng));
  input.write(dir / "x.safetensors");
  const std::string weights = head_of(dir / "w.safetensors", 1 << 24), x = head_of(dir / "x.safetensors", 1 << 20);
  const auto out = dir / "out.safetensors";
  auto command = [&](const std::string& w, const std::string& in) {
    return "explain --arch resnet18 --in-channels 1 --num-classes 2 --width 4 --weights " + (dir / w).string() + " --input " +
           (dir / in).string() + " --out " + out.string();
  };
  REQUIRE(run(command("w.safetensors", "x.safetensors")).code == 0);
  fs::remove(out);
  const std::pair<std::string, std::string> files[] = {
      {"w_half.safetensors", weights.substr(0, weights.size() / 2)},
      {"w_header.safetensors", weights.substr(0, 20)},
      {"w_empty.safetensors", ""},
      {"w_bitflip.safetensors", std::string(weights).replace(9, 1, "\x7f")},  // the header's JSON broken
      {"x_half.safetensors", x.substr(0, x.size() - 100)},
      {"x_garbage.safetensors", std::string(64, '\xff')},
  };
  for (const auto& [name, bytes] : files) {
    CAPTURE(name);
    write_bytes(dir / name, bytes);
    const bool is_weights = name[0] == 'w';
    check_clear_error(run(command(is_weights ? name : "w.safetensors", is_weights ? "x.safetensors" : name)), "qx explain", name);
    CHECK_FALSE(fs::exists(out));
  }
  check_no_temporaries(dir);
  fs::remove_all(dir);
}

TEST_CASE("qx reproduce: an unreadable training state from an earlier run is one line naming it, and no report") {
  const auto dir = qx_test::temp_path("bad_state");
  fs::remove_all(dir);
  fs::create_directories(dir / "runs" / "dataset1");
  write_bytes(dir / "runs" / "dataset1" / "state.safetensors", std::string("\x10\0\0\0\0\0\0\0{\"a\":", 13));  // cut short
  const auto r = run("reproduce --mitdb " + std::string(QX_MITDB_DIR) + " --size 16 --epochs 1 --train-limit 32 --test-limit 32 "
                     "--explain-limit 4 --data-limit 40 --datasets 1 --out " + (dir / "runs").string());
  check_clear_error(r, "qx reproduce", "state.safetensors");
  CHECK_FALSE(fs::exists(dir / "runs" / "report.md"));
  check_no_temporaries(dir);
  fs::remove_all(dir);
}
