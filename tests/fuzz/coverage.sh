#!/usr/bin/env bash
# Line and branch coverage of the parsers by a fuzz corpus: builds the fuzz targets with clang's source
# coverage (-fprofile-instr-generate -fcoverage-mapping, no sanitizer), replays each target's corpus once
# (libFuzzer's -runs=0 runs every input and stops), and reports, per target, the coverage of the file it
# fuzzes — not of nlohmann/json or the standard library, which libFuzzer's own "cov" counts include.
# Usage: tests/fuzz/coverage.sh [corpus root (default build-fuzz/corpus, what run_fuzz.sh leaves)]
# Needs clang, libclang-rt-14-dev (cmake/install_deps.sh --with-fuzz) and llvm-cov / llvm-profdata
# (Debian package llvm). docs/reliability.md has the figures of the long run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
corpus=${1:-build-fuzz/corpus}
build=${QX_FUZZ_COVERAGE_DIR:-build-fuzz-coverage}
cov=$(command -v llvm-cov || command -v llvm-cov-14 || true)
profdata=$(command -v llvm-profdata || command -v llvm-profdata-14 || true)
if [[ -z $cov || -z $profdata ]]; then
  echo "coverage.sh: llvm-cov and llvm-profdata are needed (apt-get install llvm)" >&2
  exit 2
fi
[[ -d $corpus ]] || { echo "coverage.sh: no corpus folder '$corpus' (run tests/fuzz/run_fuzz.sh first)" >&2; exit 2; }

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
  -DCMAKE_CXX_FLAGS="-fprofile-instr-generate -fcoverage-mapping" -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" \
  -DQX_SANITIZE=fuzzer -DQX_BUILD_FUZZERS=ON -DQX_USE_OPENMP=OFF -DQX_BUILD_TESTS=OFF -DQX_BUILD_EXAMPLES=OFF \
  -DQX_BUILD_BENCHMARKS=OFF -DQX_INSTALL=OFF >/dev/null
declare -A file=([wfdb_header]=include/qx/ecg/wfdb.hpp [wfdb_signal]=include/qx/ecg/wfdb.hpp
                 [wfdb_annotations]=include/qx/ecg/wfdb.hpp [safetensors]=include/qx/io/safetensors.hpp)
targets=(wfdb_header wfdb_signal wfdb_annotations safetensors)
cmake --build "$build" -j "${QX_JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}" >/dev/null
mkdir -p "$build/profiles"
printf '%-18s %-30s %8s %14s %10s %10s\n' target file inputs "lines covered" lines% branches%
for t in "${targets[@]}"; do
  inputs=("$corpus/$t" "tests/fuzz/seeds/$t")
  [[ -d tests/fuzz/regressions/$t ]] && inputs+=("tests/fuzz/regressions/$t")
  count=$(find "${inputs[@]}" -type f 2>/dev/null | wc -l)
  LLVM_PROFILE_FILE="$build/profiles/$t.profraw" "$build/tests/fuzz/fuzz_$t" -runs=0 -timeout=60 "${inputs[@]}" \
    >"$build/profiles/$t.log" 2>&1 || { echo "coverage.sh: replaying $t failed (see $build/profiles/$t.log)" >&2; exit 1; }
  "$profdata" merge -sparse "$build/profiles/$t.profraw" -o "$build/profiles/$t.profdata"
  # The TOTAL line of the report restricted to the parser's file: regions, functions, lines, branches.
  read -r lines_total lines_missed lines_pct branches_pct < <("$cov" report "$build/tests/fuzz/fuzz_$t" \
    -instr-profile="$build/profiles/$t.profdata" "${file[$t]}" | awk '/^TOTAL/ {print $8, $9, $10, $13}')
  printf '%-18s %-30s %8s %14s %10s %10s\n' "$t" "${file[$t]}" "$count" "$((lines_total - lines_missed))/$lines_total" \
    "$lines_pct" "$branches_pct"
done
# The three WFDB targets together, over the one file they share.
wfdb=(wfdb_header wfdb_signal wfdb_annotations)
# (llvm-profdata warns of "mismatched data" for functions the three programs compile differently — libFuzzer
# glue and the bodies — not for the reader, which is the same code in all three.)
"$profdata" merge -sparse $(printf "$build/profiles/%s.profraw " "${wfdb[@]}") -o "$build/profiles/wfdb.profdata"
read -r lines_total lines_missed lines_pct branches_pct < <("$cov" report "$build/tests/fuzz/fuzz_wfdb_header" \
  -object "$build/tests/fuzz/fuzz_wfdb_signal" -object "$build/tests/fuzz/fuzz_wfdb_annotations" \
  -instr-profile="$build/profiles/wfdb.profdata" include/qx/ecg/wfdb.hpp | awk '/^TOTAL/ {print $8, $9, $10, $13}')
printf '%-18s %-30s %8s %14s %10s %10s\n' "the 3 WFDB targets" include/qx/ecg/wfdb.hpp - "$((lines_total - lines_missed))/$lines_total" \
  "$lines_pct" "$branches_pct"
echo "per-line detail: $cov show $build/tests/fuzz/fuzz_<target> -instr-profile=$build/profiles/<target>.profdata <file>"
