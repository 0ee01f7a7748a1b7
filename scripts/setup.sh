#!/usr/bin/env bash
# Installs duplex's Debian packages (when missing), configures and builds. Idempotent: a second run only
# rebuilds what changed. Usage: scripts/setup.sh [--build-dir DIR] [--cuda AUTO|ON|OFF] [--no-build]
#                                               [--sanitize] [-- extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
cuda=AUTO
do_build=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --cuda) cuda=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --sanitize) extra+=(-DDUPLEX_SANITIZE=ON); shift ;;
    --) shift; extra+=("$@"); break ;;
    *) echo "setup.sh: unknown option '$1' (see the usage line at the top of scripts/setup.sh)" >&2; exit 2 ;;
  esac
done

packages=(build-essential cmake ninja-build ccache pkg-config git
  libsystemc-dev verilator libtbb-dev libyaml-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev libopenblas-dev python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DDUPLEX_CUDA="$cuda" ${extra[@]+"${extra[@]}"}
elif [ ${#extra[@]} -gt 0 ] || [ "$cuda" != AUTO ]; then
  cmake -S . -B "$build_dir" -DDUPLEX_CUDA="$cuda" ${extra[@]+"${extra[@]}"}
fi
if [ "$do_build" = 1 ]; then
  cmake --build "$build_dir" -j "$(nproc)"
fi
