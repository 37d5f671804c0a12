#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) in a separate build folder
# and runs each for a fixed number of executions. Each target starts from a fresh corpus made of its
# committed seeds (tests/fuzz/seeds/<target>), its regression inputs (tests/fuzz/regressions/<target>) and,
# built here at run time, seeds from the MIT-BIH records (../shared/data/mitdb, never copied into the
# project) and from the safetensors fixtures. Prints one line per target (executions, coverage, time) and
# exits 1 if any target crashed, leaking, timing out or reporting a sanitizer error; the input is kept
# in <build>/crashes/. docs/reliability.md has the figures of a long run.
# Usage: tests/fuzz/run_fuzz.sh [executions per target (default 100000)] [target...]
#        QX_FUZZ_MAX_SECONDS=s caps each target's time as well (the line then shows the executions reached).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
runs=${1:-100000}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(wfdb_header wfdb_signal wfdb_annotations safetensors)
build=${QX_FUZZ_BUILD_DIR:-build-fuzz}
mitdb=${QX_MITDB:-$root/../shared/data/mitdb}
fuzz=tests/fuzz

fuzz_targets=("${targets[@]/#/fuzz_}")
selected=$(IFS=';'; echo "${fuzz_targets[*]}")
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
  -DQX_SANITIZE=fuzzer,address,undefined -DQX_BUILD_FUZZERS=ON -DQX_USE_OPENMP=OFF -DQX_BUILD_TESTS=OFF \
  -DQX_BUILD_EXAMPLES=OFF -DQX_BUILD_BENCHMARKS=OFF -DQX_INSTALL=OFF "-DQX_SELECTED_TARGETS=$selected" >/dev/null
cmake --build "$build" -j "${QX_JOBS:-$(nproc)}" --target qx_selected >/dev/null  # the targets side by side

# Seeds made at run time from the records: whole headers and annotation files, and for the signal target
# each header cut to 600 frames followed by the first 900 bytes of its signal file.
seeds=$build/seeds
rm -rf "$seeds" "$build/corpus" "$build/crashes"
mkdir -p "$seeds"/{wfdb_header,wfdb_signal,wfdb_annotations,safetensors} "$build/crashes" "$build/logs"
if [[ -d $mitdb ]]; then
  for hea in "$mitdb"/*.hea; do
    r=$(basename "$hea" .hea)
    cp "$hea" "$seeds/wfdb_header/"
    cp "$mitdb/$r.atr" "$seeds/wfdb_annotations/"
    { sed -E '1s/^([^ ]+ [^ ]+ [^ ]+) [0-9]+/\1 600/' "$hea"; printf '\0'; head -c 900 "$mitdb/$r.dat"; } > "$seeds/wfdb_signal/$r"
  done
else
  echo "run_fuzz: no MIT-BIH records at $mitdb; using the committed seeds only" >&2
fi
find tests/fixtures -name '*.safetensors' -size -64k -exec cp {} "$seeds/safetensors/" \;

declare -A max_len=([wfdb_header]=4096 [wfdb_signal]=4096 [wfdb_annotations]=16384 [safetensors]=16384)
status=0
printf '%-18s %12s %8s %8s %8s %s\n' target executions cov ft seconds result
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  inputs=("$build/corpus/$t" "$fuzz/seeds/$t" "$seeds/$t")
  [[ -d $fuzz/regressions/$t ]] && inputs+=("$fuzz/regressions/$t")
  start=$(date +%s)
  result=ok
  "$build/tests/fuzz/fuzz_$t" -runs="$runs" -dict="$fuzz/dict/$t.dict" -max_len="${max_len[$t]}" -timeout=60 \
    -rss_limit_mb=2048 -max_total_time="${QX_FUZZ_MAX_SECONDS:-0}" -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" "${inputs[@]}" \
    >"$build/logs/$t.log" 2>&1 || { result="FAILED (see $build/logs/$t.log, input in $build/crashes/)"; status=1; }
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/logs/$t.log" | tail -1)
  read -r cov ft < <(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$build/logs/$t.log" | tail -1 | awk '{print $2, $4}')
  printf '%-18s %12s %8s %8s %8s %s\n' "$t" "${executions:-?}" "${cov:-?}" "${ft:-?}" $(($(date +%s) - start)) "$result"
done
exit $status
