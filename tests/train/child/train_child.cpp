// A training run in its own process, for the kill and interrupt tests of tests/train/test_kill_resume.cpp:
//   qx_test_train_child OUT_DIR [--kill-at E:B | --interrupt-at E:B] [--state-every N]
// trains a small ResNet on a fixed synthetic task with its state in OUT_DIR. --kill-at sends itself
// SIGKILL after batch B of epoch E (0-based), as a crash or the OOM killer would; --interrupt-at sends
// itself SIGINT there, as Ctrl-C would. Exit codes: 0 done, 130 interrupted (the message on stderr), 2 error.
#include "qx/nn/nn.hpp"
#include "qx/train/trainer.hpp"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [--kill-at E:B | --interrupt-at E:B] [--state-every N]\n", argv[0]);
    return 2;
  }
  long kill_epoch = -1, kill_batch = -1, interrupt_epoch = -1, interrupt_batch = -1, state_every = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--kill-at") == 0) std::sscanf(argv[i + 1], "%ld:%ld", &kill_epoch, &kill_batch);
    if (std::strcmp(argv[i], "--interrupt-at") == 0) std::sscanf(argv[i + 1], "%ld:%ld", &interrupt_epoch, &interrupt_batch);
    if (std::strcmp(argv[i], "--state-every") == 0) state_every = std::atol(argv[i + 1]);
  }
  // Two classes: a bright square in the left or the right half of a noisy 16×16 image.
  qx::Rng rng(11);
  const qx::Index n = 96, size = 16;
  auto images = qx::Tensor<float>::randn({n, 1, size, size}, rng, 0.0, 0.3);
  std::vector<qx::Index> labels(static_cast<std::size_t>(n));
  for (qx::Index i = 0; i < n; ++i) {
    labels[static_cast<std::size_t>(i)] = i % 2;
    const qx::Index x0 = i % 2 == 0 ? 2 : 10, y0 = static_cast<qx::Index>(rng.below(10));
    for (qx::Index y = y0; y < y0 + 4; ++y)
      for (qx::Index x = x0; x < x0 + 4; ++x) images.at({i, 0, y, x}) += 1.0f;
  }
  qx::train::TensorDataset<float> data(images, labels);
  auto model = qx::nn::resnet18<float>(1, 2, 4, /*seed=*/5);
  qx::train::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 8;  // 12 batches per epoch
  o.lr = 1e-3;
  o.lr_step = 1;
  o.lr_gamma = 0.5;
  o.early_stop = false;
  o.progress = false;
  o.out_dir = argv[1];
  o.state_every_batches = state_every;
  o.stop_on_interrupt = true;
  o.on_batch = [&](qx::Index epoch, qx::Index batch) {
    if (epoch == kill_epoch && batch == kill_batch) ::raise(SIGKILL);
    if (epoch == interrupt_epoch && batch == interrupt_batch) ::raise(SIGINT);
  };
  try {
    const auto result = qx::train::fit(*model, data, data, o);
    std::printf("%s %zu epochs\n", result.resumed ? "resumed" : "fresh", result.history.size());
  } catch (const qx::train::Interrupted& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 130;
  } catch (const qx::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
