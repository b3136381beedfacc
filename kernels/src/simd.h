// Private helpers: one GCC-vector-extension type for every ISA, lane count chosen at build time.
#pragma once
#include "ops.h"

#if defined(__AVX512F__)
#define JCW_LANES 16
#define JCW_ISA "avx512"
#define JCW_TILE_VECS 4
#elif defined(__AVX2__) && defined(__FMA__)
#define JCW_LANES 8
#define JCW_ISA "avx2"
#define JCW_TILE_VECS 2
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define JCW_LANES 4
#define JCW_ISA "neon"
#define JCW_TILE_VECS 4
#elif defined(__SSE2__)
#define JCW_LANES 4
#define JCW_ISA "sse2"
#define JCW_TILE_VECS 2
#else
#define JCW_LANES 1
#define JCW_ISA "scalar"
#define JCW_TILE_VECS 4
#endif

namespace jcw::simd {

template <int L>
struct VecT {
    typedef float type __attribute__((vector_size(L * sizeof(float)), aligned(4), __may_alias__));
};
template <int L>
using vec = typename VecT<L>::type;

template <int L>
inline vec<L> load(const float* p) { return *reinterpret_cast<const vec<L>*>(p); }
template <int L>
inline void store(float* p, vec<L> v) { *reinterpret_cast<vec<L>*>(p) = v; }
template <int L>
inline vec<L> splat(float x) { return vec<L>{} + x; }

template <int L>
inline vec<L> activate(vec<L> v, Act act) {
    if (act == Act::None) return v;
    const vec<L> zero = splat<L>(0.f);
    v = v < zero ? zero : v;
    if (act == Act::Relu6) {
        const vec<L> six = splat<L>(6.f);
        v = v > six ? six : v;
    }
    return v;
}

// out[i] = act(src[i] + res[i]) for i < n (res may be null), widest vectors first.
template <int L>
inline void emit(const float* src, const float* res, float* out, int n, Act act) {
    int i = 0;
    for (; i + L <= n; i += L) {
        vec<L> v = load<L>(src + i);
        if (res) v += load<L>(res + i);
        store<L>(out + i, activate<L>(v, act));
    }
    if constexpr (L > 1) {
        if (i < n) emit<(L > 4 ? L / 2 : 1)>(src + i, res ? res + i : nullptr, out + i, n - i, act);
    }
}

}  // namespace jcw::simd
