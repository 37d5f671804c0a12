#!/usr/bin/env bash
# Installs qx's build and test dependencies from Debian's archive. Idempotent: runs apt-get only when
# a package is missing, and `apt-get update` once before the first install.
# Usage: cmake/install_deps.sh [--with-torch] [--with-fuzz]
#   --with-torch: PyTorch, only for regenerating fixtures and running the benchmarks' PyTorch side;
#   --with-fuzz: clang, its libFuzzer/sanitizer runtimes and LLVM's OpenMP with Archer, for
#   tests/fuzz/run_fuzz.sh and cmake/run-race-check.sh (GCC's own sanitizer runtimes, used by
#   cmake/run-sanitized-tests.sh, come with g++).
set -euo pipefail
pkgs=(cmake g++ make pkg-config libeigen3-dev libxtensor-dev libxtensor-blas-dev doctest-dev libstb-dev nlohmann-json3-dev libcli11-dev)
for option in "$@"; do
  case $option in
    --with-torch) pkgs+=(python3-torch python3-torchvision python3-numpy) ;;
    --with-fuzz) pkgs+=(clang libclang-rt-14-dev libomp-14-dev) ;;
    *) echo "install_deps: unknown option $option" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
