// Depthwise kernels: generic taps over planes, 3x3 stride 1 / stride 2 straight from the input,
// 3x3 stride 1 on images narrower than a vector.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../simd.h"
#include "depthwise_a53.h"
#include "geometry.h"

namespace jcw {
// Internal linkage: every kernel-variant translation unit (compiled with its own ISA flags, see
// CMakeLists.txt) gets its own copy, so no instance compiled for one ISA is shared with another.
namespace {

using simd::vec;

// Depthwise: output row by output row, vectors of L pixels read straight from the channel's
// plane(s) at per-tap offsets and stored straight to the output.  A row's partial last vector
// is computed overlapping the previous one before the row's other stores and stored after them,
// so an in-place residual (residual == out) stays correct.  TAPS > 0 fixes the tap count at
// compile time (3x3); 0 reads it at run time.  Needs g.wo >= L.
template <int L, int TAPS, bool M>
void depthwise_range(const Geometry& g, int c0, int c1, int plane_floats, const int32_t* tap_off, int taps_rt,
                     const float* dw, const float* bias, float* out, const float* residual, Act act) {
    const int taps = TAPS > 0 ? TAPS : taps_rt;
    const int hw = g.ho * g.wo;
    for (int c = c0; c < c1; ++c) {
        const float* base = g.base + static_cast<size_t>(c) * plane_floats;
        const float* w = dw + static_cast<size_t>(c) * taps;
        auto pixels = [&](const float* in, int x, const float* res) {
            // Four chains: one chain of k * k FMAs waits on the FMA latency at every tap.
            vec<L> acc = simd::splat<L>(bias[c]), a1 = simd::splat<L>(0.f), a2 = a1, a3 = a1;
            int t = 0;
            for (; t + 4 <= taps; t += 4) {
                acc += w[t] * simd::load<L>(in + x + tap_off[t]);
                a1 += w[t + 1] * simd::load<L>(in + x + tap_off[t + 1]);
                a2 += w[t + 2] * simd::load<L>(in + x + tap_off[t + 2]);
                a3 += w[t + 3] * simd::load<L>(in + x + tap_off[t + 3]);
            }
            for (; t < taps; ++t) acc += w[t] * simd::load<L>(in + x + tap_off[t]);
            acc += (a1 + a2) + a3;
            if (res) acc += simd::load<L>(res + x);
            return simd::activate<L, M>(acc, act);
        };
        for (int y = 0; y < g.ho; ++y) {
            const float* in = base + static_cast<size_t>(y) * g.wv;
            const size_t o = static_cast<size_t>(c) * hw + static_cast<size_t>(y) * g.wo;
            const float* res = residual ? residual + o : nullptr;
            const vec<L> last = pixels(in, g.wo - L, res);
            for (int x = 0; x + L < g.wo; x += L) simd::store<L>(out + o + x, pixels(in, x, res));
            simd::store<L>(out + o + g.wo - L, last);
        }
    }
}

// Lane shifts with a zero shifted in: low(v) = (0, v0, .., v[L-2]), high(v) = (v1, .., v[L-1], 0).
template <int L, int Shift>
inline vec<L> shift_lanes(vec<L> v) {  // r[i] = v[i + Shift] where 0 <= i + Shift < L, else 0
    return simd::shift_lanes<L, Shift>(v);
}
template <int L>
inline vec<L> shift_low(vec<L> v) { return shift_lanes<L, -1>(v); }
template <int L>
inline vec<L> shift_high(vec<L> v) { return shift_lanes<L, 1>(v); }

// Depthwise 3x3, stride 1, padding 1, read straight from the CHW input (no plane copy): the
// columns left of 0 / right of w - 1 are zero lanes shifted into a row's first / last vector.
// The 9 weights stay in registers for the whole channel, and inner output rows go in pairs: the
// 4 input rows of a pair give both rows' 18 FMAs, in six independent 3-FMA chains (one chain of 9
// would wait on FMA latency).  The image's first and last rows (a zero row above / below) run
// alone.  A row's partial last vector is computed overlapping the previous one before the row's
// other stores and stored after them, so an in-place residual (residual == out) stays correct.
template <int L, bool First, bool Last>
inline void dw3_lmr(const float* r, vec<L>& l, vec<L>& m, vec<L>& q) {
    m = simd::load<L>(r);
    if constexpr (First) l = shift_low<L>(m); else l = simd::load<L>(r - 1);
    if constexpr (Last) q = shift_high<L>(m); else q = simd::load<L>(r + 1);
}

// Sum of the taps of kernel rows k[3 * ky0] .. for the input rows `rows[0..n)` at column x.
template <int L, bool First, bool Last>
inline vec<L> dw3_rows(const float* const* rows, int n, int ky0, int x, const vec<L>* k, vec<L> b) {
    vec<L> acc = b;
    for (int i = 0; i < n; ++i) {
        vec<L> l, m, q;
        dw3_lmr<L, First, Last>(rows[i] + x, l, m, q);
        const int ky = ky0 + i;
        acc += k[3 * ky] * l + k[3 * ky + 1] * m + k[3 * ky + 2] * q;
    }
    return acc;
}

// Output rows y and y + 1 (input rows r[0..3] = y - 1 .. y + 2) at column x.
template <int L, bool First, bool Last>
inline void dw3_pair(const float* const* r, int x, const vec<L>* k, vec<L> b, vec<L>& o0, vec<L>& o1) {
    vec<L> l0, m0, q0, l1, m1, q1, l2, m2, q2, l3, m3, q3;
    dw3_lmr<L, First, Last>(r[0] + x, l0, m0, q0);
    dw3_lmr<L, First, Last>(r[1] + x, l1, m1, q1);
    dw3_lmr<L, First, Last>(r[2] + x, l2, m2, q2);
    dw3_lmr<L, First, Last>(r[3] + x, l3, m3, q3);
    const vec<L> a0 = b + k[0] * l0 + k[1] * m0 + k[2] * q0;
    const vec<L> a1 = k[3] * l1 + k[4] * m1 + k[5] * q1;
    const vec<L> a2 = k[6] * l2 + k[7] * m2 + k[8] * q2;
    const vec<L> c0 = b + k[0] * l1 + k[1] * m1 + k[2] * q1;
    const vec<L> c1 = k[3] * l2 + k[4] * m2 + k[5] * q2;
    const vec<L> c2 = k[6] * l3 + k[7] * m3 + k[8] * q3;
    o0 = a0 + a1 + a2;
    o1 = c0 + c1 + c2;
}

template <int L, bool M>
inline vec<L> dw_epilogue(vec<L> acc, const float* res, int x, Act act) {
    if (res) acc += simd::load<L>(res + x);
    return simd::activate<L, M>(acc, act);
}

// Asm = false keeps in-order cores on the compiled loop (benchmarks/arm_mca_driver.cpp measures both).
template <int L, bool M, bool Asm = true>
void depthwise3x3_direct(const float* in, int h, int w, int c0, int c1, const float* dw, const float* bias,
                         float* out, const float* residual, Act act) {
    const size_t hw = static_cast<size_t>(h) * w;
    for (int c = c0; c < c1; ++c) {
        const float* src = in + c * hw;
        vec<L> k[9];
        for (int t = 0; t < 9; ++t) k[t] = simd::splat<L>(dw[static_cast<size_t>(c) * 9 + t]);
        const vec<L> b = simd::splat<L>(bias[c]);
        for (int y = 0; y < h;) {
            const size_t o = c * hw + static_cast<size_t>(y) * w;
            float* out0 = out + o;
            const float* res0 = residual ? residual + o : nullptr;
            if (y == 0 || y + 2 >= h) {  // one row, with a zero row above or below
                const int ky0 = y == 0 ? 1 : 0, ky1 = y == h - 1 ? 2 : 3;
                const float* rows[3];
                for (int ky = ky0; ky < ky1; ++ky) rows[ky - ky0] = src + static_cast<size_t>(y + ky - 1) * w;
                const int n = ky1 - ky0;
                const vec<L> tail = dw_epilogue<L, M>(w == L ? dw3_rows<L, true, true>(rows, n, ky0, 0, k, b)
                                                          : dw3_rows<L, false, true>(rows, n, ky0, w - L, k, b),
                                                   res0, w - L, act);
                if (w > L) simd::store<L>(out0, dw_epilogue<L, M>(dw3_rows<L, true, false>(rows, n, ky0, 0, k, b), res0, 0, act));
                for (int x = L; x + L < w; x += L)
                    simd::store<L>(out0 + x, dw_epilogue<L, M>(dw3_rows<L, false, false>(rows, n, ky0, x, k, b), res0, x, act));
                simd::store<L>(out0 + w - L, tail);
                ++y;
                continue;
            }
            const float* rows[4];
            for (int i = 0; i < 4; ++i) rows[i] = src + static_cast<size_t>(y + i - 1) * w;
            float* out1 = out0 + w;
            const float* res1 = res0 ? res0 + w : nullptr;
            vec<L> t0, t1, v0, v1;
            if (w == L) dw3_pair<L, true, true>(rows, 0, k, b, t0, t1);
            else dw3_pair<L, false, true>(rows, w - L, k, b, t0, t1);
            t0 = dw_epilogue<L, M>(t0, res0, w - L, act);
            t1 = dw_epilogue<L, M>(t1, res1, w - L, act);
            if (w > L) {
                dw3_pair<L, true, false>(rows, 0, k, b, v0, v1);
                simd::store<L>(out0, dw_epilogue<L, M>(v0, res0, 0, act));
                simd::store<L>(out1, dw_epilogue<L, M>(v1, res1, 0, act));
            }
            int x = L;
#if defined(JCW_TUNE_IN_ORDER) && defined(__aarch64__)
            if constexpr (L == 4 && !M && Asm) {  // in-order cores: the scheduled assembly loop (act: None/Relu/Relu6)
                const int trips = w / 8;
                if (!res0 && trips >= 2) {
                    const int64_t n = (trips - 2) / 2, e = (trips - 2) % 2;
                    const float* wc = dw + static_cast<size_t>(c) * 9;
                    if (act == Act::Relu)
                        a53_dw3_pairs<1>(rows[0], rows[1], rows[2], rows[3], out0 + L, out1 + L, wc, bias + c, n, e);
                    else if (act == Act::Relu6)
                        a53_dw3_pairs<2>(rows[0], rows[1], rows[2], rows[3], out0 + L, out1 + L, wc, bias + c, n, e);
                    else
                        a53_dw3_pairs<0>(rows[0], rows[1], rows[2], rows[3], out0 + L, out1 + L, wc, bias + c, n, e);
                    x = 8 * trips - L;
                }
            }
#endif
            for (; x + L < w; x += L) {
                dw3_pair<L, false, false>(rows, x, k, b, v0, v1);
                simd::store<L>(out0 + x, dw_epilogue<L, M>(v0, res0, x, act));
                simd::store<L>(out1 + x, dw_epilogue<L, M>(v1, res1, x, act));
            }
            simd::store<L>(out0 + w - L, t0);
            simd::store<L>(out1 + w - L, t1);
            y += 2;
        }
    }
}

// Depthwise KxK (K odd), stride 1, padding K / 2 over the flattened channel: vectors run across
// rows.  Each channel is copied once (contiguously) between P * w + P zeros (P = K / 2), which
// supply the rows above and below; the column padding comes from 0/1 lane masks, one per column
// offset dx != 0 (masks[j * mstride + p] = 0 where column x(p) + dx is outside the row; j counts
// dx = -P .. P without 0).  Per vector, the K taps of one column offset sum in their own chain and
// are masked once.  Runs 3x3 on images narrower than a vector (14x14, 7x7 with 16 lanes; wider
// ones read the input in place above) and 5x5 on any image.  Needs h * w >= L.
template <int L, int K, bool M>
void depthwise_flat(const float* pad_in, size_t cstride, int h, int w, int c0, int c1, const float* masks,
                    size_t mstride, const float* dw, const float* bias, float* out, const float* residual, Act act) {
    constexpr int P = K / 2;
    const int hw = h * w;
    for (int c = c0; c < c1; ++c) {
        const float* z = pad_in + c * cstride + P * w + P;  // z[p] = in[c][p]; zeros for P rows + P around
        const float* k = dw + static_cast<size_t>(c) * K * K;
        const size_t o = static_cast<size_t>(c) * hw;
        auto pixels = [&](int p) {
            vec<L> acc = simd::splat<L>(bias[c]);
            for (int dx = -P; dx <= P; ++dx) {
                vec<L> s = simd::splat<L>(0.f);
                for (int dy = -P; dy <= P; ++dy) s += k[(dy + P) * K + dx + P] * simd::load<L>(z + p + dy * w + dx);
                if (dx == 0)
                    acc += s;
                else
                    acc += s * simd::load<L>(masks + (dx < 0 ? dx + P : dx + P - 1) * mstride + p);
            }
            if (residual) acc += simd::load<L>(residual + o + p);
            return simd::activate<L, M>(acc, act);
        };
        const vec<L> tail = pixels(hw - L);
        for (int p = 0; p + L < hw; p += L) simd::store<L>(out + o + p, pixels(p));
        simd::store<L>(out + o + hw - L, tail);
    }
}

using simd::deinterleave;
using simd::join_prev;

// Depthwise 3x3, stride 2, padding 1, straight from the input: output x reads input columns
// 2x - 1, 2x, 2x + 1 = (odd lanes one step left, even lanes, odd lanes) of the 2L floats at 2x.
// Weights stay in registers per channel.  Vectors run left to right and each input row carries its
// previous odd lanes, so "one step left" is one two-vector shuffle (zeros before column 0).  The
// overlapped last vector is computed first (in-place residual) from loads at 2x - 2; on odd widths
// it reads a zero-padded copy of the row's tail.
template <int L, bool M, bool Asm = true>
void depthwise3x3s2_direct(const float* in, int h, int w, int c0, int c1, const float* dw, const float* bias,
                           float* out, const float* residual, Act act) {
    const int ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
    const size_t hw = static_cast<size_t>(h) * w, ohw = static_cast<size_t>(ho) * wo;
    const int xt = wo - L;                  // the last vector's first output
    const bool tail_copy = 2 * wo > w;      // odd width: the last vector's loads pass the row end
    float buf[2 * L + 2];
    for (int c = c0; c < c1; ++c) {
        const float* src = in + c * hw;
        vec<L> k[9];
        for (int t = 0; t < 9; ++t) k[t] = simd::splat<L>(dw[static_cast<size_t>(c) * 9 + t]);
        const vec<L> b = simd::splat<L>(bias[c]);
        for (int y = 0; y < ho; ++y) {
            const int ky0 = y == 0 ? 1 : 0, ky1 = 2 * y + 1 < h ? 3 : 2, n = ky1 - ky0;
            const float* rows[3];
            for (int i = 0; i < n; ++i) rows[i] = src + static_cast<size_t>(2 * y + ky0 + i - 1) * w;
            const size_t o = c * ohw + static_cast<size_t>(y) * wo;
            const float* res = residual ? residual + o : nullptr;
            vec<L> tail = b;
            for (int i = 0; i < n; ++i) {
                const float* r = rows[i] + 2 * xt;  // columns 2xt - 2 .. 2xt + 2L - 1 from r - 2
                if (tail_copy || xt == 0) {
                    const int avail = w - 2 * xt;
                    for (int j = 0; j < 2 * L + 2; ++j) {
                        const int col = j - 2;
                        buf[j] = col >= -2 * xt && col < avail ? r[col] : 0.f;
                    }
                    r = buf + 2;
                }
                const vec<L> p0 = simd::load<L>(r - 2), p1 = simd::load<L>(r - 2 + L);
                const vec<L> a0 = simd::load<L>(r), a1 = simd::load<L>(r + L);
                const int ky = ky0 + i;
                tail += k[3 * ky] * deinterleave<L, 1>(p0, p1) + k[3 * ky + 1] * deinterleave<L, 0>(a0, a1) +
                        k[3 * ky + 2] * deinterleave<L, 1>(a0, a1);
            }
            tail = dw_epilogue<L, M>(tail, res, xt, act);
            if (n == 3) {  // inner rows (all but the image's first / last): taps fixed at compile time
                const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];
                vec<L> p0{}, p1{}, p2{};
                int x = 0;
#if defined(JCW_TUNE_IN_ORDER) && defined(__aarch64__)
                if constexpr (L == 4 && !M && Asm) {  // in-order cores: the scheduled assembly loop
                    const int trips = w / 16;         // reads columns [0, 16 trips), writes outputs [0, 8 trips)
                    if (!res && trips >= 2) {
                        const int64_t nt = (trips - 2) / 2, e = (trips - 2) % 2;
                        const float* wc = dw + static_cast<size_t>(c) * 9;
                        if (act == Act::Relu)
                            a53_dw3s2_row<1>(r0, r1, r2, out + o, wc, bias + c, nt, e);
                        else if (act == Act::Relu6)
                            a53_dw3s2_row<2>(r0, r1, r2, out + o, wc, bias + c, nt, e);
                        else
                            a53_dw3s2_row<0>(r0, r1, r2, out + o, wc, bias + c, nt, e);
                        x = 8 * trips;
                        vec<L> unused;  // the odd lanes of the input pairs left of x (the loop's carry)
                        simd::load_even_odd<L>(r0 + 2 * (x - L), unused, p0);
                        simd::load_even_odd<L>(r1 + 2 * (x - L), unused, p1);
                        simd::load_even_odd<L>(r2 + 2 * (x - L), unused, p2);
                    }
                }
#endif
                for (; x + L < wo; x += L) {
                    vec<L> m0, o0, m1, o1, m2, o2;
                    simd::load_even_odd<L>(r0 + 2 * x, m0, o0);
                    simd::load_even_odd<L>(r1 + 2 * x, m1, o1);
                    simd::load_even_odd<L>(r2 + 2 * x, m2, o2);
                    const vec<L> a0 = b + k[0] * join_prev<L>(p0, o0) + k[1] * m0 + k[2] * o0;
                    const vec<L> a1 = k[3] * join_prev<L>(p1, o1) + k[4] * m1 + k[5] * o1;
                    const vec<L> a2 = k[6] * join_prev<L>(p2, o2) + k[7] * m2 + k[8] * o2;
                    p0 = o0, p1 = o1, p2 = o2;
                    simd::store<L>(out + o + x, dw_epilogue<L, M>(a0 + a1 + a2, res, x, act));
                }
            } else {
                vec<L> prev[3] = {vec<L>{}, vec<L>{}, vec<L>{}};
                for (int x = 0; x + L < wo; x += L) {
                    vec<L> acc = b;
                    for (int i = 0; i < n; ++i) {
                        vec<L> mid, right;
                        simd::load_even_odd<L>(rows[i] + 2 * x, mid, right);
                        const int ky = ky0 + i;
                        acc += k[3 * ky] * join_prev<L>(prev[i], right) + k[3 * ky + 1] * mid + k[3 * ky + 2] * right;
                        prev[i] = right;
                    }
                    simd::store<L>(out + o + x, dw_epilogue<L, M>(acc, res, x, act));
                }
            }
            simd::store<L>(out + o + xt, tail);
        }
    }
}


}  // namespace
}  // namespace jcw
