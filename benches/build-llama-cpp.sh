#!/usr/bin/env bash
# Build llama.cpp's llama-bench and llama-server for benches/local.sh, from the
# llama.cpp source vendored in PyPI's llama-cpp-python sdist (vendor/llama.cpp).
# Idempotent: when both binaries exist it only prints their paths. Never part
# of the default test run (about 11 minutes on 2 cores).
#
# Usage:  benches/build-llama-cpp.sh
# Env:    LLAMA_CPP_DIR=$HOME/.cache/slmgate-bench/llama.cpp   cache directory
#         LLAMA_CPP_PYTHON_VERSION=0.3.36   pin the sdist (default: newest)
#         JOBS=2                            parallel compile jobs
# Output: progress on stderr; on success the two binary paths on stdout.
# Needs:  python3 -m pip, cmake >= 3.21, a C/C++ compiler (installed with
#         apt-get when missing).
set -euo pipefail

DIR="${LLAMA_CPP_DIR:-$HOME/.cache/slmgate-bench/llama.cpp}"
JOBS="${JOBS:-2}"
BUILD="$DIR/build"
BENCH_BIN="$BUILD/bin/llama-bench"
SERVER_BIN="$BUILD/bin/llama-server"

log() { printf '[build-llama-cpp] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- already built?
if [ -x "$BENCH_BIN" ] && [ -x "$SERVER_BIN" ]; then
  echo "$BENCH_BIN"
  echo "$SERVER_BIN"
  exit 0
fi

# ---------------------------------------------------------------- tools
# cmake and ninja must be on PATH *before* `pip download`: the sdist's build
# backend (scikit-build-core) prepares metadata even for a download, and when it
# finds no CMake >= 3.21 / ninja it asks pip for the `cmake` and `ninja` PyPI
# packages, which --no-binary :all: would then compile from source.
cmake_ok() {
  command -v cmake >/dev/null 2>&1 || return 1
  local v
  v="$(cmake --version | awk 'NR == 1 { print $3 }')"
  [ "$(printf '%s\n3.21\n' "$v" | sort -V | head -n1)" = "3.21" ]
}
missing=()
cmake_ok || missing+=(cmake)
command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
apt_install ${missing[@]+"${missing[@]}"}
cmake_ok || die "cmake >= 3.21 is needed (found: $(cmake --version 2>/dev/null | head -n1 || echo none))"
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is needed (apt-get install python3-pip)"

# ---------------------------------------------------------------- source
mkdir -p "$DIR/sdist" "$DIR/src"
spec="llama-cpp-python${LLAMA_CPP_PYTHON_VERSION:+==$LLAMA_CPP_PYTHON_VERSION}"
# Newest matching sdist already in the cache, or nothing.
find_sdist() {
  local f
  for f in "$DIR"/sdist/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION:-*}.tar.gz; do
    [ -f "$f" ] && printf '%s\n' "$f"
  done | sort -V | tail -n1
}
SDIST="$(find_sdist || true)"
if [ -z "$SDIST" ]; then
  log "downloading the $spec sdist (pip download)"
  python3 -m pip download --no-deps --no-binary :all: "$spec" -d "$DIR/sdist" >&2
  SDIST="$(find_sdist || true)"
  [ -n "$SDIST" ] || die "pip download left no llama_cpp_python-*.tar.gz in $DIR/sdist"
fi
NAME="$(basename "$SDIST" .tar.gz)"  # llama_cpp_python-X.Y.Z
SRC="$DIR/src/$NAME/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  log "unpacking $SDIST"
  rm -rf "${DIR:?}/src/$NAME"
  tar -xzf "$SDIST" -C "$DIR/src"
  [ -f "$SRC/CMakeLists.txt" ] || die "no vendor/llama.cpp/CMakeLists.txt in $SDIST (layout changed?)"
fi
log "llama.cpp source: $SRC"

# ---------------------------------------------------------------- configure + build
# The issue's flags, plus: no HTTPS (OpenSSL) and no web-UI download from
# Hugging Face at build time; neither matters for a local benchmark. Examples
# off does not drop llama-bench / llama-server (they live under tools/).
gen=()
if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
  gen=(-G Ninja) # an existing build dir keeps its generator
fi
log "configuring in $BUILD"
cmake -S "$SRC" -B "$BUILD" ${gen[@]+"${gen[@]}"} \
  -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON >&2

log "building llama-bench and llama-server with -j$JOBS (about 11 minutes on 2 cores)"
start=$SECONDS
cmake --build "$BUILD" -j"$JOBS" --target llama-bench llama-server >&2
log "built in $((SECONDS - start)) s"

if [ ! -x "$BENCH_BIN" ] || [ ! -x "$SERVER_BIN" ]; then die "build finished but $BENCH_BIN / $SERVER_BIN are missing"; fi
echo "$NAME" >"$DIR/VERSION"
echo "$BENCH_BIN"
echo "$SERVER_BIN"
