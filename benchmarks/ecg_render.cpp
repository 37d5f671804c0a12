// Rendering speed of six-beat ECG windows (the per-epoch cost if images were drawn on the fly):
// images per second at 224×224 on 1 and all threads, over the windows of MIT-BIH record 208.
// Usage: qx_bench_ecg_render [mitdb_dir]
#include <qx/ecg/ecg.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
  std::string mitdb = QX_BENCH_DIR "/../../shared/data/mitdb";
  CLI::App app{"Rendering speed of six-beat ECG windows (MIT-BIH record 208), images per second"};
  app.add_option("mitdb", mitdb, "folder with the MIT-BIH records")->capture_default_str()->check(CLI::ExistingDirectory);
  CLI11_PARSE(app, argc, argv);
  qx::ecg::RecordWindows rw;
  try {
    rw = qx::ecg::record_windows(mitdb, "208", "MLII", qx::ecg::LabelRule::aami);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qx_bench_ecg_render: %s\n", e.what());
    return 1;
  }
  qx::ecg::RenderOptions options;  // 224×224, 1 channel
  const qx::Index n = static_cast<qx::Index>(rw.windows.size()), bytes = options.size * options.size;
  std::vector<std::uint8_t> images(static_cast<std::size_t>(n * bytes));
  const int all = qx::num_threads();
  for (int threads : {1, all}) {
    qx::set_num_threads(threads);
    std::vector<std::vector<float>> scratch(static_cast<std::size_t>(threads));
    const auto start = std::chrono::steady_clock::now();
    qx::parallel_for(0, n, [&](qx::Index i) {
      int t = 0;
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
      t = omp_get_thread_num();
#endif
      qx::ecg::render_with_rois(rw, rw.windows[static_cast<std::size_t>(i)], options, qx::ecg::Protocol::qx, images.data() + i * bytes,
                                scratch[static_cast<std::size_t>(t)]);
    }, 1, 1);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("render 224x224 + both ROIs, record 208 (%lld windows), %d thread(s): %.0f images/s\n",
                static_cast<long long>(n), threads, static_cast<double>(n) / s);
  }
  return 0;
}
