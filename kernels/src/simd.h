// Private helpers: one GCC-vector-extension type for every ISA, lane count chosen at build time
// from the compiler's target macros (each kernel variant's translation unit has its own flags).
// Internal linkage (anonymous namespace): translation units built for different ISAs never
// share an instance.
#pragma once
#include <utility>

#include "ops.h"

#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

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

namespace jcw {
namespace {
namespace simd {

// Naturally aligned vector type; memory is only ever read and written through load/store below,
// which are unaligned (memcpy), so data pointers need no alignment.  (An aligned(4) typedef is
// not honoured by clang for references to the type: it stored through them with aligned moves.)
template <int L>
struct VecT {
    typedef float type __attribute__((vector_size(L * sizeof(float))));
};
template <int L>
using vec = typename VecT<L>::type;

template <int L>
inline vec<L> load(const float* p) {
    vec<L> v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}
template <int L>
inline void store(float* p, vec<L> v) { __builtin_memcpy(p, &v, sizeof(v)); }
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

// Lane permutations with constant indices (__builtin_shufflevector: GCC >= 12 and clang).
// shift_lanes: r[i] = v[i + Shift] where 0 <= i + Shift < L, else 0.
template <int L, int Shift, int... I>
inline vec<L> shift_lanes_(vec<L> v, std::integer_sequence<int, I...>) {
    return __builtin_shufflevector(v, vec<L>{}, ((I + Shift >= 0 && I + Shift < L) ? I + Shift : L)...);
}
template <int L, int Shift>
inline vec<L> shift_lanes(vec<L> v) {
    if constexpr (L == 1) return vec<L>{};
    else return shift_lanes_<L, Shift>(v, std::make_integer_sequence<int, L>{});
}

// Even / odd lanes of the 2L floats (a, b): deinterleave<L, Odd>(a, b)[i] = (a|b)[2i + Odd].
template <int L, int Odd, int... I>
inline vec<L> deinterleave_(vec<L> a, vec<L> b, std::integer_sequence<int, I...>) {
    return __builtin_shufflevector(a, b, (2 * I + Odd)...);
}
template <int L, int Odd>
inline vec<L> deinterleave(vec<L> a, vec<L> b) {
    if constexpr (L == 1) return Odd ? b : a;
    else return deinterleave_<L, Odd>(a, b, std::make_integer_sequence<int, L>{});
}

// Even / odd lanes of the 2L floats at p: one de-interleaving load (LD2) on NEON, else two loads
// and two shuffles.
template <int L>
inline void load_even_odd(const float* p, vec<L>& even, vec<L>& odd) {
#if defined(__ARM_NEON)
    if constexpr (L == 4) {
        const float32x4x2_t v = vld2q_f32(p);
        even = (vec<L>)v.val[0];
        odd = (vec<L>)v.val[1];
        return;
    }
#endif
    const vec<L> a = load<L>(p), b = load<L>(p + L);
    even = deinterleave<L, 0>(a, b);
    odd = deinterleave<L, 1>(a, b);
}

// (prev[L - 1], cur[0], .., cur[L - 2]): the lanes of cur one step to the right, prev's last first.
template <int L, int... I>
inline vec<L> join_prev_(vec<L> prev, vec<L> cur, std::integer_sequence<int, I...>) {
    return __builtin_shufflevector(prev, cur, (I == 0 ? L - 1 : L + I - 1)...);
}
template <int L>
inline vec<L> join_prev(vec<L> prev, vec<L> cur) {
    if constexpr (L == 1) return prev;
    else return join_prev_<L>(prev, cur, std::make_integer_sequence<int, L>{});
}

}  // namespace simd
}  // namespace
}  // namespace jcw
