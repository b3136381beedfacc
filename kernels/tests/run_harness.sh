#!/usr/bin/env bash
# Builds and runs the C++ kernel harness (every kernel variant the CPU runs vs the reference):
#   native      g++ with ASan+UBSan
#   clang       clang++ with ASan+UBSan
#   arm         cross-built for AArch64 with aarch64-linux-gnu-g++ (neon + neon_a53), run under qemu
#   arm-clang   the same with clang++ --target=aarch64-linux-gnu
#   all         all four (default)
# Every build uses -Wall -Wextra -Werror: the kernels compile warning-free with both compilers.
# Exit 0: all requested checks passed; 1: a check failed; 3: tools missing for a requested check.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
what="${1:-all}"
build="${JCW_HARNESS_BUILD:-$(mktemp -d)}"
trap '[ -z "${JCW_HARNESS_BUILD:-}" ] && rm -rf "$build"' EXIT

case "$what" in native|clang|arm|arm-clang|all) ;; *) echo "usage: $0 [native|clang|arm|arm-clang|all]" >&2; exit 2 ;; esac
want() { [ "$what" = all ] || [ "$what" = "$1" ]; }
need() {
    for t in "$@"; do
        if ! command -v "$t" >/dev/null; then
            echo "missing $t: apt-get install -y clang g++-aarch64-linux-gnu qemu-user" >&2
            exit 3
        fi
    done
}

host() {  # $1 name, $2 C++ compiler: CMake build with the sanitizers
    need "$2"
    CXX="$2" cmake -S "$root" -B "$build/$1" -DJCW_PYTHON=OFF -DJCW_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >/dev/null
    cmake --build "$build/$1" --target jcw_harness -j 2 >/dev/null
    echo "== $1 ($2, ASan+UBSan)"
    "$build/$1/jcw_harness"
}

arm() {  # $1 name, $2.. C++ compiler command for aarch64-linux-gnu
    local name="$1"
    shift
    need "$1" qemu-aarch64
    local out="$build/$name"
    mkdir -p "$out"
    local flags=(-std=c++17 -O2 -ffp-contract=fast -Wall -Wextra -Werror -I"$root/kernels/include" -I"$root/kernels/src")
    # The variants of CMakeLists.txt for AArch64, each its own object with its own tuning.
    "$@" "${flags[@]}" -DJCW_VARIANT=neon -mtune=cortex-a72 -c "$root/kernels/src/micro/variant.cpp" -o "$out/neon.o"
    "$@" "${flags[@]}" -DJCW_VARIANT=neon_a53 -mtune=cortex-a53 -DJCW_TUNE_IN_ORDER=1 \
        -c "$root/kernels/src/micro/variant.cpp" -o "$out/neon_a53.o"
    local srcs=()
    for f in "$root"/kernels/src/*.cpp; do srcs+=("$f"); done
    "$@" "${flags[@]}" "-DJCW_VARIANT_LIST=JCW_V(neon) JCW_V(neon_a53)" -static -pthread \
        "$root/kernels/tests/harness.cpp" "${srcs[@]}" "$out/neon.o" "$out/neon_a53.o" -o "$out/jcw_harness"
    echo "== aarch64 ($1) under qemu"
    qemu-aarch64 "$out/jcw_harness"
}

if want native; then host native g++; fi
if want clang; then host clang clang++; fi
if want arm; then arm arm aarch64-linux-gnu-g++; fi
if want arm-clang; then arm arm-clang clang++ --target=aarch64-linux-gnu; fi
