#!/usr/bin/env bash
# The test suite under sanitizers (default AddressSanitizer + UndefinedBehaviorSanitizer, leaks
# included): configures a separate build folder with QX_SANITIZE, builds the layers' test programs and
# the qx command, and runs CTest without the packaging tests (they build consumers, which never get qx's
# sanitizer flags). Not the examples (they call what the tests cover; left out, the test command stays
# within its time budget), the benchmarks or the header-by-header check. Debug at -O1 keeps assertions on
# and the build short; -g1 (line tables only) is all a sanitizer's stack trace needs and compiles a test
# file about 28 % faster than -g. docs/reliability.md has the results.
# Usage: cmake/run-sanitized-tests.sh [sanitizers]   (e.g. address,undefined — the default)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sanitizers=${1:-address,undefined}
build=${QX_SANITIZE_BUILD_DIR:-build-sanitize}
jobs=${QX_JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" -DQX_SANITIZE="$sanitizers" \
  -DQX_BUILD_TESTS=ON -DQX_BUILD_EXAMPLES=ON -DQX_BUILD_BENCHMARKS=OFF -DQX_INSTALL=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target qx_suite_programs  # the tests and qx, in parallel
# Stop at the first finding, with a stack trace; CTest reports the test as failed.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The CPU–GPU parity program (label cuda) is not built here: it needs a GPU (docs/cuda.md).
ctest --test-dir "$build" -j "$jobs" --output-on-failure --timeout 1800 -LE "package|cuda|example"
