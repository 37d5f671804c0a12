#!/usr/bin/env bash
# The main job: installs dependencies, builds qx in Release, and runs the most complete end-to-end
# demonstration the project has (see README). Extra arguments are passed to that demonstration.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash cmake/install_deps.sh
build=${QX_BUILD_DIR:-build-release}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQX_BUILD_TESTS=OFF -DQX_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)"
if [[ -x "$build/examples/qx/qx" ]] && "$build/examples/qx/qx" reproduce --help >/dev/null 2>&1; then
  exec "$build/examples/qx/qx" reproduce --mitdb "${QX_MITDB:-$root/../shared/data/mitdb}" "$@"
fi
exec "$build/examples/qx_example_train_tiny_cnn" "$@"
