// Conv2d: 4x1-block packing, input re-layout into padded phase planes, register-tiled kernels.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ops.h"
#include "simd.h"

namespace jcw {

namespace {

using simd::vec;

// Blocks kept below this fraction run on the sparse (block-skipping) packing in Auto mode.
// Measured: the packed stream with every block kept runs the same micro-kernel, so skipping is
// never slower; the cut-off only keeps exactly-dense layers on the dense packing.
constexpr double kAutoSparseBelow = 1.0;
// Dense 1x1 stride-1 layers on images of at most this many pixels run vectorised over output
// channels (cv_blocks); measured against the pixel-vectorised kernel in benchmarks/kernels.py.
constexpr int kChannelVectorisedPixels = 64;

// Geometry of one run: the input is read through "virtual" output positions q = y * wv + x
// over planes of width wv; columns x >= wo of a virtual row are computed and discarded.
struct Geometry {
    int ho, wo, wv;      // output rows (of this band) and columns, virtual row width
    int hw;              // floats from one output channel to the next
    int qend;            // (ho - 1) * wv + wo: positions past it are computed and discarded
    bool prefetch_in = false;  // short rows, input-dominated (rows inner): prefetch the next tile's input
    const float* base;   // plane data (the input itself for 1x1 stride 1 without padding)
};

// Rows of at most this many blocks prefetch the next tile's input when all rows run per tile
// (large inputs): with few FMAs per loaded vector the kernel waits on memory (stems, 1x1 layers
// on large images); longer rows are compute-bound and the extra load-port op per block costs
// more than it saves, and with rows outer the input is already in L2.
constexpr int kPrefetchInputBlocks = 160;

// Tile of `NV` vectors of L pixels starting at virtual position q, `rows` out of 4 stored.
// Stores prefetch the same output lines of the next tile for writing; PF also prefetches its input.
template <int L, int NV, bool PF = false>
inline void tile_rows(const Geometry& g, int q, int first, int r0, int r1, const float* packed,
                      const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual,
                      Act act) {
    constexpr int W = L * NV;
    float tmp[4][W];
    // Segments of this tile that map to valid output pixels: (tile lane, output index, length).
    int seg_j[W], seg_o[W], seg_n[W], nseg = 0;
    seg_j[0] = seg_o[0] = seg_n[0] = 0;
    if (g.wv == g.wo) {  // no discarded columns: the tile is one run of outputs
        seg_j[0] = first, seg_o[0] = q + first, seg_n[0] = std::max(0, std::min(W, g.qend - q) - first), nseg = 1;
    }
    for (int j = nseg ? W : first; j < W;) {
        const int qq = q + j, y = qq / g.wv, x = qq - y * g.wv;
        if (y >= g.ho) break;
        if (x >= g.wo) {
            j += g.wv - x;
            continue;
        }
        const int n = std::min(W - j, g.wo - x);
        seg_j[nseg] = j, seg_o[nseg] = y * g.wo + x, seg_n[nseg] = n, ++nseg;
        j += n;
    }
    const int hw = g.hw;
    const float* in = g.base + q;
    for (int r = r0; r < r1; ++r) {
        const float* w = packed + 4 * (static_cast<size_t>(row_start[r]) + r);
        vec<L> acc[4][NV];
        for (int i = 0; i < 4; ++i)
            for (int v = 0; v < NV; ++v) acc[i][v] = simd::splat<L>(w[i]);
        w += 4;
        // Next tile's input: one of its NV lines per block, a different one per row.
        const int pf = W + (r % NV) * L;
        for (int b = row_start[r], e = row_start[r + 1]; b < e; ++b, w += 4) {
            const float* p = in + off[b];
            if constexpr (PF) __builtin_prefetch(p + pf);
            vec<L> x[NV];
            for (int v = 0; v < NV; ++v) x[v] = simd::load<L>(p + v * L);
            for (int i = 0; i < 4; ++i)
                for (int v = 0; v < NV; ++v) acc[i][v] += w[i] * x[v];
        }
        const int nrow = std::min(4, out_ch - 4 * r);
        if (nseg == 1 && seg_n[0] == W) {  // whole tile is one contiguous run of outputs: store from registers
            for (int i = 0; i < nrow; ++i) {
                const size_t o = (4 * static_cast<size_t>(r) + i) * hw + seg_o[0];
                for (int v = 0; v < NV; ++v) {
                    __builtin_prefetch(out + o + W + v * L, 1);
                    vec<L> y = acc[i][v];
                    if (residual) y += simd::load<L>(residual + o + v * L);
                    simd::store<L>(out + o + v * L, simd::activate<L>(y, act));
                }
            }
            continue;
        }
        for (int i = 0; i < nrow; ++i) {
            for (int v = 0; v < NV; ++v) simd::store<L>(tmp[i] + v * L, acc[i][v]);
            const size_t oc = 4 * static_cast<size_t>(r) + i;
            float* o = out + oc * hw;
            const float* res = residual ? residual + oc * hw : nullptr;
            for (int s = 0; s < nseg; ++s)
                simd::emit<L>(tmp[i] + seg_j[s], res ? res + seg_o[s] : nullptr, o + seg_o[s], seg_n[s], act);
        }
    }
}

// All tiles of virtual range [q0, q1) for block rows [r0, r1); needs g.qend >= L.  rows_outer:
// finish one block row over all tiles before the next (weights stay in cache: small images);
// else run all rows per tile (the input tile stays in cache: large images).
template <int L>
void conv_range(const Geometry& g, int q0, int q1, int r0, int r1, bool rows_outer, const float* packed,
                const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual,
                Act act) {
    if (rows_outer) {  // chunks of block rows whose weights fit in L1, all tiles per chunk
        constexpr int32_t kChunkBlocks = 1536;  // 1536 * (16 + 4) bytes = 30 KiB
        for (int r = r0; r < r1;) {
            int e = r + 1;
            while (e < r1 && row_start[e + 1] - row_start[r] <= kChunkBlocks) ++e;
            conv_range<L>(g, q0, q1, r, e, false, packed, row_start, off, out_ch, out, residual, act);
            r = e;
        }
        return;
    }
    constexpr int NV = JCW_TILE_VECS;
    int q = q0;
    for (; q + NV * L <= q1; q += NV * L)
        if (g.prefetch_in)
            tile_rows<L, NV, true>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
        else
            tile_rows<L, NV>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    if constexpr (NV > 2)
        for (; q + 2 * L <= q1; q += 2 * L)
            tile_rows<L, 2>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    for (; q + L <= q1; q += L) tile_rows<L, 1>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    if (q < q1)  // last partial vector: recompute an overlapping full vector, store only the new lanes
        tile_rows<L, 1>(g, q1 - L, q - (q1 - L), r0, r1, packed, row_start, off, out_ch, out, residual, act);
}

// Dense 1x1 stride-1 convolution on small images, vectorised over output channels: a tile is
// L output channels x P pixels held in P accumulators, each step one weight vector (L channels
// at one input channel) times P broadcast input pixels.  Pixel vectors would fill only 49 of 64
// lanes at 7x7 (and recompute a whole vector for the last pixel); channel vectors are always
// full.  wblk: K x L weights of the tile's channel block (zero past out_ch), bias: L floats.
template <int L, int P>
inline void cv_tile(const float* wblk, const float* bias, const float* in, int k, int hw, int p0, int co0, int nco,
                    float* out, const float* residual, Act act) {
    vec<L> acc[P];
    const vec<L> b = simd::load<L>(bias);
    for (int j = 0; j < P; ++j) acc[j] = b;
    const float* x = in + p0;
    for (int c = 0; c < k; ++c, x += hw) {
        const vec<L> w = simd::load<L>(wblk + static_cast<size_t>(c) * L);
        for (int j = 0; j < P; ++j) acc[j] += w * x[j];
    }
    float t[P][L], row[P];
    for (int j = 0; j < P; ++j) simd::store<L>(t[j], acc[j]);
    for (int l = 0; l < nco; ++l) {
        for (int j = 0; j < P; ++j) row[j] = t[j][l];
        const size_t o = static_cast<size_t>(co0 + l) * hw + p0;
        simd::emit<1>(row, residual ? residual + o : nullptr, out + o, P, act);
    }
}

template <int L>
void cv_blocks(const float* cv, const float* bias, const float* in, int k, int hw, int out_ch, int b0, int b1,
               float* out, const float* residual, Act act) {
    constexpr int P = 7;
    for (int b = b0; b < b1; ++b) {
        const float* wblk = cv + static_cast<size_t>(b) * k * L;
        const int co0 = b * L, nco = std::min(L, out_ch - co0);
        int p = 0;
        for (; p + P <= hw; p += P) cv_tile<L, P>(wblk, bias + co0, in, k, hw, p, co0, nco, out, residual, act);
        switch (hw - p) {
#define JCW_CV(N) case N: cv_tile<L, N>(wblk, bias + co0, in, k, hw, p, co0, nco, out, residual, act); break;
            JCW_CV(1) JCW_CV(2) JCW_CV(3) JCW_CV(4) JCW_CV(5) JCW_CV(6)
#undef JCW_CV
            default: break;
        }
    }
}

// Depthwise: output row by output row, vectors of L pixels read straight from the channel's
// plane(s) at per-tap offsets and stored straight to the output.  A row's partial last vector
// is computed overlapping the previous one before the row's other stores and stored after them,
// so an in-place residual (residual == out) stays correct.  TAPS > 0 fixes the tap count at
// compile time (3x3); 0 reads it at run time.  Needs g.wo >= L.
template <int L, int TAPS>
void depthwise_range(const Geometry& g, int c0, int c1, int plane_floats, const int32_t* tap_off, int taps_rt,
                     const float* dw, const float* bias, float* out, const float* residual, Act act) {
    const int taps = TAPS > 0 ? TAPS : taps_rt;
    const int hw = g.ho * g.wo;
    for (int c = c0; c < c1; ++c) {
        const float* base = g.base + static_cast<size_t>(c) * plane_floats;
        const float* w = dw + static_cast<size_t>(c) * taps;
        auto pixels = [&](const float* in, int x, const float* res) {
            vec<L> acc = simd::splat<L>(bias[c]);
            for (int t = 0; t < taps; ++t) acc += w[t] * simd::load<L>(in + x + tap_off[t]);
            if (res) acc += simd::load<L>(res + x);
            return simd::activate<L>(acc, act);
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

template <int L>
inline vec<L> dw_epilogue(vec<L> acc, const float* res, int x, Act act) {
    if (res) acc += simd::load<L>(res + x);
    return simd::activate<L>(acc, act);
}

template <int L>
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
                const vec<L> tail = dw_epilogue<L>(w == L ? dw3_rows<L, true, true>(rows, n, ky0, 0, k, b)
                                                          : dw3_rows<L, false, true>(rows, n, ky0, w - L, k, b),
                                                   res0, w - L, act);
                if (w > L) simd::store<L>(out0, dw_epilogue<L>(dw3_rows<L, true, false>(rows, n, ky0, 0, k, b), res0, 0, act));
                for (int x = L; x + L < w; x += L)
                    simd::store<L>(out0 + x, dw_epilogue<L>(dw3_rows<L, false, false>(rows, n, ky0, x, k, b), res0, x, act));
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
            t0 = dw_epilogue<L>(t0, res0, w - L, act);
            t1 = dw_epilogue<L>(t1, res1, w - L, act);
            if (w > L) {
                dw3_pair<L, true, false>(rows, 0, k, b, v0, v1);
                simd::store<L>(out0, dw_epilogue<L>(v0, res0, 0, act));
                simd::store<L>(out1, dw_epilogue<L>(v1, res1, 0, act));
            }
            for (int x = L; x + L < w; x += L) {
                dw3_pair<L, false, false>(rows, x, k, b, v0, v1);
                simd::store<L>(out0 + x, dw_epilogue<L>(v0, res0, x, act));
                simd::store<L>(out1 + x, dw_epilogue<L>(v1, res1, x, act));
            }
            simd::store<L>(out0 + w - L, t0);
            simd::store<L>(out1 + w - L, t1);
            y += 2;
        }
    }
}

// Depthwise 3x3, stride 1, padding 1 on images narrower than a vector (14x14, 7x7): vectors run
// over the flattened channel across rows.  Each channel is copied once (contiguously) between
// w + 1 zeros, which supply the rows above and below; the column padding comes from 0/1 lane masks
// (mask_l[p] = 0 where p is a row's first pixel, mask_r[p] = 0 at its last).  Needs h * w >= L.
template <int L>
void depthwise3x3_flat(const float* pad_in, size_t cstride, int h, int w, int c0, int c1, const float* mask_l,
                       const float* mask_r, const float* dw, const float* bias, float* out, const float* residual,
                       Act act) {
    const int hw = h * w;
    for (int c = c0; c < c1; ++c) {
        const float* z = pad_in + c * cstride + w + 1;  // z[p] = in[c][p]; zeros for p in [-w-1, 0) and [hw, hw+w]
        const float* k = dw + static_cast<size_t>(c) * 9;
        const size_t o = static_cast<size_t>(c) * hw;
        auto pixels = [&](int p) {
            vec<L> acc = simd::splat<L>(bias[c]);
            const vec<L> ml = simd::load<L>(mask_l + p), mr = simd::load<L>(mask_r + p);
            for (int ky = 0; ky < 3; ++ky) {
                const float* r = z + p + (ky - 1) * w;
                acc += (k[3 * ky] * ml) * simd::load<L>(r - 1) + k[3 * ky + 1] * simd::load<L>(r) +
                       (k[3 * ky + 2] * mr) * simd::load<L>(r + 1);
            }
            if (residual) acc += simd::load<L>(residual + o + p);
            return simd::activate<L>(acc, act);
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
template <int L>
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
            tail = dw_epilogue<L>(tail, res, xt, act);
            vec<L> prev[3] = {vec<L>{}, vec<L>{}, vec<L>{}};
            for (int x = 0; x + L < wo; x += L) {
                vec<L> acc = b;
                for (int i = 0; i < n; ++i) {
                    const float* r = rows[i] + 2 * x;
                    const vec<L> a0 = simd::load<L>(r), a1 = simd::load<L>(r + L);
                    const vec<L> right = deinterleave<L, 1>(a0, a1);
                    const int ky = ky0 + i;
                    acc += k[3 * ky] * join_prev<L>(prev[i], right) + k[3 * ky + 1] * deinterleave<L, 0>(a0, a1) +
                           k[3 * ky + 2] * right;
                    prev[i] = right;
                }
                simd::store<L>(out + o + x, dw_epilogue<L>(acc, res, x, act));
            }
            simd::store<L>(out + o + xt, tail);
        }
    }
}

struct PlaneLayout {
    bool direct;     // 1x1, stride 1, no padding, big enough image: read the input in place
    int bands, hb;   // row bands of hb output rows (the last may be shorter), each with its own planes
    int hq, wq;      // plane rows (of one band) and columns
    int pk_h, pk_w;  // phases used along h / w: min(stride, k); shifted: 1 and kw
    bool shifted;    // stride 1 on narrow images: one plane per column tap kx, no padding columns
    int plane;       // floats from one plane to the next (>= hq * wq), a multiple of 16
    int qrun;        // virtual positions the kernel runs in a band: qend, or one whole tile when qend is smaller
};

inline size_t round16(size_t n) { return (n + 15) & ~size_t(15); }

// Virtual positions the kernel runs for `qend` valid ones: on small images (e.g. 7x7) one full
// register tile over zero-padded planes beats a cascade of narrow tiles (fewer loads per FMA), at
// the price of discarded lanes.
constexpr int kTile = JCW_LANES * JCW_TILE_VECS;
inline int run_positions(int qend) { return JCW_LANES > 1 && qend < kTile ? kTile : qend; }

// Planes of `bands` row bands (1: the whole image).  Band t holds the plane rows that output rows
// [t hb, (t + 1) hb) read, halo rows included, for every channel, contiguously: a thread that
// writes and convolves one band touches one block of memory.  (With one set of planes split by
// rows instead, the two threads' rows alternate every plane, and the hardware prefetchers pull
// each other's lines across: measured, 2 threads wrote the planes no faster than 1.)
PlaneLayout plane_layout(int ho, int wo, int kh, int kw, int stride, int pad, int bands = 1) {
    PlaneLayout p;
    p.hb = (ho + std::clamp(bands, 1, ho) - 1) / std::clamp(bands, 1, ho);
    p.bands = (ho + p.hb - 1) / p.hb;  // none empty
    p.direct = kh == 1 && kw == 1 && stride == 1 && pad == 0 && p.bands == 1;
    p.hq = p.hb + (kh - 1) / stride;
    p.wq = wo + (kw - 1) / stride;
    p.pk_h = std::min(stride, kh);
    p.pk_w = std::min(stride, kw);
    // Stride 1 on narrow images (padding columns >= 1/8 of a row are computed and discarded):
    // kw planes per channel, plane kx[Y][X] = in[Y - pad][X + kx - pad], so the virtual rows are
    // exactly the output rows; the generic stride-1 plane writer produces them with b = kx.
    if (stride == 1 && kw > 1 && 8 * (kw - 1) > wo && (p.hb - 1) * p.wq + wo >= kTile) {
        p.shifted = true;
        p.wq = wo;
        p.pk_h = 1;
        p.pk_w = kw;
    } else {
        p.shifted = false;
    }
    const int qend = (p.hb - 1) * p.wq + wo;
    p.qrun = run_positions(qend);
    if (p.qrun != qend) p.direct = false;
    p.plane = static_cast<int>(round16(std::max(p.hq * p.wq, p.qrun + (kh - 1) / stride * p.wq + (kw - 1) / stride)));
    return p;
}

// Floats of one band's planes (all channels), a multiple of 16.
inline size_t band_floats(const PlaneLayout& p, int in_ch) {
    return round16(static_cast<size_t>(in_ch) * p.pk_h * p.pk_w * p.plane);
}

// d[X] = s[2 X + shift] for X in [x0, x1), all indices inside the row of w floats: even lanes of
// 2L-float loads while they stay in the row, then one by one.
inline void copy_even(const float* s, int shift, int x0, int x1, int w, float* d) {
    constexpr int L = JCW_LANES;
    int X = x0;
    for (; X + L <= x1 && 2 * X + shift + 2 * L <= w; X += L)
        simd::store<L>(d + X, deinterleave<L, 0>(simd::load<L>(s + 2 * X + shift), simd::load<L>(s + 2 * X + shift + L)));
    for (; X < x1; ++X) d[X] = s[2 * X + shift];
}

// Writes the zero-padded, phase-split planes of channels [c0, c1) of the band whose first plane row
// is row `y0` of the image's: plane (c, a, b)[Y][X] = in[c][s*(y0 + Y) + a - pad][s*X + b - pad]
// (0 outside the input and past the last row).  Which rows and columns read the input depends
// only on the phase (a, b), so it is found once per call, not per channel or row.  With stride 1
// and planes as wide as the input (the shifted layout of "same" padding), a plane is one flat copy
// of the input moved by a constant offset, and only the columns that wrapped around a row edge
// are zeroed afterwards.
void make_planes(const float* in, int h, int w, const PlaneLayout& p, int stride, int pad, int c0, int c1, int y0,
                 float* planes) {
    const size_t plane = p.plane, wq = p.wq;
    const bool flat = stride == 1 && p.wq == w;
    struct Phase {
        int Y0, Y1, x0, x1;  // plane rows that read input rows, columns that read input columns
        int64_t off;         // input column (stride 1: flat input index) of plane column 0 (flat index 0)
        size_t lo, hi;       // flat: the copied floats
    };
    std::vector<Phase> phases(static_cast<size_t>(p.pk_h) * p.pk_w);
    for (int a = 0; a < p.pk_h; ++a)
        for (int b = 0; b < p.pk_w; ++b) {
            Phase& f = phases[a * p.pk_w + b];
            f.Y0 = std::clamp((pad - a + stride - 1) / stride - y0, 0, p.hq);
            f.Y1 = std::clamp((h + pad - a + stride - 1) / stride - y0, f.Y0, p.hq);
            f.x0 = std::clamp((pad - b + stride - 1) / stride, 0, p.wq);
            f.x1 = std::clamp((w + pad - b + stride - 1) / stride, f.x0, p.wq);
            f.off = b - pad;
            if (flat) {  // dst[j] = src[j + off] over rows Y0..Y1, clipped to the input
                f.off += static_cast<int64_t>(y0 + a - pad) * w;
                const int64_t j0 = static_cast<int64_t>(f.Y0) * w, j1 = static_cast<int64_t>(f.Y1) * w;
                const int64_t lo = std::clamp(-f.off, j0, j1);
                f.lo = lo;
                f.hi = std::clamp(static_cast<int64_t>(h) * w - f.off, lo, j1);
            }
        }
    for (int c = c0; c < c1; ++c) {
        const float* src = in + static_cast<size_t>(c) * h * w;
        for (int a = 0; a < p.pk_h; ++a)
            for (int b = 0; b < p.pk_w; ++b) {
                const Phase& f = phases[a * p.pk_w + b];
                float* dst = planes + (static_cast<size_t>(c) * p.pk_h * p.pk_w + a * p.pk_w + b) * plane;
                if (flat) {  // zeros, the shifted copy, zeros; then the columns that wrapped round a row edge
                    std::memset(dst, 0, sizeof(float) * f.lo);
                    std::memcpy(dst + f.lo, src + f.lo + f.off, sizeof(float) * (f.hi - f.lo));
                    std::memset(dst + f.hi, 0, sizeof(float) * (plane - f.hi));
                    if (f.x0 > 0 || f.x1 < p.wq)
                        for (int Y = f.Y0; Y < f.Y1; ++Y) {
                            float* d = dst + Y * wq;
                            for (int X = 0; X < f.x0; ++X) d[X] = 0.f;
                            for (int X = f.x1; X < p.wq; ++X) d[X] = 0.f;
                        }
                    continue;
                }
                std::memset(dst, 0, sizeof(float) * (f.Y0 * wq));
                std::memset(dst + f.Y1 * wq, 0, sizeof(float) * (plane - f.Y1 * wq));
                for (int Y = f.Y0; Y < f.Y1; ++Y) {
                    float* d = dst + Y * wq;
                    const float* s = src + static_cast<size_t>(stride * (y0 + Y) + a - pad) * w;
                    for (int X = 0; X < f.x0; ++X) d[X] = 0.f;
                    if (stride == 1)
                        std::memcpy(d + f.x0, s + f.x0 + f.off, sizeof(float) * (f.x1 - f.x0));
                    else if (stride == 2)
                        copy_even(s, static_cast<int>(f.off), f.x0, f.x1, w, d);
                    else
                        for (int X = f.x0; X < f.x1; ++X) d[X] = s[stride * X + f.off];
                    for (int X = f.x1; X < p.wq; ++X) d[X] = 0.f;
                }
            }
    }
}

// Offset (floats) of tap (c, ky, kx) relative to the virtual output position.
inline int32_t tap_offset(const PlaneLayout& p, int stride, int c, int ky, int kx) {
    const int phase = p.shifted ? kx : (ky % stride) * p.pk_w + (kx % stride);
    const size_t plane = p.plane;
    return static_cast<int32_t>((static_cast<size_t>(c) * p.pk_h * p.pk_w + phase) * plane +
                                static_cast<size_t>(ky / stride) * p.wq + (p.shifted ? 0 : kx / stride));
}

// fn(i0, i1) over contiguous ranges of [0, n) run by the pool: one range on one thread, else
// 4 per thread (a thread that gets descheduled leaves its ranges to the others).
template <class F>
void parallel_ranges(ThreadPool& pool, int n, F&& fn) {
    const int parts = std::min(n, pool.size() == 1 ? 1 : pool.size() * 4);
    pool.parallel_for(parts, [&](int i) {
        fn(static_cast<int>(static_cast<int64_t>(n) * i / parts), static_cast<int>(static_cast<int64_t>(n) * (i + 1) / parts));
    });
}

// Widest vector (JCW_LANES, 8, 4 or 1) that fits an output row of `wo` pixels.
int row_lanes(int wo) {
    if (!force_scalar())
        for (int l : {JCW_LANES, 8, 4})
            if (l <= JCW_LANES && l <= wo) return l;
    return 1;
}

int pick_lanes(int qend) {
    if (force_scalar() || JCW_LANES == 1) return 1;
    if (qend >= JCW_LANES) return JCW_LANES;
    return qend >= 4 ? 4 : 1;
}

}  // namespace

Conv2d::Conv2d(const float* weight, const float* bias, int out_ch, int in_ch, int kh, int kw, int stride, int pad,
               int groups, Act act, ConvMode mode)
    : offset_cache_(std::make_shared<OffsetCache>()), channel_pack_(std::make_shared<ChannelPack>()),
      out_ch_(out_ch), in_ch_(in_ch), kh_(kh), kw_(kw), stride_(stride), pad_(pad), groups_(groups), act_(act) {
    if (!weight) throw std::invalid_argument("Conv2d: weight is null");
    if (out_ch < 1 || in_ch < 1 || kh < 1 || kw < 1 || stride < 1 || pad < 0 || groups < 1)
        throw std::invalid_argument("Conv2d: need out_ch, in_ch, kh, kw, stride, groups >= 1 and pad >= 0");
    if (in_ch % groups || out_ch % groups)
        throw std::invalid_argument("Conv2d: in_ch " + std::to_string(in_ch) + " and out_ch " + std::to_string(out_ch) +
                                    " must be divisible by groups " + std::to_string(groups));
    bias_.assign(out_ch, 0.f);
    if (bias) std::copy(bias, bias + out_ch, bias_.begin());
    const int icg = in_ch / groups, ocg = out_ch / groups, taps = kh * kw;
    if (groups > 1 && groups == in_ch && out_ch == in_ch) {
        depthwise_ = true;
        dw_.assign(weight, weight + static_cast<size_t>(out_ch) * taps);
        return;
    }
    // Position code c = ic * taps + t; weight of (oc, c) in the full (ungrouped) matrix.
    const int codes = in_ch * taps;
    auto wat = [&](int oc, int c) -> float {
        if (oc >= out_ch) return 0.f;
        const int ic = c / taps, g = oc / ocg;
        if (ic / icg != g) return 0.f;
        return weight[(static_cast<size_t>(oc) * icg + (ic - g * icg)) * taps + c % taps];
    };
    rows_ = (out_ch + 3) / 4;
    size_t nonzero = 0;
    std::vector<uint8_t> keep(static_cast<size_t>(rows_) * codes, 0);
    for (int r = 0; r < rows_; ++r)
        for (int c = 0; c < codes; ++c) {
            bool nz = false;
            for (int i = 0; i < 4; ++i) nz |= wat(4 * r + i, c) != 0.f;
            keep[static_cast<size_t>(r) * codes + c] = nz;
            nonzero += nz;
        }
    // Density counts blocks of the real (grouped) weight only.
    const double all_blocks = static_cast<double>(rows_) * icg * taps;
    density_ = static_cast<double>(nonzero) / all_blocks;
    sparse_ = mode == ConvMode::Sparse || (mode == ConvMode::Auto && density_ < kAutoSparseBelow);
    row_start_.assign(rows_ + 1, 0);
    for (int r = 0; r < rows_; ++r) {
        for (int i = 0; i < 4; ++i) packed_.push_back(4 * r + i < out_ch ? bias_[4 * r + i] : 0.f);
        for (int c = 0; c < codes; ++c) {
            bool in_group = false;  // dense packing keeps every block of the grouped weight
            for (int i = 0; i < 4 && 4 * r + i < out_ch; ++i) in_group |= (c / taps) / icg == (4 * r + i) / ocg;
            if (sparse_ ? !keep[static_cast<size_t>(r) * codes + c] : !in_group) continue;
            for (int i = 0; i < 4; ++i) packed_.push_back(wat(4 * r + i, c));
            codes_.push_back(c);
        }
        row_start_[r + 1] = static_cast<int32_t>(codes_.size());
    }
    if (!sparse_) density_ = 1.0;
}

// First block row of part i of n, balancing per-row work (blocks + a fixed per-row cost).
int Conv2d::row_split(int i, int n) const {
    if (i <= 0) return 0;
    if (i >= n) return rows_;
    const double per_row = 8.0;
    const double total = row_start_[rows_] + per_row * rows_, goal = total * i / n;
    int r = 0;
    while (r < rows_ && row_start_[r + 1] + per_row * (r + 1) <= goal) ++r;
    return r;
}

struct Conv2d::OffsetCache {
    std::mutex m;
    int h = -1, w = -1, bands = -1;
    std::shared_ptr<const std::vector<int32_t>> off;
};

struct Conv2d::ChannelPack {
    std::once_flag once;
    std::vector<float> w, bias;  // [block of L channels][in_ch][L], bias padded to whole blocks
};

bool Conv2d::channel_vectorised(int in_h, int in_w) const {
    return JCW_LANES > 1 && !force_scalar() && !sparse_ && !depthwise_ && kh_ == 1 && kw_ == 1 && stride_ == 1 &&
           pad_ == 0 && groups_ == 1 && in_h * in_w <= kChannelVectorisedPixels;
}

const Conv2d::ChannelPack& Conv2d::channel_pack() const {
    ChannelPack& c = *channel_pack_;
    std::call_once(c.once, [&] {
        constexpr int L = JCW_LANES;
        const int blocks = (out_ch_ + L - 1) / L;
        c.w.assign(static_cast<size_t>(blocks) * in_ch_ * L, 0.f);
        c.bias.assign(static_cast<size_t>(blocks) * L, 0.f);
        std::copy(bias_.begin(), bias_.end(), c.bias.begin());
        for (int oc = 0; oc < out_ch_; ++oc) {  // dense groups-1 packing: row r holds every c in order
            const int r = oc / 4, i = oc % 4;
            const float* row = packed_.data() + 4 * (static_cast<size_t>(row_start_[r]) + r) + 4;
            float* dst = c.w.data() + static_cast<size_t>(oc / L) * in_ch_ * L + oc % L;
            for (int ic = 0; ic < in_ch_; ++ic) dst[static_cast<size_t>(ic) * L] = row[4 * ic + i];
        }
    });
    return c;
}

std::shared_ptr<const std::vector<int32_t>> Conv2d::offsets(int in_h, int in_w, int bands) const {
    std::lock_guard<std::mutex> lk(offset_cache_->m);
    OffsetCache& c = *offset_cache_;
    if (c.off && c.h == in_h && c.w == in_w && c.bands == bands) return c.off;
    const PlaneLayout p = plane_layout(out_h(in_h), out_w(in_w), kh_, kw_, stride_, pad_, bands);
    const int taps = kh_ * kw_;
    std::vector<int32_t> tap(taps);
    for (int t = 0; t < taps; ++t) tap[t] = p.direct ? 0 : tap_offset(p, stride_, 0, t / kw_, t % kw_);
    const int32_t channel = p.direct ? in_h * in_w : tap_offset(p, stride_, 1, 0, 0);
    auto off = std::make_shared<std::vector<int32_t>>(codes_.size());
    for (size_t b = 0; b < codes_.size(); ++b) (*off)[b] = (codes_[b] / taps) * channel + tap[codes_[b] % taps];
    c.h = in_h, c.w = in_w, c.bands = bands, c.off = off;
    return c.off;
}

int Conv2d::out_h(int in_h) const { return (in_h + 2 * pad_ - kh_) / stride_ + 1; }
int Conv2d::out_w(int in_w) const { return (in_w + 2 * pad_ - kw_) / stride_ + 1; }
int Conv2d::out_size(int in) const { return out_h(in); }
bool Conv2d::sparse() const { return sparse_; }
bool Conv2d::depthwise() const { return depthwise_; }
double Conv2d::density() const { return density_; }

bool Conv2d::depthwise_direct() const {
    return depthwise_ && kh_ == 3 && kw_ == 3 && (stride_ == 1 || stride_ == 2) && pad_ == 1;
}

bool Conv2d::depthwise_flat(int in_h, int in_w) const {
    return depthwise_direct() && stride_ == 1 && in_w < JCW_LANES && in_h * in_w >= JCW_LANES;
}

size_t Conv2d::scratch_floats(int in_h, int in_w, int threads) const {
    if (depthwise_flat(in_h, in_w))  // padded channels + two lane masks
        return round16(static_cast<size_t>(in_ch_) * (in_h * in_w + 2 * in_w + 2)) + 2 * round16(in_h * in_w);
    if (depthwise_direct()) return 0;
    const PlaneLayout p = plane_layout(out_h(in_h), out_w(in_w), kh_, kw_, stride_, pad_);
    size_t planes = p.direct ? 0 : band_floats(p, in_ch_);
    if (threads > 1 && !depthwise_ && !p.direct) {  // one band per thread (see run)
        const PlaneLayout b = plane_layout(out_h(in_h), out_w(in_w), kh_, kw_, stride_, pad_, threads);
        planes = std::max(planes, b.bands * band_floats(b, in_ch_));
    }
    return planes + (depthwise_ ? round16(static_cast<size_t>(kh_) * kw_) : 0);
}

void Conv2d::run(const float* in, int in_h, int in_w, float* out, const float* residual, float* scratch,
                 ThreadPool& pool) const {
    const int ho = out_h(in_h), wo = out_w(in_w);
    if (ho < 1 || wo < 1)
        throw std::invalid_argument("Conv2d: input " + std::to_string(in_h) + "x" + std::to_string(in_w) +
                                    " is smaller than the kernel");
    const int threads = pool.size();
    if (depthwise_flat(in_h, in_w)) {
        const int hw = in_h * in_w;
        const size_t cstride = static_cast<size_t>(hw) + 2 * in_w + 2;
        float* mask_l = scratch + round16(in_ch_ * cstride);
        float* mask_r = mask_l + round16(hw);
        for (int q = 0; q < hw; ++q) {
            mask_l[q] = q % in_w != 0 ? 1.f : 0.f;
            mask_r[q] = q % in_w != in_w - 1 ? 1.f : 0.f;
        }
        parallel_ranges(pool, in_ch_, [&](int c0, int c1) {
            for (int c = c0; c < c1; ++c) {
                float* z = scratch + c * cstride;
                std::memset(z, 0, sizeof(float) * (in_w + 1));
                std::memcpy(z + in_w + 1, in + static_cast<size_t>(c) * hw, sizeof(float) * hw);
                std::memset(z + in_w + 1 + hw, 0, sizeof(float) * (in_w + 1));
            }
            if (force_scalar())
                depthwise3x3_flat<1>(scratch, cstride, in_h, in_w, c0, c1, mask_l, mask_r, dw_.data(), bias_.data(), out, residual, act_);
            else
                depthwise3x3_flat<JCW_LANES>(scratch, cstride, in_h, in_w, c0, c1, mask_l, mask_r, dw_.data(), bias_.data(), out, residual, act_);
        });
        return;
    }
    if (depthwise_direct()) {
        const int lanes = row_lanes(wo);
        parallel_ranges(pool, in_ch_, [&](int c0, int c1) {
            switch (lanes * 2 + (stride_ == 2)) {
#define JCW_DW3(LN)                                                                                          \
    case 2 * (LN): depthwise3x3_direct<LN>(in, in_h, in_w, c0, c1, dw_.data(), bias_.data(), out, residual, act_); break; \
    case 2 * (LN) + 1: depthwise3x3s2_direct<LN>(in, in_h, in_w, c0, c1, dw_.data(), bias_.data(), out, residual, act_); break;
                JCW_DW3(JCW_LANES)
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
            }
        });
        return;
    }
    if (channel_vectorised(in_h, in_w)) {
        const ChannelPack& cp = channel_pack();
        const int blocks = (out_ch_ + JCW_LANES - 1) / JCW_LANES;
        parallel_ranges(pool, blocks, [&](int b0, int b1) {
            cv_blocks<JCW_LANES>(cp.w.data(), cp.bias.data(), in, in_ch_, in_h * in_w, out_ch_, b0, b1, out, residual, act_);
        });
        return;
    }
    const PlaneLayout p = plane_layout(ho, wo, kh_, kw_, stride_, pad_);
    Geometry g;
    g.ho = ho, g.wo = wo, g.hw = ho * wo;
    float* planes = scratch;
    size_t plane_floats_all = 0;
    if (p.direct) {
        g.wv = in_w;
        g.base = in;
    } else {
        g.wv = p.wq;
        g.base = planes;
        plane_floats_all = band_floats(p, in_ch_);
    }
    auto planes_by_channels = [&] {
        parallel_ranges(pool, in_ch_, [&](int c0, int c1) { make_planes(in, in_h, in_w, p, stride_, pad_, c0, c1, 0, planes); });
    };
    g.qend = (ho - 1) * g.wv + wo;
    int32_t* off = reinterpret_cast<int32_t*>(scratch + plane_floats_all);
    const int lanes = pick_lanes(p.qrun);

    if (depthwise_) {
        if (!p.direct) planes_by_channels();
        const int taps = kh_ * kw_;
        for (int ky = 0; ky < kh_; ++ky)
            for (int kx = 0; kx < kw_; ++kx) off[ky * kw_ + kx] = p.direct ? 0 : tap_offset(p, stride_, 0, ky, kx);
        const int plane_floats = p.direct ? in_h * in_w : p.pk_h * p.pk_w * p.plane;
        const int dw_lanes = row_lanes(wo);
        parallel_ranges(pool, in_ch_, [&](int c0, int c1) {
            const bool k3 = taps == 9;
            switch (dw_lanes * 2 + k3) {
#define JCW_DW(LN)                                                                                                   \
    case 2 * (LN): depthwise_range<LN, 0>(g, c0, c1, plane_floats, off, taps, dw_.data(), bias_.data(), out, residual, act_); break; \
    case 2 * (LN) + 1: depthwise_range<LN, 9>(g, c0, c1, plane_floats, off, taps, dw_.data(), bias_.data(), out, residual, act_); break;
                JCW_DW(JCW_LANES)
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
            }
        });
        return;
    }

    // Loop order: weights bigger than the input planes -> block rows outer.
    const size_t weight_bytes = sizeof(float) * packed_.size() + sizeof(int32_t) * codes_.size();
    const size_t input_bytes = sizeof(float) * (p.direct ? static_cast<size_t>(in_ch_) * in_h * in_w : plane_floats_all);
    const bool rows_outer = weight_bytes > input_bytes;
    g.prefetch_in = !rows_outer && row_start_.back() <= static_cast<int64_t>(kPrefetchInputBlocks) * rows_;
    // Threads split virtual pixels when the input dominates and there are enough tiles, else
    // block rows balanced by their block counts.
    const int tile = lanes * JCW_TILE_VECS;
    const int qrun = p.direct ? g.qend : p.qrun;
    const bool split_q = (!rows_outer && qrun >= threads * 4 * tile) || rows_ < threads * 4;
    auto convolve = [&](const Geometry& gg, int q0, int q1, int r0, int r1, const int32_t* boff, float* o, const float* res) {
        if (q0 >= q1 || r0 >= r1) return;
        switch (lanes) {
            case JCW_LANES: conv_range<JCW_LANES>(gg, q0, q1, r0, r1, rows_outer, packed_.data(), row_start_.data(), boff, out_ch_, o, res, act_); break;
#if JCW_LANES != 4
            case 4: conv_range<4>(gg, q0, q1, r0, r1, rows_outer, packed_.data(), row_start_.data(), boff, out_ch_, o, res, act_); break;
#endif
#if JCW_LANES != 1
            default: conv_range<1>(gg, q0, q1, r0, r1, rows_outer, packed_.data(), row_start_.data(), boff, out_ch_, o, res, act_); break;
#endif
        }
    };
    if (threads > 1 && split_q && !p.direct) {
        const PlaneLayout pb = plane_layout(ho, wo, kh_, kw_, stride_, pad_, threads);
        if (pb.bands > 1) {
            // One row band per thread: thread t writes the planes of its output rows (halo rows
            // included, all channels) into its own block of the scratch and convolves them; no
            // thread reads another's planes, so no barrier between the two steps.
            const auto band_offsets = offsets(in_h, in_w, pb.bands);
            const size_t band = band_floats(pb, in_ch_);
            pool.for_each_thread([&](int t) {
                if (t >= pb.bands) return;
                const int y0 = t * pb.hb;
                Geometry gb = g;
                gb.ho = std::min(pb.hb, ho - y0);
                gb.wv = pb.wq;
                gb.base = planes + t * band;
                gb.qend = (gb.ho - 1) * gb.wv + wo;
                make_planes(in, in_h, in_w, pb, stride_, pad_, 0, in_ch_, y0, planes + t * band);
                const size_t o = static_cast<size_t>(y0) * wo;
                convolve(gb, 0, run_positions(gb.qend), 0, rows_, band_offsets->data(), out + o, residual ? residual + o : nullptr);
            });
            return;
        }
    }
    const auto offsets_now = offsets(in_h, in_w, 1);
    const int32_t* boff = offsets_now->data();
    const int tiles = (qrun + tile - 1) / tile;
    auto q_split = [&](int i, int n) { return std::min(qrun, tiles * i / n * tile); };
    if (!p.direct) planes_by_channels();
    // Several parts per thread: a thread that gets descheduled leaves its parts to the others.
    const int parts = threads == 1 ? 1 : threads * 4;
    auto body = [&](int i) {
        int q0 = 0, q1 = qrun, r0 = 0, r1 = rows_;
        if (split_q) {
            q0 = q_split(i, parts);
            q1 = q_split(i + 1, parts);
        } else {
            r0 = row_split(i, parts);
            r1 = row_split(i + 1, parts);
        }
        convolve(g, q0, q1, r0, r1, boff, out, residual);
    };
    pool.parallel_for(parts, body);
}

}  // namespace jcw
