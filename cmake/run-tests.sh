#!/usr/bin/env bash
# The test command: installs dependencies (idempotent), configures, builds tests/examples/benchmarks
# in Release, runs the whole CTest suite (which also proves find_package(qx) works from an installed
# tree), then the hardening checks of docs/reliability.md: the suite again under AddressSanitizer and
# UndefinedBehaviorSanitizer, the race check of the OpenMP paths, and a short fuzz budget
# (QX_FUZZ_RUNS executions per parser). QX_HARDENING=0 skips them (a quick local run). Before them, the
# CUDA build compiles and links with nvcc in build-cuda (QX_CUDA=0 skips it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash cmake/install_deps.sh
build=${QX_BUILD_DIR:-build}
jobs=${QX_JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=ON -DQX_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" -j "$jobs" --output-on-failure --timeout 900

# The portable paths: without AVX-512 the kernel and op tests must pass too. Built for x86-64-v3 (AVX2 +
# FMA: the packed GEMM's AVX2 micro-kernel, the vector paths that have no AVX-512 form) in its own folder,
# and the kernel tests once more for plain x86-64 (SSE2: Eigen's float GEMM, the scalar loops).
portable=${QX_PORTABLE_BUILD_DIR:-build-x86-64-v3}
cmake -S . -B "$portable" -DCMAKE_BUILD_TYPE=Release -DQX_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3 \
  -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=OFF -DQX_BUILD_BENCHMARKS=OFF "-DQX_SELECTED_TARGETS=qx_test_kernels;qx_test_ops" >/dev/null
cmake --build "$portable" -j "$jobs" --target qx_selected  # both programs side by side (CMakeLists.txt, QX_SELECTED_TARGETS)
ctest --test-dir "$portable" -j "$jobs" --output-on-failure --timeout 900 -E "_NOT_BUILT|^package|^layering|^cuda\.parity"  # kernels and ops only
baseline=${QX_BASELINE_BUILD_DIR:-build-x86-64}
cmake -S . -B "$baseline" -DCMAKE_BUILD_TYPE=Release -DQX_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64 \
  -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=OFF -DQX_BUILD_BENCHMARKS=OFF "-DQX_SELECTED_TARGETS=qx_test_kernels" >/dev/null
cmake --build "$baseline" -j "$jobs" --target qx_selected
ctest --test-dir "$baseline" -j "$jobs" --output-on-failure --timeout 900 -E "_NOT_BUILT|^package|^layering|^cuda\.parity"  # kernels only

# The CUDA build (docs/cuda.md), in its own folder: nvcc compiles and links the kernel translation unit
# (qx_cuda), the CPU-side CUDA tests, the parity program and the qx command with CUDA on. No GPU here:
# the launcher and error tests run, cuda.parity reports itself skipped. QX_CUDA=0 leaves the step out.
if [[ ${QX_CUDA:-1} != 0 ]]; then
  cuda_build=${QX_CUDA_BUILD_DIR:-build-cuda}
  nvcc_path=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}  # the toolkit's usual place when not on PATH
  cmake -S . -B "$cuda_build" -DCMAKE_BUILD_TYPE=Release -DQX_USE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_path" \
    -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=ON -DQX_BUILD_BENCHMARKS=OFF \
    "-DQX_SELECTED_TARGETS=qx_cuda;qx_cli;qx_test_backends;qx_test_cuda_parity;qx_test_cli" >/dev/null
  cmake --build "$cuda_build" -j "$jobs" --target qx_selected
  ctest --test-dir "$cuda_build" -j "$jobs" --output-on-failure --timeout 900 \
    -R "^(host launcher|cuda|asking for CUDA|the device cache|qx explain: every bad argument|qx reproduce --device|qx --version)"
fi

if [[ ${QX_HARDENING:-1} != 0 ]]; then
  bash cmake/install_deps.sh --with-fuzz
  QX_JOBS=$jobs bash cmake/run-sanitized-tests.sh
  QX_JOBS=$jobs bash cmake/run-race-check.sh
  QX_JOBS=$jobs bash tests/fuzz/run_fuzz.sh "${QX_FUZZ_RUNS:-20000}"
fi
