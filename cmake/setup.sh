#!/usr/bin/env bash
# setup.sh: install what building and testing minitrain needs, from Debian's packages (Debian 12).
#
#   bash cmake/setup.sh                 build tools and libraries: enough for the tests
#   bash cmake/setup.sh --quickstart    also the quickstart's text corpora (fortunes; fortunes-zh for --chinese)
#   bash cmake/setup.sh --with-torch    also PyTorch and OpenBLAS, for golden-file generation and the
#                                       reference benchmarks only (large: not installed by default)
#   bash cmake/setup.sh --check         only report what is missing (exit 1 if anything is)
#
# Installs only what is missing, and prints nothing when everything is there. Needs root or sudo.
# The CUDA toolkit is not a Debian package here: with /usr/local/cuda present, CMake finds it by itself.
set -euo pipefail

packages=(cmake g++ make pkg-config libeigen3-dev doctest-dev nlohmann-json3-dev libpcre2-dev openmpi-bin libopenmpi-dev)
# tests/log.cpp decodes the TensorBoard event files with protoc --decode_raw; plot --output x.png uses rsvg-convert.
packages+=(protobuf-compiler librsvg2-bin)
# The fuzz targets (tests/fuzz/run.sh, run by CI): clang with libFuzzer and the sanitizer runtimes, and
# clang's OpenMP runtime (minitrain links OpenMP).
packages+=(clang libclang-rt-14-dev libomp-dev)
# The llama.cpp test (tests/gguf/): node and npm, unless they are already on PATH (e.g. from nodesource).
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
check_only=0

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

for arg in "$@"; do
  case "$arg" in
    --quickstart) packages+=(fortunes fortune-mod fortunes-zh) ;;
    --with-torch) packages+=(python3-torch libopenblas0-openmp) ;;
    --check) check_only=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

# serve (examples/serve.cpp) and its tests (tests/serve/): cpp-httplib, curl and Chromium for the chat page
# (node and npm, for the openai client and playwright-core, are added above).
packages+=(libcpp-httplib-dev curl chromium)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup.sh: this script installs Debian packages with apt-get, which this system does not have." >&2
  echo "Install these (or your system's equivalents) by hand: ${packages[*]}" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$check_only" = 1 ]; then
  echo "setup.sh: missing Debian packages: ${missing[*]}"
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: need root to install: ${missing[*]}" >&2
  echo "Run this script as root, install sudo, or run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get update -qq; then
  echo "setup.sh: 'apt-get update' failed (no network, or no access to the package mirrors?)" >&2
  exit 1
fi
if ! "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "setup.sh: 'apt-get install ${missing[*]}' failed; see the messages above" >&2
  exit 1
fi
still=()
for p in "${missing[@]}"; do
  installed "$p" || still+=("$p")
done
if [ ${#still[@]} -gt 0 ]; then
  echo "setup.sh: still not installed after apt-get: ${still[*]}" >&2
  exit 1
fi
echo "setup.sh: done"
