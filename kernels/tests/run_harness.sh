#!/usr/bin/env bash
# Builds and runs the C++ kernel harness: natively with ASan+UBSan, then cross-built for AArch64
# (NEON) and run under qemu-aarch64.  Usage: run_harness.sh [native|arm|all] (default all).
# Exit 0: all requested checks passed; 1: a check failed; 3: cross tools missing for "arm".
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
what="${1:-all}"
build="${JCW_HARNESS_BUILD:-$(mktemp -d)}"
trap '[ -z "${JCW_HARNESS_BUILD:-}" ] && rm -rf "$build"' EXIT

case "$what" in native|arm|all) ;; *) echo "usage: $0 [native|arm|all]" >&2; exit 2 ;; esac

if [ "$what" != arm ]; then
    cmake -S "$root" -B "$build/native" -DJCW_PYTHON=OFF -DJCW_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build/native" --target jcw_harness -j 2 >/dev/null
    echo "== native (ASan+UBSan)"
    "$build/native/jcw_harness"
fi

if [ "$what" != native ]; then
    if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
        echo "missing cross tools: apt-get install -y g++-aarch64-linux-gnu qemu-user" >&2
        exit 3
    fi
    mkdir -p "$build/arm"
    flags=(-std=c++17 -O2 -static -I"$root/kernels/include" -I"$root/kernels/src" -pthread)
    aarch64-linux-gnu-g++ "${flags[@]}" "$root/kernels/tests/harness.cpp" \
        "$root/kernels/src/conv.cpp" "$root/kernels/src/linear.cpp" "$root/kernels/src/pool.cpp" \
        "$root/kernels/src/threadpool.cpp" "$root/kernels/src/reference.cpp" -o "$build/arm/jcw_harness"
    echo "== aarch64 (NEON) under qemu"
    qemu-aarch64 "$build/arm/jcw_harness"
fi
