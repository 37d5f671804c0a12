#!/usr/bin/env bash
# The test command: installs dependencies (idempotent), configures, builds tests/examples/benchmarks
# in Release, runs the whole CTest suite, then proves find_package(qx) works from an installed tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash cmake/install_deps.sh
build=${QX_BUILD_DIR:-build}
jobs=${QX_JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=ON -DQX_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" -j "$jobs" --output-on-failure --timeout 900
