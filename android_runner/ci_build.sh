#!/usr/bin/env bash
# Builds the runner for the given presets (default: host aarch64-linux), incrementally: a configured build
# folder (android_runner/build-<preset>) is reused, so a second call only recompiles what changed.
#
#   android_runner/ci_build.sh [host] [aarch64-linux]
#
# aarch64-linux needs g++-aarch64-linux-gnu (and qemu-user to run the result); the aarch64 executorch wheel
# matching the installed executorch is downloaded once with pip and unpacked (lib/, include/, share/ only)
# into ${VGGT_ET_CACHE:-$HOME/.cache/vggt-et}. Needs cmake >= 3.28 (pip install cmake) and ninja.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${VGGT_ET_CACHE:-$HOME/.cache/vggt-et}"
python="${PYTHON:-python3}"
aarch64_platform="manylinux_2_28_aarch64"

fail() { echo "ci_build.sh: $*" >&2; exit 2; }

executorch_version() {
  "$python" -c "import importlib.metadata as m; print(m.version('executorch').split('+')[0])"
}

# Prints the unpacked aarch64 package root, fetching it the first time.
aarch64_executorch_root() {
  local version root wheel_dir
  version="$(executorch_version)" || fail "python cannot find the executorch package; pip install executorch"
  root="$cache/executorch-$version-$aarch64_platform/executorch"
  if [[ ! -f "$root/lib/libexecutorch.so" ]]; then
    command -v "$python" >/dev/null || fail "no $python"
    wheel_dir="$(mktemp -d)"
    echo "ci_build.sh: fetching executorch==$version for $aarch64_platform into $cache" >&2
    "$python" -m pip download --quiet "executorch==$version" --platform "$aarch64_platform" \
      --only-binary=:all: --no-deps -d "$wheel_dir" >&2 || fail "pip download of the aarch64 wheel failed"
    "$python" - "$wheel_dir" "$(dirname "$root")" <<'PY'
import glob, os, shutil, sys, zipfile
wheel_dir, target = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(wheel_dir, "executorch-*.whl"))
partial = target + ".part"
shutil.rmtree(partial, ignore_errors=True)
with zipfile.ZipFile(wheel) as archive:
    wanted = [n for n in archive.namelist() if n.startswith(("executorch/lib/", "executorch/include/", "executorch/share/"))]
    archive.extractall(partial, wanted)
shutil.rmtree(target, ignore_errors=True)
os.replace(partial, target)
PY
    rm -rf "$wheel_dir"
  fi
  echo "$root"
}

build_preset() {
  local preset="$1" build="$here/build-$1"
  local -a extra=()
  case "$preset" in
    host) ;;
    aarch64-linux)
      command -v aarch64-linux-gnu-g++ >/dev/null ||
        fail "aarch64-linux needs aarch64-linux-gnu-g++: apt-get install g++-aarch64-linux-gnu qemu-user"
      extra=("-DVGGT_ET_EXECUTORCH_ROOT=$(aarch64_executorch_root)")
      ;;
    android-arm64-v8a)
      [[ -n "${ANDROID_NDK:-}" && -n "${EXECUTORCH_ANDROID_PREFIX:-}" ]] ||
        fail "android-arm64-v8a needs ANDROID_NDK and EXECUTORCH_ANDROID_PREFIX (see android_runner/README.md)"
      ;;
    *) fail "unknown preset '$preset' (host, aarch64-linux, android-arm64-v8a)" ;;
  esac
  if [[ ! -f "$build/CMakeCache.txt" || ${#extra[@]} -gt 0 ]]; then
    mkdir -p "$build"
    (cd "$here" && cmake --preset "$preset" "${extra[@]}" >"$build/configure.log" 2>&1) || {
      tail -n 30 "$build/configure.log" >&2
      fail "configuring $preset failed (log: $build/configure.log)"
    }
  fi
  cmake --build "$build" --parallel "${VGGT_ET_BUILD_JOBS:-2}" >&2 || fail "building $preset failed"
  echo "$build/vggt_et_runner"
}

cmake_version="$(cmake --version 2>/dev/null | head -n1 | awk '{print $3}')" ||
  fail "no cmake on PATH: pip install 'cmake>=3.28'"
[[ "$(printf '%s\n3.28\n' "$cmake_version" | sort -V | head -n1)" == "3.28" ]] ||
  fail "cmake $cmake_version is too old; the executorch package's targets need >= 3.28 (pip install 'cmake>=3.28')"

presets=("$@")
[[ ${#presets[@]} -gt 0 ]] || presets=(host aarch64-linux)
for preset in "${presets[@]}"; do
  build_preset "$preset"
done
