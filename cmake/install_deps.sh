#!/usr/bin/env bash
# Installs qx's build and test dependencies from Debian's archive. Idempotent: runs apt-get only when
# a package is missing, and `apt-get update` once before the first install.
# Usage: cmake/install_deps.sh [--with-torch]   (torch is only for regenerating fixtures / benchmarks)
set -euo pipefail
pkgs=(cmake g++ make pkg-config libeigen3-dev libxtensor-dev libxtensor-blas-dev doctest-dev libstb-dev nlohmann-json3-dev libcli11-dev)
if [[ ${1:-} == --with-torch ]]; then pkgs+=(python3-torch python3-torchvision python3-numpy); fi
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
