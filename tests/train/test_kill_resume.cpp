// No lost work: a training run in its own process (tests/train/child/train_child.cpp) is killed with
// SIGKILL mid-epoch, or stopped with SIGINT, and a second process resumes it from the state on disk. In
// every case the state left behind is intact and the resumed run ends with exactly the weights and the
// Adam moments of a run that was never stopped.
#include <doctest/doctest.h>

#include "../test_paths.hpp"

#include "qx/io/safetensors.hpp"
#include "qx/train/interrupt.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;
namespace fs = std::filesystem;

namespace {
struct Exit {
  int status = 0;  // the raw wait status
  std::string err;
  bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  bool killed_by(int signal_number) const { return WIFSIGNALED(status) && WTERMSIG(status) == signal_number; }
};

// Runs the training child with `args` (no shell), its standard error in a file.
Exit run_child(const fs::path& out_dir, std::vector<std::string> args) {
  const fs::path err = out_dir.string() + ".stderr";
  args.insert(args.begin(), {QX_TRAIN_CHILD_PATH, out_dir.string()});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE_MESSAGE(spawned == 0, "cannot start ", argv[0]);
  Exit result;
  REQUIRE(waitpid(pid, &result.status, 0) == pid);
  std::ifstream in(err);
  std::stringstream s;
  s << in.rdbuf();
  result.err = s.str();
  fs::remove(err);
  return result;
}

fs::path fresh(const std::string& name) {
  const auto dir = qx_test::temp_path("kill_" + name);
  fs::remove_all(dir);
  return dir;
}

nlohmann::json trainer_meta(const fs::path& dir) {
  return nlohmann::json::parse(qx::io::SafetensorsFile::open(dir / "state.safetensors").metadata().at("trainer"));
}

// Every tensor of the two states (model weights, batch-norm statistics, Adam moments and step) is equal.
void check_same_state(const fs::path& a, const fs::path& b) {
  const auto x = qx::io::SafetensorsFile::open(a / "state.safetensors"), y = qx::io::SafetensorsFile::open(b / "state.safetensors");
  REQUIRE(x.names() == y.names());
  for (const auto& name : x.names()) {
    CAPTURE(name);
    CHECK(x.get_as<double>(name).to_vector() == y.get_as<double>(name).to_vector());
  }
  const auto hx = trainer_meta(a).at("history"), hy = trainer_meta(b).at("history");
  REQUIRE(hx.size() == hy.size());
  for (std::size_t e = 0; e < hx.size(); ++e) {
    CHECK(hx[e]["train_loss"] == hy[e]["train_loss"]);  // the curve, not only its end
    CHECK(hx[e]["val_f1"] == hy[e]["val_f1"]);
  }
}

// Runs the child with `stop_args` (it must end as `check_stop` expects, leaving the state that
// `check_state` expects), resumes it with `resume_args`, and compares with an uninterrupted run.
template <class CheckStop, class CheckState>
void stop_then_resume(const std::string& name, const std::vector<std::string>& stop_args, const std::vector<std::string>& resume_args,
                      CheckStop check_stop, CheckState check_state) {
  const auto straight = fresh(name + "_straight");
  const auto reference = run_child(straight, {});
  REQUIRE_MESSAGE(reference.exited(0), reference.err);
  CHECK(trainer_meta(straight).at("next_epoch") == 3);
  const auto dir = fresh(name);
  check_stop(run_child(dir, stop_args));
  check_state(trainer_meta(dir));  // what the stopped process left is an intact state
  const auto resumed = run_child(dir, resume_args);
  REQUIRE_MESSAGE(resumed.exited(0), resumed.err);
  check_same_state(straight, dir);
  fs::remove_all(dir);
  fs::remove_all(straight);
}
}  // namespace

TEST_CASE("a run killed by SIGKILL mid-epoch resumes from the last epoch's state and ends with the same weights") {
  stop_then_resume(
      "epoch", {"--kill-at", "1:5"}, {},  // after the 6th of 12 batches of the 2nd epoch
      [](const Exit& killed) { REQUIRE(killed.killed_by(SIGKILL)); },
      [](const nlohmann::json& meta) {
        CHECK(meta.at("next_epoch") == 1);
        CHECK_FALSE(meta.contains("partial"));
      });
}

TEST_CASE("with a state every few batches, a killed run loses at most those batches and still ends the same") {
  stop_then_resume(
      "batches", {"--state-every", "4", "--kill-at", "1:9"}, {"--state-every", "4"},
      [](const Exit& killed) { REQUIRE(killed.killed_by(SIGKILL)); },
      [](const nlohmann::json& meta) {
        CHECK(meta.at("next_epoch") == 1);
        REQUIRE(meta.contains("partial"));
        CHECK(meta["partial"]["next_batch"] == 8);  // written after batches 4 and 8; killed after 10
        CHECK(meta["partial"]["seen"] == 64);
      });
}

TEST_CASE("SIGINT stops at the batch boundary, saves the state, says how to resume, and the resumed run ends the same") {
  stop_then_resume(
      "sigint", {"--interrupt-at", "1:5"}, {},
      [](const Exit& stopped) {
        CHECK(stopped.exited(130));
        CHECK_MESSAGE(stopped.err.find("interrupted by SIGINT at epoch 2/3, batch 6/12") != std::string::npos, stopped.err);
        CHECK(stopped.err.find("run the same command again to resume") != std::string::npos);
        CHECK(std::count(stopped.err.begin(), stopped.err.end(), '\n') == 1);
      },
      [](const nlohmann::json& meta) {
        CHECK(meta.at("next_epoch") == 1);
        CHECK(meta["partial"]["next_batch"] == 6);
      });
}

TEST_CASE("SIGINT during an epoch's last batch stops at the end of that epoch, not silently after training") {
  stop_then_resume(
      "sigint_epoch_end", {"--interrupt-at", "0:11"}, {},  // the 12th and last batch of the first epoch
      [](const Exit& stopped) {
        CHECK(stopped.exited(130));
        CHECK_MESSAGE(stopped.err.find("interrupted by SIGINT at the end of epoch 1/3") != std::string::npos, stopped.err);
      },
      [](const nlohmann::json& meta) {
        CHECK(meta.at("next_epoch") == 1);
        CHECK_FALSE(meta.contains("partial"));
      });
}

TEST_CASE("InterruptGuard turns the first SIGINT into a flag and restores the previous handler") {
  struct sigaction before {};
  sigaction(SIGINT, nullptr, &before);
  {
    qx::train::InterruptGuard guard;
    CHECK(guard.caught() == 0);
    ::raise(SIGINT);  // would end the test program without the guard
    CHECK(guard.caught() == SIGINT);
  }
  struct sigaction after {};
  sigaction(SIGINT, nullptr, &after);
  const bool restored = after.sa_handler == before.sa_handler;
  CHECK(restored);
  qx::train::InterruptGuard again;
  CHECK(again.caught() == 0);  // a new guard starts clear
}
