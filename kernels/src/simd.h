// Private helpers: one GCC-vector-extension type for every ISA, lane count chosen at build time
// from the compiler's target macros (each kernel variant's translation unit has its own flags).
// Internal linkage (anonymous namespace): translation units built for different ISAs never
// share an instance.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

#include "ops.h"

#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
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

// Fully unroll the next loop (constant trip count): loops that index register-tile arrays by
// their counter must unroll, or the compiler keeps the whole tile in memory.
#if defined(__clang__)
#define JCW_UNROLL _Pragma("unroll")
#else
#define JCW_UNROLL _Pragma("GCC unroll 16")
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

#if defined(__AVX512F__)
// Lanes [a, b) (0 <= a < b <= 16) of a vector whose lane 0 belongs at base + at (at may be
// negative: only lanes a.. are touched), one masked instruction each; the address is formed as
// an integer, so no pointer ever points outside the buffer.
inline __mmask16 lane_mask16(int a, int b) { return static_cast<__mmask16>((0xFFFFu >> (16 - (b - a))) << a); }
inline float* lane0(float* base, std::ptrdiff_t at) {
    return reinterpret_cast<float*>(reinterpret_cast<std::uintptr_t>(base) + at * static_cast<std::ptrdiff_t>(sizeof(float)));
}
inline void store_lanes16(float* base, std::ptrdiff_t at, vec<16> v, int a, int b) {
    _mm512_mask_storeu_ps(lane0(base, at), lane_mask16(a, b), (__m512)v);
}
inline vec<16> load_lanes16(const float* base, std::ptrdiff_t at, int a, int b) {
    return (vec<16>)_mm512_maskz_loadu_ps(lane_mask16(a, b), lane0(const_cast<float*>(base), at));
}
#endif

template <int L>
struct IVecT {
    typedef int32_t type __attribute__((vector_size(L * sizeof(int32_t))));
};
template <int L>
using ivec = typename IVecT<L>::type;

template <int L>
inline vec<L> vmax(vec<L> a, vec<L> b) { return a > b ? a : b; }
template <int L>
inline vec<L> vmin(vec<L> a, vec<L> b) { return a < b ? a : b; }
template <int L>
inline vec<L> clamp01(vec<L> v) { return vmin<L>(vmax<L>(v, splat<L>(0.f)), splat<L>(1.f)); }

// exp(x), x clamped to [-87.3, 88.3] (results stay normal floats): x = n ln2 + r, |r| <= ln2 / 2,
// exp(r) by the Cephes expf polynomial, 2^n built in the exponent bits.  Relative error < 1e-7.
// Only plain arithmetic, compares and conversions of the vector extension: every ISA, NEON
// included, and the scalar build (L = 1) compile it.
template <int L>
inline vec<L> exp(vec<L> x) {
    x = vmin<L>(vmax<L>(x, splat<L>(-87.3f)), splat<L>(88.3f));
    const vec<L> magic = splat<L>(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
    const vec<L> n = (x * 1.44269504f + magic) - magic;
    vec<L> r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vec<L> y = splat<L>(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.f;
    const ivec<L> bits = (__builtin_convertvector(n, ivec<L>) + 127) << 23;
    vec<L> pow2n;
    __builtin_memcpy(&pow2n, &bits, sizeof(pow2n));
    return y * pow2n;
}

template <int L>
inline vec<L> sigmoid(vec<L> x) { return 1.f / (1.f + exp<L>(-x)); }

// erf(x): the rational approximation of Eigen / XLA on x clamped to [-4, 4] (absolute error
// below 5e-7).
template <int L>
inline vec<L> erf(vec<L> x) {
    x = vmin<L>(vmax<L>(x, splat<L>(-4.f)), splat<L>(4.f));
    const vec<L> x2 = x * x;
    vec<L> p = splat<L>(-2.72614225801306e-10f);
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    vec<L> q = splat<L>(-1.45660718464996e-05f);
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

// act(v) for the activations past ReLU / ReLU6 (ops.h).
template <int L>
inline vec<L> activate_more(vec<L> v, Act act) {
    switch (act.kind) {
        case ActKind::HardSwish:
            return v * clamp01<L>(v * (1.f / 6.f) + 0.5f);
        case ActKind::HardSigmoid:
            return clamp01<L>(v * act.alpha + act.beta);
        case ActKind::Sigmoid:
            return sigmoid<L>(v);
        case ActKind::Silu:
            return v * sigmoid<L>(v);
        case ActKind::LeakyRelu:
            return v < splat<L>(0.f) ? v * act.alpha : v;
        case ActKind::Gelu:
            return v * 0.5f * (1.f + erf<L>(v * 0.70710678118654752f));
        case ActKind::GeluTanh:  // x (1 + tanh z) / 2 = x sigmoid(2 z)
            return v * sigmoid<L>((v + 0.044715f * v * v * v) * 1.5957691216057308f);
        default:
            return v;
    }
}

inline bool relu_family(Act act) {
    return act.kind == ActKind::None || act.kind == ActKind::Relu || act.kind == ActKind::Relu6;
}

// act(v) for None / ReLU / ReLU6.
template <int L>
inline vec<L> activate_relu(vec<L> v, Act act) {
    if (act.kind == ActKind::None) return v;
    const vec<L> zero = splat<L>(0.f);
    v = v < zero ? zero : v;
    if (act.kind == ActKind::Relu6) {
        const vec<L> six = splat<L>(6.f);
        v = v > six ? six : v;
    }
    return v;
}

// act(v).  M (for "more"): every Act; without it only None / ReLU / ReLU6.  The microkernels are
// compiled for both (micro/variant.cpp picks the instance once per call from relu_family(act)):
// with the other activations' bodies in the same function, the ReLU epilogues ran up to 5% slower
// (spills around the exp / erf code), and out of line calls clobber every vector register.
template <int L, bool M = true>
inline vec<L> activate(vec<L> v, Act act) {
    if constexpr (M) {
        if (!relu_family(act)) return activate_more<L>(v, act);
    }
    return activate_relu<L>(v, act);
}

// out[i] = act(src[i] + res[i]) for i < n (res may be null), widest vectors first.
template <int L, bool M>
inline void emit_range(const float* src, const float* res, float* out, int n, Act act) {
    int i = 0;
    for (; i + L <= n; i += L) {
        vec<L> v = load<L>(src + i);
        if (res) v += load<L>(res + i);
        store<L>(out + i, M ? activate_more<L>(v, act) : activate_relu<L>(v, act));
    }
    if constexpr (L > 1) {
        if (i < n) emit_range<(L > 4 ? L / 2 : 1), M>(src + i, res ? res + i : nullptr, out + i, n - i, act);
    }
}

// The same for any activation (M) or for None / ReLU / ReLU6 only; the activation is picked once per call.
template <int L, bool M = true>
inline void emit(const float* src, const float* res, float* out, int n, Act act) {
    if (M && !relu_family(act))
        emit_range<L, true>(src, res, out, n, act);
    else
        emit_range<L, false>(src, res, out, n, act);
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
