// One kernel variant: the microkernel headers instantiated for this translation unit's ISA flags,
// exported as a KernelSet named by -DJCW_VARIANT=<name> (CMakeLists.txt compiles this file once
// per variant: x86-64 sse2 / avx2 / avx512, AArch64 neon / neon_a53, or one "native" build).
#include <algorithm>
#include <chrono>

#include "../kernel_set.h"
#include "dense_cv.h"
#include "dense_tile.h"
#include "depthwise.h"
#include "tile_4x1.h"

#ifndef JCW_VARIANT
#error "compile with -DJCW_VARIANT=<variant name>"
#endif
#define JCW_STR2(x) #x
#define JCW_STR(x) JCW_STR2(x)

namespace jcw {
namespace {

constexpr int L = JCW_LANES;
constexpr int NV = JCW_TILE_VECS;

// Every microkernel is instantiated twice: M = false runs None / ReLU / ReLU6 only (the fast
// epilogue), M = true any activation (simd::activate); the wrappers below pick one per call.
template <bool M>
void conv_m(int lanes, const Geometry& g, int q0, int q1, int r0, int r1, bool rows_outer, const float* packed,
            const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual, Act act) {
    switch (lanes) {
        case L: conv_range<L, NV, M>(g, q0, q1, r0, r1, rows_outer, packed, row_start, off, out_ch, out, residual, act); break;
#if JCW_LANES != 4 && JCW_LANES != 1
        case 4: conv_range<4, NV, M>(g, q0, q1, r0, r1, rows_outer, packed, row_start, off, out_ch, out, residual, act); break;
#endif
#if JCW_LANES != 1
        default: conv_range<1, NV, M>(g, q0, q1, r0, r1, rows_outer, packed, row_start, off, out_ch, out, residual, act); break;
#endif
    }
}

void conv(int lanes, const Geometry& g, int q0, int q1, int r0, int r1, bool rows_outer, const float* packed,
          const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual, Act act) {
    if (simd::relu_family(act))
        conv_m<false>(lanes, g, q0, q1, r0, r1, rows_outer, packed, row_start, off, out_ch, out, residual, act);
    else
        conv_m<true>(lanes, g, q0, q1, r0, r1, rows_outer, packed, row_start, off, out_ch, out, residual, act);
}

// The dense tile where a vector register file holds 8 x 3 accumulators of full-width vectors
// (AVX-512: 32 registers of 16 lanes; docs/kernels.md "Dense register tile").  Elsewhere the 4x1
// tile already has the most accumulators the registers allow.
#if JCW_LANES == 16
constexpr int kDenseRows = 8, kDenseVecs = 3;
void dense(const Geometry& g, int q0, int q1, int k0, int k1, bool rows_outer, const float* wd, int codes,
           const int32_t* off, int out_ch, float* out, const float* residual, Act act) {
    if (simd::relu_family(act))
        dense_range<L, kDenseVecs, kDenseRows, false>(g, q0, q1, k0, k1, rows_outer, wd, codes, off, out_ch, out, residual, act);
    else
        dense_range<L, kDenseVecs, kDenseRows, true>(g, q0, q1, k0, k1, rows_outer, wd, codes, off, out_ch, out, residual, act);
}
#else
constexpr int kDenseRows = 0, kDenseVecs = 0;
constexpr auto dense = nullptr;
#endif

void cv(const float* cvw, const float* bias, const float* in, int k, int hw, int out_ch, int b0, int b1, float* out,
        const float* residual, Act act) {
    if (simd::relu_family(act))
        cv_blocks<L, false>(cvw, bias, in, k, hw, out_ch, b0, b1, out, residual, act);
    else
        cv_blocks<L, true>(cvw, bias, in, k, hw, out_ch, b0, b1, out, residual, act);
}

template <bool M>
void depthwise_m(int lanes, bool k3, const Geometry& g, int c0, int c1, int plane_floats, const int32_t* tap_off,
                 int taps, const float* dw, const float* bias, float* out, const float* residual, Act act) {
    switch (lanes * 2 + k3) {
#define JCW_DW(LN)                                                                                                \
    case 2 * (LN): depthwise_range<LN, 0, M>(g, c0, c1, plane_floats, tap_off, taps, dw, bias, out, residual, act); break; \
    case 2 * (LN) + 1: depthwise_range<LN, 9, M>(g, c0, c1, plane_floats, tap_off, taps, dw, bias, out, residual, act); break;
        JCW_DW(L)
#if JCW_LANES > 8
        JCW_DW(8)
#endif
#if JCW_LANES > 4
        JCW_DW(4)
#endif
#if JCW_LANES != 1
        JCW_DW(1)
#endif
#undef JCW_DW
        default: break;
    }
}

void depthwise(int lanes, bool k3, const Geometry& g, int c0, int c1, int plane_floats, const int32_t* tap_off,
               int taps, const float* dw, const float* bias, float* out, const float* residual, Act act) {
    if (simd::relu_family(act))
        depthwise_m<false>(lanes, k3, g, c0, c1, plane_floats, tap_off, taps, dw, bias, out, residual, act);
    else
        depthwise_m<true>(lanes, k3, g, c0, c1, plane_floats, tap_off, taps, dw, bias, out, residual, act);
}

template <bool M>
void dw3_direct_m(int lanes, int stride, const float* in, int h, int w, int c0, int c1, const float* dw,
                  const float* bias, float* out, const float* residual, Act act) {
    switch (lanes * 2 + (stride == 2)) {
#define JCW_DW3(LN)                                                                                          \
    case 2 * (LN): depthwise3x3_direct<LN, M>(in, h, w, c0, c1, dw, bias, out, residual, act); break; \
    case 2 * (LN) + 1: depthwise3x3s2_direct<LN, M>(in, h, w, c0, c1, dw, bias, out, residual, act); break;
        JCW_DW3(L)
#if JCW_LANES > 8
        JCW_DW3(8)
#endif
#if JCW_LANES > 4
        JCW_DW3(4)
#endif
#if JCW_LANES != 1
        JCW_DW3(1)
#endif
#undef JCW_DW3
        default: break;
    }
}

void dw3_direct(int lanes, int stride, const float* in, int h, int w, int c0, int c1, const float* dw,
                const float* bias, float* out, const float* residual, Act act) {
    if (simd::relu_family(act))
        dw3_direct_m<false>(lanes, stride, in, h, w, c0, c1, dw, bias, out, residual, act);
    else
        dw3_direct_m<true>(lanes, stride, in, h, w, c0, c1, dw, bias, out, residual, act);
}

template <int LN, bool M>
void dw_flat_k(int k, const float* pad_in, size_t cstride, int h, int w, int c0, int c1, const float* masks,
               size_t mstride, const float* dw, const float* bias, float* out, const float* residual, Act act) {
    switch (k) {
        case 3: depthwise_flat<LN, 3, M>(pad_in, cstride, h, w, c0, c1, masks, mstride, dw, bias, out, residual, act); break;
        case 5: depthwise_flat<LN, 5, M>(pad_in, cstride, h, w, c0, c1, masks, mstride, dw, bias, out, residual, act); break;
        default: break;
    }
}

template <bool M>
void dw_flat_m(int lanes, int k, const float* pad_in, size_t cstride, int h, int w, int c0, int c1, const float* masks,
               size_t mstride, const float* dw, const float* bias, float* out, const float* residual, Act act) {
    if (lanes == L)
        dw_flat_k<L, M>(k, pad_in, cstride, h, w, c0, c1, masks, mstride, dw, bias, out, residual, act);
    else
        dw_flat_k<1, M>(k, pad_in, cstride, h, w, c0, c1, masks, mstride, dw, bias, out, residual, act);
}

void dw_flat(int lanes, int k, const float* pad_in, size_t cstride, int h, int w, int c0, int c1, const float* masks,
             size_t mstride, const float* dw, const float* bias, float* out, const float* residual, Act act) {
    if (simd::relu_family(act))
        dw_flat_m<false>(lanes, k, pad_in, cstride, h, w, c0, c1, masks, mstride, dw, bias, out, residual, act);
    else
        dw_flat_m<true>(lanes, k, pad_in, cstride, h, w, c0, c1, masks, mstride, dw, bias, out, residual, act);
}

// 16 independent accumulator chains hide FMA latency on every supported core.
__attribute__((noinline)) float fma_burst(long iters, float a, float b) {
    constexpr int K = 16;
    vec<L> acc[K];
    for (int k = 0; k < K; ++k) acc[k] = simd::splat<L>(static_cast<float>(k) * 1e-3f);
    const vec<L> va = simd::splat<L>(a), vb = simd::splat<L>(b);
    for (long i = 0; i < iters; ++i)
        for (int k = 0; k < K; ++k) acc[k] = acc[k] * va + vb;
    vec<L> s = acc[0];
    for (int k = 1; k < K; ++k) s += acc[k];
    return s[0];
}

double fma_peak(double seconds) {
    using clock = std::chrono::steady_clock;
    long iters = 1 << 16;
    volatile float sink = 0.f;
    double best = 0.0;
    const auto stop = clock::now() + std::chrono::duration<double>(seconds);
    while (clock::now() < stop) {
        const auto t0 = clock::now();
        sink = sink + fma_burst(iters, 0.999f, 1e-4f);
        const double dt = std::chrono::duration<double>(clock::now() - t0).count();
        best = std::max(best, 2.0 * 16 * L * static_cast<double>(iters) / dt * 1e-9);
        if (dt < 0.01) iters *= 2;
    }
    return best;
}

}  // namespace

namespace variants {
const KernelSet& JCW_VARIANT() {
    static const KernelSet set{JCW_STR(JCW_VARIANT), JCW_ISA, L, NV, conv, kDenseRows, kDenseVecs, dense, cv, depthwise, dw3_direct, dw_flat, fma_peak};
    return set;
}
}  // namespace variants

}  // namespace jcw
