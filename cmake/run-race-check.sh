#!/usr/bin/env bash
# Looks for data races in the OpenMP paths: builds the kernel, op, nn and training tests with clang and
# ThreadSanitizer against LLVM's OpenMP runtime, and runs them with Archer, LLVM's OpenMP tool that tells
# TSan about the runtime's synchronisation (barriers, task and reduction hand-offs). Without it TSan
# reports the uninstrumented runtime's own hand-offs as races (GCC's libgomp has no such tool, so a
# GCC TSan build is not used). Runs with 4 threads on any machine so the parallel loops split.
# Needs clang, libclang-rt-14-dev and libomp-14-dev (cmake/install_deps.sh --with-fuzz).
# docs/reliability.md has the results.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${QX_RACE_BUILD_DIR:-build-tsan}
archer=${QX_ARCHER:-/usr/lib/llvm-14/lib/libarcher.so}
[[ -f $archer ]] || { echo "run-race-check: Archer ($archer) not found: install libomp-14-dev" >&2; exit 2; }
# The kernel tests fork the GEMM and convolution loops, the op tests every op above its grain
# (tests/ops/test_thread_count.cpp), the nn and training tests the ResNets' and Adam's loops on real sizes.
tests=(qx_test_kernels qx_test_ops qx_test_nn qx_test_train)
selected=$(IFS=';'; echo "${tests[*]}")
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" \
  -DQX_SANITIZE=thread -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=OFF -DQX_BUILD_BENCHMARKS=OFF -DQX_INSTALL=OFF \
  "-DQX_SELECTED_TARGETS=$selected" >/dev/null
cmake --build "$build" -j "${QX_JOBS:-$(nproc)}" --target qx_selected  # the four programs side by side
export OMP_TOOL_LIBRARIES=$archer OMP_NUM_THREADS=4
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:ignore_noninstrumented_modules=1}
# The check must be able to fail: a loop with a real race (an unsynchronised sum) has to be reported,
# and the same loop without the race must not be, or the setup is broken.
canary=$build/race_canary
printf '%s\n' '#include <cstdio>' 'int main(int argc, char**) {' '  double v[4096], sum = 0;' \
  '#pragma omp parallel for' '  for (int i = 0; i < 4096; ++i) v[i] = i;' \
  '#pragma omp parallel for if (argc > 1)' '  for (int i = 0; i < 4096; ++i) sum += v[i];' \
  '  std::printf("%g\n", sum);' '}' > "$canary.cpp"
clang++ -fsanitize=thread -fopenmp -g -O1 "$canary.cpp" -o "$canary"
"$canary" >/dev/null 2>&1 || { echo "run-race-check: TSan reports a race-free OpenMP loop: is Archer loaded?" >&2; exit 1; }
if "$canary" race >/dev/null 2>&1; then echo "run-race-check: TSan missed the canary's race" >&2; exit 1; fi
echo "run-race-check: the canary's race is reported and its race-free loop is not"
for t in "${tests[@]}"; do "$build/tests/$t"; done
